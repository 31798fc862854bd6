package cells

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/connect"
	"github.com/cci-project/cci/internal/pool"
	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// Step 6: each cell is one node of the front, in the default pool, with
// no taint and the cell's free allocatable (not a tenant's quota) as its
// capacity.
func TestCellNodes(t *testing.T) {
	for i, c := range cells {
		var n *v1.Node
		// The front's node controller lifts a new node's not-ready taint
		// once it has seen it Ready.
		cluster.WaitFor(t, time.Minute, "node "+cellNode(i)+" Ready in the front, no not-ready taint", func() (bool, string) {
			var err error
			if n, err = front.Client(t).CoreV1().Nodes().Get(context.Background(), cellNode(i), metav1.GetOptions{}); err != nil {
				return false, err.Error()
			}
			st, _ := nodeReady(t, cellNode(i))
			return st == v1.ConditionTrue && !slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool { return t.Key == v1.TaintNodeNotReady }), fmt.Sprint(st, n.Spec.Taints)
		})
		if n.Labels[pool.Label] != pool.Default || len(n.Spec.Taints) != 0 {
			t.Errorf("node %s: pool %q, taints %v; want pool %q and no taint", n.Name, n.Labels[pool.Label], n.Spec.Taints, pool.Default)
		}
		hosts, err := c.Client(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var cpu resource.Quantity
		for _, h := range hosts.Items {
			cpu.Add(h.Status.Allocatable[v1.ResourceCPU])
		}
		got := n.Status.Allocatable[v1.ResourceCPU]
		if got.Sign() <= 0 || got.Cmp(cpu) > 0 {
			t.Errorf("node %s: allocatable cpu %s; want more than 0 and at most the cell's hosts' %s", n.Name, got.String(), cpu.String())
		}
	}
}

// deployment is the tenant's Deployment of n pods spread over the front's
// nodes (the cells), one domain per node.
func deployment(name string, n int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      terminationGracePeriodSeconds: 5
      topologySpreadConstraints:
      # Honor: the front's cordoned host and a lost cell are no domain.
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: %s}}}
      containers:
      - {name: c, image: %s, command: [sleep, "3600"], resources: {requests: {cpu: 250m, memory: 512Mi}}}
`, name, tenant, n, name, name, name, front.Registry+"/"+testimage.Shell)
}

// placement counts the Deployment's Running pods per node in the front,
// and describes every pod.
func placement(t *testing.T, app string) (map[string]int, string) {
	t.Helper()
	list, err := front.Client(t).CoreV1().Pods(tenant).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]int{}
	var states []string
	for _, p := range list.Items {
		del := ""
		if p.DeletionTimestamp != nil {
			del = " (terminating)"
		}
		states = append(states, fmt.Sprintf("%s@%s=%s%s", p.Name, p.Spec.NodeName, p.Status.Phase, del))
		if p.Status.Phase == v1.PodRunning && p.DeletionTimestamp == nil {
			running[p.Spec.NodeName]++
		}
	}
	sort.Strings(states)
	return running, strings.Join(states, " ")
}

// copies are the pod copies of node in cell c, in the tenant's namespace.
func copies(t *testing.T, c *cluster.Instance, node string) []v1.Pod {
	t.Helper()
	list, err := c.Client(t).CoreV1().Pods(tenant).List(context.Background(), metav1.ListOptions{LabelSelector: connect.LabelNode + "=" + node})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func nodeReady(t *testing.T, name string) (v1.ConditionStatus, string) {
	t.Helper()
	n, err := front.Client(t).CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status, c.Reason
		}
	}
	return v1.ConditionUnknown, "no Ready condition"
}

// Steps 6-7: a tenant's Deployment spreads over both cells; with one
// cell's link down, its pods are replaced in the other; when the link is
// back, the copies left in the cell that lost are removed.
func TestCellLossReplacesPods(t *testing.T) {
	const app, n = "spread", 4
	front.Apply(t, deployment(app, n))
	defer front.MustKubectl(t, "delete", "deployment", "-n", tenant, app, "--wait=false")
	start := time.Now()
	cluster.WaitFor(t, 5*time.Minute, "the tenant's pods Running, half in each cell", func() (bool, string) {
		running, states := placement(t, app)
		return running[cellNode(0)] == n/2 && running[cellNode(1)] == n/2, states
	})
	t.Logf("%d pods Running over two cells in %s", n, time.Since(start).Round(time.Millisecond))
	// Each copy runs in the cell in the tenant's own namespace, made there
	// from the front's Tenant (with its quota).
	for i, c := range cells {
		if got := copies(t, c, cellNode(i)); len(got) != n/2 {
			t.Fatalf("cell %d has %d copies of the tenant's pods, want %d", i+1, len(got), n/2)
		}
		q, err := c.Client(t).CoreV1().ResourceQuotas(tenant).List(context.Background(), metav1.ListOptions{})
		if err != nil || len(q.Items) == 0 {
			t.Errorf("cell %d: the tenant's namespace has no quota (%v)", i+1, err)
		}
	}

	// The link to cell 1 goes down.
	lost := time.Now()
	if err := connects[0].Stop(); err != nil {
		t.Fatalf("stop the connect of %s: %v", cellNode(0), err)
	}
	restarted := false
	defer func() {
		if !restarted {
			_ = connects[0].Start()
		}
	}()
	cluster.WaitFor(t, 3*time.Minute, "node "+cellNode(0)+" not Ready in the front", func() (bool, string) {
		st, reason := nodeReady(t, cellNode(0))
		return st != v1.ConditionTrue, string(st) + " " + reason
	})
	t.Logf("%s not Ready %s after its link went down", cellNode(0), time.Since(lost).Round(time.Second))
	cluster.WaitFor(t, 5*time.Minute, "the lost cell's pods replaced in the other cell", func() (bool, string) {
		running, states := placement(t, app)
		return running[cellNode(1)] == n, states
	})
	t.Logf("all %d pods Running in %s %s after the link to %s went down", n, cellNode(1), time.Since(lost).Round(time.Second), cellNode(0))
	// The lost cell still runs its copies: the front could not reach it.
	if got := copies(t, cells[0], cellNode(0)); len(got) != n/2 {
		t.Errorf("the lost cell has %d copies while its link is down, want the %d it had", len(got), n/2)
	}

	// The link is back: the lost cell's copies, replaced meanwhile, go.
	if err := connects[0].Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	cluster.WaitFor(t, 3*time.Minute, "no copies left in the cell that lost", func() (bool, string) {
		got := copies(t, cells[0], cellNode(0))
		var names []string
		for _, p := range got {
			names = append(names, p.Name+"="+string(p.Status.Phase))
		}
		return len(got) == 0, strings.Join(names, " ")
	})
	cluster.WaitFor(t, 2*time.Minute, "the front's pods on the lost cell gone", func() (bool, string) {
		list, err := front.Client(t).CoreV1().Pods(tenant).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err.Error()
		}
		_, states := placement(t, app)
		return len(list.Items) == n, states
	})
	t.Logf("duplicates removed %s after the link came back", time.Since(back).Round(time.Second))
	// No duplicates: n pods in the front, n copies in all the cells.
	if got := len(copies(t, cells[1], cellNode(1))); got != n {
		t.Errorf("cell 2 has %d copies, want %d", got, n)
	}
	if st, reason := nodeReady(t, cellNode(0)); st != v1.ConditionTrue {
		t.Errorf("node %s is %s (%s) after its link came back", cellNode(0), st, reason)
	}
}
