package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// A ReadWriteOncePod claim in use by a pod: a second pod of the claim bound
// to the same node by nodeName (past the scheduler, which keeps it off
// every node) is held at ContainerCreating with the kubelet's FailedMount
// message until the first pod is gone, then runs.
func TestReadWriteOncePodHeld(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	ns := namedNamespace(t, "rwop-"+rand.String(4))
	createClaim(t, ns, evsClaim("solo", "64Mi", "cci-evs", v1.ReadWriteOncePod))
	first := claimPod("first", "", "solo", "sleep 3600")
	createPod(t, ns, first)
	p := waitPodRunningIn(t, ns, "first", 2*time.Minute)

	second := claimPod("second", "", "solo", "sleep 3600")
	second.Spec.NodeName = p.Spec.NodeName
	createPod(t, ns, second)
	const want = "volume uses the ReadWriteOncePod access mode and is already in use by another pod"
	waitFor(t, time.Minute, "a FailedMount event for pod second", func() (bool, string) {
		evs, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=second,reason=FailedMount"})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if strings.Contains(e.Message, want) {
				return true, ""
			}
		}
		return false, "no such event yet"
	})
	got, err := c.CoreV1().Pods(ns).Get(ctx, "second", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != v1.PodPending {
		t.Fatalf("pod second is %s while pod first holds the ReadWriteOncePod claim", got.Status.Phase)
	}
	if sts := got.Status.ContainerStatuses; len(sts) == 1 && (sts[0].State.Waiting == nil || sts[0].State.Waiting.Reason != "ContainerCreating") {
		t.Errorf("pod second's container: %+v, want waiting with ContainerCreating", sts[0].State)
	}
	if err := c.CoreV1().Pods(ns).Delete(ctx, "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodRunningIn(t, ns, "second", 2*time.Minute)
}
