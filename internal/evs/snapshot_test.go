package evs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// A snapshot of a mounted disk taken while it is in use holds what was
// written before it, not what is written after; a disk restored from it
// (larger, beside the original on the same host) mounts with that data
// and a file system grown to its size; the copy is sparse and goes when
// deleted.
func TestSnapshotRestore(t *testing.T) {
	needHost(t)
	ctx := context.Background()
	p := &Pool{Dir: t.TempDir()}
	t.Cleanup(func() {
		for _, d := range []string{"src", "restored"} {
			_, _ = p.Unstage(d)
			_ = p.Delete(d)
		}
	})
	if err := p.Create("src", 64<<20, false); err != nil {
		t.Fatal(err)
	}
	dir, err := p.Stage("src", "xfs")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	size, at, err := p.Snapshot(ctx, "src", "snap-1")
	if err != nil {
		t.Fatal(err)
	}
	if size != 64<<20 || time.Since(at) > time.Minute {
		t.Fatalf("snapshot: %d bytes at %v, want %d now", size, at, 64<<20)
	}
	// The file system was thawed: the pod's writes go on.
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("after"), 0o644); err != nil {
		t.Fatalf("write after the snapshot: %v", err)
	}
	// Sparse: the copy of a 64 MiB disk holding a few bytes takes a few MiB.
	var st unix.Stat_t
	if err := unix.Stat(p.snapshotImage("snap-1"), &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 32<<20 {
		t.Errorf("snapshot copy takes %d bytes of the host for a nearly empty 64 MiB disk", used)
	}
	// A retried create keeps the first copy.
	if again, _, err := p.Snapshot(ctx, "src", "snap-1"); err != nil || again != size {
		t.Fatalf("second Snapshot: %d %v", again, err)
	}

	if err := p.CreateFromSnapshot(ctx, "restored", "snap-1", 32<<20, false); err == nil {
		t.Fatal("a restore smaller than the snapshot was made")
	}
	if err := p.CreateFromSnapshot(ctx, "restored", "snap-1", 128<<20, false); err != nil {
		t.Fatal(err)
	}
	rdir, err := p.Stage("restored", "xfs")
	if err != nil {
		t.Fatalf("stage the restored disk beside its original (same XFS UUID): %v", err)
	}
	got, err := os.ReadFile(filepath.Join(rdir, "data"))
	if err != nil || string(got) != "before" {
		t.Fatalf("restored data: %q %v, want %q", got, err, "before")
	}
	if fs, err := FSSize(rdir); err != nil || fs < 110<<20 {
		t.Fatalf("restored file system: %d bytes (%v), want grown to about 128 MiB", fs, err)
	}
	if orig, _ := os.ReadFile(filepath.Join(dir, "data")); string(orig) != "after" {
		t.Fatalf("original after the restore: %q", orig)
	}

	if err := p.DeleteSnapshot("snap-1"); err != nil {
		t.Fatal(err)
	}
	if p.HasSnapshot("snap-1") {
		t.Fatal("snapshot still on the host after DeleteSnapshot")
	}
	if err := p.DeleteSnapshot("snap-1"); err != nil {
		t.Fatalf("deleting a deleted snapshot: %v", err)
	}
	if _, _, err := p.Snapshot(ctx, "nosuch", "snap-2"); !errors.Is(err, ErrNoDisk) {
		t.Fatalf("snapshot of a disk not on the host: %v, want ErrNoDisk", err)
	}
}

// Snapshot handles come from API objects: one that is not a plain file
// name is refused before any path is made of it.
func TestSnapshotHandleRefused(t *testing.T) {
	p := &Pool{Dir: t.TempDir()}
	for _, h := range []string{"", "../disks/x", "a/b", ".hidden"} {
		if _, _, err := p.Snapshot(context.Background(), "d", h); err == nil {
			t.Errorf("Snapshot with handle %q: no error", h)
		}
		if err := p.DeleteSnapshot(h); err == nil {
			t.Errorf("DeleteSnapshot with handle %q: no error", h)
		}
	}
}

// fakeSnapshots is a SnapshotLookup of fixed answers.
type fakeSnapshots map[string]snapshotSource

func (f fakeSnapshots) Lookup(_ context.Context, ns, name string) (snapshotSource, error) {
	if s, ok := f[ns+"/"+name]; ok {
		return s, nil
	}
	return snapshotSource{}, errors.New("VolumeSnapshot " + ns + "/" + name + " is not ready to use yet")
}

// Which host restores a claim, and what it refuses: the host holding the
// snapshot takes the claim wherever the scheduler placed it; a claim
// smaller than the snapshot and a data source that is not a VolumeSnapshot
// get errors saying so.
func TestProvisionFromSnapshot(t *testing.T) {
	ctx := context.Background()
	p := &Provisioner{Node: "h1", Pool: &Pool{Dir: t.TempDir()}, Snapshots: fakeSnapshots{"ns/snap": {handle: "snapshot-1"}}}
	if err := os.MkdirAll(filepath.Join(p.Pool.Dir, "snapshots"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Pool.snapshotImage("snapshot-1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p.Pool.snapshotImage("snapshot-1"), 64<<20); err != nil {
		t.Fatal(err)
	}
	group := snapshotGroup
	claim := func(selected, source, kind, size string) *v1.PersistentVolumeClaim {
		c := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", Annotations: map[string]string{"volume.kubernetes.io/selected-node": selected}},
			Spec: v1.PersistentVolumeClaimSpec{
				AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}},
			},
		}
		if source != "" {
			c.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: &group, Kind: kind, Name: source}
		}
		return c
	}
	for _, tc := range []struct {
		name, selected, source, kind, size string
		should                             bool
	}{
		{"empty claim here", "h1", "", "", "1Gi", true},
		{"empty claim elsewhere", "h2", "", "", "1Gi", false},
		{"snapshot here, placed elsewhere", "h2", "snap", "VolumeSnapshot", "1Gi", true},
		{"snapshot not ready, placed here", "h1", "other", "VolumeSnapshot", "1Gi", true},
		{"snapshot not ready, placed elsewhere", "h2", "other", "VolumeSnapshot", "1Gi", false},
		{"not placed yet", "", "snap", "VolumeSnapshot", "1Gi", false},
	} {
		if got := p.ShouldProvision(ctx, claim(tc.selected, tc.source, tc.kind, tc.size)); got != tc.should {
			t.Errorf("%s: ShouldProvision %v, want %v", tc.name, got, tc.should)
		}
	}
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: ClassName}}
	for _, tc := range []struct {
		name, source, kind, size, want string
	}{
		{"smaller than the snapshot", "snap", "VolumeSnapshot", "32Mi", "less than the restore size 64Mi"},
		{"not ready", "other", "VolumeSnapshot", "1Gi", "not ready to use yet"},
		{"a clone", "snap", "PersistentVolumeClaim", "1Gi", "is not offered"},
	} {
		_, state, err := p.Provision(ctx, controller.ProvisionOptions{PVC: claim("h1", tc.source, tc.kind, tc.size), PVName: "pv-x", SelectedNodeName: "h1", StorageClass: class})
		if err == nil || state != controller.ProvisioningFinished || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Provision %v (%v), want an error saying %q", tc.name, err, state, tc.want)
		}
	}
	if p.Pool.Exists("pv-x") {
		t.Error("a refused restore left a disk")
	}
}
