package fleet

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// Without any constraint of their own, 6 replicas spread 2/2/2 over the 3
// general hosts (the scheduler's default spread by host); the gpu host,
// tainted for its pool, takes none.
func TestDefaultSpread(t *testing.T) {
	ns := namespace(t, "spread")
	apply(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: six, namespace: %s}
spec:
  replicas: 6
  selector: {matchLabels: {app: six}}
  template:
    metadata: {labels: {app: six}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: main, image: %s, command: [sleep, "3600"]}
`, ns, image(testimage.Shell)))
	pods := waitRunning(t, ns, "app=six", 6, 3*time.Minute)
	spread := byHost(pods)
	for _, h := range []string{"host-1", "host-2", "host-3"} {
		if len(spread[h]) != 2 {
			t.Errorf("%s runs %d of the 6 replicas, want 2 (%v)", h, len(spread[h]), keys(spread))
		}
	}
}

// kubectl drain evicts through the Eviction API: it waits while a
// PodDisruptionBudget forbids an eviction and goes through once it allows
// one; the evicted pods come back on the other hosts.
func TestDrainHonoursPDB(t *testing.T) {
	ns := namespace(t, "drain")
	apply(t, webDeployment(ns, "guarded", 3, ""))
	waitRunning(t, ns, "app=guarded", 3, 3*time.Minute)
	apply(t, fmt.Sprintf(`apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: guarded, namespace: %s}
spec:
  minAvailable: 3
  selector: {matchLabels: {app: guarded}}
`, ns))
	waitFor(t, 30*time.Second, "the PDB observed", func() (bool, string) {
		pdb, err := client(t).PolicyV1().PodDisruptionBudgets(ns).Get(context.Background(), "guarded", metav1.GetOptions{})
		return err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.ExpectedPods == 3, fmt.Sprint(err)
	})
	defer func() { _, _ = kubectl(t, "uncordon", "host-2") }()
	out, err := kubectl(t, "drain", "host-2", "--ignore-daemonsets", "--delete-emptydir-data", "--pod-selector", "app=guarded", "--timeout", "15s")
	if err == nil || !strings.Contains(out, "disruption budget") {
		t.Fatalf("drain with minAvailable 3 of 3: want a refusal naming the disruption budget, got %v\n%s", err, out)
	}
	if got := len(waitRunning(t, ns, "app=guarded", 3, time.Minute)); got != 3 {
		t.Fatalf("%d pods after a refused drain", got)
	}
	mustKubectl(t, "patch", "pdb", "-n", ns, "guarded", "--type", "merge", "-p", `{"spec":{"minAvailable":2}}`)
	out = mustKubectl(t, "drain", "host-2", "--ignore-daemonsets", "--delete-emptydir-data", "--pod-selector", "app=guarded", "--timeout", "2m")
	t.Logf("drain:\n%s", out)
	for _, p := range waitRunning(t, ns, "app=guarded", 3, 2*time.Minute) {
		if p.Spec.NodeName == "host-2" {
			t.Errorf("pod %s still on the drained host-2", p.Name)
		}
	}
}
