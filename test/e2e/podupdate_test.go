package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/cci-project/cci/internal/testimage"
)

func getPod(t *testing.T, ns, name string) *v1.Pod {
	t.Helper()
	p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func updatePod(t *testing.T, ns, name string, f func(*v1.Pod)) {
	t.Helper()
	for range 20 {
		p := getPod(t, ns, name)
		f(p)
		_, err := client(t).CoreV1().Pods(ns).Update(context.Background(), p, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		t.Logf("update pod %s: %v", name, err)
	}
	t.Fatalf("update pod %s failed", name)
}

// TestPodGenerationAndDeadline: status.observedGeneration follows every
// spec update the node acts on, and an activeDeadlineSeconds set on a
// running pod fails it with DeadlineExceeded, as on a kubelet.
func TestPodGenerationAndDeadline(t *testing.T) {
	ns := testNamespace(t)
	createPod(t, ns, shellPod("gen", "", "sleep 3600"))
	waitRunning(t, ns, "app=gen", 1, 60*time.Second)
	waitGeneration := func(want int64) {
		t.Helper()
		waitFor(t, 20*time.Second, fmt.Sprintf("observedGeneration %d", want), func() (bool, string) {
			p := getPod(t, ns, "gen")
			return p.Generation == want && p.Status.ObservedGeneration == want, fmt.Sprintf("generation %d observed %d", p.Generation, p.Status.ObservedGeneration)
		})
	}
	waitGeneration(1)
	updatePod(t, ns, "gen", func(p *v1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, v1.Toleration{Key: "e2e", Operator: v1.TolerationOpEqual, Value: "x", Effect: v1.TaintEffectNoSchedule})
	})
	waitGeneration(2)
	for i := range 20 {
		updatePod(t, ns, "gen", func(p *v1.Pod) { p.Spec.ActiveDeadlineSeconds = ptr.To(int64(5000 - i)) })
	}
	waitGeneration(22)

	// The deadline, shortened below the time the pod has run.
	updatePod(t, ns, "gen", func(p *v1.Pod) { p.Spec.ActiveDeadlineSeconds = ptr.To(int64(5)) })
	waitFor(t, 60*time.Second, "the pod Failed with DeadlineExceeded", func() (bool, string) {
		p := getPod(t, ns, "gen")
		return p.Status.Phase == v1.PodFailed && p.Status.Reason == "DeadlineExceeded", fmt.Sprintf("phase %s reason %q", p.Status.Phase, p.Status.Reason)
	})
	if p := getPod(t, ns, "gen"); p.Status.Message != "Pod was active on the node longer than the specified deadline" || p.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Errorf("message %q, container %+v", p.Status.Message, p.Status.ContainerStatuses[0].State)
	}
}

// TestJobIgnoresEvictionDisruption: an evicted pod of a Job ends Failed
// with the DisruptionTarget condition the eviction set, so that a pod
// failure policy ignoring disruptions replaces it instead of failing the
// Job (backoffLimit 0).
func TestJobIgnoresEvictionDisruption(t *testing.T) {
	ns := testNamespace(t)
	dir, err := os.MkdirTemp("", "cci-e2e-evict-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	grace := int64(1)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "evicted"},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action:          batchv1.PodFailurePolicyActionIgnore,
				OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: v1.DisruptionTarget, Status: v1.ConditionTrue}},
			}}},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "evicted"}},
				Spec: v1.PodSpec{
					RestartPolicy:                 v1.RestartPolicyNever,
					TerminationGracePeriodSeconds: &grace,
					Containers: []v1.Container{{Name: "main", Image: image(testimage.Shell), Command: []string{"sh", "-c",
						"if [ -e /data/ran ]; then exit 0; fi; touch /data/ran; sleep 3600"},
						VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
					Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: dir}}}},
				},
			},
		},
	}
	if _, err := client(t).BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitRunning(t, ns, "app=evicted", 1, 60*time.Second)
	waitFor(t, 10*time.Second, "the marker file", func() (bool, string) {
		_, err := os.Stat(filepath.Join(dir, "ran"))
		return err == nil, fmt.Sprint(err)
	})
	if err := client(t).CoreV1().Pods(ns).EvictV1(context.Background(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pods[0].Name, Namespace: ns}}); err != nil {
		t.Fatalf("evict: %v", err)
	}
	waitFor(t, 90*time.Second, "the Job complete", func() (bool, string) {
		j, err := client(t).BatchV1().Jobs(ns).Get(context.Background(), "evicted", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		var conds []string
		for _, c := range j.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s (%s)", c.Type, c.Status, c.Reason))
			if c.Type == batchv1.JobFailed && c.Status == v1.ConditionTrue {
				t.Fatalf("the Job failed: %s", strings.Join(conds, ", "))
			}
			if c.Type == batchv1.JobComplete && c.Status == v1.ConditionTrue {
				return true, ""
			}
		}
		return false, strings.Join(conds, ", ")
	})
}

// TestInPlaceResize: the resize subresource changes a running container's
// cgroup in place (or restarts it where its resizePolicy says so), the
// status reports the new resources and clears the resize conditions; a
// resize the node has no room for is Deferred.
func TestInPlaceResize(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("rs", "", "trap exit TERM; while true; do sleep 1; done")
	p.Spec.Containers[0].Name = "c1"
	p.Spec.Containers[0].Resources = resources("20m", "30m", "35Mi", "45Mi")
	c2 := p.Spec.Containers[0]
	c2.Name = "c2"
	c2.ResizePolicy = []v1.ContainerResizePolicy{{ResourceName: v1.ResourceCPU, RestartPolicy: v1.NotRequired}, {ResourceName: v1.ResourceMemory, RestartPolicy: v1.RestartContainer}}
	p.Spec.Containers = append(p.Spec.Containers, c2)
	createPod(t, ns, p)
	waitRunning(t, ns, "app=rs", 1, 60*time.Second)

	resize := func(patch string) {
		t.Helper()
		if _, err := client(t).CoreV1().Pods(ns).Patch(context.Background(), "rs", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "resize"); err != nil {
			t.Fatalf("resize: %v", err)
		}
	}
	resize(`{"spec":{"containers":[` +
		`{"name":"c1","resources":{"requests":{"cpu":"25m","memory":"40Mi"},"limits":{"cpu":"35m","memory":"50Mi"}}},` +
		`{"name":"c2","resources":{"requests":{"cpu":"20m","memory":"40Mi"},"limits":{"cpu":"30m","memory":"50Mi"}}}]}}`)
	var got *v1.Pod
	waitFor(t, 60*time.Second, "the resize actuated", func() (bool, string) {
		got = getPod(t, ns, "rs")
		for _, c := range got.Status.Conditions {
			if c.Type == v1.PodResizePending || c.Type == v1.PodResizeInProgress {
				return false, fmt.Sprintf("%s %s %s", c.Type, c.Reason, c.Message)
			}
		}
		return got.Status.ObservedGeneration == got.Generation && podReady(got), fmt.Sprintf("generation %d observed %d ready %v", got.Generation, got.Status.ObservedGeneration, podReady(got))
	})
	for i, cs := range got.Status.ContainerStatuses {
		want := got.Spec.Containers[i].Resources
		if cs.Resources == nil || !resourcesEqual(*cs.Resources, want) || !listEqual(cs.AllocatedResources, want.Requests) {
			t.Errorf("%s: status resources %v allocated %v, want %v", cs.Name, cs.Resources, cs.AllocatedResources, want)
		}
		wantRestarts := int32(i) // c2 restarts for its memory change
		if cs.RestartCount != wantRestarts {
			t.Errorf("%s: %d restarts, want %d", cs.Name, cs.RestartCount, wantRestarts)
		}
		id := strings.TrimPrefix(cs.ContainerID, "containerd://")
		for file, want := range map[string]string{
			"cpu/cci/" + id + "/cpu.cfs_quota_us":         map[int]string{0: "3500", 1: "3000"}[i],
			"cpu/cci/" + id + "/cpu.shares":               map[int]string{0: "25", 1: "20"}[i],
			"memory/cci/" + id + "/memory.limit_in_bytes": fmt.Sprint(50 << 20),
		} {
			raw, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", file))
			if err != nil || strings.TrimSpace(string(raw)) != want {
				t.Errorf("%s: %s = %q (%v), want %s", cs.Name, file, raw, err, want)
			}
		}
	}

	// The kubelet's events, with its messages.
	waitFor(t, 10*time.Second, "ResizeStarted and ResizeCompleted events", func() (bool, string) {
		evs, err := client(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=rs"})
		if err != nil {
			return false, err.Error()
		}
		seen := map[string]bool{}
		var all []string
		for _, e := range evs.Items {
			all = append(all, e.Reason+": "+e.Message)
			seen[e.Reason] = seen[e.Reason] || strings.HasPrefix(e.Message, "Pod resize ")
		}
		return seen["ResizeStarted"] && seen["ResizeCompleted"], strings.Join(all, "\n")
	})

	// More CPU than the node has beside another pod: Deferred, with the
	// kubelet's message, until that pod is gone.
	hog := shellPod("hog", "", "sleep 3600")
	hog.Spec.Containers[0].Resources = v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("1500m")}}
	createPod(t, ns, hog)
	waitRunning(t, ns, "app=hog", 1, 60*time.Second)
	resize(`{"spec":{"containers":[{"name":"c1","resources":{"requests":{"cpu":"600m"},"limits":{"cpu":"600m"}}}]}}`)
	waitFor(t, 30*time.Second, "PodResizePending Deferred", func() (bool, string) {
		got = getPod(t, ns, "rs")
		for _, c := range got.Status.Conditions {
			if c.Type == v1.PodResizePending {
				return c.Reason == v1.PodReasonDeferred && strings.HasPrefix(c.Message, "Node didn't have enough resource: cpu, requested: ") && c.ObservedGeneration == got.Generation, fmt.Sprintf("%+v", c)
			}
		}
		return false, fmt.Sprintf("%+v", got.Status.Conditions)
	})
	if cs := got.Status.ContainerStatuses[0]; cs.AllocatedResources.Cpu().String() != "25m" {
		t.Errorf("allocated %v while the resize is deferred, want 25m", cs.AllocatedResources)
	}
	mustKubectl(t, "-n", ns, "delete", "pod", "hog", "--wait=false")
	waitFor(t, 60*time.Second, "the deferred resize actuated", func() (bool, string) {
		got = getPod(t, ns, "rs")
		for _, c := range got.Status.Conditions {
			if c.Type == v1.PodResizePending || c.Type == v1.PodResizeInProgress {
				return false, fmt.Sprintf("%s %s %s", c.Type, c.Reason, c.Message)
			}
		}
		cs := got.Status.ContainerStatuses[0]
		return cs.AllocatedResources.Cpu().String() == "600m" && cs.Resources.Limits.Cpu().String() == "600m", fmt.Sprintf("%v", cs.Resources)
	})
}

func resources(cpuReq, cpuLim, memReq, memLim string) v1.ResourceRequirements {
	r := v1.ResourceRequirements{Requests: v1.ResourceList{}, Limits: v1.ResourceList{}}
	r.Requests[v1.ResourceCPU] = resource.MustParse(cpuReq)
	r.Limits[v1.ResourceCPU] = resource.MustParse(cpuLim)
	r.Requests[v1.ResourceMemory] = resource.MustParse(memReq)
	r.Limits[v1.ResourceMemory] = resource.MustParse(memLim)
	return r
}

func listEqual(a, b v1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, q := range a {
		if o, ok := b[k]; !ok || o.Cmp(q) != 0 {
			return false
		}
	}
	return true
}

func resourcesEqual(a, b v1.ResourceRequirements) bool {
	return listEqual(a.Requests, b.Requests) && listEqual(a.Limits, b.Limits)
}
