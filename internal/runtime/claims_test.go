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
