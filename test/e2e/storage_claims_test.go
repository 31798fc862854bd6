package e2e

// Claims as upstream Kubernetes treats them, with CCI's words where
// upstream says little: a StorageClass that does not exist, a claim
// deleted while a pod uses it, a cci-sfs claim grown online.

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
)

// claimEvents are the reasons and messages of the events of claim name.
func claimEvents(t *testing.T, ns, name string) []string {
	t.Helper()
	evs, err := client(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",involvedObject.kind=PersistentVolumeClaim"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

// A claim naming a StorageClass that does not exist is accepted (as
// upstream: a volume made by hand may name the class) and stays Pending
// with a Warning event that names the classes there are. A claim of a
// class made by hand with no StorageClass object binds to its volume; a
// claim of another provisioner's class and a claim of no class get no
// such event.
func TestClaimUnknownClass(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	suffix := rand.String(5)
	ns := namedNamespace(t, "claim-class-"+suffix)
	other, manual := "other-"+suffix, "manual-"+suffix

	if _, err := c.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: other}, Provisioner: "example.com/not-cci",
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.StorageV1().StorageClasses().Delete(context.Background(), other, metav1.DeleteOptions{}) })
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "static-" + suffix},
		Spec: v1.PersistentVolumeSpec{
			StorageClassName:              manual,
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/tmp/cci-static-" + suffix}},
		},
	}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})

	createClaim(t, ns, evsClaim("plain", "16Mi", ""))
	createClaim(t, ns, evsClaim("other", "16Mi", other))
	createClaim(t, ns, evsClaim("static", "1Gi", manual))
	// A typo of the default class: accepted, Pending, and told.
	createClaim(t, ns, evsClaim("typo", "16Mi", "cci-evz"))

	if got := waitBound(t, ns, "static"); got != pv.Name {
		t.Errorf("claim static of class %s bound to %q, want the volume made by hand %s", manual, got, pv.Name)
	}
	waitFor(t, time.Minute, "a StorageClassNotFound event on claim typo", func() (bool, string) {
		for _, e := range claimEvents(t, ns, "typo") {
			if strings.HasPrefix(e, "StorageClassNotFound: ") {
				for _, want := range []string{`"cci-evz" does not exist`, "cci-evs (default)", "cci-obs", "cci-sfs", other} {
					if !strings.Contains(e, want) {
						return false, fmt.Sprintf("event %q does not name %q", e, want)
					}
				}
				return true, ""
			}
		}
		return false, strings.Join(claimEvents(t, ns, "typo"), "; ")
	})
	t.Logf("events of claim typo: %q", claimEvents(t, ns, "typo"))
	pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "typo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != v1.ClaimPending {
		t.Errorf("claim typo: phase %s, want Pending", pvc.Status.Phase)
	}
	plain, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "plain", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Spec.StorageClassName == nil || *plain.Spec.StorageClassName != "cci-evs" {
		t.Errorf("claim of no class: class %v, want the default cci-evs", plain.Spec.StorageClassName)
	}
	for _, name := range []string{"plain", "other", "static"} {
		for _, e := range claimEvents(t, ns, name) {
			if strings.HasPrefix(e, "StorageClassNotFound") {
				t.Errorf("claim %s of an existing class (or of a volume made by hand) was told: %s", name, e)
			}
		}
	}
}

// A claim deleted while a pod uses it stays, Terminating with the
// kubernetes.io/pvc-protection finalizer, and the pod keeps writing to
// it; when the pod goes, the claim goes, and its volume with it.
func TestClaimInUseProtected(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "claim-inuse-"+rand.String(4))
	createClaim(t, ns, evsClaim("disk", "16Mi", "cci-evs"))
	createPod(t, ns, claimPod("user", "", "disk", "echo before > /data/note; sleep 3600"))
	waitPodRunningIn(t, ns, "user", 2*time.Minute)
	pvName := waitBound(t, ns, "disk")

	if err := c.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "disk", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete the claim in use: %v", err)
	}
	// Still there a while later: Terminating, held by the finalizer.
	time.Sleep(5 * time.Second)
	pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "disk", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the claim in use went at once: %v", err)
	}
	if pvc.DeletionTimestamp == nil || !slices.Contains(pvc.Finalizers, "kubernetes.io/pvc-protection") || pvc.Status.Phase != v1.ClaimBound {
		t.Errorf("claim in use after its deletion: deletionTimestamp %v, finalizers %v, phase %s; want Terminating, kubernetes.io/pvc-protection, Bound",
			pvc.DeletionTimestamp, pvc.Finalizers, pvc.Status.Phase)
	}
	if out := mustKubectl(t, "-n", ns, "get", "pvc", "disk"); !strings.Contains(out, "Terminating") {
		t.Errorf("kubectl get pvc of the claim in use: want Terminating:\n%s", out)
	}
	execOut(t, ns, "user", "sh", "-c", "echo after >> /data/note && sync")
	if got := strings.TrimSpace(execOut(t, ns, "user", "cat", "/data/note")); got != "before\nafter" {
		t.Errorf("the pod's volume while its claim is Terminating: %q", got)
	}
	if _, err := c.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{}); err != nil {
		t.Errorf("volume %s of the claim in use: %v", pvName, err)
	}

	if err := c.CoreV1().Pods(ns).Delete(ctx, "user", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "claim disk gone with its pod", func() (bool, string) {
		_, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "disk", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	waitFor(t, 2*time.Minute, "volume "+pvName+" gone with its claim", func() (bool, string) {
		_, err := c.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// A cci-sfs claim grown with a patch: the volume grows online, the claim's
// status.capacity follows, and a file that did not fit before is written
// by the same running pod.
func TestSFSGrowsOnline(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	sc, err := c.StorageV1().StorageClasses().Get(ctx, "cci-sfs", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
		t.Errorf("StorageClass cci-sfs: allowVolumeExpansion %v, want true", sc.AllowVolumeExpansion)
	}
	ns := namedNamespace(t, "sfs-grow-"+rand.String(4))
	createClaim(t, ns, evsClaim("shared", "32Mi", "cci-sfs", v1.ReadWriteMany))
	pvName := waitBound(t, ns, "shared")
	createPod(t, ns, claimPod("writer", "runc", "shared", "sleep 3600"))
	before := waitPodRunningIn(t, ns, "writer", 2*time.Minute)

	dd := func() (string, bool) {
		out, err := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "-n", ns, "exec", "writer", "--",
			"sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=48 2>&1; echo rc=$?").CombinedOutput()
		if err != nil {
			t.Fatalf("exec dd: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out)), strings.Contains(string(out), "rc=0")
	}
	if out, ok := dd(); ok {
		t.Fatalf("48 MiB into a 32Mi cci-sfs volume succeeded:\n%s", out)
	}
	execOut(t, ns, "writer", "rm", "-f", "/data/big")

	patch := `{"spec":{"resources":{"requests":{"storage":"96Mi"}}}}`
	if _, err := c.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, "shared", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("grow the claim: %v", err)
	}
	waitFor(t, 2*time.Minute, "claim grown to 96Mi", func() (bool, string) {
		pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "shared", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		q := pvc.Status.Capacity[v1.ResourceStorage]
		return q.Cmp(resource.MustParse("96Mi")) == 0, "status capacity " + q.String()
	})
	pv, err := c.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if q := pv.Spec.Capacity[v1.ResourceStorage]; q.Cmp(resource.MustParse("96Mi")) != 0 {
		t.Errorf("volume %s after growing: capacity %s, want 96Mi", pvName, q.String())
	}
	if out, ok := dd(); !ok {
		t.Fatalf("48 MiB into the cci-sfs volume grown to 96Mi failed:\n%s", out)
	}
	if got := strings.TrimSpace(execOut(t, ns, "writer", "sh", "-c", "ls -l /data/big | awk '{print $5}'")); got != fmt.Sprint(48<<20) {
		t.Errorf("/data/big after growing: %s bytes, want %d", got, 48<<20)
	}
	now, err := c.CoreV1().Pods(ns).Get(ctx, "writer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now.Status.ContainerStatuses[0].ContainerID != before.Status.ContainerStatuses[0].ContainerID || now.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the pod's container changed while the volume grew")
	}
}
