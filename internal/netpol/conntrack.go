package netpol

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kube-network-policies/pkg/network"
)

// flowPacket is the first packet of flow as the policy chain saw it, or
// nil when the chain does not judge such a flow: its source before any
// source NAT (that comes after FORWARD), its destination after any
// destination NAT (the real pod, not the Service address). A flow that is
// source-NATed is host traffic to the pod and is never judged.
func flowPacket(flow *netlink.ConntrackFlow) *network.Packet {
	if flow == nil {
		return nil
	}
	var proto v1.Protocol
	switch flow.Forward.Protocol {
	case unix.IPPROTO_TCP:
		proto = v1.ProtocolTCP
	case unix.IPPROTO_UDP:
		proto = v1.ProtocolUDP
	case unix.IPPROTO_SCTP:
		proto = v1.ProtocolSCTP
	default:
		return nil
	}
	family := v1.IPv4Protocol
	if flow.FamilyType == unix.AF_INET6 {
		family = v1.IPv6Protocol
	}
	if !flow.Forward.SrcIP.Equal(flow.Reverse.DstIP) {
		return nil // masqueraded
	}
	return &network.Packet{
		Family:  family,
		Proto:   proto,
		SrcIP:   flow.Forward.SrcIP,
		SrcPort: int(flow.Forward.SrcPort),
		DstIP:   flow.Reverse.SrcIP,
		DstPort: int(flow.Reverse.SrcPort),
	}
}

// deniedFlows matches the tracked connections to or from managed pods that
// the policies deny now.
type deniedFlows struct {
	ctx     context.Context
	managed map[netip.Addr]bool
	local   map[netip.Addr]bool // the host's addresses: its traffic is never judged
	allowed verdictFunc
	n       int
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (d *deniedFlows) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	p := flowPacket(flow)
	if p == nil {
		return false
	}
	src, _ := netip.AddrFromSlice(p.SrcIP)
	dst, _ := netip.AddrFromSlice(p.DstIP)
	src, dst = src.Unmap(), dst.Unmap()
	if !d.managed[src] && !d.managed[dst] || d.local[src] || d.local[dst] {
		return false
	}
	if d.allowed(d.ctx, p) {
		return false
	}
	d.n++
	return true
}

// forgetDenied deletes the conntrack entries of connections the policies
// deny now, so that a policy also ends connections opened before it: their
// next packet is new to conntrack and goes to the queue, which drops it.
func (e *Enforcer) forgetDenied(ctx context.Context, managed []netip.Addr) error {
	if len(managed) == 0 {
		return nil
	}
	d := &deniedFlows{ctx: ctx, managed: map[netip.Addr]bool{}, allowed: e.verdict}
	for _, ip := range managed {
		d.managed[ip.Unmap()] = true
	}
	d.local = map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					d.local[ip.Unmap()] = true
				}
			}
		}
	}
	family := netlink.InetFamily(unix.AF_INET)
	if e.ipv6 {
		family = unix.AF_INET6
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, family, d); err != nil {
		return fmt.Errorf("delete denied conntrack entries: %w", err)
	}
	if d.n > 0 {
		e.log.Info("connections ended by network policy", "count", d.n)
	}
	return nil
}
