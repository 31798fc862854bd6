package pool

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func res(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func node(name, pool string, ready bool, alloc corev1.ResourceList) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Status: corev1.NodeStatus{Allocatable: alloc, Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
	if pool != "" {
		n.Labels[Label] = pool
	}
	return n
}

func podOn(nodeName string, phase corev1.PodPhase, containers ...corev1.ResourceList) *corev1.Pod {
	p := &corev1.Pod{Spec: corev1.PodSpec{NodeName: nodeName}, Status: corev1.PodStatus{Phase: phase}}
	for _, r := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Resources: corev1.ResourceRequirements{Requests: r}})
	}
	return p
}

// TestSummarize is the pool list's arithmetic.
func TestSummarize(t *testing.T) {
	nodes := []*corev1.Node{
		node("a", "general", true, res("cpu", "4", "memory", "8Gi", "pods", "110")),
		node("b", "general", false, res("cpu", "4", "memory", "8Gi", "pods", "110")),
		node("g", "gpu", true, res("cpu", "8", "memory", "32Gi", "pods", "50", "nvidia.com/gpu", "4")),
		node("old", "", true, res("cpu", "64")),
	}
	cordoned := node("c", "gpu", true, res("cpu", "8", "memory", "32Gi", "pods", "50", "nvidia.com/gpu", "4"))
	cordoned.Spec.Unschedulable = true
	nodes = append(nodes, cordoned)
	sidecar := podOn("a", corev1.PodRunning, res("cpu", "500m", "memory", "1Gi"))
	always := corev1.ContainerRestartPolicyAlways
	sidecar.Spec.InitContainers = []corev1.Container{
		{RestartPolicy: &always, Resources: corev1.ResourceRequirements{Requests: res("cpu", "250m", "memory", "256Mi")}},
		{Resources: corev1.ResourceRequirements{Requests: res("cpu", "2")}}, // a big init container: the peak
	}
	pods := []*corev1.Pod{
		podOn("a", corev1.PodRunning, res("cpu", "1", "memory", "2Gi"), res("cpu", "250m", "memory", "512Mi")),
		podOn("b", corev1.PodPending, res("cpu", "500m", "memory", "1Gi")),
		podOn("a", corev1.PodSucceeded, res("cpu", "3")), // finished: holds nothing
		podOn("a", corev1.PodFailed, res("cpu", "3")),    // finished: holds nothing
		podOn("", corev1.PodPending, res("cpu", "3")),    // not bound
		podOn("old", corev1.PodRunning, res("cpu", "3")), // on a host of no pool
		podOn("g", corev1.PodRunning, res("cpu", "2", "memory", "4Gi", "nvidia.com/gpu", "1")),
		podOn("c", corev1.PodRunning, res("cpu", "1", "nvidia.com/gpu", "2")),
		sidecar,
	}
	got := Summarize(nodes, pods)
	if len(got) != 2 || got[0].Name != "general" || got[1].Name != "gpu" {
		t.Fatalf("pools %+v", got)
	}
	want := []struct {
		hosts, ready int
		alloc, req   corev1.ResourceList
	}{
		// sidecar pod: max(0.5+0.25, 0.25+2) = 2.25 cores, 1Gi+256Mi
		{2, 1, res("cpu", "8", "memory", "16Gi", "pods", "220"), res("cpu", "4", "memory", "4864Mi", "pods", "3")},
		{2, 1, res("cpu", "16", "memory", "64Gi", "pods", "100", "nvidia.com/gpu", "8"), res("cpu", "3", "memory", "4Gi", "pods", "2", "nvidia.com/gpu", "3")},
	}
	for i, w := range want {
		s := got[i]
		if s.Hosts != w.hosts || s.ReadyHosts != w.ready {
			t.Errorf("%s: hosts %d/%d, want %d/%d", s.Name, s.ReadyHosts, s.Hosts, w.ready, w.hosts)
		}
		for _, r := range s.Resources() {
			if a, b := s.Allocatable[r], w.alloc[r]; a.Cmp(b) != 0 {
				t.Errorf("%s: allocatable %s = %s, want %s", s.Name, r, a.String(), b.String())
			}
			if a, b := s.Requested[r], w.req[r]; a.Cmp(b) != 0 {
				t.Errorf("%s: requested %s = %s, want %s", s.Name, r, a.String(), b.String())
			}
		}
	}
	if d := got[1].Devices(); len(d) != 1 || d[0] != "nvidia.com/gpu" {
		t.Errorf("gpu devices %v", d)
	}
	if d := got[0].Devices(); len(d) != 0 {
		t.Errorf("general devices %v", d)
	}
}

func TestDevice(t *testing.T) {
	for name, want := range map[corev1.ResourceName]bool{
		"nvidia.com/gpu": true, "huawei.com/ascend-910": true, "cpu": false, "memory": false,
		"hugepages-2Mi": false, "kubernetes.io/batch-cpu": false, "requests.nvidia.com/gpu": false, "ephemeral-storage": false,
	} {
		if got := Device(name); got != want {
			t.Errorf("Device(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSetTaint(t *testing.T) {
	other := corev1.Taint{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute}
	old := []corev1.Taint{other, {Key: TaintKey, Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	if got := SetTaint(old, "ascend"); len(got) != 2 || got[0] != other || got[1].Value != "ascend" {
		t.Errorf("to ascend: %+v", got)
	}
	if got := SetTaint(old, Default); len(got) != 1 || got[0] != other {
		t.Errorf("to general: %+v", got)
	}
	if len(old) != 2 || old[1].Value != "gpu" {
		t.Errorf("SetTaint changed its argument: %+v", old)
	}
}

func TestValidate(t *testing.T) {
	for _, ok := range []string{"general", "gpu", "ascend-910", "a"} {
		if err := Validate(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "GPU", "gpu_a100", "-gpu", strings.Repeat("a", 64)} {
		if err := Validate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestExplain(t *testing.T) {
	for _, c := range []struct {
		hosts, ready int
		reason, msg  string
	}{
		{0, 0, ReasonNoReadyHost, `pool "gpu" has no Ready host: it has no host at all`},
		{2, 0, ReasonNoReadyHost, `pool "gpu" has no Ready host (0 of 2 Ready): no capacity`},
		{2, 1, ReasonNoCapacity, `pool "gpu" has no capacity for this pod on its 1 Ready host(s)`},
	} {
		reason, msg := Explain("gpu", c.hosts, c.ready)
		if reason != c.reason || !strings.Contains(msg, c.msg) {
			t.Errorf("%d/%d: %s %q", c.ready, c.hosts, reason, msg)
		}
	}
}

// TestCollector: the gauges carry the summaries' figures, by pool and
// resource.
func TestCollector(t *testing.T) {
	c := NewCollector(func() []Summary {
		return Summarize([]*corev1.Node{node("g", "gpu", true, res("cpu", "8", "memory", "1Gi", "pods", "50", "nvidia.com/gpu", "4"))},
			[]*corev1.Pod{podOn("g", corev1.PodRunning, res("cpu", "1500m", "nvidia.com/gpu", "1"))})
	})
	want := `
# HELP cci_pool_hosts_ready Hosts of the pool that take pods now (Ready, not cordoned).
# TYPE cci_pool_hosts_ready gauge
cci_pool_hosts_ready{pool="gpu"} 1
# HELP cci_pool_requested Sum of the requests of the unfinished pods bound to the pool's hosts (cpu in cores, memory in bytes, pods and devices in units).
# TYPE cci_pool_requested gauge
cci_pool_requested{pool="gpu",resource="cpu",unit="core"} 1.5
cci_pool_requested{pool="gpu",resource="memory",unit="byte"} 0
cci_pool_requested{pool="gpu",resource="nvidia.com/gpu",unit="integer"} 1
cci_pool_requested{pool="gpu",resource="pods",unit="integer"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "cci_pool_hosts_ready", "cci_pool_requested"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "cci_pool_allocatable"); n != 4 {
		t.Errorf("%d allocatable gauges, want 4", n)
	}
}
