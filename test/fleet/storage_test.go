package fleet

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/testimage"
)

// sfsPod is a shell pod with claim mounted at /data, placed on host by
// node affinity (through the scheduler, which also checks the volume).
func sfsPod(ns, name, host, claim, script string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: %s}}
spec:
  terminationGracePeriodSeconds: 1
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [%s]}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: %s}}
  containers:
  - name: sh
    image: %s
    command: [sh, -c, %q]
    volumeMounts: [{name: data, mountPath: /data}]
`, name, ns, name, host, claim, image(testimage.Shell), script)
}

// A cci-sfs volume is one file system for pods on different hosts: what a
// pod on host-1 writes, a pod on host-2 reads (small and 1 MiB files,
// byte for byte), and the other way round.
func TestSFSAcrossHosts(t *testing.T) {
	ns := namespace(t, "sfs-hosts")
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared, namespace: %s}
spec:
  storageClassName: cci-sfs
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 64Mi}}
`, ns))
	apply(t, sfsPod(ns, "writer", "host-1", "shared",
		"mkdir -p /data/dir && echo from-host-1 > /data/dir/note && head -c 1048576 /dev/urandom > /data/blob && md5sum /data/blob | cut -d' ' -f1 > /data/blob.md5; sleep 3600"))
	apply(t, sfsPod(ns, "reader", "host-2", "shared", "sleep 3600"))
	writer := waitRunning(t, ns, "app=writer", 1, 3*time.Minute)[0]
	reader := waitRunning(t, ns, "app=reader", 1, 3*time.Minute)[0]
	if writer.Spec.NodeName != "host-1" || reader.Spec.NodeName != "host-2" {
		t.Fatalf("writer on %s, reader on %s: want host-1 and host-2", writer.Spec.NodeName, reader.Spec.NodeName)
	}
	read := func(pod, script string) (string, error) {
		out, err := kubectl(t, "-n", ns, "exec", pod, "--", "sh", "-c", script)
		return strings.TrimSpace(out), err
	}
	waitFor(t, time.Minute, "host-2 reads the note written on host-1", func() (bool, string) {
		out, err := read("reader", "cat /data/dir/note")
		return err == nil && out == "from-host-1", fmt.Sprint(out, err)
	})
	var want string
	waitFor(t, time.Minute, "the 1 MiB file's checksum written on host-1", func() (bool, string) {
		out, err := read("writer", "cat /data/blob.md5")
		want = out
		return err == nil && len(out) == 32, fmt.Sprint(out, err)
	})
	got, err := read("reader", "md5sum /data/blob | cut -d' ' -f1; wc -c < /data/blob")
	if err != nil || got != want+"\n1048576" {
		t.Errorf("the 1 MiB file read on host-2: %q (%v), want md5 %s and 1048576 bytes", got, err, want)
	}
	if _, err := read("reader", "echo from-host-2 > /data/dir/reply"); err != nil {
		t.Fatalf("write on host-2: %v", err)
	}
	waitFor(t, time.Minute, "host-1 reads the reply written on host-2", func() (bool, string) {
		out, err := read("writer", "cat /data/dir/reply")
		return err == nil && out == "from-host-2", fmt.Sprint(out, err)
	})
	// A file removed on one host is gone on the other.
	if _, err := read("writer", "rm /data/blob"); err != nil {
		t.Fatalf("remove on host-1: %v", err)
	}
	waitFor(t, time.Minute, "the removed file gone on host-2", func() (bool, string) {
		out, err := read("reader", "ls /data")
		return err == nil && !strings.Contains(out, "blob\n") && !strings.HasSuffix(out, "blob"), out
	})
}
