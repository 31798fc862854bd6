package rclone

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/obs"
)

// rcloneOf finds the rclone process serving the mount at dir.
func rcloneOf(t *testing.T, dir string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if len(args) > 3 && strings.HasSuffix(args[0], "rclone") && args[1] == "mount" && args[3] == dir {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	t.Fatalf("no rclone process mounts %s", dir)
	return 0
}

// TestStageBucket mounts a bucket of a real object store, writes through
// the mount and reads it back through S3, then kills rclone and checks
// that the next Stage mounts the volume afresh.
func TestStageBucket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := exec.LookPath("rclone"); err != nil {
		t.Skip("rclone is not installed (make setup)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	store, err := obs.Open(t.TempDir(), addr, "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := store.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateBucket(ctx, "pvc-test", "ns"); err != nil {
		t.Fatal(err)
	}
	keys, _ := store.TenantCredentials("ns")
	m := &Mounter{Dir: t.TempDir()}
	r := Remote{Name: "pvc-test", Type: "s3", Path: "pvc-test", CacheMode: "writes", Options: map[string]string{
		"provider": "Other", "endpoint": store.Endpoint, "region": obs.Region,
		"access_key_id": keys.AccessKeyID, "secret_access_key": keys.SecretAccessKey, "no_check_bucket": "true",
	}}
	dir, err := m.Stage(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatalf("write through the mount: %v", err)
	}
	want := filepath.Join(store.BucketDir("pvc-test"), "hello.txt")
	deadline := time.Now().Add(time.Minute)
	for {
		if b, err := os.ReadFile(want); err == nil && string(b) == "hello" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file written through the mount never reached the store as %s", want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Staging again re-adopts the live mount.
	pid := rcloneOf(t, dir)
	if again, err := m.Stage(ctx, r); err != nil || again != dir || rcloneOf(t, dir) != pid {
		t.Fatalf("second Stage: %q %v, rclone %d → %d", again, err, pid, rcloneOf(t, dir))
	}
	// rclone dies: the mount is dead until Stage mounts it again.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for alive(dir) {
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := m.Stage(ctx, r); err != nil {
		t.Fatalf("Stage of a dead mount: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello.txt")); err != nil || string(b) != "hello" {
		t.Fatalf("after remount: %q %v", b, err)
	}
	if err := m.Unstage(dir); err != nil {
		t.Fatal(err)
	}
	if _, ok := mountDevice(dir); ok {
		t.Fatal("still mounted after Unstage")
	}
}
