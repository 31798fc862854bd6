package pool

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
)

// TestControllerReportsPoolWithoutReadyHost: an unschedulable pod of a
// pool whose only host is NotReady gets the event; a pod that the
// scheduler has not given up on, and a pod of no pool, get none.
func TestControllerReportsPoolWithoutReadyHost(t *testing.T) {
	unschedulable := corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}}
	pod := func(name, pool string, st corev1.PodStatus) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "acme", UID: types.UID("uid-" + name)}, Status: st}
		if pool != "" {
			p.Spec.NodeSelector = map[string]string{Label: pool}
		}
		return p
	}
	kube := fake.NewClientset(
		node("g1", "gpu", false, nil),
		node("a", "general", true, nil),
		pod("waits", "gpu", unschedulable),
		pod("fresh", "gpu", corev1.PodStatus{Phase: corev1.PodPending}),
		pod("nopool", "", unschedulable),
	)
	c := NewController(kube, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)

	var events []corev1.Event
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := kube.CoreV1().Events("acme").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		events = l.Items
		return len(events) > 0, nil
	})
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	if len(events) != 1 || events[0].InvolvedObject.Name != "waits" || events[0].Reason != ReasonNoReadyHost ||
		!strings.Contains(events[0].Message, `pool "gpu" has no Ready host (0 of 1 Ready)`) {
		t.Errorf("events %+v", events)
	}
	if got := c.Existing(); len(got) != 2 {
		t.Errorf("existing pools %v", got)
	}
}
