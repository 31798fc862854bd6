package runtime

import (
	"context"
	"errors"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func admitPod(uid string, ports []v1.ContainerPort, sysctls ...v1.Sysctl) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: uid, Namespace: "ns", UID: types.UID(uid)},
		Spec: v1.PodSpec{
			NodeName:   "node-1",
			Containers: []v1.Container{{Name: "main", Image: "x", Ports: ports}},
		},
	}
	if len(sysctls) > 0 {
		p.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: sysctls}
	}
	return p
}

// The agent admits pods with the kubelet's own handlers: a host port
// another pod holds and an unsafe sysctl are refused with the kubelet's
// reasons and messages.
func TestAdmit(t *testing.T) {
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"kubernetes.io/os": "linux"}},
		Status: v1.NodeStatus{Allocatable: v1.ResourceList{
			v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("4Gi"), v1.ResourcePods: resource.MustParse("110"),
		}},
	}
	a, err := newAdmitter(context.Background(), func(context.Context) (*v1.Node, error) { return node, nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := func(p int32, proto v1.Protocol, ip string) []v1.ContainerPort {
		return []v1.ContainerPort{{ContainerPort: p, HostPort: p, Protocol: proto, HostIP: ip}}
	}
	holder := admitPod("holder", port(21017, v1.ProtocolTCP, ""))
	big := admitPod("big", nil)
	big.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("3")}
	for _, tc := range []struct {
		name        string
		pod         *v1.Pod
		others      []*v1.Pod
		reason, msg string
	}{
		{name: "free port", pod: admitPod("a", port(21017, v1.ProtocolTCP, "")), others: nil},
		{name: "port taken", pod: admitPod("a", port(21017, v1.ProtocolTCP, "")), others: []*v1.Pod{holder},
			reason: "NodePorts", msg: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"},
		{name: "port taken, another IP asked", pod: admitPod("a", port(21017, v1.ProtocolTCP, "10.0.0.1")), others: []*v1.Pod{holder},
			reason: "NodePorts", msg: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"},
		{name: "same port, UDP", pod: admitPod("a", port(21017, v1.ProtocolUDP, "")), others: []*v1.Pod{holder}},
		{name: "other port", pod: admitPod("a", port(21018, v1.ProtocolTCP, "")), others: []*v1.Pod{holder}},
		{name: "safe sysctls", pod: admitPod("a", nil, v1.Sysctl{Name: "kernel.shm_rmid_forced", Value: "1"}, v1.Sysctl{Name: "net/ipv4/ip_local_port_range", Value: "1024 65000"})},
		{name: "unsafe sysctl", pod: admitPod("a", nil, v1.Sysctl{Name: "kernel.msgmax", Value: "10000000000"}),
			reason: "SysctlForbidden", msg: `forbidden sysctl: "kernel.msgmax" not allowlisted`},
		{name: "too much cpu", pod: big, reason: "OutOfcpu", msg: "Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"},
		{name: "another node", pod: func() *v1.Pod { p := admitPod("a", nil); p.Spec.NodeName = "node-2"; return p }(),
			reason: "NodeName", msg: "Predicate NodeName failed: node(s) didn't match the requested node name"},
	} {
		ok, reason, msg := a.admit(context.Background(), tc.pod, tc.others)
		if ok != (tc.reason == "") || reason != tc.reason || msg != tc.msg {
			t.Errorf("%s: admit %v %q %q, want reason %q message %q", tc.name, ok, reason, msg, tc.reason, tc.msg)
		}
	}
}

// A Node that cannot be read refuses the pod as the kubelet does, unless an
// earlier read is at hand.
func TestAdmitNodeUnreadable(t *testing.T) {
	var node *v1.Node
	a, err := newAdmitter(context.Background(), func(context.Context) (*v1.Node, error) {
		if node == nil {
			return nil, errors.New("apiserver away")
		}
		return node, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, reason, msg := a.admit(context.Background(), admitPod("a", nil), nil); ok || reason != "InvalidNodeInfo" || msg != "Kubelet cannot get node info." {
		t.Errorf("admit without node: %v %q %q", ok, reason, msg)
	}
	node = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: v1.NodeStatus{Allocatable: v1.ResourceList{v1.ResourcePods: resource.MustParse("10")}}}
	if ok, reason, msg := a.admit(context.Background(), admitPod("a", nil), nil); !ok {
		t.Errorf("admit with node: %q %q", reason, msg)
	}
	node = nil
	if ok, reason, msg := a.admit(context.Background(), admitPod("a", nil), nil); !ok {
		t.Errorf("admit with the node read before: %q %q", reason, msg)
	}
}

// The admission counts GPUs by the agent's current view, not by the Node
// it read (and keeps for a while): a GPU healthy again is admitted at
// once, one just failed is refused at once.
func TestAdmitAdjustedNode(t *testing.T) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: v1.NodeStatus{Allocatable: v1.ResourceList{
		v1.ResourcePods: resource.MustParse("10"), "nvidia.com/gpu": resource.MustParse("1"),
	}}}
	gpus := int64(1)
	a, err := newAdmitter(context.Background(), func(context.Context) (*v1.Node, error) { return node, nil }, func(n *v1.Node) {
		n.Status.Allocatable["nvidia.com/gpu"] = *resource.NewQuantity(gpus, resource.DecimalSI)
	})
	if err != nil {
		t.Fatal(err)
	}
	gpuPod := func(name string) *v1.Pod {
		p := admitPod(name, nil)
		p.Spec.Containers[0].Resources.Limits = v1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}
		p.Spec.Containers[0].Resources.Requests = p.Spec.Containers[0].Resources.Limits
		return p
	}
	holder := gpuPod("holder")
	if ok, reason, msg := a.admit(context.Background(), gpuPod("a"), []*v1.Pod{holder}); ok || reason != "OutOfnvidia.com/gpu" {
		t.Fatalf("second GPU pod on one GPU: %v %q %q", ok, reason, msg)
	}
	gpus = 2 // a GPU came back; the cached node still says 1
	if ok, reason, msg := a.admit(context.Background(), gpuPod("a"), []*v1.Pod{holder}); !ok {
		t.Fatalf("GPU pod once a second GPU is healthy: %q %q", reason, msg)
	}
	if node.Status.Allocatable.Name("nvidia.com/gpu", resource.DecimalSI).Value() != 1 {
		t.Fatal("the adjustment changed the cached node")
	}
}

// A rejected pod's status is the rejection's: phase, reason, message, a
// start time and the API's conditions, no container status, no kubelet
// condition.
func TestRejectedStatus(t *testing.T) {
	pod := admitPod("a", nil)
	pod.Status.Conditions = []v1.PodCondition{{Type: v1.PodScheduled, Status: v1.ConditionTrue}}
	got := buildPod(rejectedRecord(pod, "SysctlForbidden", `forbidden sysctl: "kernel.msgmax" not allowlisted`), "10.0.0.1", timeNow()).Status
	if got.Phase != v1.PodFailed || got.Reason != "SysctlForbidden" || got.Message != `Pod was rejected: forbidden sysctl: "kernel.msgmax" not allowlisted` {
		t.Errorf("phase %s reason %q message %q", got.Phase, got.Reason, got.Message)
	}
	if got.StartTime == nil || len(got.ContainerStatuses) != 0 || got.HostIP != "" {
		t.Errorf("start time %v, container statuses %v, host IP %q", got.StartTime, got.ContainerStatuses, got.HostIP)
	}
	if len(got.Conditions) != 1 || got.Conditions[0].Type != v1.PodScheduled {
		t.Errorf("conditions %v, want the API's PodScheduled alone", got.Conditions)
	}
}
