package containment

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/cci-project/cci/internal/isolation"
)

func pod(ns, name, node, ip string, mod ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	for _, m := range mod {
		m(p)
	}
	return p
}

func TestTenant(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{nil, false},
		{map[string]string{TenantLabel: "acme"}, true},
		{map[string]string{isolation.Label: isolation.DefaultDeny}, true},
		{map[string]string{isolation.Label: "something-else"}, false},
	} {
		if got := Tenant(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: tc.labels}}); got != tc.want {
			t.Errorf("Tenant(%v) = %v, want %v", tc.labels, got, tc.want)
		}
	}
}

// Operator pods of this host are trusted sources, through their grace
// period until the runtime releases their network; tenant pods anywhere
// are allowed destinations until they are being deleted; a pod of a
// namespace not yet seen counts as a tenant's; finished pods and those on
// the host network are in no set.
func TestBuild(t *testing.T) {
	now := metav1.Now()
	pods := []*corev1.Pod{
		pod("default", "op", "n1", "10.42.0.5"),
		pod("default", "op-elsewhere", "n2", "10.42.1.5"),
		pod("acme", "app", "n1", "10.42.0.6"),
		pod("acme", "app-elsewhere", "n2", "10.42.1.6"),
		pod("new", "unknown-ns", "n1", "10.42.0.7"),
		pod("default", "going", "n1", "10.42.0.8", func(p *corev1.Pod) { p.DeletionTimestamp = &now }),
		pod("default", "gone", "n1", "10.42.0.11", func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.UID = "u-gone" }),
		pod("acme", "leaving", "n1", "10.42.0.12", func(p *corev1.Pod) { p.DeletionTimestamp = &now }),
		pod("acme", "done", "n1", "10.42.0.9", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("default", "hostnet", "n1", "192.0.2.1", func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		pod("default", "dual", "n1", "10.42.0.10", func(p *corev1.Pod) {
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.42.0.10"}, {IP: "fd00:42::a"}}
		}),
	}
	nodes := []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "10.42.0.0/24"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.42.1.0/24"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.2"}}}},
	}
	cfg := Config{NodeName: "n1", ControlPlane: []netip.Addr{netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("127.0.0.1")},
		PodRanges: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")}}
	s := build(cfg, pods, map[string]bool{"default": false, "acme": true}, nodes, map[types.UID]bool{"u-gone": true})
	for _, tc := range []struct {
		name      string
		got, want string
	}{
		{"trusted", fmt.Sprint(s.trusted), "[10.42.0.5 10.42.0.8 10.42.0.10 fd00:42::a]"},
		{"tenants", fmt.Sprint(s.tenants), "[10.42.0.6 10.42.0.7 10.42.1.6]"},
		{"hosts", fmt.Sprint(s.hosts), "[10.42.0.0 10.42.0.1 10.42.1.0 10.42.1.1 192.0.2.1 192.0.2.2 192.0.2.9]"},
		{"ranges", fmt.Sprint(s.ranges), "[10.42.0.0/16]"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}

// The table judges new connections from the bridge in the input and
// forward hooks, after DNAT; written again it holds only the new sets.
func TestRules(t *testing.T) {
	nft := knftables.NewFake(knftables.InetFamily, TableName("cci0"))
	for _, s := range []state{
		{trusted: []netip.Addr{netip.MustParseAddr("10.42.0.99")}},
		{
			trusted: []netip.Addr{netip.MustParseAddr("10.42.0.5")},
			tenants: []netip.Addr{netip.MustParseAddr("10.42.0.6"), netip.MustParseAddr("fd00:42::6")},
			hosts:   []netip.Addr{netip.MustParseAddr("192.0.2.1")},
			ranges:  []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
		},
	} {
		tx := nft.NewTransaction()
		rules(tx, "cci0", s)
		if err := nft.Run(t.Context(), tx); err != nil {
			t.Fatal(err)
		}
	}
	dump := nft.Dump()
	for _, want := range []string{
		"add chain inet cci-contain-cci0 input { type filter hook input priority filter - 1 ; }",
		"add chain inet cci-contain-cci0 forward { type filter hook forward priority filter - 1 ; }",
		`add rule inet cci-contain-cci0 input iifname != cci0 return`,
		`add rule inet cci-contain-cci0 input ct state established,related return`,
		`add rule inet cci-contain-cci0 input ct status dnat return`,
		`add rule inet cci-contain-cci0 input meta l4proto tcp reject with tcp reset`,
		`add rule inet cci-contain-cci0 forward ip daddr 169.254.0.0/16 reject with icmpx type admin-prohibited`,
		`add rule inet cci-contain-cci0 forward ip daddr @hosts4 ct status dnat return`,
		`add rule inet cci-contain-cci0 forward ip daddr @ranges4 ip daddr != @tenants4 meta l4proto tcp reject with tcp reset`,
		"add element inet cci-contain-cci0 trusted4 { 10.42.0.5 }",
		"add element inet cci-contain-cci0 tenants6 { fd00:42::6 }",
		"add element inet cci-contain-cci0 ranges4 { 10.42.0.0/16 }",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "10.42.0.99") {
		t.Errorf("an element of the first write is left:\n%s", dump)
	}
}

// The runtime's word of a new pod's IPs trusts an operator's pod at once,
// leaves a tenant's or an unknown namespace's to the rules, and is taken
// back when the pod's network goes; a rewrite keeps what the API lacks.
func TestPodAddressed(t *testing.T) {
	nft := knftables.NewFake(knftables.InetFamily, TableName("cci0"))
	tx := nft.NewTransaction()
	rules(tx, "cci0", state{})
	if err := nft.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "acme", Labels: map[string]string{TenantLabel: "acme"}}},
	} {
		if err := idx.Add(ns); err != nil {
			t.Fatal(err)
		}
	}
	tbl := &Table{cfg: Config{Bridge: "cci0"}, log: slog.Default(), nft: nft, local: map[types.UID]localPod{}, released: map[types.UID]bool{},
		namespaces: corelisters.NewNamespaceLister(idx), synced: true, kick: make(chan struct{}, 1)}
	op := pod("default", "web", "h1", "")
	op.UID = "u-op"
	ten := pod("acme", "job", "h1", "")
	ten.UID = "u-ten"
	unknown := pod("new-ns", "x", "h1", "")
	unknown.UID = "u-new"
	for p, ip := range map[*corev1.Pod]string{op: "10.42.0.7", ten: "10.42.0.8", unknown: "10.42.0.9"} {
		if err := tbl.PodAddressed(t.Context(), p, []netip.Addr{netip.MustParseAddr(ip)}); err != nil {
			t.Fatal(err)
		}
	}
	elems, err := nft.ListElements(t.Context(), "set", "trusted4")
	if err != nil {
		t.Fatal(err)
	}
	if len(elems) != 1 || elems[0].Key[0] != "10.42.0.7" {
		t.Fatalf("trusted4 holds %v: want only the operator's pod 10.42.0.7", elems)
	}
	// A rewrite from an API that does not show the pod yet keeps it.
	got := trustLocal(nil, tbl.local, map[string]bool{"default": false, "acme": true})
	if len(got) != 1 || got[0] != netip.MustParseAddr("10.42.0.7") {
		t.Fatalf("a rewrite trusts %v: want [10.42.0.7]", got)
	}
	tbl.PodReleased(t.Context(), op.UID)
	tbl.PodReleased(t.Context(), ten.UID)
	if elems, _ := nft.ListElements(t.Context(), "set", "trusted4"); len(elems) != 0 {
		t.Fatalf("trusted4 holds %v after the pod's network went", elems)
	}
	if got := trustLocal(nil, tbl.local, map[string]bool{"default": false}); len(got) != 0 {
		t.Fatalf("a rewrite after the release trusts %v", got)
	}
}
