package hostns

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Stacked pins of runsc's null network namespace (concurrent cold starts
// stack them) all go; another mount under the folder stays.
func TestReleaseNullNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for bind mounts")
	}
	dir := t.TempDir()
	pin := filepath.Join(dir, "agent", "runsc", "root", "cci", "null-netns")
	other := filepath.Join(dir, "other")
	if err := os.MkdirAll(filepath.Dir(pin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pin, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{pin, pin, other} {
		if err := unix.Mount("/proc/self/ns/net", target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for unix.Unmount(other, unix.MNT_DETACH) == nil {
		}
		for unix.Unmount(pin, unix.MNT_DETACH) == nil {
		}
	})
	if got := len(MountsUnder(dir)); got != 3 {
		t.Fatalf("mounts before: %d, want 3", got)
	}
	ReleaseNullNetns(dir)
	if got := MountsUnder(dir); len(got) != 1 || got[0] != other {
		t.Fatalf("mounts after: %v, want only %s", got, other)
	}
}
