package runtime

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func resources(cpuReq, cpuLim, memReq, memLim string) v1.ResourceRequirements {
	var r v1.ResourceRequirements
	set := func(l *v1.ResourceList, name v1.ResourceName, v string) {
		if v == "" {
			return
		}
		if *l == nil {
			*l = v1.ResourceList{}
		}
		(*l)[name] = resource.MustParse(v)
	}
	set(&r.Requests, v1.ResourceCPU, cpuReq)
	set(&r.Limits, v1.ResourceCPU, cpuLim)
	set(&r.Requests, v1.ResourceMemory, memReq)
	set(&r.Limits, v1.ResourceMemory, memLim)
	return r
}

func TestResizeRestarts(t *testing.T) {
	restartMem := []v1.ContainerResizePolicy{{ResourceName: v1.ResourceCPU, RestartPolicy: v1.NotRequired}, {ResourceName: v1.ResourceMemory, RestartPolicy: v1.RestartContainer}}
	for _, tc := range []struct {
		name     string
		policy   []v1.ContainerResizePolicy
		from, to v1.ResourceRequirements
		want     v1.ResourceName
	}{
		{"cpu, no policy", nil, resources("20m", "30m", "", ""), resources("25m", "35m", "", ""), ""},
		{"cpu under a memory restart policy", restartMem, resources("20m", "30m", "35Mi", "45Mi"), resources("25m", "35m", "35Mi", "45Mi"), ""},
		{"memory under a memory restart policy", restartMem, resources("20m", "30m", "35Mi", "45Mi"), resources("20m", "30m", "40Mi", "45Mi"), v1.ResourceMemory},
		{"equivalent quantities", restartMem, resources("", "", "", "1Gi"), resources("", "", "", "1024Mi"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &v1.Container{Name: "c", ResizePolicy: tc.policy, Resources: tc.to}
			if got := resizeRestarts(c, &tc.from); got != tc.want {
				t.Errorf("resizeRestarts = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLinuxResources(t *testing.T) {
	for _, tc := range []struct {
		name          string
		res           v1.ResourceRequirements
		quota, memory int64
		shares        uint64
	}{
		{"limits", resources("20m", "35m", "35Mi", "50Mi"), 3500, 50 << 20, 20},
		{"requests only: unlimited", resources("500m", "", "35Mi", ""), -1, -1, 512},
		{"nothing", resources("", "", "", ""), -1, -1, 2},
		// The kubelet's floors: a 1 ms quota, 2 shares.
		{"tiny", resources("1m", "5m", "", ""), 1000, -1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := linuxResources(tc.res)
			if *l.CPU.Quota != tc.quota || *l.CPU.Shares != tc.shares || *l.Memory.Limit != tc.memory || *l.CPU.Period != 100000 {
				t.Errorf("quota %d shares %d memory %d period %d; want %d %d %d 100000", *l.CPU.Quota, *l.CPU.Shares, *l.Memory.Limit, *l.CPU.Period, tc.quota, tc.shares, tc.memory)
			}
		})
	}
}

// A new spec keeps the allocated resources in the record until the resize
// is admitted; the status reports the allocated and the actuated ones.
func TestTakeSpecAndResizeStatus(t *testing.T) {
	pod := testPod()
	pod.Generation = 1
	pod.Spec.Containers[0].Resources = resources("20m", "30m", "35Mi", "45Mi")
	rec := newRecord(pod)
	cr := rec.Containers[0]
	cr.Started, cr.Live = true, true
	cr.State = v1.ContainerState{Running: &v1.ContainerStateRunning{}}
	cr.Resources = pod.Spec.Containers[0].Resources.DeepCopy()

	resized := pod.DeepCopy()
	resized.Generation = 2
	resized.Spec.Containers[0].Resources = resources("25m", "35m", "35Mi", "45Mi")
	rec.takeSpec(resized)
	if rec.Desired == nil || rec.Pod.Spec.Containers[0].Resources.Requests.Cpu().String() != "20m" || rec.Pod.Generation != 2 {
		t.Fatalf("desired %v, spec resources %v, generation %d: want the new resources desired, the old ones in the spec", rec.Desired, rec.Pod.Spec.Containers[0].Resources, rec.Pod.Generation)
	}
	rec.ResizePending = &v1.PodCondition{Type: v1.PodResizePending, Status: v1.ConditionTrue, Reason: v1.PodReasonDeferred}
	p := buildPod(rec, "", time.Now())
	cs := p.Status.ContainerStatuses[0]
	if cs.Resources == nil || cs.Resources.Limits.Cpu().String() != "30m" || cs.AllocatedResources.Cpu().String() != "20m" {
		t.Errorf("status resources %v allocated %v: want the allocated ones", cs.Resources, cs.AllocatedResources)
	}
	if condition(p, v1.PodResizePending) != v1.ConditionTrue || p.Status.ObservedGeneration != 2 {
		t.Errorf("conditions %+v, observedGeneration %d", p.Status.Conditions, p.Status.ObservedGeneration)
	}

	// Admitted, not yet actuated: allocated is new, resources old.
	rec.takeSpec(resized)
	rec.Allocated, rec.Desired, rec.ResizePending = rec.Desired, nil, nil
	rec.Pod = withResources(rec.Pod, rec.Allocated)
	p = buildPod(rec, "", time.Now())
	cs = p.Status.ContainerStatuses[0]
	if cs.AllocatedResources.Cpu().String() != "25m" || cs.Resources.Requests.Cpu().String() != "20m" {
		t.Errorf("status resources %v allocated %v: want 20m actuated, 25m allocated", cs.Resources, cs.AllocatedResources)
	}

	// The same spec again: nothing desired.
	rec.takeSpec(resized)
	if rec.Desired != nil {
		t.Errorf("desired %v after the allocated spec came again", rec.Desired)
	}
}

func TestAdmitResize(t *testing.T) {
	r := &Runtime{pods: map[string]*podWorker{}, cfg: Config{Allocatable: v1.ResourceList{v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("1Gi")}}}
	other := testPod()
	other.Name, other.UID = "other", "uid-other"
	other.Spec.Containers[0].Resources = resources("1500m", "", "100Mi", "")
	r.pods["ns/other"] = &podWorker{rec: newRecord(other)}
	self := &podWorker{rec: newRecord(testPod())}
	for _, tc := range []struct {
		name, handler   string
		res             v1.ResourceRequirements
		reason, message string
	}{
		{"fits", handlerRunc, resources("400m", "", "100Mi", ""), "", ""},
		{"cpu does not fit", handlerRunc, resources("600m", "", "100Mi", ""), v1.PodReasonDeferred, "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"},
		{"gvisor", handlerGVisor, resources("100m", "", "", ""), v1.PodReasonInfeasible, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod()
			p.Spec.Containers[0].Resources = tc.res
			reason, msg := r.admitResize(self, p, tc.handler)
			if reason != tc.reason || (tc.message != "" && msg != tc.message) {
				t.Errorf("admitResize = %q, %q; want %q, %q", reason, msg, tc.reason, tc.message)
			}
		})
	}
}
