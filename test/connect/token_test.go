package connect

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// A burst pod calls A's API as itself: its projected service-account token
// is minted by A's TokenRequest API for A's service account, and its
// in-cluster client is pointed at A's apiserver, where it reads its own
// pod object.
//
// The copy runs in B through a second connect with B's admin credentials,
// in a namespace of the operator: a tenant's pods may not reach B's own
// hosts, and in this test A's apiserver listens on one of them (a user's
// cluster A is elsewhere).
func TestProjectedTokenReachesA(t *testing.T) {
	const node, home, there = "cci-admin", "token", "burst-admin"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ref, err := testimage.BuildInCluster(ctx, cluster.RepoRoot(), t.TempDir(), b.Registry, "")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := b.Kubectl("create", "namespace", there); err != nil && !strings.Contains(out, "AlreadyExists") {
		t.Fatalf("create namespace %s in B: %v\n%s", there, err, out)
	}
	ports := cluster.FreePorts(2)
	c := cluster.NewConnect(bin, "connect", "--kubeconfig", a.Kubeconfig, "--to", b.Kubeconfig, "--namespace", there, "--name", node,
		"--capacity", "cpu=2,memory=4Gi,pods=10", "--kubelet-port", strconv.Itoa(ports[0]), "--webhook-port", strconv.Itoa(ports[1]))
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop the admin connect: %v", err)
		}
		if t.Failed() {
			t.Logf("admin connect output:\n%s", c.Output())
		}
		_, _ = a.Kubectl("delete", "node", node, "--wait=false")
	}()

	if out, err := kubectl(t, "create", "namespace", home); err != nil && !strings.Contains(out, "AlreadyExists") {
		t.Fatalf("create namespace %s: %v\n%s", home, err, out)
	}
	defer func() { _, _ = kubectl(t, "delete", "namespace", home, "--wait=false") }()
	// The pod's own account may read pods of its namespace, in A only.
	mustKubectl(t, "-n", home, "create", "role", "pod-reader", "--verb=get", "--resource=pods")
	mustKubectl(t, "-n", home, "create", "rolebinding", "pod-reader", "--role=pod-reader", "--serviceaccount="+home+":default")
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "incluster", Namespace: home},
		Spec: v1.PodSpec{
			RestartPolicy: v1.RestartPolicyNever,
			NodeSelector:  map[string]string{"kubernetes.io/hostname": node},
			Tolerations:   []v1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: v1.TolerationOpExists}},
			Containers: []v1.Container{{Name: "main", Image: ref, Env: []v1.EnvVar{
				{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "POD_NAMESPACE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			}}},
		},
	}
	created, err := clientA(t).CoreV1().Pods(home).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var phase v1.PodPhase
	waitFor(t, 3*time.Minute, "the in-cluster pod to finish on "+node, func() (bool, string) {
		p, err := clientA(t).CoreV1().Pods(home).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		phase = p.Status.Phase
		return phase == v1.PodSucceeded || phase == v1.PodFailed, fmt.Sprintf("%s on %q: %v", phase, p.Spec.NodeName, p.Status.ContainerStatuses)
	})
	logs, err := kubectl(t, "-n", home, "logs", pod.Name)
	if phase != v1.PodSucceeded || err != nil {
		t.Fatalf("in-cluster pod %s (logs: %v):\n%s", phase, err, logs)
	}
	for _, want := range []string{
		"user=system:serviceaccount:" + home + ":default",
		fmt.Sprintf("pod=%s/%s node=%s uid=%s", home, pod.Name, node, created.UID),
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the pod's output lacks %q:\n%s", want, logs)
		}
	}
	t.Logf("pod output: %s", strings.TrimSpace(logs))
}

// An HPA in A scales a Deployment whose pods are partly in CCI: A's host
// takes what it can, the rest go to the virtual node, and the virtual
// node's pods report their CPU to A's metrics API like A's own.
func TestHPAScalesBurst(t *testing.T) {
	ensureNamespace(t)
	const name, max = "busy", 6
	// Each pod spins within a 250m limit (the smallest flavor: CCI bills
	// and admits by limits) against a 50m request: up to 500 % of its
	// request, against a 50 % target.
	apply(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s, cci.io/burst: auto}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: %s
        command: [sh, -c, "while :; do :; done"]
        resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 250m, memory: 512Mi}}
`, name, ns, name, name, image(testimage.Shell)))
	defer func() {
		_, _ = kubectl(t, "delete", "hpa", "-n", ns, name, "--wait=false")
		_, _ = kubectl(t, "delete", "deployment", "-n", ns, name, "--wait=true", "--timeout=90s")
		_, _ = kubectl(t, "wait", "pods", "-n", ns, "-l", "app="+name, "--for=delete", "--timeout=90s")
	}()
	mustKubectl(t, "autoscale", "deployment", "-n", ns, name, "--cpu-percent=50", "--min=1", "--max="+strconv.Itoa(max))

	var onA, onVirtual int
	waitFor(t, 5*time.Minute, fmt.Sprintf("the HPA to scale %s to %d, the overflow Running on %s", name, max, nodeName), func() (bool, string) {
		h, err := clientA(t).AutoscalingV2().HorizontalPodAutoscalers(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		list, err := clientA(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err.Error()
		}
		onA, onVirtual = 0, 0
		failed := 0
		for _, p := range list.Items {
			if p.Status.Phase == v1.PodFailed {
				failed++
			}
			if p.Status.Phase != v1.PodRunning || p.DeletionTimestamp != nil {
				continue
			}
			if p.Spec.NodeName == nodeName {
				onVirtual++
			} else {
				onA++
			}
		}
		return h.Status.DesiredReplicas == max && onA+onVirtual == max && onVirtual > 0 && onA > 0,
			fmt.Sprintf("desired %d, current %d, metrics %s; Running: %d on A, %d on %s; %d Failed", h.Status.DesiredReplicas, h.Status.CurrentReplicas, hpaMetrics(h), onA, onVirtual, nodeName, failed)
	})
	t.Logf("HPA scaled to %d: %d pods on A's host, %d on %s", max, onA, onVirtual, nodeName)

	// The virtual node's pods are measured: A's metrics API has them all
	// (a new pod's first figures take a scrape or two).
	waitFor(t, 2*time.Minute, fmt.Sprintf("kubectl top to list all %d pods", max), func() (bool, string) {
		out, err := exec.Command("kubectl", "--kubeconfig", a.Kubeconfig, "top", "pod", "-n", ns, "-l", "app="+name, "--no-headers").CombinedOutput()
		if err != nil {
			return false, fmt.Sprintf("kubectl top: %v\n%s", err, out)
		}
		return len(strings.Split(strings.TrimSpace(string(out)), "\n")) >= max, string(out)
	})
}

// hpaMetrics describes an HPA's current metrics.
func hpaMetrics(h *autoscalingv2.HorizontalPodAutoscaler) string {
	var out []string
	for _, m := range h.Status.CurrentMetrics {
		if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
			out = append(out, fmt.Sprintf("%s %d%%", m.Resource.Name, *m.Resource.Current.AverageUtilization))
		}
	}
	for _, c := range h.Status.Conditions {
		if c.Status != v1.ConditionTrue {
			out = append(out, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Message))
		}
	}
	return "[" + strings.Join(out, ", ") + "]"
}
