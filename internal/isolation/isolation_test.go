package isolation

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/pkg/apis/networking"
	networkingv1conv "k8s.io/kubernetes/pkg/apis/networking/v1"
	networkingvalidation "k8s.io/kubernetes/pkg/apis/networking/validation"
)

func node(name string, podCIDRs []string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDRs: podCIDRs},
		Status:     corev1.NodeStatus{Addresses: addrs},
	}
}

func TestHostCIDRs(t *testing.T) {
	internal := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a} }
	tests := []struct {
		name  string
		nodes []*corev1.Node
		want  []string
	}{
		{name: "no nodes", want: nil},
		{
			name:  "address and gateway",
			nodes: []*corev1.Node{node("a", []string{"10.42.0.0/24"}, internal("192.168.1.5"), corev1.NodeAddress{Type: corev1.NodeHostName, Address: "a"})},
			want:  []string{"10.42.0.0/32", "10.42.0.1/32", "192.168.1.5/32"},
		},
		{
			name: "two nodes, duplicates, loopback and junk skipped, legacy podCIDR",
			nodes: []*corev1.Node{
				node("a", []string{"10.42.1.0/24"}, internal("192.168.1.5"), internal("127.0.0.1"), internal("not-an-ip")),
				{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: corev1.NodeSpec{PodCIDR: "10.42.2.0/24"},
					Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{internal("192.168.1.5"), {Type: corev1.NodeExternalIP, Address: "203.0.113.9"}}}},
			},
			want: []string{"10.42.1.0/32", "10.42.1.1/32", "10.42.2.0/32", "10.42.2.1/32", "192.168.1.5/32", "203.0.113.9/32"},
		},
		{
			name:  "IPv6",
			nodes: []*corev1.Node{node("a", []string{"fd00:42::/64"}, internal("fd00::5"))},
			want:  []string{"fd00:42::/128", "fd00:42::1/128", "fd00::5/128"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HostCIDRs(tt.nodes); !slices.Equal(got, tt.want) {
				t.Errorf("HostCIDRs = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestPolicyValid checks the managed policy against the apiserver's own
// validation and its meaning: every pod selected, ingress only.
func TestPolicyValid(t *testing.T) {
	p := Policy("team-a", []string{"10.42.0.1/32", "192.168.1.5/32"})
	if p.Name != PolicyName || p.Namespace != "team-a" || p.Labels[ManagedByLabel] != ManagedBy {
		t.Errorf("metadata %+v", p.ObjectMeta)
	}
	if len(p.Spec.PodSelector.MatchLabels)+len(p.Spec.PodSelector.MatchExpressions) != 0 {
		t.Errorf("pod selector %v does not select every pod", p.Spec.PodSelector)
	}
	if !slices.Equal(p.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || p.Spec.Egress != nil {
		t.Errorf("policy types %v, egress %v: want ingress only", p.Spec.PolicyTypes, p.Spec.Egress)
	}
	peers := p.Spec.Ingress[0].From
	if len(peers) != 3 || peers[0].PodSelector == nil || peers[0].NamespaceSelector != nil || peers[2].IPBlock.CIDR != "192.168.1.5/32" {
		t.Errorf("peers %+v", peers)
	}
	var internal networking.NetworkPolicy
	if err := networkingv1conv.Convert_v1_NetworkPolicy_To_networking_NetworkPolicy(p, &internal, nil); err != nil {
		t.Fatal(err)
	}
	if errs := networkingvalidation.ValidateNetworkPolicy(&internal, networkingvalidation.NetworkPolicyValidationOptions{}); len(errs) > 0 {
		t.Errorf("managed policy invalid: %v", errs)
	}
}
