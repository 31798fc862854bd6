package runtime

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
	"k8s.io/kubernetes/pkg/kubelet/sysctl"
	schedulerframework "k8s.io/kubernetes/pkg/scheduler/framework"
)

// The agent admits a pod bound to its node as the kubelet does before it
// runs anything of it: with the kubelet's own admit handlers, the sysctl
// allowlist (the safe sysctls, as a kubelet without
// --allowed-unsafe-sysctls) and the general predicates the scheduler also
// checks (free host ports, resources, node name and affinity, NoExecute
// taints). The scheduler keeps most pods away from a node they do not fit,
// but a pod given a nodeName skips it, and a pod bound while the node's
// pods changed may meet a conflict. A rejected pod fails at once with the
// handler's reason and "Pod was rejected: <message>", and nothing of it runs.

// nodeCacheTTL is how long the admission reuses the Node object it read.
const nodeCacheTTL = 10 * time.Second

// admitter holds the kubelet's admit handlers.
type admitter struct {
	handlers []lifecycle.PodAdmitHandler

	mu      sync.Mutex
	node    *v1.Node
	readAt  time.Time
	getNode func(ctx context.Context) (*v1.Node, error)
	// adjust, if set, lays the agent's own current view over the node
	// read (see Config.AdjustNode).
	adjust func(*v1.Node)
}

// passFailures is the kubelet's AdmissionFailureHandler without its
// critical-pod preemption: every failure stands.
type passFailures struct{}

func (passFailures) HandleAdmissionFailure(_ context.Context, _ *v1.Pod, reasons []lifecycle.PredicateFailureReason, _ lifecycle.Operation) ([]lifecycle.PredicateFailureReason, error) {
	return reasons, nil
}

func newAdmitter(ctx context.Context, getNode func(ctx context.Context) (*v1.Node, error), adjust func(*v1.Node)) (*admitter, error) {
	allow, err := sysctl.NewAllowlist(sysctl.SafeSysctlAllowlist(ctx))
	if err != nil {
		return nil, fmt.Errorf("sysctl allowlist: %w", err)
	}
	a := &admitter{getNode: getNode, adjust: adjust}
	a.handlers = []lifecycle.PodAdmitHandler{
		allow,
		lifecycle.NewPredicateAdmitHandler(a.nodeFor, passFailures{}, func(*schedulerframework.NodeInfo, *lifecycle.PodAdmitAttributes) error { return nil }),
	}
	return a, nil
}

// nodeFor is the kubelet's getNodeAnyWay: the Node as last read, or read
// again when useCache is false (the predicate reads it again before it
// refuses a pod for its node affinity: labels may have just changed).
func (a *admitter) nodeFor(ctx context.Context, useCache bool) (*v1.Node, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if useCache && a.node != nil && timeNow().Sub(a.readAt) < nodeCacheTTL {
		return a.adjusted(a.node), nil
	}
	n, err := a.getNode(ctx)
	if err != nil {
		if a.node != nil {
			return a.adjusted(a.node), nil
		}
		return nil, err
	}
	a.node, a.readAt = n, timeNow()
	return a.adjusted(n), nil
}

// adjusted is a copy of n with the agent's current view laid over it: the
// node read (from the API, or cached) may be older than a device that
// just failed or came back, as the kubelet's own node is never.
func (a *admitter) adjusted(n *v1.Node) *v1.Node {
	if a.adjust == nil {
		return n
	}
	n = n.DeepCopy()
	a.adjust(n)
	return n
}

// admit runs the handlers in the kubelet's order; ok false comes with the
// first refusal's reason and message.
func (a *admitter) admit(ctx context.Context, pod *v1.Pod, others []*v1.Pod) (ok bool, reason, message string) {
	attrs := &lifecycle.PodAdmitAttributes{Pod: pod, OtherPods: others, Operation: lifecycle.AddOperation}
	for _, h := range a.handlers {
		if res := h.Admit(ctx, attrs); !res.Admit {
			return false, res.Reason, res.Message
		}
	}
	return true, "", ""
}

// activePods is every pod of the node that may still run but except: the
// others the admission weighs a new pod, or a resize, against. r.mu must
// be held.
func (r *Runtime) activePods(except *v1.Pod) []*v1.Pod {
	var out []*v1.Pod
	for _, w := range r.pods {
		w.mu.Lock()
		p, phase := w.rec.Pod, w.rec.Phase
		w.mu.Unlock()
		if p.UID == except.UID || phase == v1.PodSucceeded || phase == v1.PodFailed {
			continue
		}
		out = append(out, p)
	}
	return out
}

// rejectedRecord is the record of a pod the admission refused: failed
// before anything of it ran, as the kubelet's rejectPod leaves it (a start
// time, which its status manager sets, and no container statuses).
func rejectedRecord(pod *v1.Pod, reason, message string) *podRecord {
	now := metav1.NewTime(timeNow())
	return &podRecord{
		Pod:       pod.DeepCopy(),
		Phase:     v1.PodFailed,
		Reason:    reason,
		Message:   "Pod was rejected: " + message,
		Released:  true,
		Rejected:  true,
		StartTime: &now,
	}
}

// kubeNode reads the agent's Node from the API.
func (r *Runtime) kubeNode(ctx context.Context) (*v1.Node, error) {
	return r.cfg.Kube.CoreV1().Nodes().Get(ctx, r.cfg.NodeName, metav1.GetOptions{})
}
