package netpol

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
)

// chainPrefix starts the name of the agent's chain; the bridge name follows,
// so that agents of different clusters on one host (each with its own
// bridge) keep apart. 11 + 15 (the longest interface name) stays under
// iptables' 28-byte chain names.
const chainPrefix = "CCI-NETPOL-"

// ChainName is the mangle-table chain that holds the rules for bridge.
func ChainName(bridge string) string { return chainPrefix + bridge }

// DefaultQueue is the NFQUEUE number for bridge when none is configured:
// 1000-1999, derived from the bridge name so that two agents on one host
// (with different bridges) do not share a queue.
func DefaultQueue(bridge string) uint16 {
	h := fnv.New32a()
	h.Write([]byte(bridge))
	return uint16(1000 + h.Sum32()%1000)
}

// ruleSet is what the dataplane puts in its chain: the pod IPs whose new
// connections go to the queue, or every new connection across the bridge
// when divertAll is set.
type ruleSet struct {
	chain     string
	bridge    string
	queue     uint16
	ipv6      bool   // the family of the runner; IPs of the other are left out
	masqMark  uint32 // the service proxy's masquerade mark; 0: none
	ips       []netip.Addr
	divertAll bool
}

// restoreData renders the chain for iptables-restore --noflush: declaring
// the chain flushes it, so one restore replaces its rules atomically and
// leaves every other chain of the table alone.
//
// Only the first packet of a connection is judged: packets of established
// or related connections return at once (a policy applies to new
// connections, as in every NetworkPolicy implementation). --queue-bypass
// lets packets through while no agent listens on the queue: pods keep their
// network when the agent is down (fail open).
func (r ruleSet) restoreData() []byte {
	var b bytes.Buffer
	b.WriteString("*mangle\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", r.chain)
	fmt.Fprintf(&b, "-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n", r.chain)
	if r.masqMark != 0 {
		// The service proxy marks what it will masquerade to a host
		// address (NodePort and load-balancer traffic from outside,
		// ClusterIP traffic from the host); the source NAT happens after
		// FORWARD, so the pod sees it coming from the host, which is
		// always allowed. Judging the original source here would block
		// load balancers in front of isolated namespaces.
		fmt.Fprintf(&b, "-A %s -m mark --mark %#x/%#x %s -j RETURN\n", r.chain, r.masqMark, r.masqMark, `-m comment --comment "cci netpol: masqueraded to a host address"`)
	}
	queue := "-j NFQUEUE --queue-num " + strconv.Itoa(int(r.queue)) + " --queue-bypass"
	comment := func(what string) string {
		return `-m comment --comment "cci netpol: ` + what + `"`
	}
	if r.divertAll {
		fmt.Fprintf(&b, "-A %s -o %s %s %s\n", r.chain, r.bridge, comment("to a pod"), queue)
		fmt.Fprintf(&b, "-A %s -i %s %s %s\n", r.chain, r.bridge, comment("from a pod"), queue)
	} else {
		ips := slices.Clone(r.ips)
		slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
		ips = slices.Compact(ips)
		for _, ip := range ips {
			if ip.Is6() != r.ipv6 {
				continue
			}
			host := netip.PrefixFrom(ip, ip.BitLen()).String()
			fmt.Fprintf(&b, "-A %s -d %s %s %s\n", r.chain, host, comment("ingress "+ip.String()), queue)
			fmt.Fprintf(&b, "-A %s -s %s %s %s\n", r.chain, host, comment("egress "+ip.String()), queue)
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// jumpRule is the rule in mangle FORWARD that sends traffic into the chain.
// It lives in the mangle table, not filter: an NFQUEUE verdict of accept
// ends the packet's walk through the table that queued it, and in mangle
// that skips nothing of the filter table's FORWARD rules (CNI's, the
// service proxy's), which run next as if the queue had not been there.
func jumpRule(chain string) []string {
	return []string{"-m", "comment", "--comment", "cci network policy", "-j", chain}
}
