package runtime

import (
	"os"
	"path/filepath"
	"testing"
)

// A deleted container's cgroup folders go from every hierarchy, nested
// ones first; one that cannot go (on cgroupfs: a process still in it)
// stays and is reported, and the others go all the same.
func TestRemoveCgroups(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"memory/cci/u-c/sub", "cpu,cpuacct/cci/u-c", "pids/cci/u-c", "pids/cci/u-other", "unified/cci/u-c"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu")); err != nil {
		t.Fatal(err)
	}
	// A file stands for a process: rmdir fails on the folder.
	if err := os.WriteFile(filepath.Join(root, "pids/cci/u-c/busy"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := removeCgroups(root, "/cci/u-c"); err == nil {
		t.Error("a folder that could not go was not reported")
	}
	for d, want := range map[string]bool{
		"memory/cci/u-c": false, "cpu,cpuacct/cci/u-c": false, "unified/cci/u-c": false,
		"pids/cci/u-c": true, "pids/cci/u-other": true, "memory/cci": true,
	} {
		_, err := os.Stat(filepath.Join(root, d))
		if got := err == nil; got != want {
			t.Errorf("%s exists: %v, want %v", d, got, want)
		}
	}
	if err := removeCgroups(root, "/"); err != nil {
		t.Errorf("the root path: %v, want nothing done", err)
	}
	if _, err := os.Stat(filepath.Join(root, "pids")); err != nil {
		t.Errorf("the root path removed something: %v", err)
	}
}
