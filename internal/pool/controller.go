package pool

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Event reasons of the Controller, on pods.
const (
	// ReasonNoReadyHost: the pod's pool has no host that takes pods now.
	ReasonNoReadyHost = "PoolHasNoReadyHost"
	// ReasonNoCapacity: the pool has Ready hosts, but none can take the pod.
	ReasonNoCapacity = "PoolHasNoCapacity"
)

// Controller watches the pools' hosts and pods. It tells a pod that the
// scheduler cannot place, and that is bound to a pool by its nodeSelector,
// why in the pool's terms: a Warning event that names the pool and says
// whether it has no Ready host or no room. The pod stays Pending (the
// nodeSelector keeps it out of every other pool) until the pool has room.
// Summaries and the Prometheus Collector read its caches.
//
// Run it once; Summaries and Existing are safe for concurrent use and
// answer from the caches (empty until they have synced).
type Controller struct {
	kube    kubernetes.Interface
	factory informers.SharedInformerFactory
	nodes   cache.SharedIndexInformer
	pods    cache.SharedIndexInformer
	log     *slog.Logger
	queue   workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	reported map[string]string // pod key → the message last reported
}

// NewController builds the controller; Run starts it.
func NewController(kube kubernetes.Interface, log *slog.Logger) *Controller {
	c := &Controller{
		kube:     kube,
		factory:  informers.NewSharedInformerFactory(kube, 10*time.Minute),
		log:      log,
		queue:    workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "pools"}),
		reported: map[string]string{},
	}
	c.nodes = c.factory.Core().V1().Nodes().Informer()
	c.pods = c.factory.Core().V1().Pods().Informer()
	pod := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.NodeSelector[Label] == "" {
			return
		}
		if k, err := cache.MetaNamespaceKeyFunc(p); err == nil {
			c.queue.Add(k)
		}
	}
	_, _ = c.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: pod, UpdateFunc: func(_, o any) { pod(o) }, DeleteFunc: pod,
	})
	// A host of a pool that comes or goes changes what its waiting pods
	// are told; the scheduler retries them too, but may keep the same
	// condition.
	node := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if n, ok := obj.(*corev1.Node); ok && Of(n) != "" {
			c.requeuePool(Of(n))
		}
	}
	_, _ = c.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: node,
		UpdateFunc: func(o, n any) {
			on, ok1 := o.(*corev1.Node)
			nn, ok2 := n.(*corev1.Node)
			if ok1 && ok2 && (Ready(on) != Ready(nn) || Of(on) != Of(nn)) {
				node(o)
				node(n)
			}
		},
		DeleteFunc: node,
	})
	return c
}

func (c *Controller) requeuePool(name string) {
	for _, obj := range c.pods.GetStore().List() {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName == "" && p.Spec.NodeSelector[Label] == name {
			c.queue.Add(p.Namespace + "/" + p.Name)
		}
	}
}

// Run watches and reports until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "cci-pools"})
	c.factory.Start(ctx.Done())
	c.factory.WaitForCacheSync(ctx.Done())
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for {
			k, quit := c.queue.Get()
			if quit {
				return
			}
			c.check(k, recorder)
			c.queue.Done(k)
		}
	}, time.Second)
	<-ctx.Done()
	return nil
}

// check reports a pod the scheduler found no host for, once per message.
func (c *Controller) check(k string, recorder record.EventRecorder) {
	obj, ok, err := c.pods.GetStore().GetByKey(k)
	p, _ := obj.(*corev1.Pod)
	if err != nil || !ok || p == nil || p.Spec.NodeName != "" || p.DeletionTimestamp != nil {
		c.mu.Lock()
		delete(c.reported, k)
		c.mu.Unlock()
		return
	}
	if !unschedulable(p) {
		return
	}
	name := p.Spec.NodeSelector[Label]
	hosts, ready := 0, 0
	for _, obj := range c.nodes.GetStore().List() {
		if n, ok := obj.(*corev1.Node); ok && Of(n) == name {
			hosts++
			if Ready(n) {
				ready++
			}
		}
	}
	reason, msg := Explain(name, hosts, ready)
	c.mu.Lock()
	same := c.reported[k] == msg
	c.reported[k] = msg
	c.mu.Unlock()
	if same {
		return
	}
	recorder.Event(p, corev1.EventTypeWarning, reason, msg)
	c.log.Info("pod waits for its pool", "pod", k, "pool", name, "hosts", hosts, "ready", ready)
}

// Explain says, in the event's words, why a pod of pool name waits when
// the pool has hosts hosts of which ready take pods.
func Explain(name string, hosts, ready int) (reason, message string) {
	switch {
	case hosts == 0:
		return ReasonNoReadyHost, fmt.Sprintf("pool %q has no Ready host: it has no host at all; the pod stays Pending until a host joins it (cci agent --pool %s)", name, name)
	case ready == 0:
		return ReasonNoReadyHost, fmt.Sprintf("pool %q has no Ready host (0 of %d Ready): no capacity; the pod stays Pending until one of its hosts is back", name, hosts)
	default:
		return ReasonNoCapacity, fmt.Sprintf("pool %q has no capacity for this pod on its %d Ready host(s) (see the FailedScheduling event); the pod stays Pending until room frees up or a host joins the pool", name, ready)
	}
}

// unschedulable: the scheduler tried the pod and found no host.
func unschedulable(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable
		}
	}
	return false
}

// Existing lists the pools some node carries the label of. It answers
// from the cache: call it after Run has synced.
func (c *Controller) Existing() []string {
	nodes, _ := c.factory.Core().V1().Nodes().Lister().List(labels.Everything())
	seen := map[string]bool{}
	var out []string
	for _, n := range nodes {
		if name := Of(n); name != "" && !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

// Summaries adds up the pools from the caches (see Summarize).
func (c *Controller) Summaries() []Summary {
	nodes, _ := c.factory.Core().V1().Nodes().Lister().List(labels.Everything())
	pods, _ := c.factory.Core().V1().Pods().Lister().List(labels.Everything())
	return Summarize(nodes, pods)
}

// Synced reports whether the caches hold every node and pod.
func (c *Controller) Synced() bool { return c.nodes.HasSynced() && c.pods.HasSynced() }
