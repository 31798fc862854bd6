package simulate

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Annotations a pod may carry to steer its simulated life.
const (
	// AnnotationStartDelay overrides the fleet's start delay for this pod
	// (a Go duration, e.g. "250ms").
	AnnotationStartDelay = "sim.cci.io/start-delay"
	// AnnotationRunFor makes every container exit this long after it
	// started (a Go duration); without it containers run until deleted.
	AnnotationRunFor = "sim.cci.io/run-for"
	// AnnotationExitCode is the exit code of containers that exit after
	// AnnotationRunFor. Default 0.
	AnnotationExitCode = "sim.cci.io/exit-code"
)

// fleet is the pod store shared by every simulated node of one process, so
// that one node API listener can answer for all of them.
type fleet struct {
	startDelay time.Duration
	hostIP     string

	mu     sync.Mutex
	pods   map[string]*simPod // by namespace/name
	nextIP netip.Addr
}

func newFleet(startDelay time.Duration, hostIP string) *fleet {
	return &fleet{
		startDelay: startDelay,
		hostIP:     hostIP,
		pods:       map[string]*simPod{},
		// Pod IPs come from the shared address space of RFC 6598: unique,
		// and never routed to anything.
		nextIP: netip.MustParseAddr("100.64.0.1"),
	}
}

// simPod is one pod on one simulated node. Its fields are guarded by the
// fleet's mu.
type simPod struct {
	p     *Provider
	pod   *v1.Pod // with the status the node reports
	timer *time.Timer
	gone  bool

	// pubMu orders the notifications of one pod: each publishes the pod's
	// latest status, so a slow earlier notification cannot overwrite a
	// later one.
	pubMu sync.Mutex
}

// publish notifies the pod's current status.
func (f *fleet) publish(sp *simPod) {
	sp.pubMu.Lock()
	defer sp.pubMu.Unlock()
	f.mu.Lock()
	out := sp.pod.DeepCopy()
	f.mu.Unlock()
	sp.p.publish(out)
}

// Provider is one simulated node's pod lifecycle: the virtual-kubelet
// provider interface (nodeutil.Provider and node.PodNotifier), with no
// containers behind it. A created pod reports Pending, then Running once its
// start delay passed; a deleted pod reports its containers terminated with
// exit code 0 and is forgotten. Logs, exec, attach and port-forward answer
// with an error that says the node is simulated.
//
// All methods are safe for concurrent use. Pods returned are copies the
// caller owns.
type Provider struct {
	f    *fleet
	node string

	notifyMu sync.Mutex
	notify   func(*v1.Pod)
}

func (f *fleet) provider(node string) *Provider {
	return &Provider{f: f, node: node}
}

func key(ns, name string) string { return ns + "/" + name }

// NotifyPods registers the callback that receives every status change.
func (p *Provider) NotifyPods(_ context.Context, cb func(*v1.Pod)) {
	p.notifyMu.Lock()
	p.notify = cb
	p.notifyMu.Unlock()
}

func (p *Provider) publish(pod *v1.Pod) {
	p.notifyMu.Lock()
	cb := p.notify
	p.notifyMu.Unlock()
	if cb != nil {
		cb(pod)
	}
}

// CreatePod accepts the pod and reports it Pending; it turns Running after
// the start delay.
func (p *Provider) CreatePod(_ context.Context, pod *v1.Pod) error {
	delay, err := durationAnnotation(pod, AnnotationStartDelay, p.f.startDelay)
	if err != nil {
		return errdefs.AsInvalidInput(err)
	}
	if _, err := durationAnnotation(pod, AnnotationRunFor, 0); err != nil {
		return errdefs.AsInvalidInput(err)
	}
	if _, err := exitCode(pod); err != nil {
		return errdefs.AsInvalidInput(err)
	}
	f := p.f
	f.mu.Lock()
	k := key(pod.Namespace, pod.Name)
	if old, ok := f.pods[k]; ok {
		if old.pod.UID == pod.UID {
			f.mu.Unlock()
			return nil
		}
		old.stop()
	}
	sp := &simPod{p: p, pod: pod.DeepCopy()}
	now := metav1.Now()
	sp.pod.Status = v1.PodStatus{
		Phase:     v1.PodPending,
		HostIP:    f.hostIP,
		HostIPs:   []v1.HostIP{{IP: f.hostIP}},
		StartTime: &now,
		QOSClass:  pod.Status.QOSClass,
	}
	setConditions(sp.pod, false, now)
	for _, c := range pod.Spec.InitContainers {
		sp.pod.Status.InitContainerStatuses = append(sp.pod.Status.InitContainerStatuses, waiting(c, "PodInitializing"))
	}
	for _, c := range pod.Spec.Containers {
		sp.pod.Status.ContainerStatuses = append(sp.pod.Status.ContainerStatuses, waiting(c, "ContainerCreating"))
	}
	f.pods[k] = sp
	sp.timer = time.AfterFunc(delay, func() { f.start(sp) })
	f.mu.Unlock()
	f.publish(sp)
	return nil
}

// start runs every container of sp (init containers complete at once).
func (f *fleet) start(sp *simPod) {
	f.mu.Lock()
	if sp.gone {
		f.mu.Unlock()
		return
	}
	now := metav1.Now()
	pod := sp.pod
	if pod.Status.PodIP == "" {
		ip := f.nextIP
		f.nextIP = f.nextIP.Next()
		pod.Status.PodIP = ip.String()
		pod.Status.PodIPs = []v1.PodIP{{IP: ip.String()}}
	}
	for i := range pod.Status.InitContainerStatuses {
		cs := &pod.Status.InitContainerStatuses[i]
		cs.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now, ContainerID: containerID(pod, cs.Name),
		}}
		cs.ContainerID = containerID(pod, cs.Name)
	}
	for i := range pod.Status.ContainerStatuses {
		cs := &pod.Status.ContainerStatuses[i]
		if cs.State.Terminated != nil {
			cs.LastTerminationState = v1.ContainerState{Terminated: cs.State.Terminated}
			cs.RestartCount++
		}
		cs.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}}
		cs.ContainerID = containerID(pod, cs.Name)
		cs.ImageID = cs.Image
		cs.Ready = true
		started := true
		cs.Started = &started
	}
	pod.Status.Phase = v1.PodRunning
	setConditions(pod, true, now)
	runFor, _ := durationAnnotation(pod, AnnotationRunFor, 0)
	if runFor > 0 {
		sp.timer = time.AfterFunc(runFor, func() { f.exit(sp) })
	}
	f.mu.Unlock()
	f.publish(sp)
}

// exit ends every container of sp with the pod's exit code and restarts or
// finishes the pod as its restartPolicy says.
func (f *fleet) exit(sp *simPod) {
	f.mu.Lock()
	if sp.gone {
		f.mu.Unlock()
		return
	}
	pod := sp.pod
	code, _ := exitCode(pod)
	now := metav1.Now()
	terminate(pod, code, now)
	restart := false
	switch pod.Spec.RestartPolicy {
	case v1.RestartPolicyNever:
	case v1.RestartPolicyOnFailure:
		restart = code != 0
	default:
		restart = true
	}
	if restart {
		sp.timer = time.AfterFunc(0, func() { f.start(sp) })
	} else {
		pod.Status.Phase = v1.PodSucceeded
		if code != 0 {
			pod.Status.Phase = v1.PodFailed
		}
		setConditions(pod, false, now)
	}
	f.mu.Unlock()
	f.publish(sp)
}

// stop cancels sp's pending transitions; the caller holds the fleet's mu.
func (sp *simPod) stop() {
	sp.gone = true
	if sp.timer != nil {
		sp.timer.Stop()
	}
}

// terminate marks every container that is not yet terminated as exited with code.
func terminate(pod *v1.Pod, code int32, now metav1.Time) {
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	for i := range pod.Status.ContainerStatuses {
		cs := &pod.Status.ContainerStatuses[i]
		if cs.State.Terminated != nil {
			continue
		}
		started := now
		if cs.State.Running != nil {
			started = cs.State.Running.StartedAt
		}
		cs.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, StartedAt: started, FinishedAt: now, ContainerID: containerID(pod, cs.Name),
		}}
		cs.Ready = false
		f := false
		cs.Started = &f
	}
}

// UpdatePod takes the new spec of a pod (the fields Kubernetes lets change).
func (p *Provider) UpdatePod(_ context.Context, pod *v1.Pod) error {
	f := p.f
	f.mu.Lock()
	defer f.mu.Unlock()
	sp, ok := f.pods[key(pod.Namespace, pod.Name)]
	if !ok || sp.pod.UID != pod.UID || sp.p != p {
		return errdefs.NotFoundf("pod %s/%s is not on simulated node %q", pod.Namespace, pod.Name, p.node)
	}
	status := sp.pod.Status
	sp.pod = pod.DeepCopy()
	sp.pod.Status = status
	return nil
}

// DeletePod stops the pod at once: its containers report exit code 0 and
// the terminal status is notified; then the pod is forgotten.
func (p *Provider) DeletePod(_ context.Context, pod *v1.Pod) error {
	f := p.f
	f.mu.Lock()
	k := key(pod.Namespace, pod.Name)
	sp, ok := f.pods[k]
	if !ok || sp.p != p {
		f.mu.Unlock()
		return errdefs.NotFoundf("pod %s/%s is not on simulated node %q", pod.Namespace, pod.Name, p.node)
	}
	sp.stop()
	delete(f.pods, k)
	now := metav1.Now()
	terminate(sp.pod, 0, now)
	if sp.pod.Status.Phase != v1.PodFailed {
		sp.pod.Status.Phase = v1.PodSucceeded
	}
	setConditions(sp.pod, false, now)
	f.mu.Unlock()
	f.publish(sp)
	return nil
}

// GetPod returns the pod as this node runs it.
func (p *Provider) GetPod(_ context.Context, ns, name string) (*v1.Pod, error) {
	f := p.f
	f.mu.Lock()
	defer f.mu.Unlock()
	sp, ok := f.pods[key(ns, name)]
	if !ok || sp.p != p {
		return nil, errdefs.NotFoundf("pod %s/%s is not on simulated node %q", ns, name, p.node)
	}
	return sp.pod.DeepCopy(), nil
}

// GetPodStatus returns the pod's status.
func (p *Provider) GetPodStatus(ctx context.Context, ns, name string) (*v1.PodStatus, error) {
	pod, err := p.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every pod on this node.
func (p *Provider) GetPods(context.Context) ([]*v1.Pod, error) {
	f := p.f
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*v1.Pod
	for _, sp := range f.pods {
		if sp.p == p {
			out = append(out, sp.pod.DeepCopy())
		}
	}
	return out, nil
}

func (p *Provider) simulated(ns, pod, what string) error {
	return errdefs.InvalidInputf("pod %s/%s runs on simulated node %q, which runs no containers: %s is not possible", ns, pod, p.node, what)
}

// GetContainerLogs answers that a simulated pod has no logs.
func (p *Provider) GetContainerLogs(_ context.Context, ns, pod, _ string, _ api.ContainerLogOpts) (io.ReadCloser, error) {
	return nil, p.simulated(ns, pod, "reading logs")
}

// RunInContainer answers that a simulated pod cannot exec.
func (p *Provider) RunInContainer(_ context.Context, ns, pod, _ string, _ []string, _ api.AttachIO) error {
	return p.simulated(ns, pod, "exec")
}

// AttachToContainer answers that a simulated pod cannot attach.
func (p *Provider) AttachToContainer(_ context.Context, ns, pod, _ string, _ api.AttachIO) error {
	return p.simulated(ns, pod, "attach")
}

// PortForward answers that a simulated pod listens on no port.
func (p *Provider) PortForward(_ context.Context, ns, pod string, _ int32, _ io.ReadWriteCloser) error {
	return p.simulated(ns, pod, "port-forward")
}

// GetStatsSummary reports the node and its pods with no usage.
func (p *Provider) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	pods, _ := p.GetPods(ctx)
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.node}}
	for _, pod := range pods {
		ps := statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID)}}
		if pod.Status.StartTime != nil {
			ps.StartTime = *pod.Status.StartTime
		}
		s.Pods = append(s.Pods, ps)
	}
	return s, nil
}

// GetMetricsResource reports no metrics: nothing runs.
func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, nil
}

// lookup finds the provider that runs a pod, for the shared node API.
func (f *fleet) lookup(ns, name string) (*Provider, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sp, ok := f.pods[key(ns, name)]
	if !ok {
		return nil, false
	}
	return sp.p, true
}

func waiting(c v1.Container, reason string) v1.ContainerStatus {
	f := false
	return v1.ContainerStatus{
		Name:    c.Name,
		Image:   c.Image,
		State:   v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason}},
		Started: &f,
	}
}

func containerID(pod *v1.Pod, name string) string {
	return "simulated://" + string(pod.UID) + "-" + name
}

// setConditions sets the pod's conditions: all true when running, else only
// PodScheduled (and Initialized once the pod ended).
func setConditions(pod *v1.Pod, running bool, now metav1.Time) {
	ended := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	cond := func(t v1.PodConditionType, ok bool) v1.PodCondition {
		c := v1.PodCondition{Type: t, Status: v1.ConditionFalse, LastTransitionTime: now}
		if ok {
			c.Status = v1.ConditionTrue
		}
		for _, old := range pod.Status.Conditions {
			if old.Type == t && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	pod.Status.Conditions = []v1.PodCondition{
		cond(v1.PodReadyToStartContainers, running),
		cond(v1.PodInitialized, running || ended),
		cond(v1.ContainersReady, running),
		cond(v1.PodReady, running),
		cond(v1.PodScheduled, true),
	}
}

func durationAnnotation(pod *v1.Pod, name string, def time.Duration) (time.Duration, error) {
	v, ok := pod.Annotations[name]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("pod %s/%s: annotation %s=%q is not a duration such as 250ms", pod.Namespace, pod.Name, name, v)
	}
	return d, nil
}

func exitCode(pod *v1.Pod) (int32, error) {
	v, ok := pod.Annotations[AnnotationExitCode]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("pod %s/%s: annotation %s=%q is not an exit code 0-255", pod.Namespace, pod.Name, AnnotationExitCode, v)
	}
	return int32(n), nil
}
