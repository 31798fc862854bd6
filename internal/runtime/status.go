package runtime

import (
	"fmt"
	"net"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podutil "k8s.io/kubernetes/pkg/api/v1/pod"
	kubestatus "k8s.io/kubernetes/pkg/kubelet/status"
	kubetypes "k8s.io/kubernetes/pkg/kubelet/types"
)

// snapshot returns the pod with its status as this node sees it now.
func (w *podWorker) snapshot() *v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := buildPod(w.rec, w.r.cfg.HostIP, timeNow())
	// The conditions just computed are the base of the next transition
	// times, across agent restarts too (the record keeps them).
	w.rec.Pod.Status.Conditions = p.Status.Conditions
	return p
}

// buildPod computes the API status of a pod from its record, the way a
// kubelet reports it.
func buildPod(rec *podRecord, hostIP string, now time.Time) *v1.Pod {
	pod := rec.Pod.DeepCopy()
	old := rec.Pod.Status
	st := v1.PodStatus{
		Phase:     rec.Phase,
		Reason:    rec.Reason,
		Message:   rec.Message,
		HostIP:    hostIP,
		StartTime: rec.StartTime,
		QOSClass:  old.QOSClass,
		// The generation of the spec this status reflects: the record
		// takes each new spec as the node acts on it.
		ObservedGeneration: podutil.CalculatePodStatusObservedGeneration(pod),
	}
	if hostIP != "" {
		st.HostIPs = []v1.HostIP{{IP: hostIP}}
	}
	if !rec.Released || rec.Phase == v1.PodSucceeded || rec.Phase == v1.PodFailed {
		for _, ip := range rec.IPs {
			st.PodIPs = append(st.PodIPs, v1.PodIP{IP: ip})
		}
		if len(rec.IPs) > 0 {
			st.PodIP = rec.IPs[0]
		}
	}
	if net.ParseIP(st.PodIP) == nil {
		st.PodIP, st.PodIPs = "", nil
	}

	for _, cr := range rec.Containers {
		cs := containerStatus(rec.Pod, cr, now)
		switch {
		case cr.Ephemeral:
			st.EphemeralContainerStatuses = append(st.EphemeralContainerStatuses, cs)
		case cr.Init:
			st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
		default:
			st.ContainerStatuses = append(st.ContainerStatuses, cs)
		}
	}

	if rec.Rejected {
		// The kubelet writes a rejected pod's phase, reason and message
		// and never generates its conditions: those of the API stay.
		st.Conditions = append([]v1.PodCondition(nil), old.Conditions...)
		st.HostIP, st.HostIPs = "", nil
		pod.Status = st
		return pod
	}

	// The kubelet's own condition generators, fed as the kubelet feeds them
	// (kubelet_pods.go, generateAPIPodStatus): Initialized from all container
	// statuses, Ready and ContainersReady from the app containers and
	// sidecars, with the terminal-phase reasons they give.
	all := append(append([]v1.ContainerStatus{}, st.InitContainerStatuses...), st.ContainerStatuses...)
	readyToStart := v1.PodCondition{Type: v1.PodReadyToStartContainers, Status: v1.ConditionTrue}
	if !rec.SandboxReady || rec.Released {
		readyToStart.Status = v1.ConditionFalse
		readyToStart.Reason = kubetypes.PodSandboxNotReadyReason
		readyToStart.Message = kubetypes.PodSandboxNotReadyMsgNoPodSandbox
	}
	// In-place resize (resize.go), as the kubelet's status manager
	// reports it.
	if rec.ResizePending != nil {
		st.Conditions = append(st.Conditions, *rec.ResizePending)
	}
	if rec.ResizeInProgress != nil {
		st.Conditions = append(st.Conditions, *rec.ResizeInProgress)
	}
	readyToStart.ObservedGeneration = podutil.CalculatePodConditionObservedGeneration(&old, pod.Generation, v1.PodReadyToStartContainers)
	// Conditions of other owners (readiness gates, DisruptionTarget) stay,
	// as the kubelet keeps them; Ready reads the gates among them.
	for _, c := range old.Conditions {
		if !kubetypes.PodConditionByKubelet(c.Type) {
			st.Conditions = append(st.Conditions, c)
		}
	}
	st.Conditions = append(st.Conditions, readyToStart)
	st.Conditions = append(st.Conditions, kubestatus.GeneratePodInitializedCondition(pod, &old, all, st.Phase))
	st.Conditions = append(st.Conditions, kubestatus.GeneratePodReadyCondition(pod, &old, st.Conditions, all, st.Phase))
	st.Conditions = append(st.Conditions, kubestatus.GenerateContainersReadyCondition(pod, &old, all, st.Phase))
	st.Conditions = append(st.Conditions, v1.PodCondition{
		Type:               v1.PodScheduled,
		Status:             v1.ConditionTrue,
		ObservedGeneration: podutil.CalculatePodConditionObservedGeneration(&old, pod.Generation, v1.PodScheduled),
	})
	for i := range st.Conditions {
		c := &st.Conditions[i]
		c.LastTransitionTime = transitionTime(old.Conditions, c.Type, c.Status, now)
	}
	pod.Status = st
	return pod
}

func transitionTime(old []v1.PodCondition, t v1.PodConditionType, s v1.ConditionStatus, now time.Time) metav1.Time {
	for _, c := range old {
		if c.Type == t && c.Status == s && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime
		}
	}
	return metav1.NewTime(now)
}

func containerStatus(pod *v1.Pod, cr *ctrRecord, now time.Time) v1.ContainerStatus {
	var spec v1.Container
	for _, c := range append(append([]v1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == cr.Name {
			spec = c
		}
	}
	for _, ec := range pod.Spec.EphemeralContainers {
		if ec.Name == cr.Name {
			spec = v1.Container(ec.EphemeralContainerCommon)
		}
	}
	image := spec.Image
	cs := v1.ContainerStatus{
		Name:                 cr.Name,
		Image:                image,
		ImageID:              cr.ImageID,
		RestartCount:         cr.RestartCount,
		State:                *cr.State.DeepCopy(),
		LastTerminationState: *cr.LastState.DeepCopy(),
	}
	if cr.Started {
		cs.ContainerID = "containerd://" + cr.ID
		// As the kubelet reports a container the runtime knows:
		// allocatedResources are the requests it is admitted with,
		// resources what its cgroup is set to (the allocated ones
		// unless running with others while a resize is actuated).
		cs.AllocatedResources = spec.Resources.DeepCopy().Requests
		cs.Resources = spec.Resources.DeepCopy()
		if cr.State.Running != nil && cr.Resources != nil {
			cs.Resources = cr.Resources.DeepCopy()
		}
	}
	// As the kubelet's prober manager: started once the startup probe
	// passed, ready once started and the readiness probe passed; a
	// container without such a probe passes it by running.
	started := containerStarted(&spec, cr)
	cs.Started = &started
	cs.Ready = started && (spec.ReadinessProbe == nil || cr.Ready)
	if cr.Ephemeral {
		cs.Ready = false // as the kubelet reports them
	}
	if cr.Init && !isSidecar(pod, cr.Name) {
		cs.Ready = cr.State.Terminated != nil && cr.State.Terminated.ExitCode == 0
	}
	// While its postStart hook runs a container is still being created.
	if cr.State.Running != nil && cr.PostStartPending {
		cs.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	}

	// In back-off: report what the kubelet reports while it waits.
	if t := cr.State.Terminated; t != nil && now.Before(cr.BackoffUntil) {
		cs.LastTerminationState = v1.ContainerState{Terminated: t.DeepCopy()}
		cs.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{
			Reason:  "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", cr.Backoff, cr.Name, pod.Name, pod.Namespace, pod.UID),
		}}
	}
	if wt := cr.State.Waiting; wt != nil && wt.Reason == "ErrImagePull" && now.Before(cr.BackoffUntil) {
		if until := cr.BackoffUntil; until.Sub(now) < cr.Backoff/2-2*time.Second {
			cs.State.Waiting = &v1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: fmt.Sprintf("Back-off pulling image %q: %s", image, wt.Message)}
		}
	}
	return cs
}

// statusEqual compares statuses ignoring nothing: a change anywhere is news.
func statusEqual(a, b *v1.PodStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}

// mergeConditions returns the kubelet-owned conditions of ours with the
// other owners' conditions of api (readiness gates, DisruptionTarget): the
// API holds the latest of those, this node the latest of its own.
func mergeConditions(ours, api []v1.PodCondition) []v1.PodCondition {
	var out []v1.PodCondition
	for _, c := range api {
		if !kubetypes.PodConditionByKubelet(c.Type) {
			out = append(out, c)
		}
	}
	for _, c := range ours {
		if kubetypes.PodConditionByKubelet(c.Type) {
			out = append(out, c)
		}
	}
	return out
}

// KubeletConditionsChanged says whether the conditions the kubelet (here
// the agent) owns differ in status between two versions of a pod.
func KubeletConditionsChanged(old, cur *v1.Pod) bool {
	return !equality.Semantic.DeepEqual(conditionStatuses(old, true), conditionStatuses(cur, true))
}

// conditionStatuses maps the pod's conditions the kubelet owns (byKubelet)
// or the others to their status.
func conditionStatuses(p *v1.Pod, byKubelet bool) map[v1.PodConditionType]v1.ConditionStatus {
	m := map[v1.PodConditionType]v1.ConditionStatus{}
	for _, c := range p.Status.Conditions {
		if kubetypes.PodConditionByKubelet(c.Type) == byKubelet {
			m[c.Type] = c.Status
		}
	}
	return m
}

// ForeignConditionsChanged says whether the conditions other controllers
// own (readiness gates among them) differ between two versions of a pod.
// The node's pod controller passes on only spec changes; the agent calls
// UpdatePod when this says so, and Ready follows the gates.
func ForeignConditionsChanged(old, cur *v1.Pod) bool {
	return !equality.Semantic.DeepEqual(conditionStatuses(old, false), conditionStatuses(cur, false))
}
