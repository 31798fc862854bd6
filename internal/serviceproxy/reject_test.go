package serviceproxy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/knftables"
)

func TestServiceRanges(t *testing.T) {
	obj := func(cidrs ...string) *networkingv1.ServiceCIDR {
		return &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: cidrs}}
	}
	for _, tc := range []struct {
		name string
		objs []*networkingv1.ServiceCIDR
		want string
	}{
		{"none", nil, "[]"},
		{"the default, dual stack", []*networkingv1.ServiceCIDR{obj("10.43.0.0/16", "fd00:43::/112")}, "[10.43.0.0/16 fd00:43::/112]"},
		{"sorted, host bits dropped", []*networkingv1.ServiceCIDR{obj("10.96.0.1/16"), obj("10.43.0.0/16")}, "[10.43.0.0/16 10.96.0.0/16]"},
		{"a range inside another once", []*networkingv1.ServiceCIDR{obj("10.43.1.0/24"), obj("10.43.0.0/16"), obj("10.43.0.0/16")}, "[10.43.0.0/16]"},
		{"unparsable skipped", []*networkingv1.ServiceCIDR{obj("nonsense", "10.43.0.0/16")}, "[10.43.0.0/16]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(serviceRanges(tc.objs)); got != tc.want {
				t.Errorf("serviceRanges = %s, want %s", got, tc.want)
			}
		})
	}
}

// The table refuses new connections to the Service ranges in the forward
// (pods) and output (host) hooks, after DNAT (filter priority) and before
// iptables' filter chains (- 1); written again it holds only the new ranges.
func TestRejectRules(t *testing.T) {
	nft := knftables.NewFake(knftables.InetFamily, rejectTable("cci0"))
	for _, cidrs := range [][]netip.Prefix{
		{netip.MustParsePrefix("10.96.0.0/12")},
		{netip.MustParsePrefix("10.43.0.0/16"), netip.MustParsePrefix("fd00:43::/112")},
	} {
		tx := nft.NewTransaction()
		rejectRules(tx, cidrs)
		if err := nft.Run(t.Context(), tx); err != nil {
			t.Fatal(err)
		}
	}
	dump := nft.Dump()
	for _, want := range []string{
		"add chain inet cci-services-cci0 forward { type filter hook forward priority filter - 1 ; }",
		"add chain inet cci-services-cci0 output { type filter hook output priority filter - 1 ; }",
		"add rule inet cci-services-cci0 forward ct state new ip daddr @cidrs4 meta l4proto tcp reject with tcp reset",
		"add rule inet cci-services-cci0 output ct state new ip6 daddr @cidrs6 reject with icmpx type port-unreachable",
		"add element inet cci-services-cci0 cidrs4 { 10.43.0.0/16 }",
		"add element inet cci-services-cci0 cidrs6 { fd00:43::/112 }",
	} {
		if !strings.Contains(dump, want+"\n") {
			t.Errorf("table lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "10.96.0.0/12") {
		t.Errorf("a range written before is still there:\n%s", dump)
	}
}
