package e2e

// cci-evs: disks of exactly the claimed size on the host of the claim's
// first pod (internal/evs), through ordinary PersistentVolumeClaims.

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cci-project/cci/internal/testimage"
)

// evsClaim is a claim of size on cci-evs (named, or the default class
// when class is "").
func evsClaim(name, size, class string, modes ...v1.PersistentVolumeAccessMode) *v1.PersistentVolumeClaim {
	if len(modes) == 0 {
		modes = []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
	}
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: modes,
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	if class != "" {
		pvc.Spec.StorageClassName = &class
	}
	return pvc
}

// claimPod is a shell pod running script with claim mounted at /data.
func claimPod(name, rc, claim, script string) *v1.Pod {
	p := shellPod(name, rc, script)
	p.Spec.Volumes = []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
		PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
	}}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "data", MountPath: "/data"}}
	return p
}

func createClaim(t *testing.T, ns string, pvc *v1.PersistentVolumeClaim) {
	t.Helper()
	if _, err := client(t).CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create claim %s: %v", pvc.Name, err)
	}
}

func waitPodRunningIn(t *testing.T, ns, name string, timeout time.Duration) *v1.Pod {
	t.Helper()
	var p *v1.Pod
	waitFor(t, timeout, "pod "+ns+"/"+name+" running", func() (bool, string) {
		var err error
		p, err = client(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == v1.PodRunning && podReady(p), fmt.Sprintf("%s %s", p.Status.Phase, p.Status.Message)
	})
	return p
}

// dfKiB is the size of the file system at dir in the pod, in KiB.
func dfKiB(t *testing.T, ns, pod, dir string) int64 {
	t.Helper()
	out := execOut(t, ns, pod, "df", "-k", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 2 {
		t.Fatalf("df -k %s: %q", dir, out)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("df -k %s: %q: %v", dir, out, err)
	}
	return n
}

// A StatefulSet's replicas each get their own disk; deleted and made
// again, they find what they wrote. The disks go with their claims.
func TestEVSStatefulSetKeepsData(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "evs-sts")
	out := mustKubectl(t, "get", "storageclass")
	if !strings.Contains(out, "cci-evs (default)") {
		t.Fatalf("cci-evs is not the default StorageClass:\n%s", out)
	}
	replicas := int32(2)
	zero := int64(1)
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    &replicas,
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			ServiceName: "db",
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec: v1.PodSpec{
					TerminationGracePeriodSeconds: &zero,
					Containers: []v1.Container{{
						Name: "main", Image: image(testimage.Shell),
						// Each start appends a line: two after a re-creation.
						Command:      []string{"sh", "-c", "echo $(hostname) >> /data/starts; sleep 3600"},
						VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
					}},
				},
			},
			// No class named: the default, cci-evs.
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{*evsClaim("data", "64Mi", "")},
		},
	}
	if _, err := c.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "app=db", 2, 3*time.Minute)
	for _, pod := range []string{"db-0", "db-1"} {
		if got := strings.TrimSpace(execOut(t, ns, pod, "cat", "/data/starts")); got != pod {
			t.Errorf("%s: /data/starts = %q, want %q", pod, got, pod)
		}
		// A disk of the claimed size, not the host's file system.
		if kib := dfKiB(t, ns, pod, "/data"); kib > 64*1024 || kib < 40*1024 {
			t.Errorf("%s: /data is %d KiB, want a file system of about 64 MiB", pod, kib)
		}
	}
	pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-db-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "cci-evs" {
		t.Errorf("claim's class: %v, want cci-evs", pvc.Spec.StorageClassName)
	}
	pv, err := c.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod0, err := c.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if na := pv.Spec.NodeAffinity; na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) != 1 ||
		fmt.Sprint(na.Required.NodeSelectorTerms[0].MatchExpressions[0].Values) != "["+pod0.Spec.NodeName+"]" {
		t.Errorf("volume %s: node affinity %+v, want the pod's host %s", pv.Name, pv.Spec.NodeAffinity, pod0.Spec.NodeName)
	}
	if q := pv.Spec.Capacity[v1.ResourceStorage]; q.Cmp(resource.MustParse("64Mi")) != 0 {
		t.Errorf("volume %s: capacity %s, want 64Mi", pv.Name, q.String())
	}

	// Deleted with its pods, made again: each replica finds its disk.
	if err := c.AppsV1().StatefulSets(ns).Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the StatefulSet's pods gone", func() (bool, string) {
		n := len(listPods(t, ns, "app=db"))
		return n == 0, fmt.Sprintf("%d pods", n)
	})
	sts.ResourceVersion = ""
	if _, err := c.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "app=db", 2, 3*time.Minute)
	for _, pod := range []string{"db-0", "db-1"} {
		if got := strings.TrimSpace(execOut(t, ns, pod, "cat", "/data/starts")); got != pod+"\n"+pod {
			t.Errorf("%s after re-creation: /data/starts = %q, want two lines %q", pod, got, pod)
		}
	}

	// Claims deleted (reclaim policy Delete): their volumes and disks go.
	if err := c.AppsV1().StatefulSets(ns).Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().PersistentVolumeClaims(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "volume "+pv.Name+" deleted", func() (bool, string) {
		_, err := c.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		return err != nil, fmt.Sprint(err)
	})
	if out, _ := exec.Command("losetup", "--list", "--noheadings", "--output", "BACK-FILE").Output(); strings.Contains(string(out), pv.Name) {
		t.Errorf("loop device of volume %s still attached after its deletion:\n%s", pv.Name, out)
	}
}

// Writing past the claimed size fails with ENOSPC; the claim grown
// online, the same write succeeds in the same running pod.
func TestEVSFullThenExpanded(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "evs-grow")
	createClaim(t, ns, evsClaim("disk", "64Mi", "cci-evs"))
	createPod(t, ns, claimPod("writer", "", "disk", "sleep 3600"))
	p := waitPodRunningIn(t, ns, "writer", 2*time.Minute)

	write := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "-n", ns, "exec", "writer", "--",
		"dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=100")
	out, err := write.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left on device") {
		t.Fatalf("100 MiB into a 64 MiB disk: want ENOSPC, got err %v:\n%s", err, out)
	}
	execOut(t, ns, "writer", "rm", "/data/big")

	patch := `{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`
	if _, err := c.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, "disk", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("grow the claim: %v", err)
	}
	waitFor(t, 2*time.Minute, "claim grown to 128Mi", func() (bool, string) {
		pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "disk", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		q := pvc.Status.Capacity[v1.ResourceStorage]
		return q.Cmp(resource.MustParse("128Mi")) == 0, "status capacity " + q.String()
	})
	if kib := dfKiB(t, ns, "writer", "/data"); kib < 110*1024 || kib > 128*1024 {
		t.Errorf("/data after growing: %d KiB, want about 128 MiB", kib)
	}
	execOut(t, ns, "writer", "dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=100")
	if got := strings.TrimSpace(execOut(t, ns, "writer", "sh", "-c", "ls -l /data/big | awk '{print $5}'")); got != strconv.Itoa(100<<20) {
		t.Errorf("/data/big after growing: %s bytes, want %d", got, 100<<20)
	}
	// The same pod, never restarted: the growth was online.
	now, err := c.CoreV1().Pods(ns).Get(ctx, "writer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now.Status.ContainerStatuses[0].ContainerID != p.Status.ContainerStatuses[0].ContainerID || now.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the pod's container changed while the volume grew: %s -> %s", p.Status.ContainerStatuses[0].ContainerID, now.Status.ContainerStatuses[0].ContainerID)
	}
}

// A claim no host can hold stays Pending and says why; one that asks
// cci-evs for ReadWriteMany is refused, naming the class to use.
func TestEVSBadInput(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "evs-bad")

	rwx := evsClaim("shared", "1Gi", "cci-evs", v1.ReadWriteMany)
	_, err := c.CoreV1().PersistentVolumeClaims(ns).Create(ctx, rwx, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "cci-sfs") || !strings.Contains(err.Error(), "ReadWriteOnce") {
		t.Errorf("ReadWriteMany claim of cci-evs: want a refusal naming ReadWriteOnce and cci-sfs, got %v", err)
	}
	// Without a class: the default (cci-evs) is named before the check.
	rwx.Spec.StorageClassName = nil
	if _, err := c.CoreV1().PersistentVolumeClaims(ns).Create(ctx, rwx, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "cci-sfs") {
		t.Errorf("ReadWriteMany claim of the default class: want a refusal naming cci-sfs, got %v", err)
	}

	createClaim(t, ns, evsClaim("huge", "100Ti", "cci-evs"))
	createPod(t, ns, claimPod("huge", "", "huge", "sleep 3600"))
	waitFor(t, 2*time.Minute, "a ProvisioningFailed event on claim huge", func() (bool, string) {
		evs, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=huge,involvedObject.kind=PersistentVolumeClaim"})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Reason == "ProvisioningFailed" && strings.Contains(e.Message, "100Ti") && strings.Contains(e.Message, "free") {
				return true, ""
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return false, strings.Join(seen, "; ")
	})
	pvc, err := c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "huge", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != v1.ClaimPending {
		t.Errorf("claim huge: phase %s, want Pending", pvc.Status.Phase)
	}
}

// The agent restarted (with the whole `cci up`) while a pod writes to its
// disk: the pod keeps running, its mount still works, and it is not
// remounted or restarted.
func TestEVSSurvivesAgentRestart(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "evs-restart")
	createClaim(t, ns, evsClaim("disk", "64Mi", "cci-evs"))
	createPod(t, ns, claimPod("keeper", "", "disk", "echo before > /data/note; sleep 3600"))
	before := waitPodRunningIn(t, ns, "keeper", 2*time.Minute)
	waitFor(t, time.Minute, "the pod's note written", func() (bool, string) {
		out, err := kubectl(t, "-n", ns, "exec", "keeper", "--", "cat", "/data/note")
		return err == nil && strings.TrimSpace(out) == "before", out
	})

	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	after := waitPodRunningIn(t, ns, "keeper", 2*time.Minute)
	if after.Status.ContainerStatuses[0].ContainerID != before.Status.ContainerStatuses[0].ContainerID {
		t.Errorf("the pod's container changed across the restart: %s -> %s", before.Status.ContainerStatuses[0].ContainerID, after.Status.ContainerStatuses[0].ContainerID)
	}
	if got := strings.TrimSpace(execOut(t, ns, "keeper", "cat", "/data/note")); got != "before" {
		t.Errorf("/data/note after the restart: %q", got)
	}
	execOut(t, ns, "keeper", "sh", "-c", "echo after >> /data/note && sync")
	if got := strings.TrimSpace(execOut(t, ns, "keeper", "cat", "/data/note")); got != "before\nafter" {
		t.Errorf("/data/note after writing past the restart: %q", got)
	}
	// A second pod after the restart: the new agent stages and publishes too.
	if err := c.CoreV1().Pods(ns).Delete(ctx, "keeper", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "pod keeper gone", func() (bool, string) {
		_, err := c.CoreV1().Pods(ns).Get(ctx, "keeper", metav1.GetOptions{})
		return err != nil, fmt.Sprint(err)
	})
	createPod(t, ns, claimPod("reader", "", "disk", "sleep 3600"))
	waitPodRunningIn(t, ns, "reader", 2*time.Minute)
	if got := strings.TrimSpace(execOut(t, ns, "reader", "cat", "/data/note")); got != "before\nafter" {
		t.Errorf("/data/note in a new pod: %q", got)
	}
}

// A claim of volumeMode Block hands the pod the disk itself, of the
// claimed size, at the path its volumeDevices name; what is written on it
// stays for the next pod.
func TestEVSBlockVolume(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "evs-block")
	pvc := evsClaim("raw", "16Mi", "cci-evs")
	block := v1.PersistentVolumeBlock
	pvc.Spec.VolumeMode = &block
	createClaim(t, ns, pvc)
	rawPod := func(name string) *v1.Pod {
		p := shellPod(name, "", "sleep 3600")
		p.Spec.Volumes = []v1.Volume{{Name: "raw", VolumeSource: v1.VolumeSource{
			PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "raw"},
		}}}
		p.Spec.Containers[0].VolumeDevices = []v1.VolumeDevice{{Name: "raw", DevicePath: "/dev/xvdb"}}
		return p
	}
	createPod(t, ns, rawPod("first"))
	waitPodRunningIn(t, ns, "first", 2*time.Minute)
	if got := strings.TrimSpace(execOut(t, ns, "first", "sh", "-c", "wc -c < /dev/xvdb")); got != strconv.Itoa(16<<20) {
		t.Errorf("/dev/xvdb: %s bytes, want %d", got, 16<<20)
	}
	execOut(t, ns, "first", "sh", "-c", "echo on-the-disk | dd of=/dev/xvdb conv=fsync 2>/dev/null")
	if err := c.CoreV1().Pods(ns).Delete(ctx, "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "pod first gone", func() (bool, string) {
		_, err := c.CoreV1().Pods(ns).Get(ctx, "first", metav1.GetOptions{})
		return err != nil, fmt.Sprint(err)
	})
	createPod(t, ns, rawPod("second"))
	waitPodRunningIn(t, ns, "second", 2*time.Minute)
	if got := strings.TrimSpace(execOut(t, ns, "second", "sh", "-c", "dd if=/dev/xvdb bs=12 count=1 2>/dev/null")); got != "on-the-disk" {
		t.Errorf("the disk's first bytes in the next pod: %q, want %q", got, "on-the-disk")
	}
}

// A gVisor pod (the default of tenants' pods) gets its disk too: the size
// holds inside the sandbox, and what it wrote is there for a runc pod.
func TestEVSGVisorPod(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "evs-gvisor")
	createClaim(t, ns, evsClaim("disk", "32Mi", "cci-evs"))
	createPod(t, ns, claimPod("sandboxed", "gvisor", "disk", "echo from-gvisor > /data/note; sleep 3600"))
	waitPodRunningIn(t, ns, "sandboxed", 2*time.Minute)
	write := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "-n", ns, "exec", "sandboxed", "--",
		"dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=64")
	out, err := write.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left on device") {
		t.Fatalf("64 MiB into a 32 MiB disk under gVisor: want ENOSPC, got err %v:\n%s", err, out)
	}
	if err := c.CoreV1().Pods(ns).Delete(ctx, "sandboxed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "pod sandboxed gone", func() (bool, string) {
		_, err := c.CoreV1().Pods(ns).Get(ctx, "sandboxed", metav1.GetOptions{})
		return err != nil, fmt.Sprint(err)
	})
	createPod(t, ns, claimPod("plain", "", "disk", "sleep 3600"))
	waitPodRunningIn(t, ns, "plain", 2*time.Minute)
	if got := strings.TrimSpace(execOut(t, ns, "plain", "cat", "/data/note")); got != "from-gvisor" {
		t.Errorf("/data/note written under gVisor, read by a runc pod: %q", got)
	}
}

// A tenant's claims count against its quota's storage.
func TestEVSTenantQuota(t *testing.T) {
	_, kc := createTenant(t, "tsq", "--quota", "storage=100Mi")
	claim := func(name string) (string, error) {
		return tenantKubectl(t, kc, `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: `+name+`}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
`, "create", "-f", "-")
	}
	if out, err := claim("first"); err != nil {
		t.Fatalf("first claim within the quota: %v\n%s", err, out)
	}
	out, err := claim("second")
	wantRefused(t, "claim over the storage quota", out, err, "Forbidden", "exceeded quota", "requests.storage=100Mi")
}
