package e2e

// cci-evs VolumeSnapshots (snapshot.storage.k8s.io/v1): the upstream
// snapshot-controller in the control plane, the snapshotter sidecar's
// controller in the agent of the disk's host, copies under the agent's
// evs folder (internal/evs/snapshot.go, internal/snapshot).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volumeSnapshot is the YAML of a VolumeSnapshot of claim (no class: the
// default class of the claim's driver).
func volumeSnapshot(ns, name, claim, class string) string {
	y := fmt.Sprintf("apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  source:\n    persistentVolumeClaimName: %s\n", name, ns, claim)
	if class != "" {
		y += "  volumeSnapshotClassName: " + class + "\n"
	}
	return y
}

func kubectlApply(t *testing.T, yaml string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "obj.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "apply", "-f", f)
}

// snapshotField is a jsonpath field of VolumeSnapshot ns/name, "" when
// it is not there.
func snapshotField(t *testing.T, ns, name, path string) string {
	out, _ := kubectl(t, "-n", ns, "get", "volumesnapshot", name, "-o", "jsonpath={"+path+"}")
	return strings.TrimSpace(out)
}

// restoreClaim is a claim of cci-evs of size restored from VolumeSnapshot
// snap.
func restoreClaim(name, size, snap string) *v1.PersistentVolumeClaim {
	pvc := evsClaim(name, size, "cci-evs")
	group := "snapshot.storage.k8s.io"
	pvc.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: snap}
	return pvc
}

// A pod writes to its disk; a VolumeSnapshot of the claim becomes ready,
// its copy on the disk's host; the pod changes the data; cci up restarts
// (the agent with it) and the snapshot is still there; a claim restored
// from it (larger than the original) gives a new pod the ORIGINAL data on
// a file system grown to the new size; a restore smaller than the
// snapshot is refused with an event; deleting the VolumeSnapshot removes
// its content and the copy on the host.
func TestEVSSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "evs-snap")

	classes := mustKubectl(t, "get", "volumesnapshotclass", "cci-evs", "-o", "jsonpath={.driver} {.deletionPolicy} {.metadata.annotations.snapshot\\.storage\\.kubernetes\\.io/is-default-class}")
	if strings.TrimSpace(classes) != "evs.cci.io Delete true" {
		t.Fatalf("VolumeSnapshotClass cci-evs: %q, want driver evs.cci.io, Delete, default", classes)
	}

	createClaim(t, ns, evsClaim("src", "64Mi", "cci-evs"))
	createPod(t, ns, claimPod("writer", "", "src", "echo original > /data/note; sync; sleep 3600"))
	waitPodRunningIn(t, ns, "writer", 2*time.Minute)
	waitFor(t, time.Minute, "the pod's note written", func() (bool, string) {
		out, err := kubectl(t, "-n", ns, "exec", "writer", "--", "cat", "/data/note")
		return err == nil && strings.TrimSpace(out) == "original", out
	})

	kubectlApply(t, volumeSnapshot(ns, "snap", "src", ""))
	waitFor(t, 2*time.Minute, "VolumeSnapshot snap ready", func() (bool, string) {
		ready := snapshotField(t, ns, "snap", ".status.readyToUse")
		return ready == "true", ready + " " + snapshotField(t, ns, "snap", ".status.error.message")
	})
	if got := snapshotField(t, ns, "snap", ".status.restoreSize"); got != "64Mi" {
		t.Errorf("restoreSize %q, want 64Mi", got)
	}
	if got := snapshotField(t, ns, "snap", ".spec.volumeSnapshotClassName"); got != "cci-evs" {
		t.Errorf("the snapshot's class %q, want the default cci-evs", got)
	}
	content := snapshotField(t, ns, "snap", ".status.boundVolumeSnapshotContentName")
	handle := strings.TrimSpace(mustKubectl(t, "get", "volumesnapshotcontent", content, "-o", "jsonpath={.status.snapshotHandle}"))
	host := strings.TrimSpace(mustKubectl(t, "get", "volumesnapshotcontent", content, "-o", "jsonpath={.metadata.labels.snapshot\\.storage\\.kubernetes\\.io/managed-by}"))
	writer, err := c.CoreV1().Pods(ns).Get(ctx, "writer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if host != writer.Spec.NodeName {
		t.Errorf("content %s is managed by %q, want the disk's host %q", content, host, writer.Spec.NodeName)
	}
	copyPath := filepath.Join(cci.DataDir, "evs", "snapshots", handle+".img")
	if fi, err := os.Stat(copyPath); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("the snapshot's copy on the host: %v (%v), want %s of 64 MiB", fi, err, copyPath)
	}

	execOut(t, ns, "writer", "sh", "-c", "echo changed > /data/note && sync")

	// The agent restarts (with the whole cci up): the snapshot stays.
	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	if ready := snapshotField(t, ns, "snap", ".status.readyToUse"); ready != "true" {
		t.Errorf("after the restart: readyToUse %q", ready)
	}

	createClaim(t, ns, restoreClaim("restored", "128Mi", "snap"))
	createPod(t, ns, claimPod("reader", "", "restored", "sleep 3600"))
	waitPodRunningIn(t, ns, "reader", 3*time.Minute)
	if got := strings.TrimSpace(execOut(t, ns, "reader", "cat", "/data/note")); got != "original" {
		t.Errorf("the restored claim's note: %q, want %q", got, "original")
	}
	if got := strings.TrimSpace(execOut(t, ns, "writer", "cat", "/data/note")); got != "changed" {
		t.Errorf("the original claim's note: %q, want %q", got, "changed")
	}
	if kib := dfKiB(t, ns, "reader", "/data"); kib < 110<<10 {
		t.Errorf("the restored file system has %d KiB, want grown to about 128 MiB", kib)
	}
	// The restored disk is a disk of its own: writes to it do not reach
	// the original.
	execOut(t, ns, "reader", "sh", "-c", "echo restored > /data/note && sync")
	if got := strings.TrimSpace(execOut(t, ns, "writer", "cat", "/data/note")); got != "changed" {
		t.Errorf("the original claim's note after writing the restored one: %q", got)
	}

	// Smaller than the snapshot: refused, with an event saying the size.
	createClaim(t, ns, restoreClaim("small", "32Mi", "snap"))
	createPod(t, ns, claimPod("small", "", "small", "sleep 3600"))
	waitFor(t, 2*time.Minute, "a ProvisioningFailed event on claim small", func() (bool, string) {
		evs, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=small,involvedObject.kind=PersistentVolumeClaim"})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Reason == "ProvisioningFailed" && strings.Contains(e.Message, "restore size 64Mi") {
				return true, ""
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return false, strings.Join(seen, "; ")
	})
	if pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "small", metav1.GetOptions{}); err != nil || pvc.Status.Phase != v1.ClaimPending {
		t.Errorf("claim small: %v %v, want Pending", pvc.Status.Phase, err)
	}
	if err := c.CoreV1().Pods(ns).Delete(ctx, "small", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "small", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Deleting the VolumeSnapshot (class deletionPolicy Delete) removes
	// its content and the copy on the host.
	mustKubectl(t, "-n", ns, "delete", "volumesnapshot", "snap", "--wait=false")
	waitFor(t, 2*time.Minute, "content "+content+" and the copy gone", func() (bool, string) {
		out, err := kubectl(t, "get", "volumesnapshotcontent", content)
		_, statErr := os.Stat(copyPath)
		return err != nil && strings.Contains(out, "NotFound") && os.IsNotExist(statErr), fmt.Sprintf("%s; copy: %v", strings.TrimSpace(out), statErr)
	})
	// The restored claim does not depend on the snapshot.
	if got := strings.TrimSpace(execOut(t, ns, "reader", "cat", "/data/note")); got != "restored" {
		t.Errorf("the restored claim's note after the snapshot went: %q", got)
	}
}

// A VolumeSnapshot of a claim that does not exist, and one of a claim of
// another class, get a status error saying so; neither becomes ready.
func TestEVSSnapshotBadInput(t *testing.T) {
	ns := namedNamespace(t, "evs-snap-bad")
	kubectlApply(t, volumeSnapshot(ns, "ghost", "nosuch", "cci-evs"))
	// The snapshot-controller's own words (v8.7.0): it does not name the
	// claim.
	waitFor(t, 2*time.Minute, "an error on VolumeSnapshot ghost", func() (bool, string) {
		msg := snapshotField(t, ns, "ghost", ".status.error.message")
		return strings.Contains(msg, "cannot get claim from snapshot"), msg
	})
	if ready := snapshotField(t, ns, "ghost", ".status.readyToUse"); ready == "true" {
		t.Errorf("VolumeSnapshot of a missing claim is ready")
	}

	// A bucket claim (cci-obs, bound at once) snapshotted with class cci-evs.
	createClaim(t, ns, evsClaim("bucket", "1Gi", "cci-obs", v1.ReadWriteMany))
	waitFor(t, 2*time.Minute, "claim bucket bound", func() (bool, string) {
		pvc, err := client(t).CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "bucket", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return pvc.Status.Phase == v1.ClaimBound, string(pvc.Status.Phase)
	})
	kubectlApply(t, volumeSnapshot(ns, "of-bucket", "bucket", "cci-evs"))
	waitFor(t, 2*time.Minute, "an error on VolumeSnapshot of-bucket", func() (bool, string) {
		msg := snapshotField(t, ns, "of-bucket", ".status.error.message")
		return strings.Contains(msg, "snapshots only claims of StorageClass cci-evs"), msg
	})
	// Without a class: no default class for the bucket's driver.
	kubectlApply(t, volumeSnapshot(ns, "of-bucket-default", "bucket", ""))
	waitFor(t, 2*time.Minute, "an error on VolumeSnapshot of-bucket-default", func() (bool, string) {
		msg := snapshotField(t, ns, "of-bucket-default", ".status.error.message")
		return strings.Contains(msg, "default snapshot class"), msg
	})
}
