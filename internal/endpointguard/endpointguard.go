// Package endpointguard prunes endpoints of tenant namespaces that point at
// another namespace's pod.
//
// The admission webhook lets a tenant write Endpoints and EndpointSlices by
// hand (for a selectorless Service) only at addresses outside the cluster
// or at its own pods' IPs. A pod's IP outlives the pod in such an object:
// once the pod is gone its IP may be given to a pod of another tenant or of
// the operator, and the tenant's Service (and its load balancer, whose
// traffic the service proxy masquerades past the network policies) would
// then reach that pod. This controller removes, from every Endpoints and
// EndpointSlice of a tenant namespace, each address that is the IP of a
// live pod of another namespace, and says so in a Warning event
// (EndpointPruned). The endpoint controllers never point at another
// namespace's pod, so what they write is left alone.
package endpointguard

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// TenantLabel marks a tenant's namespace (the tenant package's label).
const TenantLabel = "cci.io/tenant"

// byAddress indexes Endpoints and EndpointSlices by the addresses they hold.
const byAddress = "address"

// Controller prunes the endpoints of tenant namespaces. Run it once.
type Controller struct {
	kube       kubernetes.Interface
	factory    informers.SharedInformerFactory
	namespaces corelisters.NamespaceLister
	pods       cache.Indexer
	endpoints  cache.SharedIndexInformer
	slices     cache.SharedIndexInformer
	queue      workqueue.TypedRateLimitingInterface[string]
	broadcast  record.EventBroadcaster
	recorder   record.EventRecorder
	log        *slog.Logger
}

// NewController builds the controller over kube; nothing runs until Run.
func NewController(kube kubernetes.Interface, log *slog.Logger) *Controller {
	if log == nil {
		log = slog.Default()
	}
	f := informers.NewSharedInformerFactory(kube, 10*time.Minute)
	broadcast := record.NewBroadcaster()
	c := &Controller{
		kube:       kube,
		factory:    f,
		namespaces: f.Core().V1().Namespaces().Lister(),
		endpoints:  f.Core().V1().Endpoints().Informer(),
		slices:     f.Discovery().V1().EndpointSlices().Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpointguard"}),
		broadcast: broadcast,
		recorder:  broadcast.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "cci-endpoint-guard"}),
		log:       log.With("controller", "endpointguard"),
	}
	podInformer := f.Core().V1().Pods().Informer()
	_ = podInformer.AddIndexers(cache.Indexers{byAddress: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok || !live(p) {
			return nil, nil
		}
		return podIPs(p), nil
	}})
	c.pods = podInformer.GetIndexer()
	_ = c.endpoints.AddIndexers(cache.Indexers{byAddress: func(obj any) ([]string, error) {
		if ep, ok := obj.(*corev1.Endpoints); ok {
			return endpointsAddresses(ep), nil
		}
		return nil, nil
	}})
	_ = c.slices.AddIndexers(cache.Indexers{byAddress: func(obj any) ([]string, error) {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			return sliceAddresses(s), nil
		}
		return nil, nil
	}})
	byNamespace := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if m, ok := obj.(metav1.Object); ok {
			c.queue.Add(m.GetNamespace())
		}
	}
	for _, inf := range []cache.SharedIndexInformer{c.endpoints, c.slices} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: byNamespace, UpdateFunc: func(_, o any) { byNamespace(o) }})
	}
	// A pod that gets an IP some endpoints hold: their namespaces are checked.
	podChanged := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || !live(p) {
			return
		}
		for _, ip := range podIPs(p) {
			for _, inf := range []cache.SharedIndexInformer{c.endpoints, c.slices} {
				objs, _ := inf.GetIndexer().ByIndex(byAddress, ip)
				for _, o := range objs {
					if m, ok := o.(metav1.Object); ok && m.GetNamespace() != p.Namespace {
						c.queue.Add(m.GetNamespace())
					}
				}
			}
		}
	}
	_, _ = podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: podChanged, UpdateFunc: func(_, o any) { podChanged(o) }})
	// A namespace that becomes a tenant's.
	_, _ = f.Core().V1().Namespaces().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if ns, ok := obj.(*corev1.Namespace); ok && ns.Labels[TenantLabel] != "" {
				c.queue.Add(ns.Name)
			}
		},
		UpdateFunc: func(_, obj any) {
			if ns, ok := obj.(*corev1.Namespace); ok && ns.Labels[TenantLabel] != "" {
				c.queue.Add(ns.Name)
			}
		},
	})
	return c
}

func live(p *corev1.Pod) bool {
	return !p.Spec.HostNetwork && p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func podIPs(p *corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		out = append(out, ip.IP)
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		out = append(out, p.Status.PodIP)
	}
	return out
}

func endpointsAddresses(ep *corev1.Endpoints) []string {
	var out []string
	for _, s := range ep.Subsets {
		for _, a := range s.Addresses {
			out = append(out, a.IP)
		}
		for _, a := range s.NotReadyAddresses {
			out = append(out, a.IP)
		}
	}
	return out
}

func sliceAddresses(s *discoveryv1.EndpointSlice) []string {
	var out []string
	for _, e := range s.Endpoints {
		out = append(out, e.Addresses...)
	}
	return out
}

// Run prunes with the given number of workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	c.broadcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer c.broadcast.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("endpoint guard: informer for %v did not sync", typ)
		}
	}
	for range max(workers, 1) {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) worker(ctx context.Context) {
	for {
		ns, quit := c.queue.Get()
		if quit {
			return
		}
		err := c.reconcile(ctx, ns)
		switch {
		case err == nil:
			c.queue.Forget(ns)
		case ctx.Err() == nil:
			c.log.Warn("prune endpoints", "namespace", ns, "err", err)
			c.queue.AddRateLimited(ns)
		}
		c.queue.Done(ns)
	}
}

// foreign says whose pod ip is when it is a live pod of a namespace other
// than ns ("namespace/name"), or "".
func (c *Controller) foreign(ns, ip string) string {
	objs, _ := c.pods.ByIndex(byAddress, ip)
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && p.Namespace != ns && live(p) {
			return p.Namespace + "/" + p.Name
		}
	}
	return ""
}

const advice = "endpoints written by hand may point at pods of their own namespace only"

// reconcile prunes the endpoints of namespace ns, if it is a tenant's.
func (c *Controller) reconcile(ctx context.Context, ns string) error {
	n, err := c.namespaces.Get(ns)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if n.Labels[TenantLabel] == "" || n.DeletionTimestamp != nil {
		return nil
	}
	sel := labels.Everything()
	eps, err := corelisters.NewEndpointsLister(c.endpoints.GetIndexer()).Endpoints(ns).List(sel)
	if err != nil {
		return err
	}
	for _, ep := range eps {
		var pruned []string
		upd := ep.DeepCopy()
		keep := func(addrs []corev1.EndpointAddress) []corev1.EndpointAddress {
			return slices.DeleteFunc(addrs, func(a corev1.EndpointAddress) bool {
				if who := c.foreign(ns, a.IP); who != "" {
					pruned = append(pruned, a.IP+" (pod "+who+")")
					return true
				}
				return false
			})
		}
		for i := range upd.Subsets {
			upd.Subsets[i].Addresses = keep(upd.Subsets[i].Addresses)
			upd.Subsets[i].NotReadyAddresses = keep(upd.Subsets[i].NotReadyAddresses)
		}
		if len(pruned) == 0 {
			continue
		}
		upd.Subsets = slices.DeleteFunc(upd.Subsets, func(s corev1.EndpointSubset) bool {
			return len(s.Addresses) == 0 && len(s.NotReadyAddresses) == 0
		})
		if _, err := c.kube.CoreV1().Endpoints(ns).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("prune Endpoints %s/%s: %w", ns, ep.Name, err)
		}
		c.pruned(ep, "Endpoints", ns, ep.Name, pruned)
	}
	objs := c.slices.GetIndexer().List()
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || s.Namespace != ns {
			continue
		}
		var pruned []string
		upd := s.DeepCopy()
		upd.Endpoints = slices.DeleteFunc(upd.Endpoints, func(e discoveryv1.Endpoint) bool {
			for _, a := range e.Addresses {
				if who := c.foreign(ns, a); who != "" {
					pruned = append(pruned, a+" (pod "+who+")")
					return true
				}
			}
			return false
		})
		if len(pruned) == 0 {
			continue
		}
		if _, err := c.kube.DiscoveryV1().EndpointSlices(ns).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("prune EndpointSlice %s/%s: %w", ns, s.Name, err)
		}
		c.pruned(s, "EndpointSlice", ns, s.Name, pruned)
	}
	return nil
}

func (c *Controller) pruned(obj runtime.Object, kind, ns, name string, addrs []string) {
	c.log.Info("endpoints pruned", "kind", kind, "namespace", ns, "name", name, "addresses", addrs)
	c.recorder.Eventf(obj, corev1.EventTypeWarning, "EndpointPruned",
		"removed %s: now the IP of a pod of another namespace; %s", strings.Join(addrs, ", "), advice)
}
