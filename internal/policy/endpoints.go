package policy

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Network is the cluster's own address space, into which endpoints that a
// tenant writes by hand (for a selectorless Service) may not point: the
// service proxy masquerades the traffic it sends there, so that a tenant's
// Service could otherwise reach another tenant's pod past the network
// policy, a node's own ports, or the Service range.
type Network struct {
	// PodCIDRs and ServiceCIDRs are the cluster's pod and Service ranges.
	PodCIDRs, ServiceCIDRs []netip.Prefix
	// NodeIPs are the addresses of every node and of the control-plane host.
	NodeIPs []netip.Addr
	// OwnPodIPs are the IPs of the pods in the namespace the endpoints are
	// written in: the one part of the pod range they may point at.
	OwnPodIPs []netip.Addr
}

// refusal says why addr may not be an endpoint, or "" when it may.
func (n Network) refusal(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return "not an IP address"
	}
	a = a.Unmap()
	in := func(ps []netip.Prefix) (netip.Prefix, bool) {
		for _, p := range ps {
			if p.Contains(a) {
				return p, true
			}
		}
		return netip.Prefix{}, false
	}
	switch {
	case a.IsLoopback():
		return "it is a loopback address"
	case a.IsUnspecified():
		return "it is the unspecified address"
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		return "it is a link-local address"
	case a.IsMulticast():
		return "it is a multicast address"
	case slices.Contains(n.NodeIPs, a):
		return "it is a node's address"
	}
	if p, ok := in(n.ServiceCIDRs); ok {
		return fmt.Sprintf("it is in the Service range %s", p)
	}
	if p, ok := in(n.PodCIDRs); ok && !slices.Contains(n.OwnPodIPs, a) {
		return fmt.Sprintf("it is in the pod range %s and not the IP of a pod in this namespace", p)
	}
	return ""
}

const endpointAdvice = "endpoints written by hand may point at pods of this namespace or at addresses outside the cluster"

// CheckEndpoints refuses hand-made Endpoints with an address that n does not
// allow (see Network). Endpoints that the endpoints controller writes are
// not checked: the caller tells them apart by the request's identity.
func CheckEndpoints(ep *corev1.Endpoints, n Network) error {
	var why []string
	for i, s := range ep.Subsets {
		for field, addrs := range map[string][]corev1.EndpointAddress{"addresses": s.Addresses, "notReadyAddresses": s.NotReadyAddresses} {
			for j, a := range addrs {
				if r := n.refusal(a.IP); r != "" {
					why = append(why, fmt.Sprintf("endpoint address %s (subsets[%d].%s[%d]) is not allowed: %s; %s", a.IP, i, field, j, r, endpointAdvice))
				}
			}
		}
	}
	slices.Sort(why)
	return refuse(why)
}

// CheckEndpointSlice is CheckEndpoints for an EndpointSlice. FQDN slices
// name no address and are ignored by the service proxy.
func CheckEndpointSlice(s *discoveryv1.EndpointSlice, n Network) error {
	if s.AddressType == discoveryv1.AddressTypeFQDN {
		return nil
	}
	var why []string
	for i, e := range s.Endpoints {
		for j, a := range e.Addresses {
			if r := n.refusal(a); r != "" {
				why = append(why, fmt.Sprintf("endpoint address %s (endpoints[%d].addresses[%d]) is not allowed: %s; %s", a, i, j, r, endpointAdvice))
			}
		}
	}
	return refuse(why)
}
