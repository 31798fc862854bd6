package netpol

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRestoreData(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		name    string
		rs      ruleSet
		want    []string // lines that must be there
		notWant []string // substrings that must not
	}{{
		name: "no managed pods: only the established return",
		rs:   ruleSet{chain: "CCI-NETPOL-cci0", bridge: "cci0", queue: 1234},
		want: []string{
			"*mangle",
			":CCI-NETPOL-cci0 - [0:0]",
			"-A CCI-NETPOL-cci0 -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
			"COMMIT",
		},
		notWant: []string{"NFQUEUE"},
	}, {
		name: "sorted, deduplicated, both directions, bypass",
		rs:   ruleSet{chain: "C", bridge: "cci0", queue: 7, ips: []netip.Addr{ip("10.42.0.9"), ip("10.42.0.3"), ip("10.42.0.9")}},
		want: []string{
			`-A C -d 10.42.0.3/32 -m comment --comment "cci netpol: ingress 10.42.0.3" -j NFQUEUE --queue-num 7 --queue-bypass`,
			`-A C -s 10.42.0.3/32 -m comment --comment "cci netpol: egress 10.42.0.3" -j NFQUEUE --queue-num 7 --queue-bypass`,
			`-A C -d 10.42.0.9/32 -m comment --comment "cci netpol: ingress 10.42.0.9" -j NFQUEUE --queue-num 7 --queue-bypass`,
		},
	}, {
		name:    "IPv6 addresses left out of an IPv4 chain",
		rs:      ruleSet{chain: "C", bridge: "cci0", queue: 7, ips: []netip.Addr{ip("fd00::5"), ip("10.42.0.3")}},
		want:    []string{`-A C -d 10.42.0.3/32 -m comment --comment "cci netpol: ingress 10.42.0.3" -j NFQUEUE --queue-num 7 --queue-bypass`},
		notWant: []string{"fd00"},
	}, {
		name:    "IPv6 chain",
		rs:      ruleSet{chain: "C", bridge: "cci0", queue: 7, ipv6: true, ips: []netip.Addr{ip("fd00::5"), ip("10.42.0.3")}},
		want:    []string{`-A C -s fd00::5/128 -m comment --comment "cci netpol: egress fd00::5" -j NFQUEUE --queue-num 7 --queue-bypass`},
		notWant: []string{"10.42"},
	}, {
		name: "masqueraded traffic returns before the queue",
		rs:   ruleSet{chain: "C", bridge: "cci0", queue: 7, masqMark: 0x4000, ips: []netip.Addr{ip("10.42.0.3")}},
		want: []string{`-A C -m mark --mark 0x4000/0x4000 -m comment --comment "cci netpol: masqueraded to a host address" -j RETURN`},
	}, {
		name: "divert all: everything across the bridge",
		rs:   ruleSet{chain: "C", bridge: "br9", queue: 7, divertAll: true, ips: []netip.Addr{ip("10.42.0.3")}},
		want: []string{
			`-A C -o br9 -m comment --comment "cci netpol: to a pod" -j NFQUEUE --queue-num 7 --queue-bypass`,
			`-A C -i br9 -m comment --comment "cci netpol: from a pod" -j NFQUEUE --queue-num 7 --queue-bypass`,
		},
		notWant: []string{"10.42.0.3"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(tt.rs.restoreData())
			lines := strings.Split(strings.TrimSpace(got), "\n")
			for _, w := range tt.want {
				found := false
				for _, l := range lines {
					found = found || l == w
				}
				if !found {
					t.Errorf("missing line %q in\n%s", w, got)
				}
			}
			for _, nw := range tt.notWant {
				if strings.Contains(got, nw) {
					t.Errorf("unexpected %q in\n%s", nw, got)
				}
			}
			// The established return comes before any queue rule.
			for _, ret := range []string{"ESTABLISHED", "--mark"} {
				if i, j := strings.Index(got, ret), strings.Index(got, "NFQUEUE"); i >= 0 && j >= 0 && i > j {
					t.Errorf("queue rule before the %s return:\n%s", ret, got)
				}
			}
			if lines[len(lines)-1] != "COMMIT" {
				t.Errorf("last line %q, want COMMIT", lines[len(lines)-1])
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, bridge := range []string{"cci0", "cci-e2e12345678"} {
		if c := ChainName(bridge); len(c) > 28 {
			t.Errorf("chain %q is longer than iptables' 28 bytes", c)
		}
		if q := DefaultQueue(bridge); q < 1000 || q > 1999 {
			t.Errorf("queue %d for %q out of 1000-1999", q, bridge)
		}
	}
	if DefaultQueue("cci0") != DefaultQueue("cci0") {
		t.Error("queue number not stable")
	}
	if DefaultQueue("cci0") == DefaultQueue("cci1") {
		t.Error("bridges cci0 and cci1 share a queue")
	}
}
