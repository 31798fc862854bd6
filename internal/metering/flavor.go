package metering

import (
	"fmt"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/cci-project/cci/internal/flavor"
)

// TenantLabel on a namespace names the tenant its pods are billed to.
const TenantLabel = "cci.io/tenant"

// GPUResource is the extended resource billed as GPU-seconds.
const GPUResource = flavor.GPUResource

// Flavor is what a pod is billed for per second, in the records' units
// (the table and the counting are internal/flavor's).
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

// FlavorOf is a pod's billed flavor: flavor.Of with each container read as
// flavor.Billed (limits, else requests, else the default 0.25 CPU / 0.5
// GiB, so that a pod admitted before the policy existed is billed like
// one admitted after). The GPUs are those the pod reserves, which the
// host agent gives it whole, one device each, or refuses the pod.
func FlavorOf(spec *v1.PodSpec) Flavor {
	f := flavor.Of(spec, flavor.Billed)
	return Flavor{MilliCPU: f.MilliCPU, MemoryMiB: f.Memory / flavor.MiB, GPU: f.GPU}
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
