package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podutil "k8s.io/kubernetes/pkg/api/v1/pod"
)

// A pod with a readiness gate is Ready only once the gate's condition,
// set by another controller through the API, is True; the agent keeps
// that condition in the status it writes.
func TestReadinessGate(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		const gate = v1.PodConditionType("example.com/lb-ready")
		ns := testNamespace(t)
		p := shellPod("gated", rc, "sleep 3600")
		p.Spec.ReadinessGates = []v1.PodReadinessGate{{ConditionType: gate}}
		createPod(t, ns, p)
		pods := client(t).CoreV1().Pods(ns)
		cond := func(p *v1.Pod, ct v1.PodConditionType) *v1.PodCondition {
			_, c := podutil.GetPodCondition(&p.Status, ct)
			return c
		}
		// Running, its container ready, but not Ready: the gate is unset.
		waitFor(t, 60*time.Second, "ContainersReady with Ready held by the gate", func() (bool, string) {
			got, err := pods.Get(context.Background(), "gated", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			cr, r := cond(got, v1.ContainersReady), cond(got, v1.PodReady)
			return cr != nil && cr.Status == v1.ConditionTrue && r != nil && r.Status == v1.ConditionFalse && r.Reason == "ReadinessGatesNotReady",
				fmt.Sprintf("ContainersReady %+v Ready %+v", cr, r)
		})

		// The gate's controller sets it: the pod turns Ready, and the gate
		// stays in the status.
		got, err := pods.Get(context.Background(), "gated", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got.Status.Conditions = append(got.Status.Conditions, v1.PodCondition{Type: gate, Status: v1.ConditionTrue, LastTransitionTime: metav1.Now()})
		if _, err := pods.UpdateStatus(context.Background(), got, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("set the gate: %v", err)
		}
		waitFor(t, 30*time.Second, "Ready once the gate is True", func() (bool, string) {
			got, err := pods.Get(context.Background(), "gated", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			r, g := cond(got, v1.PodReady), cond(got, gate)
			return r != nil && r.Status == v1.ConditionTrue && g != nil && g.Status == v1.ConditionTrue,
				fmt.Sprintf("Ready %+v gate %+v", r, g)
		})
	})
}
