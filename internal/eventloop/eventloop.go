// Package eventloop runs the loop that CCI's reporting controllers
// (claimcheck, servicecheck) share: start their informers, then hand each
// queued key to a check that may record events as the named component.
package eventloop

import (
	"context"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Run starts factory's informers, waits for their caches, and calls check
// with each key of queue until ctx ends; the queue is shut down on return.
func Run(ctx context.Context, kube kubernetes.Interface, factory informers.SharedInformerFactory, queue workqueue.TypedRateLimitingInterface[string], component string, check func(key string, recorder record.EventRecorder)) error {
	defer queue.ShutDown()
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: component})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for {
			k, quit := queue.Get()
			if quit {
				return
			}
			check(k, recorder)
			queue.Done(k)
		}
	}, time.Second)
	<-ctx.Done()
	return nil
}
