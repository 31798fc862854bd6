package network

import (
	"fmt"
	"net/netip"

	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
)

// ensureMasquerade makes the host source-NAT what the node's pods send out
// of the cluster (to neither its pod range nor its Service range, given in
// keep), with one rule for the whole pod range, in a chain of this bridge.
// The bridge plugin's ipMasq would add a rule and a chain per pod, whose
// removal depends on finding the pod's addresses in its namespace at
// teardown: a namespace already gone left them behind. The chain is
// rewritten at each start, so that a changed range leaves no stale rule.
func ensureMasquerade(bridge string, prefix netip.Prefix, keep []netip.Prefix) error {
	proto := utiliptables.ProtocolIPv4
	if prefix.Addr().Is6() {
		proto = utiliptables.ProtocolIPv6
	}
	ipt := utiliptables.New(proto)
	chain := utiliptables.Chain("CCI-MASQ-" + bridge)
	comment := fmt.Sprintf("cci: pods of bridge %s reach the outside through the host's address", bridge)
	if _, err := ipt.EnsureChain(utiliptables.TableNAT, chain); err != nil {
		return fmt.Errorf("pod masquerade chain %q: %w", chain, err)
	}
	if err := ipt.FlushChain(utiliptables.TableNAT, chain); err != nil {
		return fmt.Errorf("pod masquerade chain %q: %w", chain, err)
	}
	if _, err := ipt.EnsureRule(utiliptables.Append, utiliptables.TableNAT, utiliptables.ChainPostrouting,
		"-m", "comment", "--comment", comment, "-j", string(chain)); err != nil {
		return fmt.Errorf("pod masquerade jump: %w", err)
	}
	// Multicast is left alone, as the bridge plugin does.
	multicast := "224.0.0.0/4"
	if prefix.Addr().Is6() {
		multicast = "ff00::/8"
	}
	if _, err := ipt.EnsureRule(utiliptables.Append, utiliptables.TableNAT, chain,
		"-s", prefix.String(), "-d", multicast, "-j", "RETURN"); err != nil {
		return fmt.Errorf("pod masquerade rule: %w", err)
	}
	for _, k := range append([]netip.Prefix{prefix}, keep...) {
		if k.Addr().Is4() != prefix.Addr().Is4() {
			continue
		}
		if _, err := ipt.EnsureRule(utiliptables.Append, utiliptables.TableNAT, chain,
			"-s", prefix.String(), "-d", k.String(), "-j", "RETURN"); err != nil {
			return fmt.Errorf("pod masquerade rule: %w", err)
		}
	}
	if _, err := ipt.EnsureRule(utiliptables.Append, utiliptables.TableNAT, chain,
		"-s", prefix.String(), "-j", "MASQUERADE"); err != nil {
		return fmt.Errorf("pod masquerade rule: %w", err)
	}
	return nil
}
