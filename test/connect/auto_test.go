package connect

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// Step 3, auto: a Deployment labelled cci.io/burst=auto scaled past what
// A's host takes (aMaxPods) puts the overflow on the virtual node; scaled
// back down, the pods on the virtual node go first (their deletion cost).
func TestAutoOverflow(t *testing.T) {
	ensureNamespace(t)
	const name, small, large = "overflow", 2, 7
	deployment := func(replicas int) string {
		return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s, cci.io/burst: auto}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {name: c, image: %s, command: [sleep, "3600"], resources: {requests: {cpu: 250m, memory: 512Mi}}}
`, name, ns, replicas, name, name, image(testimage.Shell))
	}
	defer func() {
		_, _ = kubectl(t, "delete", "deployment", "-n", ns, name, "--wait=true", "--timeout=90s")
		_, _ = kubectl(t, "wait", "pods", "-n", ns, "-l", "app="+name, "--for=delete", "--timeout=90s")
	}()
	// where counts the Running pods on A's own nodes and on the virtual
	// node, and describes every pod.
	where := func() (onA, onVirtual, all int, states string) {
		list, err := clientA(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			all++
			out = append(out, fmt.Sprintf("%s@%s=%s", p.Name, p.Spec.NodeName, p.Status.Phase))
			if p.Status.Phase != v1.PodRunning {
				continue
			}
			if p.Spec.NodeName == nodeName {
				onVirtual++
			} else {
				onA++
			}
		}
		sort.Strings(out)
		return onA, onVirtual, all, strings.Join(out, " ")
	}

	apply(t, deployment(small))
	waitFor(t, 3*time.Minute, fmt.Sprintf("%d auto pods Running on A's own host", small), func() (bool, string) {
		onA, onV, _, s := where()
		return onA == small && onV == 0, s
	})
	start := time.Now()
	apply(t, deployment(large))
	// A's host takes aMaxPods pods in all; the rest must be on the
	// virtual node.
	var onA int
	waitFor(t, 4*time.Minute, fmt.Sprintf("%d auto pods Running, the overflow on the virtual node", large), func() (bool, string) {
		a, onV, _, s := where()
		onA = a
		return a+onV == large && onV >= large-aMaxPods, s
	})
	t.Logf("scaled %d→%d in %s: %d on A's host, %d on %s", small, large, time.Since(start).Round(time.Millisecond), onA, large-onA, nodeName)
	if onA < small {
		t.Errorf("only %d pods on A's own host after the scale-up, want at least the %d that ran there", onA, small)
	}

	// Scaled back to what A's host had: the virtual node's pods go first.
	apply(t, deployment(onA))
	waitFor(t, 3*time.Minute, "the virtual node's pods removed first", func() (bool, string) {
		a, onV, all, s := where()
		return all == onA && a == onA && onV == 0, s
	})
}
