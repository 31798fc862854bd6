package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// rcloneFor is the pid of the rclone process that mounts volume pv on
// this cluster's host.
func rcloneFor(t *testing.T, pv string) int {
	t.Helper()
	staged := filepath.Join(cci.DataDir, "remote-volumes", "staged", pv)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if len(args) < 4 || filepath.Base(args[0]) != "rclone" || args[1] != "mount" {
			continue
		}
		for _, a := range args {
			if a == staged {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				return pid
			}
		}
	}
	t.Fatalf("no rclone process mounts %s", staged)
	return 0
}

// The rclone process of a cci-obs volume is killed under two running
// pods: the agent mounts the volume again. The runc pod's container sees it
// at its mount path without restarting; the gVisor pod's container is
// restarted to see it. Both read what was there and what is written after.
func TestClaimMountRevived(t *testing.T) {
	ns := namedNamespace(t, "revive-"+rand.String(4))
	createClaim(t, ns, evsClaim("bucket", "1Gi", "cci-obs", v1.ReadWriteMany))
	pv := waitBound(t, ns, "bucket")
	createPod(t, ns, claimPod("plain", "runc", "bucket", "echo before > /data/before.txt; sleep 3600"))
	createPod(t, ns, claimPod("sandboxed", "gvisor", "bucket", "sleep 3600"))
	plain := waitPodRunningIn(t, ns, "plain", 2*time.Minute)
	waitPodRunningIn(t, ns, "sandboxed", 2*time.Minute)
	podFile(t, ns, "sandboxed", "/data/before.txt", "before")
	// Uploaded before the kill: rclone uploads a closed file in the
	// background, and what it had not uploaded dies with it.
	s3c, _ := s3Of(t, ns)
	waitFor(t, time.Minute, "before.txt uploaded", func() (bool, string) {
		got, err := getObject(s3c, pv, "before.txt")
		return err == nil && strings.TrimSpace(got) == "before", fmt.Sprint(got, err)
	})
	firstID := plain.Status.ContainerStatuses[0].ContainerID

	pid := rcloneFor(t, pv)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill rclone %d: %v", pid, err)
	}
	t.Logf("killed rclone %d of volume %s", pid, pv)
	killed := time.Now()

	podFile(t, ns, "plain", "/data/before.txt", "before")
	t.Logf("the runc pod reads the volume again %s after the kill", time.Since(killed).Round(time.Millisecond))
	podFile(t, ns, "sandboxed", "/data/before.txt", "before")
	t.Logf("the gVisor pod reads the volume again %s after the kill", time.Since(killed).Round(time.Millisecond))
	if got := rcloneFor(t, pv); got == pid {
		t.Errorf("the volume is still mounted by the killed rclone %d", pid)
	}
	execOut(t, ns, "plain", "sh", "-c", "echo after > /data/after.txt")
	podFile(t, ns, "sandboxed", "/data/after.txt", "after")

	p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "plain", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Status.ContainerStatuses[0]; st.RestartCount != 0 || st.ContainerID != firstID {
		t.Errorf("the runc pod's container restarted (restarts %d, id %s, was %s); it should have seen the new mount in place", st.RestartCount, st.ContainerID, firstID)
	}
	s, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "sandboxed", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Status.ContainerStatuses[0].RestartCount; n < 1 {
		t.Errorf("the gVisor pod's container: %d restarts, want it restarted onto the new mount", n)
	}
	evs, err := client(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "reason=VolumeRemounted"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range evs.Items {
		seen[e.InvolvedObject.Name] = true
	}
	if !seen["plain"] || !seen["sandboxed"] {
		t.Errorf("VolumeRemounted events for %v, want both pods", seen)
	}
}
