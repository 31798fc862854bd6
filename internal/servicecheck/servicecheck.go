// Package servicecheck tells a user when a Service selects no pod: upstream
// Kubernetes says nothing, and connections to the Service are just
// refused. A Warning event "NoEndpoints" names the selector once the
// EndpointSlice controller has found no pod for it, and a Normal event
// "EndpointsFound" follows when pods match again.
package servicecheck

import (
	"context"
	"log/slog"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/cci-project/cci/internal/eventloop"
)

// Controller reports Services whose selector matches no pod.
type Controller struct {
	kube    kubernetes.Interface
	factory informers.SharedInformerFactory
	log     *slog.Logger
	queue   workqueue.TypedRateLimitingInterface[string]

	mu    sync.Mutex
	empty map[string]bool // Services reported as selecting nothing
}

// New builds the controller; Run starts it.
func New(kube kubernetes.Interface, log *slog.Logger) *Controller {
	c := &Controller{
		kube:    kube,
		factory: informers.NewSharedInformerFactory(kube, 10*time.Minute),
		log:     log,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "servicecheck"}),
		empty:   map[string]bool{},
	}
	add := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(k)
		}
	}
	_, _ = c.factory.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: add, UpdateFunc: func(_, o any) { add(o) }, DeleteFunc: add,
	})
	slice := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
			c.queue.Add(s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName])
		}
	}
	_, _ = c.factory.Discovery().V1().EndpointSlices().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: slice, UpdateFunc: func(_, o any) { slice(o) }, DeleteFunc: slice,
	})
	return c
}

// Run reports until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return eventloop.Run(ctx, c.kube, c.factory, c.queue, "cci-service-check", c.check)
}

func (c *Controller) check(k string, recorder record.EventRecorder) {
	ns, name, err := cache.SplitMetaNamespaceKey(k)
	if err != nil {
		return
	}
	svc, err := c.factory.Core().V1().Services().Lister().Services(ns).Get(name)
	if err != nil {
		c.mu.Lock()
		delete(c.empty, k)
		c.mu.Unlock()
		return
	}
	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == v1.ServiceTypeExternalName {
		return
	}
	slices, err := c.factory.Discovery().V1().EndpointSlices().Lister().EndpointSlices(ns).List(
		labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}))
	if err != nil || len(slices) == 0 {
		// The EndpointSlice controller has not looked at it yet.
		return
	}
	endpoints := 0
	for _, s := range slices {
		endpoints += len(s.Endpoints)
	}
	c.mu.Lock()
	was := c.empty[k]
	c.empty[k] = endpoints == 0
	c.mu.Unlock()
	switch {
	case endpoints == 0 && !was:
		sel := labels.SelectorFromSet(svc.Spec.Selector).String()
		recorder.Eventf(svc, v1.EventTypeWarning, "NoEndpoints",
			"selector %s matches no pod in namespace %s: connections to this Service are refused until a pod with those labels exists", sel, ns)
		c.log.Info("service selects no pod", "service", k, "selector", sel)
	case endpoints > 0 && was:
		recorder.Eventf(svc, v1.EventTypeNormal, "EndpointsFound", "selector matches %d pod(s) again", endpoints)
	}
}
