package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/ptr"

	"github.com/cci-project/cci/internal/testimage"
)

// burnerScript idles until /tmp/burn exists and spins while it does, so a
// test turns one pod's CPU load on and off with `kubectl exec`.
const burnerScript = `trap 'exit 0' TERM
while :; do
  while [ -e /tmp/burn ]; do :; done
  sleep 1
done`

// namedNamespace creates a namespace that is deleted, with its pods, when
// the test ends.
func namedNamespace(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	c := client(t)
	if _, err := c.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		waitFor(t, 2*time.Minute, "namespace "+name+" gone", func() (bool, string) {
			_, err := c.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			return err != nil, fmt.Sprint(err)
		})
	})
	return name
}

// burnerPod is a pod of the shell image running burnerScript with a small
// CPU request and limit.
func burnerPod() v1.PodSpec {
	return v1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](2),
		Containers: []v1.Container{{
			Name:    "burner",
			Image:   image(testimage.Shell),
			Command: []string{"sh", "-c", burnerScript},
			Resources: v1.ResourceRequirements{
				Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("50m"), v1.ResourceMemory: resource.MustParse("16Mi")},
				Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m"), v1.ResourceMemory: resource.MustParse("64Mi")},
			},
		}},
	}
}

func nodeName(t *testing.T) string {
	t.Helper()
	nodes, err := client(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("nodes: %v", err)
	}
	return nodes.Items[0].Name
}

// The kubelet API's /stats/summary and /metrics/resource (reached through
// the apiserver's node proxy, as `kubectl get --raw` does) report CPU and
// memory of the node, of a running pod and of its container, from cgroups,
// under every runtime class.
func TestMetricsKubeletEndpoints(t *testing.T) {
	forEachRuntime(t, testKubeletEndpoints)
}

func testKubeletEndpoints(t *testing.T, runtimeClass string) {
	name := runtimeClass
	if name == "" {
		name = "default"
	}
	ns := namedNamespace(t, "metrics-kubelet-"+name)
	ctx := context.Background()
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stats", Labels: map[string]string{"app": "stats"}}, Spec: burnerPod()}
	pod.Spec.RuntimeClassName = runtimeClassPtr(runtimeClass)
	if _, err := client(t).CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "app=stats", 1, 2*time.Minute)
	node := nodeName(t)

	var summary statsv1alpha1.Summary
	var ps *statsv1alpha1.PodStats
	waitFor(t, 30*time.Second, "the pod in /stats/summary with CPU and memory", func() (bool, string) {
		raw, err := kubectl(t, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/stats/summary")
		if err != nil {
			return false, raw
		}
		summary = statsv1alpha1.Summary{}
		if err := json.Unmarshal([]byte(raw), &summary); err != nil {
			return false, err.Error()
		}
		ps = nil
		for i, p := range summary.Pods {
			if p.PodRef.Namespace == ns && p.PodRef.Name == "stats" {
				ps = &summary.Pods[i]
			}
		}
		if ps == nil || len(ps.Containers) != 1 || ps.CPU == nil || ps.Memory == nil {
			return false, raw
		}
		c := ps.Containers[0]
		return c.CPU != nil && c.CPU.UsageCoreNanoSeconds != nil && *c.CPU.UsageCoreNanoSeconds > 0 &&
			c.Memory != nil && c.Memory.WorkingSetBytes != nil && *c.Memory.WorkingSetBytes > 0, raw
	})
	n := summary.Node
	if n.NodeName != node || n.CPU == nil || n.CPU.UsageCoreNanoSeconds == nil || *n.CPU.UsageCoreNanoSeconds == 0 ||
		n.Memory == nil || n.Memory.WorkingSetBytes == nil || *n.Memory.WorkingSetBytes == 0 {
		t.Errorf("node stats incomplete: %+v", n)
	}
	c := ps.Containers[0]
	if c.Name != "burner" || c.StartTime.IsZero() {
		t.Errorf("container stats: name %q start %v", c.Name, c.StartTime)
	}
	if *ps.CPU.UsageCoreNanoSeconds < *c.CPU.UsageCoreNanoSeconds || *ps.Memory.WorkingSetBytes < *c.Memory.WorkingSetBytes {
		t.Errorf("pod totals below its container's: pod %+v container %+v", ps, c)
	}
	if *n.CPU.UsageCoreNanoSeconds < *ps.CPU.UsageCoreNanoSeconds {
		t.Errorf("node CPU %d below the pod's %d", *n.CPU.UsageCoreNanoSeconds, *ps.CPU.UsageCoreNanoSeconds)
	}

	text := mustKubectl(t, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/metrics/resource")
	for _, want := range []string{
		"node_cpu_usage_seconds_total ",
		"node_memory_working_set_bytes ",
		`container_cpu_usage_seconds_total{container="burner",namespace="` + ns + `",pod="stats"} `,
		`container_memory_working_set_bytes{container="burner",namespace="` + ns + `",pod="stats"} `,
		`container_start_time_seconds{container="burner",namespace="` + ns + `",pod="stats"} `,
		`pod_cpu_usage_seconds_total{namespace="` + ns + `",pod="stats"} `,
		`pod_memory_working_set_bytes{namespace="` + ns + `",pod="stats"} `,
		"# TYPE container_cpu_usage_seconds_total counter",
		"scrape_error 0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics/resource lacks %q:\n%s", want, text)
		}
	}
}

// `kubectl top node` and `kubectl top pod` answer from the metrics API
// (metrics-server behind the aggregation layer).
func TestMetricsTop(t *testing.T) {
	ns := namedNamespace(t, "metrics-top")
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "top", Labels: map[string]string{"app": "top"}}, Spec: burnerPod()}
	if _, err := client(t).CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "app=top", 1, 2*time.Minute)
	node := nodeName(t)

	// metrics-server needs two scrapes (10 s apart) of a container for a rate.
	waitFor(t, 90*time.Second, "kubectl top node", func() (bool, string) {
		out, err := kubectl(t, "top", "node", "--no-headers")
		return err == nil && strings.HasPrefix(out, node+" "), out
	})
	waitFor(t, 90*time.Second, "kubectl top pod", func() (bool, string) {
		out, err := kubectl(t, "top", "pod", "-n", ns, "--no-headers")
		return err == nil && strings.HasPrefix(out, "top "), out
	})
	out := mustKubectl(t, "top", "pod", "-n", ns, "--containers", "--no-headers")
	if f := strings.Fields(out); len(f) < 4 || f[0] != "top" || f[1] != "burner" || !strings.HasSuffix(f[3], "Mi") {
		t.Errorf("kubectl top pod --containers: %q", out)
	}
	raw := mustKubectl(t, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/"+ns+"/pods/top")
	if !strings.Contains(raw, `"name":"burner"`) {
		t.Errorf("PodMetrics lacks the container: %s", raw)
	}
}

// A HorizontalPodAutoscaler on CPU utilization scales a Deployment up while
// one of its pods burns CPU and back down once it stops.
func TestHPAScalesOnCPU(t *testing.T) {
	ns := namedNamespace(t, "metrics-hpa")
	ctx := context.Background()
	c := client(t)
	labels := map[string]string{"app": "burner"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "burner"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: burnerPod()},
		},
	}
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitRunning(t, ns, "app=burner", 1, 2*time.Minute)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "burner"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "burner"},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   v1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](50)},
				},
			}},
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](5)},
			},
		},
	}
	if _, err := c.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hpaState := func() string {
		h, err := c.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "burner", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		var conds []string
		for _, cond := range h.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s(%s: %s)", cond.Type, cond.Status, cond.Reason, cond.Message))
		}
		util := "-"
		for _, m := range h.Status.CurrentMetrics {
			if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
				util = fmt.Sprintf("%d%%", *m.Resource.Current.AverageUtilization)
			}
		}
		return fmt.Sprintf("replicas %d→%d, cpu %s, %s", h.Status.CurrentReplicas, h.Status.DesiredReplicas, util, strings.Join(conds, "; "))
	}
	// The HPA must see the idle pod first: it holds at one replica.
	waitFor(t, 90*time.Second, "the HPA to read the idle pod's CPU", func() (bool, string) {
		h, err := c.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "burner", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, m := range h.Status.CurrentMetrics {
			if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
				return true, hpaState()
			}
		}
		return false, hpaState()
	})
	if s, err := c.AppsV1().Deployments(ns).Get(ctx, "burner", metav1.GetOptions{}); err != nil || *s.Spec.Replicas != 1 {
		t.Fatalf("idle deployment scaled: %v %s", err, hpaState())
	}

	burning := pods[0].Name
	mustKubectl(t, "exec", "-n", ns, burning, "--", "sh", "-c", ": > /tmp/burn")
	replicas := func() (int32, string) {
		d, err := c.AppsV1().Deployments(ns).Get(ctx, "burner", metav1.GetOptions{})
		if err != nil {
			return 0, err.Error()
		}
		return *d.Spec.Replicas, hpaState()
	}
	waitFor(t, 90*time.Second, "scale up under load", func() (bool, string) {
		n, state := replicas()
		return n > 1, state
	})
	t.Logf("scaled up: %s", hpaState())

	mustKubectl(t, "exec", "-n", ns, burning, "--", "rm", "-f", "/tmp/burn")
	waitFor(t, 2*time.Minute, "scale down after the load", func() (bool, string) {
		n, state := replicas()
		return n == 1, state
	})
	t.Logf("scaled down: %s", hpaState())
}
