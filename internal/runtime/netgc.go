package runtime

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// A pod's network teardown (CNI DEL, then its namespace) can fail for a
// moment: on a loaded host 50 pods deleted at once queue their bridge and
// iptables calls behind one lock, and a DEL outlives the worker's clean-up
// bound (seen: 76 of 106 teardowns timed out in a churn at load average 50).
// The worker then forgets the pod, and nothing would try again: its
// namespace, veth and address stayed until the host was wiped. The runtime
// keeps trying in the background instead. At start, the networks the
// network manager recorded as made by this host and not torn down, of pods
// the host no longer has, go the same way (sweepNetworks); names in
// /var/run/netns alone cannot tell them, as every cluster and every host of
// `cci up --hosts` on one machine shares that folder.

// Variables, not constants, for the tests.
var (
	// teardownRetryFirst and teardownRetryMax bound the back-off between
	// tries of a failed teardown.
	teardownRetryFirst = 2 * time.Second
	teardownRetryMax   = time.Minute
	// teardownTryTimeout bounds one try.
	teardownTryTimeout = 2 * time.Minute
)

// retryTeardown tears down pod uid's network in the background until it
// succeeds or the runtime stops. Concurrent calls for one id are harmless:
// Teardown locks by id and a second finds nothing left.
func (r *Runtime) retryTeardown(uid types.UID) {
	go func() {
		wait := teardownRetryFirst
		for try := 1; ; try++ {
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(wait):
			}
			ctx, cancel := context.WithTimeout(r.ctx, teardownTryTimeout)
			err := r.cfg.Network.Teardown(ctx, string(uid))
			cancel()
			if err == nil {
				r.cfg.Log.Info("pod network released after a failed teardown", "uid", uid, "tries", try)
				// Its devices were held while the sandbox might live on.
				if r.cfg.Devices != nil {
					if _, running := r.PodByUID(uid); !running {
						r.cfg.Devices.Release(uid)
					}
				}
				return
			}
			if try%5 == 1 {
				r.cfg.Log.Warn("pod network teardown failed again; trying on", "uid", uid, "tries", try, "err", err)
			}
			wait = min(wait*2, teardownRetryMax)
		}
	}()
}
