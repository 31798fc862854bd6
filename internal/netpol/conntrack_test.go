package netpol

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/kube-network-policies/pkg/network"
)

func flow(proto uint8, src, dst string, sport, dport uint16, rsrc, rdst string, rsport, rdport uint16) *netlink.ConntrackFlow {
	return &netlink.ConntrackFlow{
		FamilyType: unix.AF_INET,
		Forward:    netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst), SrcPort: sport, DstPort: dport},
		Reverse:    netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(rsrc), DstIP: net.ParseIP(rdst), SrcPort: rsport, DstPort: rdport},
	}
}

func TestFlowPacket(t *testing.T) {
	tests := []struct {
		name string
		flow *netlink.ConntrackFlow
		want string // Packet.String(), "" for nil
	}{
		{"pod to pod", flow(unix.IPPROTO_TCP, "10.0.0.11", "10.0.0.10", 40000, 8080, "10.0.0.10", "10.0.0.11", 8080, 40000),
			"[0] 10.0.0.11:40000 10.0.0.10:8080 TCP"},
		{"pod to a Service: the destination is the endpoint", flow(unix.IPPROTO_UDP, "10.0.0.11", "10.96.0.10", 40000, 53, "10.0.0.10", "10.0.0.11", 5353, 40000),
			"[0] 10.0.0.11:40000 10.0.0.10:5353 UDP"},
		{"masqueraded: host traffic, not judged", flow(unix.IPPROTO_TCP, "203.0.113.7", "192.0.2.1", 40000, 80, "10.0.0.10", "10.0.0.1", 8080, 40000), ""},
		{"ICMP: not judged", flow(unix.IPPROTO_ICMP, "10.0.0.11", "10.0.0.10", 0, 0, "10.0.0.10", "10.0.0.11", 0, 0), ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := flowPacket(tt.flow)
			got := ""
			if p != nil {
				got = strings.TrimSpace(p.String())
			}
			if got != tt.want {
				t.Errorf("flowPacket = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDeniedFlows(t *testing.T) {
	denyTo10 := func(_ context.Context, p *network.Packet) bool { return !p.DstIP.Equal(net.ParseIP("10.0.0.10")) }
	d := &deniedFlows{
		ctx:     context.Background(),
		managed: map[netip.Addr]bool{netip.MustParseAddr("10.0.0.10"): true},
		local:   map[netip.Addr]bool{netip.MustParseAddr("10.0.0.1"): true},
		allowed: denyTo10,
	}
	tests := []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"denied, to a managed pod", flow(unix.IPPROTO_TCP, "10.0.0.11", "10.0.0.10", 1, 8080, "10.0.0.10", "10.0.0.11", 8080, 1), true},
		{"from the host: never judged", flow(unix.IPPROTO_TCP, "10.0.0.1", "10.0.0.10", 1, 8080, "10.0.0.10", "10.0.0.1", 8080, 1), false},
		{"allowed, from the managed pod", flow(unix.IPPROTO_TCP, "10.0.0.10", "10.0.0.11", 1, 80, "10.0.0.11", "10.0.0.10", 80, 1), false},
		{"neither end managed", flow(unix.IPPROTO_TCP, "10.0.0.12", "10.0.0.13", 1, 80, "10.0.0.13", "10.0.0.12", 80, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := d.MatchConntrackFlow(tt.flow); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}
