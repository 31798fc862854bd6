package netpol

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/kube-network-policies/pkg/network"
)

func testPod(ns, name, node, ip string, labels map[string]string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: v1.PodSpec{NodeName: node, Containers: []v1.Container{{
			Name: "main", Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: v1.ProtocolTCP}},
		}}},
		Status: v1.PodStatus{Phase: v1.PodRunning, PodIP: ip, PodIPs: []v1.PodIP{{IP: ip}}},
	}
}

// TestEngine runs the engine as the enforcer wires it over informers of a
// fake cluster: which local IPs get rules, and the verdicts on first
// packets.
func TestEngine(t *testing.T) {
	tcp := v1.ProtocolTCP
	named, low := intstr.FromString("http"), intstr.FromInt32(9000)
	high := int32(9100)
	objs := []runtime.Object{
		&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"team": "a"}}},
		&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: map[string]string{"team": "b"}}},
		testPod("a", "web", "here", "10.0.0.10", map[string]string{"app": "web"}),
		testPod("a", "client", "here", "10.0.0.11", map[string]string{"app": "client"}),
		testPod("a", "other", "here", "10.0.0.12", map[string]string{"app": "other"}),
		testPod("b", "far", "there", "10.0.1.20", map[string]string{"app": "client"}),
		testPod("a", "remote-web", "there", "10.0.1.21", map[string]string{"app": "web"}),
		// web: from client pods of namespaces labelled team=a by port name,
		// from 192.168.0.0/16 except 192.168.5.0/24 on 9000-9100.
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			// As the apiserver defaults it; the fake clientset does not.
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named}},
			}, {
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.5.0/24"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &low, EndPort: &high}},
			}},
		}},
		// client: egress only to 10.0.0.0/24.
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "client"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24"}}}}},
		}},
	}
	kube := fake.NewClientset(objs...)
	f := informers.NewSharedInformerFactory(kube, 0)
	engine := newEngine("here", f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	if !engine.Ready() {
		t.Fatal("engine not ready after sync")
	}

	ips, divertAll, err := engine.GetManagedIPs(ctx)
	if err != nil || divertAll {
		t.Fatalf("GetManagedIPs: %v, divertAll %v", err, divertAll)
	}
	slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
	// Only this node's pods that a policy selects: not "other", not the
	// remote ones.
	if want := []netip.Addr{netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.11")}; !slices.Equal(ips, want) {
		t.Errorf("managed IPs %v, want %v", ips, want)
	}

	tests := []struct {
		name     string
		src, dst string
		port     int
		allow    bool
	}{
		{"client to web on the named port", "10.0.0.11", "10.0.0.10", 8080, true},
		{"client to web on another port", "10.0.0.11", "10.0.0.10", 8081, false},
		{"unselected pod to web", "10.0.0.12", "10.0.0.10", 8080, false},
		{"client label in a namespace not selected", "10.0.1.20", "10.0.0.10", 8080, false},
		{"ipBlock inside the range", "192.168.1.1", "10.0.0.10", 9050, true},
		{"ipBlock at endPort", "192.168.1.1", "10.0.0.10", 9100, true},
		{"ipBlock past endPort", "192.168.1.1", "10.0.0.10", 9101, false},
		{"ipBlock except", "192.168.5.1", "10.0.0.10", 9050, false},
		{"client egress inside its range", "10.0.0.11", "10.0.0.12", 80, true},
		{"client egress outside its range", "10.0.0.11", "8.8.8.8", 53, false},
		{"unselected pod to anywhere", "10.0.0.12", "8.8.8.8", 53, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &network.Packet{Family: v1.IPv4Protocol, SrcIP: net.ParseIP(tt.src), DstIP: net.ParseIP(tt.dst), Proto: v1.ProtocolTCP, SrcPort: 40000, DstPort: tt.port}
			got, err := engine.EvaluatePacket(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.allow {
				t.Errorf("%s → %s:%d allowed = %v, want %v", tt.src, tt.dst, tt.port, got, tt.allow)
			}
		})
	}
}
