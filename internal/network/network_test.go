package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestConflist(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		mtu  int
		want []string
	}{
		{cidr: "10.88.0.0/24", want: []string{`"subnet": "10.88.0.0/24"`, `"gateway": "10.88.0.1"`, `"dst": "0.0.0.0/0"`, `"ipMasq": false`, `"type": "portmap"`}},
		{cidr: "10.88.0.7/24", want: []string{`"subnet": "10.88.0.0/24"`, `"gateway": "10.88.0.1"`}},
		{cidr: "fd00:88::/64", want: []string{`"gateway": "fd00:88::1"`, `"dst": "::/0"`}},
		{cidr: "10.88.0.0/24", mtu: 1400, want: []string{`"mtu": 1400`}},
	} {
		p := netip.MustParsePrefix(tc.cidr).Masked()
		b, err := conflist(Config{Bridge: "cci0", IPAMDir: "/d/ipam", MTU: tc.mtu}, p, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s: conflist lacks %s:\n%s", tc.cidr, w, b)
			}
		}
	}
	// Pods without host ports get a network without portmap (one plugin
	// run less on each ADD and DEL), under the same name.
	b, err := conflist(Config{Bridge: "cci0", IPAMDir: "/d/ipam"}, netip.MustParsePrefix("10.88.0.0/24"), false)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, "portmap") || !strings.Contains(s, `"type": "bridge"`) || !strings.Contains(s, `"name": "`+NetworkName+`"`) {
		t.Errorf("conflist without ports:\n%s", s)
	}
}

// BenchmarkSetupTeardown is one pod's network: CNI ADD, then DEL, with the
// real plugins. The CPU the forked plugins use shows in the test binary's
// rusage (go test -bench . -benchtime 30x, with time or /usr/bin/time).
func BenchmarkSetupTeardown(b *testing.B) {
	for _, withPorts := range []bool{false, true} {
		name := "no-ports"
		if withPorts {
			name = "host-port"
		}
		b.Run(name, func(b *testing.B) {
			m, _ := newTestManager(b)
			ctx := context.Background()
			var ports []PortMapping
			if withPorts {
				ports = []PortMapping{{HostPort: int32(freePort(b)), ContainerPort: 8080}}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("bench-%d-%s", i, randHex(4))
				if _, err := m.Setup(ctx, id, ports); err != nil {
					b.Fatal(err)
				}
				if err := m.Teardown(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestValidID(t *testing.T) {
	for id, ok := range map[string]bool{
		"0b6a3f0e-7c1d-4d5e-9f00-1234567890ab": true,
		"pod.a_b":                              true,
		"":                                     false,
		"../etc":                               false,
		"a/b":                                  false,
		"-x":                                   false,
		strings.Repeat("a", 129):               false,
	} {
		if err := validID(id); (err == nil) != ok {
			t.Errorf("validID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestSortIPs(t *testing.T) {
	ips := []net.IP{net.ParseIP("fd00::2"), net.ParseIP("10.0.0.2"), net.ParseIP("fd00::3")}
	sortIPs(ips)
	if got := fmt.Sprint(ips); got != "[10.0.0.2 fd00::2 fd00::3]" {
		t.Errorf("sortIPs = %s", got)
	}
}

// TestPodNetwork runs the real plugins: two pods, traffic host→pod,
// pod→gateway, pod→pod, a host port, idempotent Setup and Teardown and no
// leftovers.
func TestPodNetwork(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	a, b := "pod-a-"+randHex(4), "pod-b-"+randHex(4)
	t.Cleanup(func() {
		for _, id := range []string{a, b} {
			if err := m.Teardown(ctx, id); err != nil {
				t.Errorf("cleanup teardown %q: %v", id, err)
			}
		}
	})
	hostPort := freePort(t)

	sa, err := m.Setup(ctx, a, []PortMapping{{HostPort: int32(hostPort), ContainerPort: 8080, Protocol: "TCP"}})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := m.Setup(ctx, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod a %s %v, pod b %s %v", sa.NetnsPath, sa.IPs, sb.NetnsPath, sb.IPs)
	for _, s := range []*Sandbox{sa, sb} {
		ip, _ := netip.AddrFromSlice(s.IPs[0].To4())
		if len(s.IPs) != 1 || !m.prefix.Contains(ip) || ip == m.prefix.Addr().Next() {
			t.Fatalf("sandbox IPs %v: want one pod address in %s", s.IPs, cfg.PodCIDR)
		}
	}
	if sa.IPs[0].Equal(sb.IPs[0]) {
		t.Fatalf("both pods got %s", sa.IPs[0])
	}

	// Setup again (agent restart): same sandbox, no second lease.
	again, err := m.Setup(ctx, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.NetnsPath != sa.NetnsPath || !again.IPs[0].Equal(sa.IPs[0]) {
		t.Fatalf("second Setup = %v %v, want %v %v", again.NetnsPath, again.IPs, sa.NetnsPath, sa.IPs)
	}
	if n := len(leases(t, cfg.IPAMDir)); n != 2 {
		t.Fatalf("%d leases after setting up two pods (one twice), want 2", n)
	}

	ids, err := m.Sandboxes()
	if err != nil {
		t.Fatal(err)
	}
	if !sameSet(ids, []string{a, b}) {
		t.Fatalf("Sandboxes = %v, want %v", ids, []string{a, b})
	}
	if owned, err := m.Owned(); err != nil || !sameSet(owned, []string{a, b}) {
		t.Fatalf("Owned = %v, %v, want %v", owned, err, []string{a, b})
	}

	// A server in pod a, reached from the host, from pod b and by host port.
	podAddr := net.JoinHostPort(sa.IPs[0].String(), "8080")
	serve(t, sa.NetnsPath, ":8080", "pod-a")
	if got := dial(t, "", podAddr); got != "pod-a" {
		t.Errorf("host → %s: got %q", podAddr, got)
	}
	if got := dial(t, sb.NetnsPath, podAddr); got != "pod-a" {
		t.Errorf("pod b → %s: got %q", podAddr, got)
	}
	if hostIP := hostAddress(t); hostIP != "" {
		addr := net.JoinHostPort(hostIP, fmt.Sprint(hostPort))
		if got := dial(t, sb.NetnsPath, addr); got != "pod-a" {
			t.Errorf("pod b → host port %s: got %q", addr, got)
		}
	}

	// Pod b reaches the host through the bridge's gateway address.
	gw := m.Gateway().String()
	ln, err := net.Listen("tcp", net.JoinHostPort(gw, "0"))
	if err != nil {
		t.Fatal(err)
	}
	go answer(ln, "host")
	t.Cleanup(func() { ln.Close() })
	if got := dial(t, sb.NetnsPath, ln.Addr().String()); got != "host" {
		t.Errorf("pod b → gateway %s: got %q", ln.Addr(), got)
	}

	// lo is up inside the pod.
	serve(t, sb.NetnsPath, "127.0.0.1:9090", "lo")
	if got := dial(t, sb.NetnsPath, "127.0.0.1:9090"); got != "lo" {
		t.Errorf("pod b → its own lo: got %q", got)
	}

	// The masquerade and port-forward rules name the pod.
	if rules := iptablesSave(t); !strings.Contains(rules, a) {
		t.Errorf("no iptables rule mentions pod %q", a)
	}

	// The connections above are tracked; Teardown forgets them, so that
	// the next pod given the address does not inherit their NAT state.
	if n := flowsOf(t, sa.IPs[0]); n == 0 {
		t.Errorf("no tracked connection of pod a's %s before teardown", sa.IPs[0])
	}
	for _, id := range []string{a, b} {
		if err := m.Teardown(ctx, id); err != nil {
			t.Fatalf("teardown %q: %v", id, err)
		}
		if err := m.Teardown(ctx, id); err != nil {
			t.Fatalf("second teardown %q: %v", id, err)
		}
	}
	for _, p := range []string{sa.NetnsPath, sb.NetnsPath} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("netns %s still there (%v)", p, err)
		}
	}
	if l := leases(t, cfg.IPAMDir); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
	for _, s := range []*Sandbox{sa, sb} {
		if n := flowsOf(t, s.IPs[0]); n != 0 {
			t.Errorf("%d tracked connections of %s left after teardown", n, s.IPs[0])
		}
	}
	rules := iptablesSave(t)
	for _, id := range []string{a, b} {
		if strings.Contains(rules, id) {
			t.Errorf("iptables rules for pod %q left:\n%s", id, grepLines(rules, id))
		}
	}
	if ids, err := m.Sandboxes(); err != nil || len(ids) != 0 {
		t.Errorf("Sandboxes after teardown = %v, %v", ids, err)
	}
	if owned, err := m.Owned(); err != nil || len(owned) != 0 {
		t.Errorf("Owned after teardown = %v, %v", owned, err)
	}
}

// flowsOf counts the connection-tracking entries with ip at either end.
func flowsOf(t *testing.T, ip net.IP) int {
	t.Helper()
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatalf("list tracked connections: %v", err)
	}
	n := 0
	for _, f := range flows {
		if FlowTouches(f, ip) {
			n++
		}
	}
	return n
}

// TestConcurrentSetup sets up and tears down pods in parallel.
func TestConcurrentSetup(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	const n = 6
	ids := make([]string, n)
	ips := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("pod-%d-%s", i, randHex(4))
		t.Cleanup(func() { _ = m.Teardown(ctx, ids[i]) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := m.Setup(ctx, ids[i], nil)
			if err == nil {
				ips[i] = s.IPs[0].String()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("setup %q: %v", ids[i], errs[i])
		}
		if seen[ips[i]] {
			t.Fatalf("address %s given twice: %v", ips[i], ips)
		}
		seen[ips[i]] = true
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.Teardown(ctx, ids[i])
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("teardown %q: %v", ids[i], errs[i])
		}
	}
	if l := leases(t, cfg.IPAMDir); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}

// newTestManager makes a Manager on a bridge, subnet and folders of its
// own, and removes the bridge afterwards.
func newTestManager(t testing.TB) (*Manager, Config) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, a bridge and iptables rules")
	}
	netnsDir, err := os.MkdirTemp("/run", "cci-test-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(netnsDir) })
	dir := t.TempDir()
	cfg := Config{
		PodCIDR:  freeSubnet(t),
		Bridge:   "ccit" + randHex(4),
		ConfDir:  filepath.Join(dir, "net.d"),
		IPAMDir:  filepath.Join(dir, "ipam"),
		NetnsDir: netnsDir,
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", cfg.Bridge).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "Cannot find device") {
			t.Errorf("delete bridge %s: %v: %s", cfg.Bridge, err, out)
		}
	})
	t.Logf("bridge %s, pod CIDR %s", cfg.Bridge, cfg.PodCIDR)
	return m, cfg
}

// freeSubnet picks a 10.x.y.0/24 that no host address or route uses.
func freeSubnet(t testing.TB) string {
	t.Helper()
	routes, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	addrs, _ := net.InterfaceAddrs()
	for range 100 {
		r := make([]byte, 2)
		_, _ = rand.Read(r)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + r[0]%50, r[1], 0}), 24)
		used := strings.Contains(string(routes), p.Addr().String())
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && p.Contains(ip) {
					used = true
				}
			}
		}
		if !used {
			return p.String()
		}
	}
	t.Fatal("no free 10.x.y.0/24")
	return ""
}

func randHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serve answers every connection with msg from a listener inside netns.
func serve(t *testing.T, netns, addr, msg string) {
	t.Helper()
	var ln net.Listener
	if err := inNetns(netns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go answer(ln, msg)
}

func answer(ln net.Listener, msg string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, msg+"\n")
		_ = c.Close()
	}
}

// dial connects to addr, from inside netns unless it is "", and returns the
// line it reads.
func dial(t *testing.T, netns, addr string) string {
	t.Helper()
	var c net.Conn
	connect := func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}
	var err error
	if netns == "" {
		err = connect()
	} else {
		err = inNetns(netns, connect)
	}
	if err != nil {
		t.Errorf("dial %s (netns %q): %v", addr, netns, err)
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Errorf("read from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// hostAddress returns an IPv4 address of a host interface other than lo
// and our bridges, or "".
func hostAddress(t *testing.T) string {
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 || strings.HasPrefix(ifc.Name, "ccit") || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	t.Log("no host address for the host-port check")
	return ""
}

// leases lists host-local's lease files (named after the address).
func leases(t *testing.T, ipamDir string) []string {
	t.Helper()
	var out []string
	entries, err := os.ReadDir(filepath.Join(ipamDir, NetworkName))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	return string(out)
}

func grepLines(s, sub string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

// TestTeardownWithoutCache: even when libcni's result cache is gone (so DEL
// cannot learn the pod's port mappings), Teardown removes its port rules.
func TestTeardownWithoutCache(t *testing.T) {
	m, cfg := newTestManager(t)
	ctx := context.Background()
	id := "pod-nocache-" + randHex(4)
	t.Cleanup(func() { _ = m.Teardown(ctx, id) })
	if _, err := m.Setup(ctx, id, []PortMapping{{HostPort: int32(freePort(t)), ContainerPort: 80}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(iptablesSave(t), `dnat name: \"cci\" id: \"`+id) {
		t.Fatal("no port rule after Setup")
	}
	cache := filepath.Join("/var/lib/cni/results", NetworkName+"-"+id+"-"+podInterface)
	if err := os.Remove(cache); err != nil {
		t.Fatalf("remove CNI cache: %v", err)
	}
	if err := m.Teardown(ctx, id); err != nil {
		t.Fatal(err)
	}
	if rules := iptablesSave(t); strings.Contains(rules, id) {
		t.Errorf("iptables rules for pod %q left:\n%s", id, grepLines(rules, id))
	}
	if l := leases(t, cfg.IPAMDir); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}

// A node registered again gets another pod range: the manager made for it
// takes the old gateway off the bridge, and pods of the new range start
// (the bridge plugin refuses a bridge with another gateway on it).
func TestNewPodRangeOnOldBridge(t *testing.T) {
	old, cfg := newTestManager(t)
	ctx := context.Background()
	first := "pod-old-" + randHex(4)
	if _, err := old.Setup(ctx, first, nil); err != nil {
		t.Fatal(err)
	}
	if err := old.Teardown(ctx, first); err != nil {
		t.Fatal(err)
	}
	cfg.PodCIDR = freeSubnet(t)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := "pod-new-" + randHex(4)
	t.Cleanup(func() { _ = m.Teardown(ctx, id) })
	s, err := m.Setup(ctx, id, nil)
	if err != nil {
		t.Fatalf("pod of the new range %s on the bridge of %s: %v", cfg.PodCIDR, old.prefix, err)
	}
	ip, _ := netip.AddrFromSlice(s.IPs[0].To4())
	if !m.prefix.Contains(ip) {
		t.Fatalf("pod address %s outside the new range %s", ip, cfg.PodCIDR)
	}
	out, _ := exec.Command("ip", "-4", "-o", "addr", "show", "dev", cfg.Bridge).Output()
	if strings.Contains(string(out), old.prefix.Addr().Next().String()+"/") {
		t.Errorf("bridge %s still holds the old gateway %s:\n%s", cfg.Bridge, old.prefix.Addr().Next(), out)
	}
}
