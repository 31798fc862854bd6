// Package vknode holds what the agent and the simulated hosts set alike on
// their virtual-kubelet nodes.
package vknode

import (
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"k8s.io/client-go/util/workqueue"
)

// PodQueueLimiter is the rate limiter of a node's pod queues: a key that
// fails waits 5 ms, doubling up to 5 minutes, as on a kubelet's pod
// workers, and nothing else. virtual-kubelet's default, client-go's
// controller limiter, adds one bucket of 10 items a second (burst 100)
// shared by all the node's pods: past 100 pods at once, pods waited for it
// before they were created, deleted or had their status sent (a 200-pod
// burst, churn at 8 pods/s: seconds).
func PodQueueLimiter() workqueue.TypedRateLimiter[any] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[any](5*time.Millisecond, 5*time.Minute)
}

// UnthrottledPodQueues gives the node's three pod queues (pods from the
// API, deletions, statuses from the runtime) PodQueueLimiter.
func UnthrottledPodQueues() nodeutil.NodeOpt {
	return nodeutil.WithPodControllerConfigOverrides(func(c *node.PodControllerConfig) error {
		c.SyncPodsFromKubernetesRateLimiter = PodQueueLimiter()
		c.DeletePodsFromKubernetesRateLimiter = PodQueueLimiter()
		c.SyncPodStatusFromProviderRateLimiter = PodQueueLimiter()
		return nil
	})
}
