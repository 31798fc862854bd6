package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestClaimName(t *testing.T) {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0"}}
	for _, tc := range []struct {
		vol      v1.Volume
		claim    string
		readOnly bool
	}{
		{v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "c1"}}}, "c1", false},
		{v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "c1", ReadOnly: true}}}, "c1", true},
		{v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{Ephemeral: &v1.EphemeralVolumeSource{}}}, "web-0-scratch", false},
		{v1.Volume{Name: "tmp", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}, "", false},
	} {
		claim, ro := claimName(pod, tc.vol)
		if claim != tc.claim || ro != tc.readOnly {
			t.Errorf("%s: claim %q readOnly %v, want %q %v", tc.vol.Name, claim, ro, tc.claim, tc.readOnly)
		}
	}
}

func TestClaimRecord(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ body, ref, dev string }{
		{"/evs/staged/pv-1\n", "/evs/staged/pv-1", ""},
		{"/evs/staged/pv-2\n/dev/loop3\n", "/evs/staged/pv-2", "/dev/loop3"},
	} {
		p := filepath.Join(dir, "rec")
		if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		ref, dev, err := readClaimRecord(p)
		if err != nil || ref != tc.ref || dev != tc.dev {
			t.Errorf("%q: %q %q %v", tc.body, ref, dev, err)
		}
	}
}

// The pod folder is kept while anything under it is mounted: a persistent
// volume's files would go with it.
func TestMountsUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	base := t.TempDir()
	pod := filepath.Join(base, "pod")
	vol := filepath.Join(pod, "volumes", "data")
	sibling := filepath.Join(base, "pod2")
	for _, d := range []string{vol, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", sibling, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sibling, unix.MNT_DETACH)
	if m := mountsUnder(pod); len(m) != 0 {
		t.Fatalf("nothing mounted under %s, got %v", pod, m)
	}
	if err := unix.Mount("tmpfs", vol, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(vol, unix.MNT_DETACH)
	if m := mountsUnder(pod); !slices.Equal(m, []string{vol}) {
		t.Fatalf("mounts under %s: %v, want [%s]", pod, m, vol)
	}
}

// A volume mounted again on a pod's claim folder (shared by
// shareClaimMount) reaches a container's rslave bind of that folder, as
// runc makes it, and nothing reaches the staged volume or another pod's
// folder.
func TestRemountReachesContainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	base := t.TempDir()
	staged, podA, podB, ctr := filepath.Join(base, "staged"), filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "ctr")
	for _, d := range []string{staged, podA, podB, ctr} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Unmounted in reverse order at the end, each as often as it was.
	var undo []string
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			_ = unix.Unmount(undo[i], unix.MNT_DETACH)
		}
	}()
	mount := func(src, dst, fstype string, flags uintptr) {
		t.Helper()
		if err := unix.Mount(src, dst, fstype, flags, ""); err != nil {
			t.Fatalf("mount %s on %s: %v", src, dst, err)
		}
		undo = append(undo, dst)
	}
	mount("tmpfs", staged, "tmpfs", 0)
	if err := os.WriteFile(filepath.Join(staged, "old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, pod := range []string{podA, podB} {
		mount(staged, pod, "", unix.MS_BIND)
		if err := shareClaimMount(pod); err != nil {
			t.Fatal(err)
		}
	}
	// The container's bind, as runc makes it from rbind + rslave.
	mount(podA, ctr, "", unix.MS_BIND|unix.MS_REC)
	if err := unix.Mount("", ctr, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		t.Fatal(err)
	}

	// The volume mounted again: a new file system stacked on pod A's folder.
	fresh := filepath.Join(base, "fresh")
	if err := os.MkdirAll(fresh, 0o755); err != nil {
		t.Fatal(err)
	}
	mount("tmpfs", fresh, "tmpfs", 0)
	if err := os.WriteFile(filepath.Join(fresh, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mount(fresh, podA, "", unix.MS_BIND)
	undo = append(undo, ctr) // the copy the container received

	if _, err := os.Stat(filepath.Join(ctr, "new")); err != nil {
		t.Errorf("the container does not see the volume mounted again: %v", err)
	}
	for _, d := range []string{staged, podB} {
		if _, err := os.Stat(filepath.Join(d, "new")); err == nil {
			t.Errorf("the mount on pod A's folder reached %s", d)
		}
		if _, err := os.Stat(filepath.Join(d, "old")); err != nil {
			t.Errorf("%s lost its own volume: %v", d, err)
		}
	}
}
