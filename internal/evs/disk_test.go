package evs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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

// writePattern writes n MiB of byte b to path and syncs them.
func writePattern(path string, n int, b byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = b
	}
	for i := 0; i < n; i++ {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// A host file system that fills while thin disks grow: the write that
// needs a host block fails (EIO or ENOSPC, never silently), Space reports
// the host full and names the thin disks it fails, the other disk's data
// stays whole, and once the host has room the failed disk mounts again
// and takes writes once the failed file is removed.
func TestHostFull(t *testing.T) {
	needHost(t)
	// The host's file system: a 96 MiB XFS of its own (a disk of a pool).
	outer := &Pool{Dir: t.TempDir()}
	if err := outer.Create("host", 96<<20, false); err != nil {
		t.Fatal(err)
	}
	hostDir, err := outer.Stage("host", "xfs")
	if err != nil {
		t.Fatal(err)
	}
	p := &Pool{Dir: filepath.Join(hostDir, "evs")}
	t.Cleanup(func() {
		for _, d := range []string{"d1", "d2"} {
			_, _ = p.Unstage(d)
			_ = p.Delete(d)
		}
		_, _ = outer.Unstage("host")
		_ = outer.Delete("host")
	})
	for _, d := range []string{"d1", "d2"} {
		if err := p.Create(d, 64<<20, false); err != nil {
			t.Fatalf("thin disk %s of 64 MiB on a 96 MiB host: %v", d, err)
		}
	}
	d1, err := p.Stage("d1", "xfs")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := p.Stage("d2", "xfs")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := p.Space(); err != nil || s.Full {
		t.Fatalf("Space before any write: %+v %v, want not full", s, err)
	}
	if err := writePattern(filepath.Join(d1, "kept"), 48, 'k'); err != nil {
		t.Fatalf("48 MiB into d1: %v", err)
	}
	s, err := p.Space()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host after d1's 48 MiB: %d MiB free", s.Free>>20)
	// 48 MiB fit d2's own file system, not what the host has left.
	err = writePattern(filepath.Join(d2, "big"), 48, 'b')
	if !errors.Is(err, syscall.EIO) && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("48 MiB into d2 with %d MiB left on the host: %v, want EIO or ENOSPC", s.Free>>20, err)
	}
	t.Logf("the write past the host's space: %v", err)
	s, err = p.Space()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Full || !slices.Contains(s.Short, "d2") {
		t.Fatalf("Space after the host filled: %+v, want full with d2 short", s)
	}
	// d1's data is whole: read from its disk, not the page cache.
	if _, err := p.Unstage("d1"); err != nil {
		t.Fatal(err)
	}
	if d1, err = p.Stage("d1", "xfs"); err != nil {
		t.Fatalf("stage d1 again on the full host: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(d1, "kept"))
	if err != nil || len(got) != 48<<20 || strings.Trim(string(got), "k") != "" {
		t.Fatalf("d1's file after the host filled: %d bytes, %v", len(got), err)
	}
	// Room again on the host (d1 goes): d2 mounts again and takes writes.
	if _, err := p.Unstage("d1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete("d1"); err != nil {
		t.Fatal(err)
	}
	// XFS frees a removed file's blocks in the background.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		s, err = p.Space()
		if err == nil && !s.Full {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Space after removing d1: %+v %v, want room", s, err)
		}
	}
	if _, err := p.Unstage("d2"); err != nil {
		t.Fatalf("unstage d2 after its failed write: %v", err)
	}
	if d2, err = p.Stage("d2", "xfs"); err != nil {
		t.Fatalf("stage d2 again with room on the host: %v", err)
	}
	// The failed file keeps its size in d2's own file system.
	if err := os.Remove(filepath.Join(d2, "big")); err != nil {
		t.Fatal(err)
	}
	if err := writePattern(filepath.Join(d2, "after"), 16, 'a'); err != nil {
		t.Fatalf("16 MiB into d2 with room on the host: %v", err)
	}
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
