package evs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// needHost skips a test that makes loop devices and mounts where it cannot.
func needHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and mounts")
	}
	for _, bin := range []string{"losetup", "blkid", "mkfs.xfs", "xfs_growfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (make setup installs it)", bin)
		}
	}
}

// writeFile writes n MiB of zeros to path and syncs them.
func writeFile(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := 0; i < n; i++ {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

// A disk's whole life on a host: made, staged with a new file system,
// full at its size, grown online, unstaged and staged again with its data,
// removed with nothing left attached.
func TestPoolLifecycle(t *testing.T) {
	needHost(t)
	p := &Pool{Dir: t.TempDir()}
	t.Cleanup(func() {
		_, _ = p.Unstage("d1")
		_ = p.Delete("d1")
	})
	if err := p.Create("d1", 64<<20, false); err != nil {
		t.Fatal(err)
	}
	dir, err := p.Stage("d1", "xfs")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := p.Stage("d1", "xfs"); err != nil || again != dir {
		t.Fatalf("second Stage: %q %v, want %q", again, err, dir)
	}
	err = writeFile(filepath.Join(dir, "big"), 100)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("100 MiB into a 64 MiB disk: %v, want ENOSPC", err)
	}
	if err := os.Remove(filepath.Join(dir, "big")); err != nil {
		t.Fatal(err)
	}
	if err := p.Expand("d1", 128<<20, false); err != nil {
		t.Fatal(err)
	}
	if size, err := FSSize(dir); err != nil || size < 110<<20 {
		t.Fatalf("file system after growing to 128 MiB: %d bytes (%v)", size, err)
	}
	if err := writeFile(filepath.Join(dir, "big"), 100); err != nil {
		t.Fatalf("100 MiB into the grown disk: %v", err)
	}
	if err := p.Delete("d1"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Delete of a staged disk: %v, want ErrInUse", err)
	}
	// A pod's bind mount keeps it staged.
	bind := filepath.Join(t.TempDir(), "pod")
	if err := os.Mkdir(bind, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if done, err := p.Unstage("d1"); err != nil || done {
		t.Fatalf("Unstage while a pod mounts it: %v %v, want no change", done, err)
	}
	if err := unix.Unmount(bind, 0); err != nil {
		t.Fatal(err)
	}
	if done, err := p.Unstage("d1"); err != nil || !done {
		t.Fatalf("Unstage: %v %v", done, err)
	}
	if devs, _ := loopDevices(p.image("d1")); len(devs) != 0 {
		t.Fatalf("loop devices left after Unstage: %v", devs)
	}
	dir, err = p.Stage("d1", "xfs")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "big")); err != nil || fi.Size() != 100<<20 {
		t.Fatalf("data after staging again: %v %v", fi, err)
	}
	if _, err := p.Unstage("d1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete("d1"); err != nil {
		t.Fatal(err)
	}
	if p.Exists("d1") {
		t.Fatal("disk file left after Delete")
	}
}

func TestCreateTooLarge(t *testing.T) {
	p := &Pool{Dir: t.TempDir()}
	free, err := p.Free()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Create("huge", free+1<<30, true); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Create past the free space: %v, want ErrTooLarge", err)
	}
	if p.Exists("huge") {
		t.Fatal("a refused disk left a file")
	}
}

func TestCheckAccessModes(t *testing.T) {
	for _, tc := range []struct {
		modes []v1.PersistentVolumeAccessMode
		ok    bool
	}{
		{[]v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, true},
		{[]v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}, true},
		{[]v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadWriteMany}, false},
		{[]v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}, false},
	} {
		if err := CheckAccessModes(tc.modes); (err == nil) != tc.ok {
			t.Errorf("%v: %v", tc.modes, err)
		}
	}
}

func TestRoundSize(t *testing.T) {
	for in, want := range map[string]int64{"1": mib, "64Mi": 64 * mib, "100M": 96 * mib, "1.5Mi": 2 * mib} {
		if got := RoundSize(resource.MustParse(in)); got != want {
			t.Errorf("RoundSize(%s) = %d, want %d", in, got, want)
		}
	}
}

// A thick disk has its blocks taken on the host when made and when grown.
func TestThickDisk(t *testing.T) {
	p := &Pool{Dir: t.TempDir()}
	if err := p.Create("t1", 8<<20, true); err != nil {
		t.Fatal(err)
	}
	if got := allocated(t, p.image("t1")); got < 8<<20 {
		t.Fatalf("thick disk of 8 MiB takes %d bytes on the host", got)
	}
	if err := p.Expand("t1", 16<<20, true); err != nil {
		t.Fatal(err)
	}
	if got := allocated(t, p.image("t1")); got < 16<<20 {
		t.Fatalf("thick disk grown to 16 MiB takes %d bytes on the host", got)
	}
	if err := p.Create("t2", 8<<20, false); err != nil {
		t.Fatal(err)
	}
	if got := allocated(t, p.image("t2")); got != 0 {
		t.Fatalf("thin disk takes %d bytes on the host before any write", got)
	}
}

// allocated is what a file takes on its file system, in bytes.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestFSTypeOf(t *testing.T) {
	for _, c := range []struct {
		params map[string]string
		want   string
		err    bool
	}{
		{nil, "xfs", false},
		{map[string]string{FSTypeParameter: "ext4"}, "ext4", false},
		{map[string]string{CSIFSTypeParameter: "ext4"}, "ext4", false},
		// A copy of cci-evs (fsType: xfs) that asks for ext4 the CSI way.
		{map[string]string{FSTypeParameter: "xfs", CSIFSTypeParameter: "ext4"}, "ext4", false},
		{map[string]string{FSTypeParameter: "btrfs"}, "", true},
		{map[string]string{FSTypeParameter: "xfs", CSIFSTypeParameter: "vfat"}, "", true},
	} {
		got, err := FSTypeOf("c", c.params)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("FSTypeOf(%v) = %q, %v; want %q, error %v", c.params, got, err, c.want, c.err)
		}
	}
}
