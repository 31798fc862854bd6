package endpointguard

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// Addresses that are the IPs of live pods of another namespace are pruned
// from a tenant's hand-made Endpoints and EndpointSlices; its own pods'
// IPs, outside addresses, finished pods' IPs and non-tenant namespaces
// are left alone.
func TestPrune(t *testing.T) {
	ns := func(name string, tenant bool) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if tenant {
			n.Labels = map[string]string{TenantLabel: name}
		}
		return n
	}
	pod := func(ns, name, ip string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
	}
	eps := func(ns string, ips ...string) *corev1.Endpoints {
		var addrs []corev1.EndpointAddress
		for _, ip := range ips {
			addrs = append(addrs, corev1.EndpointAddress{IP: ip})
		}
		return &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}, Subsets: []corev1.EndpointSubset{{Addresses: addrs, Ports: []corev1.EndpointPort{{Port: 5432}}}}}
	}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "acme", Name: "db-1"}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.42.0.7"}}, {Addresses: []string{"10.42.0.5"}}}}
	kube := fake.NewClientset(
		ns("acme", true), ns("globex", true), ns("default", false),
		pod("acme", "mine", "10.42.0.5", corev1.PodRunning),
		pod("globex", "theirs", "10.42.0.7", corev1.PodRunning),
		pod("default", "operator", "10.42.0.8", corev1.PodRunning),
		pod("globex", "gone", "10.42.0.9", corev1.PodSucceeded),
		eps("acme", "10.42.0.5", "10.42.0.7", "10.42.0.8", "10.42.0.9", "203.0.113.10"),
		eps("default", "10.42.0.7"),
		slice,
	)
	c := NewController(kube, nil)
	c.factory.Start(t.Context().Done())
	c.factory.WaitForCacheSync(t.Context().Done())
	for _, n := range []string{"acme", "default"} {
		if err := c.reconcile(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	got, err := kube.CoreV1().Endpoints("acme").Get(t.Context(), "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, a := range got.Subsets[0].Addresses {
		ips = append(ips, a.IP)
	}
	if want := []string{"10.42.0.5", "10.42.0.9", "203.0.113.10"}; len(ips) != len(want) || ips[0] != want[0] || ips[1] != want[1] || ips[2] != want[2] {
		t.Errorf("acme/db addresses %v, want %v", ips, want)
	}
	op, _ := kube.CoreV1().Endpoints("default").Get(t.Context(), "db", metav1.GetOptions{})
	if len(op.Subsets[0].Addresses) != 1 {
		t.Errorf("the operator's endpoints were touched: %v", op.Subsets)
	}
	s, _ := kube.DiscoveryV1().EndpointSlices("acme").Get(t.Context(), "db-1", metav1.GetOptions{})
	if len(s.Endpoints) != 1 || s.Endpoints[0].Addresses[0] != "10.42.0.5" {
		t.Errorf("acme/db-1 endpoints %v, want only 10.42.0.5", s.Endpoints)
	}
}
