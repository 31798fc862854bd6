package e2e

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A pod deleted and made again under the same name at once, as a
// StatefulSet does: each new pod runs. The node may still be releasing the
// earlier pod (its network, its host port) when the new one arrives, and
// the pod controller then finds a pod of that name and hands the new one
// to UpdatePod, which must take it as a new pod, not fail it
// (ProviderFailed: Failed, since its restartPolicy is Never).
func TestSameNameRecreated(t *testing.T) {
	ns := testNamespace(t)
	c := client(t)
	ctx := context.Background()
	for round := 1; round <= 8; round++ {
		p := shellPod("same", "", "sleep 3600")
		p.Spec.RestartPolicy = v1.RestartPolicyNever
		// A host port: its rules make the release of the earlier pod
		// last longer.
		p.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: 21019, HostPort: 21019}}
		var made *v1.Pod
		waitFor(t, time.Minute, "pod same created again", func() (bool, string) {
			var err error
			made, err = c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return false, "the earlier pod's object is still there"
			}
			if err != nil {
				t.Fatalf("create pod same (round %d): %v", round, err)
			}
			return true, ""
		})
		got := waitPodIn(t, ns, "same", 90*time.Second, "Running", func(p *v1.Pod) (bool, string) {
			if p.UID != made.UID {
				return false, "another pod"
			}
			if p.Status.Phase == v1.PodFailed {
				t.Fatalf("round %d: the new pod failed: %s: %s", round, p.Status.Reason, p.Status.Message)
			}
			return p.Status.Phase == v1.PodRunning, string(p.Status.Phase) + " " + p.Status.Reason
		})
		if got.Status.Reason != "" {
			t.Errorf("round %d: Running with reason %q: %s", round, got.Status.Reason, got.Status.Message)
		}
		if err := c.CoreV1().Pods(ns).Delete(ctx, "same", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}
