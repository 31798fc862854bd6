package runtime

import (
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"
	kubeevents "k8s.io/kubernetes/pkg/kubelet/events"
)

// In-place resize, as the kubelet's allocation manager and status manager
// do it (pkg/kubelet/allocation, pkg/kubelet/status):
//
//	spec resources changed (resize subresource)
//	    ──► admitted?  no ──► PodResizePending (Deferred: the node's free
//	         │                resources do not fit; Infeasible: never)
//	         yes ──► allocated = desired, PodResizeInProgress
//	    ──► each running container: cgroup updated in place (task.Update),
//	        or restarted where its resizePolicy says RestartContainer
//	    ──► all actuated ──► PodResizeInProgress cleared
//
// The record's pod spec always carries the allocated resources (the
// kubelet's UpdatePodFromAllocation): containers start with them and the
// status reports them; what the API asks for and is not admitted yet waits
// in the record's Desired.

// containerResources maps every container of the pod to its resources.
func containerResources(pod *v1.Pod) map[string]v1.ResourceRequirements {
	out := map[string]v1.ResourceRequirements{}
	for _, c := range pod.Spec.InitContainers {
		out[c.Name] = *c.Resources.DeepCopy()
	}
	for _, c := range pod.Spec.Containers {
		out[c.Name] = *c.Resources.DeepCopy()
	}
	return out
}

// withResources returns a copy of pod whose containers have the given
// resources (those it names).
func withResources(pod *v1.Pod, res map[string]v1.ResourceRequirements) *v1.Pod {
	p := pod.DeepCopy()
	for _, cs := range [][]v1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			if r, ok := res[cs[i].Name]; ok {
				cs[i].Resources = *r.DeepCopy()
			}
		}
	}
	return p
}

// takeSpec makes pod the record's spec, keeping the allocated resources;
// different resources it asks for become the desired ones. The caller
// holds mu.
func (rec *podRecord) takeSpec(pod *v1.Pod) {
	if rec.Allocated == nil {
		rec.Allocated = containerResources(rec.Pod)
	}
	desired := containerResources(pod)
	rec.Desired = nil
	if !equality.Semantic.DeepEqual(desired, rec.Allocated) {
		rec.Desired = desired
	}
	rec.Pod = withResources(pod, rec.Allocated)
}

// admitResize decides whether the node can give the pod (with its desired
// resources) what it asks: the reason and message of a PodResizePending
// condition, or "" when it can.
func (r *Runtime) admitResize(w *podWorker, pod *v1.Pod, handler string) (reason, message string) {
	if handler == handlerGVisor {
		// The pod's containers share one gVisor sandbox whose cgroup
		// is sized once, when the sandbox starts.
		return v1.PodReasonInfeasible, "In-place resize is not supported for pods of the gvisor runtime handler: recreate the pod with the new resources"
	}
	if len(r.cfg.Allocatable) == 0 {
		return "", ""
	}
	requested := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	used := v1.ResourceList{}
	r.mu.Lock()
	others := r.activePods(pod)
	r.mu.Unlock()
	for _, p := range others {
		for name, q := range resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}) {
			sum := used[name]
			sum.Add(q)
			used[name] = sum
		}
	}
	// The kubelet's predicate admission (InsufficientResourceError): the
	// resize waits, Deferred, until the node has room.
	for _, name := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
		capacity, ok := r.cfg.Allocatable[name]
		if !ok {
			continue
		}
		req, u := amount(name, requested[name]), amount(name, used[name])
		if c := amount(name, capacity); req+u > c {
			return v1.PodReasonDeferred, fmt.Sprintf("Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d", name, req, u, c)
		}
	}
	return "", ""
}

// amount is a quantity as the kubelet's admission compares it: CPU in
// millicores, the rest in units.
func amount(name v1.ResourceName, q apiresource.Quantity) int64 {
	if name == v1.ResourceCPU {
		return q.MilliValue()
	}
	return q.Value()
}

// resize admits a pending resize and actuates the allocated resources on
// the running containers. It returns how soon to look again (0: on the
// next event).
func (w *podWorker) resize() time.Duration {
	w.mu.Lock()
	desired := w.rec.Desired
	handler := w.rec.Handler
	gen := w.rec.Pod.Generation
	var pod *v1.Pod
	if desired != nil {
		pod = withResources(w.rec.Pod, desired)
	}
	w.mu.Unlock()
	now := metav1.NewTime(timeNow())
	if pod != nil {
		reason, message := w.r.admitResize(w, pod, handler)
		if reason != "" {
			var changed bool
			w.update(func(rec *podRecord) {
				old := rec.ResizePending
				changed = old == nil || old.Reason != reason || old.Message != message || old.ObservedGeneration != gen
				if changed {
					rec.ResizePending = &v1.PodCondition{Type: v1.PodResizePending, Status: v1.ConditionTrue, Reason: reason, Message: message, ObservedGeneration: gen, LastTransitionTime: now}
				}
			})
			if changed {
				kind := kubeevents.ResizeDeferred
				if reason == v1.PodReasonInfeasible {
					kind = kubeevents.ResizeInfeasible
				}
				w.event(v1.EventTypeWarning, kind, "%s", kubeevents.PodResizePendingMsg(klog.Background(), pod, reason, message, gen))
			}
			if reason == v1.PodReasonDeferred {
				return sandboxRetry // other pods may make room
			}
			return 0
		}
		w.update(func(rec *podRecord) {
			rec.Allocated = desired
			rec.Desired = nil
			rec.Pod = withResources(rec.Pod, desired)
			rec.ResizePending = nil
			rec.ResizeInProgress = &v1.PodCondition{Type: v1.PodResizeInProgress, Status: v1.ConditionTrue, ObservedGeneration: gen, LastTransitionTime: now}
		})
		w.event(v1.EventTypeNormal, kubeevents.ResizeStarted, "%s", kubeevents.PodResizeStartedMsg(klog.Background(), pod, gen))
	} else {
		// The API asks for the allocated resources again (a resize undone
		// before it was admitted): nothing is pending any more.
		w.update(func(rec *podRecord) { rec.ResizePending = nil })
	}
	return w.actuateResources()
}

// actuateResources brings each running container to its allocated
// resources, and clears PodResizeInProgress once all run with them.
func (w *podWorker) actuateResources() time.Duration {
	pending, failed := false, ""
	for name, lt := range w.tasks {
		c := w.containerSpec(name)
		cr := w.rec.ctr(name)
		if c == nil || cr == nil || w.killing[name] != nil {
			pending = pending || w.killing[name] != nil
			continue
		}
		w.mu.Lock()
		actual := cr.Resources
		if actual == nil {
			// Started by an agent that did not record it: as allocated.
			cr.Resources = c.Resources.DeepCopy()
			actual = cr.Resources
		}
		w.mu.Unlock()
		if equality.Semantic.DeepEqual(*actual, c.Resources) {
			continue
		}
		if restart := resizeRestarts(c, actual); restart != "" {
			pending = true
			w.killContainer(c, cr, fmt.Sprintf("Container %s resize requires restart", c.Name), w.gracePeriod(nil), true)
			continue
		}
		if err := lt.task.Update(w.ctx(), containerd.WithResources(linuxResources(c.Resources))); err != nil {
			failed = fmt.Sprintf("resize container %q: %v", name, err)
			w.log.Warn("in-place resize failed", "container", name, "err", err)
			continue
		}
		w.update(func(*podRecord) { cr.Resources = c.Resources.DeepCopy() })
	}
	// Containers not running start with the allocated resources: only
	// running ones and those restarting for the resize hold it up.
	var report func()
	w.update(func(rec *podRecord) {
		switch {
		case failed != "":
			if rec.ResizeInProgress == nil || rec.ResizeInProgress.Message != failed {
				rec.ResizeInProgress = &v1.PodCondition{Type: v1.PodResizeInProgress, Status: v1.ConditionTrue, Reason: v1.PodReasonError, Message: failed, ObservedGeneration: rec.Pod.Generation, LastTransitionTime: metav1.NewTime(timeNow())}
				pod, gen := rec.Pod, rec.Pod.Generation
				report = func() {
					w.event(v1.EventTypeWarning, kubeevents.ResizeError, "%s", kubeevents.PodResizeErrorMsg(klog.Background(), pod, gen, failed))
				}
			}
		case !pending:
			for _, cr := range rec.Containers {
				if cr.Live && cr.Resources != nil {
					if c := specOf(rec.Pod, cr.Name); c != nil && !equality.Semantic.DeepEqual(*cr.Resources, c.Resources) {
						pending = true
					}
				}
			}
			if !pending && rec.ResizeInProgress != nil {
				pod, gen := rec.Pod, rec.ResizeInProgress.ObservedGeneration
				report = func() {
					w.event(v1.EventTypeNormal, kubeevents.ResizeCompleted, "%s", kubeevents.PodResizeCompletedMsg(klog.Background(), pod, gen))
				}
				rec.ResizeInProgress = nil
			}
		}
	})
	if report != nil {
		report()
	}
	switch {
	case failed != "":
		return sandboxRetry
	case pending:
		// A container restarting for the resize: clear the condition soon
		// after it runs again.
		return time.Second
	}
	return 0
}

func specOf(pod *v1.Pod, name string) *v1.Container {
	for _, cs := range [][]v1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	return nil
}

// resizeRestarts names the resource whose change needs the container
// restarted under its resizePolicy ("" when it is updated in place).
func resizeRestarts(c *v1.Container, actual *v1.ResourceRequirements) v1.ResourceName {
	for _, name := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory} {
		if quantityEqual(actual.Requests, c.Resources.Requests, name) && quantityEqual(actual.Limits, c.Resources.Limits, name) {
			continue
		}
		for _, p := range c.ResizePolicy {
			if p.ResourceName == name && p.RestartPolicy == v1.RestartContainer {
				return name
			}
		}
	}
	return ""
}

func quantityEqual(a, b v1.ResourceList, name v1.ResourceName) bool {
	qa, oka := a[name]
	qb, okb := b[name]
	return oka == okb && qa.Cmp(qb) == 0
}

// linuxResources are a container's cgroup settings for its resources, as
// it is created with them (container.go): CFS quota from the CPU limit,
// shares from the CPU request, the memory limit; no limit is unlimited.
func linuxResources(res v1.ResourceRequirements) *specs.LinuxResources {
	const period = uint64(100000)
	quota := int64(-1)
	if q, ok := res.Limits[v1.ResourceCPU]; ok && q.MilliValue() > 0 {
		quota = cpuQuota(q.MilliValue(), int64(period))
	}
	shares := cpuShares(res)
	mem := int64(-1)
	if q, ok := res.Limits[v1.ResourceMemory]; ok && q.Value() > 0 {
		mem = q.Value()
	}
	p := period
	return &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &p},
		Memory: &specs.LinuxMemory{Limit: &mem},
	}
}

// cpuShares is the cgroup v1 cpu.shares of a container: its CPU request
// (or limit) in 1024ths of a CPU, from 2 to 262144 (the kubelet's
// cm.MilliCPUToShares).
func cpuShares(res v1.ResourceRequirements) uint64 {
	milli := int64(0)
	if q, ok := res.Requests[v1.ResourceCPU]; ok && q.MilliValue() > 0 {
		milli = q.MilliValue()
	} else if q, ok := res.Limits[v1.ResourceCPU]; ok && q.MilliValue() > 0 {
		milli = q.MilliValue()
	}
	return uint64(min(max(milli*1024/1000, 2), 262144))
}

// cpuQuota is the CFS quota of a CPU limit over period (µs), at least
// 1 ms (the kubelet's cm.MilliCPUToQuota).
func cpuQuota(milli, period int64) int64 {
	return max(milli*period/1000, 1000)
}
