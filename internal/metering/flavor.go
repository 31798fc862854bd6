package metering

import (
	"fmt"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TenantLabel on a namespace names the tenant its pods are billed to.
const TenantLabel = "cci.io/tenant"

// GPUResource is the extended resource billed as GPU-seconds.
const GPUResource v1.ResourceName = "nvidia.com/gpu"

// The flavor admission gives a container that names neither requests nor
// limits (0.25 CPU / 0.5 GiB); the meter assumes the same so that a pod
// admitted before the policy existed is billed like one admitted after.
const (
	defaultMilliCPU  = 250
	defaultMemoryMiB = 512
)

// Flavor is what a pod is billed for per second.
type Flavor struct {
	MilliCPU  int64 `json:"milliCPU"`
	MemoryMiB int64 `json:"memoryMiB"`
	GPU       int64 `json:"gpu,omitempty"`
}

func (f Flavor) String() string {
	s := fmt.Sprintf("%sC/%sG", strconv.FormatFloat(float64(f.MilliCPU)/1000, 'f', -1, 64), strconv.FormatFloat(float64(f.MemoryMiB)/1024, 'f', -1, 64))
	if f.GPU > 0 {
		s += fmt.Sprintf("/%dGPU", f.GPU)
	}
	return s
}

func (f Flavor) add(o Flavor) Flavor {
	return Flavor{f.MilliCPU + o.MilliCPU, f.MemoryMiB + o.MemoryMiB, f.GPU + o.GPU}
}

func (f Flavor) max(o Flavor) Flavor {
	return Flavor{max(f.MilliCPU, o.MilliCPU), max(f.MemoryMiB, o.MemoryMiB), max(f.GPU, o.GPU)}
}

// containerFlavor reads one container's resources: limits, else requests,
// else the default flavor.
func containerFlavor(r v1.ResourceRequirements) Flavor {
	get := func(name v1.ResourceName) (resource.Quantity, bool) {
		if q, ok := r.Limits[name]; ok {
			return q, true
		}
		q, ok := r.Requests[name]
		return q, ok
	}
	f := Flavor{MilliCPU: defaultMilliCPU, MemoryMiB: defaultMemoryMiB}
	if q, ok := get(v1.ResourceCPU); ok {
		f.MilliCPU = q.MilliValue()
	}
	if q, ok := get(v1.ResourceMemory); ok {
		f.MemoryMiB = (q.Value() + (1<<20 - 1)) >> 20 // whole MiB, rounded up
	}
	if q, ok := get(GPUResource); ok {
		f.GPU = q.Value()
	}
	return f
}

// FlavorOf is a pod's billed flavor, computed the way the scheduler sizes a
// pod: the larger of its app containers (with sidecars) together and of each
// init container (with the sidecars started before it).
func FlavorOf(spec *v1.PodSpec) Flavor {
	var apps, sidecars, initPeak Flavor
	for _, c := range spec.InitContainers {
		f := containerFlavor(c.Resources)
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			sidecars = sidecars.add(f)
			continue
		}
		initPeak = initPeak.max(f.add(sidecars))
	}
	for _, c := range spec.Containers {
		apps = apps.add(containerFlavor(c.Resources))
	}
	return apps.add(sidecars).max(initPeak)
}

// podInterval is the interval a pod is billed for, seen at now: from its
// startTime to its last container's finish once it is terminal, else to now
// (open). ok is false for a pod that never started.
func podInterval(p *v1.Pod, now time.Time) (iv Interval, open, ok bool) {
	if p.Status.StartTime == nil {
		return Interval{}, false, false
	}
	iv.Start = second(p.Status.StartTime.Time)
	if p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
		iv.End = lastFinish(p)
		if iv.End.IsZero() {
			iv.End = lastTransition(p)
		}
		if iv.End.IsZero() {
			iv.End = second(now)
		}
	} else {
		iv.End, open = second(now), true
	}
	if iv.End.Before(iv.Start) {
		iv.End = iv.Start
	}
	return iv, open, true
}

// vanishedInterval is the interval of a pod whose API object is gone, from
// its last known state: closed at its containers' last finish when all had
// stopped, else at now, when the meter saw it go.
func vanishedInterval(p *v1.Pod, now time.Time) (Interval, bool) {
	iv, open, ok := podInterval(p, now)
	if !ok || !open {
		return iv, ok
	}
	if end := lastFinish(p); !end.IsZero() && allTerminated(p) && !end.Before(iv.Start) {
		iv.End = end
	}
	return iv, true
}

func allStatuses(p *v1.Pod) []v1.ContainerStatus {
	out := append([]v1.ContainerStatus{}, p.Status.InitContainerStatuses...)
	return append(out, p.Status.ContainerStatuses...)
}

// lastFinish is the latest finishedAt of the pod's terminated containers.
func lastFinish(p *v1.Pod) time.Time {
	var end time.Time
	for _, s := range allStatuses(p) {
		if t := s.State.Terminated; t != nil && t.FinishedAt.After(end) {
			end = second(t.FinishedAt.Time)
		}
	}
	return end
}

func allTerminated(p *v1.Pod) bool {
	if len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Terminated == nil {
			return false
		}
	}
	return true
}

func lastTransition(p *v1.Pod) time.Time {
	var end time.Time
	for _, c := range p.Status.Conditions {
		if c.LastTransitionTime.After(end) {
			end = second(c.LastTransitionTime.Time)
		}
	}
	return end
}
