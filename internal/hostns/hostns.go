// Package hostns runs several real CCI hosts on one machine, the way kind
// gives Kubernetes developers many nodes on one laptop: each host is a
// network namespace of its own, with its own address, data folder,
// containerd, pod bridge, overlay endpoint and kubelet API, and runs an
// unmodified `cci agent` child process. `cci up --hosts N` uses it, and so
// do the tests that need several hosts.
//
// The machine's side of the host network is one bridge holding the first
// address of the hosts' range; each host gets a veth into it and the next
// addresses. The hosts reach the control plane, the registry and the world
// through the bridge (the machine masquerades what leaves the range), and
// the machine reaches each host's kubelet API and node ports directly.
// The load-balancer pool (the range's last 16 addresses) is routed to the
// hosts by an equal-cost multipath route, as a cloud's ELB spreads flows
// over hosts; each host's service proxy balances them across the
// Service's endpoints on every host.
//
// A host's lifecycle, as the supervisor sees it:
//
//	start ─► agent running ─► ready (node registered and Ready)
//	  ▲          │ exits (crash, SIGKILL)
//	  │          ▼
//	  └── after a back-off, unless the host is down ("cci host stop")
//	down ─► every process of the host killed, left down until "cci host start"
//	node deleted (agent exits with ExitNodeDeleted) ─► down, pods stopped
//
// Namespaces, addresses and data survive `cci up`'s stop, so the next start
// re-adopts the hosts' pods as a restarted agent does.
package hostns

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"

	"github.com/cci-project/cci/internal/network"
)

// ExitNodeDeleted is the exit code of a `cci agent` whose node was deleted
// from the cluster: its host is then held down, as an operator who deletes
// a node means it to leave, until `cci host start` registers it again.
const ExitNodeDeleted = 3

// NetnsDir is where the hosts' namespaces are bind-mounted (`ip netns`
// lists them).
const NetnsDir = "/var/run/netns"

// Config describes the hosts of one `cci up`.
type Config struct {
	// Count is the number of hosts.
	Count int
	// Bridge is the machine's bridge to the hosts (at most 13 bytes: its
	// veths are named after it). Its name also names the namespaces.
	Bridge string
	// CIDR is the hosts' range: the bridge takes its first address, host i
	// the (i+1)th, the load-balancer pool its last 16.
	CIDR netip.Prefix
	// NodePrefix names the hosts' nodes: <NodePrefix>-1 … -N.
	NodePrefix string
	// Pools are the pools of host 1, 2, …; a host past the list's end, or
	// given "", is in pool "general".
	Pools []string
	// DataDir holds each host's data folder, hosts/<node>.
	DataDir string
	// Binary is the cci executable the agents run. Default: this process's.
	Binary string
	// AgentArgs are the arguments of every host's `cci agent`, less its
	// data folder, node name and node IP, which the fleet adds; Run sets
	// them (the join token exists only once the control plane runs).
	AgentArgs []string
	// Log receives the hosts' progress; each agent's own output goes to
	// <DataDir>/logs/<node>.log.
	Log *slog.Logger
}

// Host is one host of the fleet.
type Host struct {
	// Name is its node name, also the folder of its data.
	Name string
	// Netns is the path of its network namespace.
	Netns string
	// IP is its address on the host network.
	IP netip.Addr
	// DataDir is its agent's data folder.
	DataDir string
	// Pool is the host pool it joins ("" for the agent's default).
	Pool string `json:",omitempty"`
}

// down is the file whose presence keeps a host powered off.
func (h Host) downFile() string { return filepath.Join(h.DataDir, "down") }

// Fleet is a running set of hosts.
type Fleet struct {
	cfg   Config
	hosts []Host
	gw    netip.Addr
}

// Validate checks cfg and fills defaults.
func (c *Config) Validate() error {
	if c.Count < 1 || c.Count > 64 {
		return fmt.Errorf("--hosts %d: choose 1 to 64", c.Count)
	}
	if len(c.Bridge) == 0 || len(c.Bridge) > 13 {
		return fmt.Errorf("host bridge name %q: 1 to 13 bytes", c.Bridge)
	}
	if !c.CIDR.Addr().Is4() || c.CIDR.Bits() > 26 {
		return fmt.Errorf("hosts range %s: an IPv4 prefix of /26 or wider (a gateway, the hosts, 16 load-balancer addresses)", c.CIDR)
	}
	if need := c.Count + 2 + 16; need > 1<<(32-c.CIDR.Bits()) {
		return fmt.Errorf("hosts range %s is too small for %d hosts and 16 load-balancer addresses", c.CIDR, c.Count)
	}
	if len(c.Pools) > c.Count {
		return fmt.Errorf("%d pools for %d hosts: give at most one pool per host", len(c.Pools), c.Count)
	}
	if c.NodePrefix == "" {
		c.NodePrefix = "host"
	}
	if c.Binary == "" {
		// Not /proc/self/exe: nsenter would find itself there.
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the cci executable for the hosts' agents: %w", err)
		}
		c.Binary = exe
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.CIDR = c.CIDR.Masked()
	return nil
}

// Gateway is the machine's address on the host network.
func (c Config) Gateway() netip.Addr { return c.CIDR.Addr().Next() }

// LBPool is the range's last 16 addresses, routed to the hosts.
func (c Config) LBPool() netip.Prefix {
	last := lastAddr(c.CIDR)
	b := last.As4()
	b[3] &^= 15
	return netip.PrefixFrom(netip.AddrFrom4(b), 28)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << (32 - p.Bits())) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// New lays out the hosts (names, addresses, folders); it changes nothing.
func New(cfg Config) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, gw: cfg.Gateway()}
	ip := f.gw
	for i := 1; i <= cfg.Count; i++ {
		ip = ip.Next()
		name := fmt.Sprintf("%s-%d", cfg.NodePrefix, i)
		pool := ""
		if i <= len(cfg.Pools) {
			pool = cfg.Pools[i-1]
		}
		f.hosts = append(f.hosts, Host{
			Pool:    pool,
			Name:    name,
			Netns:   filepath.Join(NetnsDir, fmt.Sprintf("host.%s.%d", cfg.Bridge, i)),
			IP:      ip,
			DataDir: filepath.Join(cfg.DataDir, "hosts", name),
		})
	}
	return f, nil
}

// Hosts lists the hosts.
func (f *Fleet) Hosts() []Host { return f.hosts }

// Host finds a host by node name.
func (f *Fleet) Host(name string) (Host, bool) {
	for _, h := range f.hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// Setup creates (or finds again) the bridge, every host's namespace and
// link, the masquerade of the hosts' range and the load-balancer route.
// It is safe to run again over what an earlier start made.
func (f *Fleet) Setup() error {
	br, err := ensureBridge(f.cfg.Bridge, netip.PrefixFrom(f.gw, f.cfg.CIDR.Bits()))
	if err != nil {
		return err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IP forwarding: %w", err)
	}
	if err := ensureHostsMasquerade(f.cfg.Bridge, f.cfg.CIDR); err != nil {
		return err
	}
	var hops []*netlink.NexthopInfo
	for i, h := range f.hosts {
		if err := f.setupHost(br, i+1, h); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		if err := os.MkdirAll(h.DataDir, 0o755); err != nil {
			return err
		}
		hops = append(hops, &netlink.NexthopInfo{LinkIndex: br.Attrs().Index, Gw: h.IP.AsSlice()})
	}
	lb := f.cfg.LBPool()
	route := &netlink.Route{Dst: prefixNet(lb), MultiPath: hops}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("route the load-balancer pool %s to the hosts: %w", lb, err)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ensureBridge(name string, addr netip.Prefix) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create host bridge %q: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("host bridge %q: %w", name, err)
		}
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("host bridge %q: a %s of that name exists; choose another --cni-bridge", name, link.Type())
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: prefixNet(addr)}); err != nil {
		return nil, fmt.Errorf("address %s on host bridge %q: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bring up host bridge %q: %w", name, err)
	}
	return link, nil
}

// setupHost makes host i's namespace (if missing) and its link to the
// bridge: veth <bridge><i> on the machine, eth0 in the host.
func (f *Fleet) setupHost(br netlink.Link, i int, h Host) error {
	if _, err := os.Stat(h.Netns); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(h.Netns), 0o755); err != nil {
			return err
		}
		if err := network.CreateNetns(h.Netns); err != nil {
			return err
		}
	}
	ns, err := netns.GetFromPath(h.Netns)
	if err != nil {
		return fmt.Errorf("open network namespace %q: %w", h.Netns, err)
	}
	defer ns.Close()
	in, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %q: %w", h.Netns, err)
	}
	defer in.Close()

	outside := fmt.Sprintf("%s%d", f.cfg.Bridge, i)
	eth0, err := in.LinkByName("eth0")
	if err != nil {
		// No link yet (or a half-made one from an interrupted start).
		if old, err := netlink.LinkByName(outside); err == nil {
			_ = netlink.LinkDel(old)
		}
		tmp := fmt.Sprintf("%sp%d", f.cfg.Bridge, i)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outside, MasterIndex: br.Attrs().Index}, PeerName: tmp, PeerNamespace: netlink.NsFd(int(ns))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %q: %w", outside, err)
		}
		peer, err := in.LinkByName(tmp)
		if err != nil {
			return fmt.Errorf("veth peer in the host: %w", err)
		}
		if err := in.LinkSetName(peer, "eth0"); err != nil {
			return fmt.Errorf("name the host's link eth0: %w", err)
		}
		if eth0, err = in.LinkByName("eth0"); err != nil {
			return err
		}
	}
	if link, err := netlink.LinkByName(outside); err == nil {
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("attach %q to the host bridge: %w", outside, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
	}
	if err := in.AddrReplace(eth0, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(h.IP, f.cfg.CIDR.Bits()))}); err != nil {
		return fmt.Errorf("address %s on the host's eth0: %w", h.IP, err)
	}
	if err := in.LinkSetUp(eth0); err != nil {
		return err
	}
	if lo, err := in.LinkByName("lo"); err == nil {
		_ = in.LinkSetUp(lo)
	}
	def := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: f.gw.AsSlice(), Dst: nil}
	if err := in.RouteReplace(def); err != nil {
		return fmt.Errorf("default route of the host via %s: %w", f.gw, err)
	}
	return nil
}

// ensureHostsMasquerade lets the hosts reach beyond the machine under its
// address.
func ensureHostsMasquerade(bridge string, cidr netip.Prefix) error {
	ipt := utiliptables.New(utiliptables.ProtocolIPv4)
	comment := fmt.Sprintf("cci: hosts of bridge %s reach the outside through the machine's address", bridge)
	if _, err := ipt.EnsureRule(utiliptables.Append, utiliptables.TableNAT, utiliptables.ChainPostrouting,
		"-m", "comment", "--comment", comment, "-s", cidr.String(), "!", "-d", cidr.String(), "-j", "MASQUERADE"); err != nil {
		return fmt.Errorf("masquerade of the hosts' range: %w", err)
	}
	// A machine whose FORWARD policy drops (Docker sets it so) would cut
	// the hosts off.
	for _, dir := range [][]string{{"-i", bridge}, {"-o", bridge}} {
		args := append(append([]string{"-m", "comment", "--comment", "cci: hosts of bridge " + bridge}, dir...), "-j", "ACCEPT")
		if _, err := ipt.EnsureRule(utiliptables.Prepend, utiliptables.TableFilter, utiliptables.ChainForward, args...); err != nil {
			return fmt.Errorf("forwarding of the hosts' bridge: %w", err)
		}
	}
	return nil
}

// Run starts every host's agent (with agentArgs) and keeps it running until ctx ends:
// an agent that exits is started again after a back-off unless its host
// is down. ready is called once every host's agent said it is ready.
func (f *Fleet) Run(ctx context.Context, agentArgs []string, ready func()) error {
	f.cfg.AgentArgs = agentArgs
	var wg sync.WaitGroup
	readyCh := make(chan string, len(f.hosts))
	for _, h := range f.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.supervise(ctx, h, readyCh)
		}()
	}
	go func() {
		seen := map[string]bool{}
		for len(seen) < len(f.hosts) {
			select {
			case name := <-readyCh:
				seen[name] = true
			case <-ctx.Done():
				return
			}
		}
		if ready != nil {
			ready()
		}
		for {
			select {
			case <-readyCh:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	return nil
}

// readyLine is what `cci agent` prints once its node is registered and Ready.
const readyLine = "CCI agent is ready"

func (f *Fleet) supervise(ctx context.Context, h Host, readyCh chan<- string) {
	log := f.cfg.Log.With("host", h.Name)
	backoff := time.Second
	for ctx.Err() == nil {
		if _, err := os.Stat(h.downFile()); err == nil {
			select {
			case <-time.After(time.Second):
				continue
			case <-ctx.Done():
				return
			}
		}
		began := time.Now()
		err := f.runAgent(ctx, h, readyCh)
		if ctx.Err() != nil {
			return
		}
		if exit := (*exec.ExitError)(nil); errors.As(err, &exit) && exit.ExitCode() == ExitNodeDeleted {
			log.Warn("the host's node was deleted; it stays down until `cci host start` registers it again")
			_ = os.WriteFile(h.downFile(), []byte("node deleted "+time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
			continue
		}
		if time.Since(began) > time.Minute {
			backoff = time.Second
		}
		log.Warn("host agent exited; starting it again", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// runAgent runs one `cci agent` in the host's namespace until it exits or
// ctx ends (then it is sent SIGTERM, and SIGKILL 30 s later).
func (f *Fleet) runAgent(ctx context.Context, h Host, readyCh chan<- string) error {
	logPath := filepath.Join(f.cfg.DataDir, "logs", h.Name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	args := append([]string{"--net=" + h.Netns, "--", f.cfg.Binary, "agent",
		"--data-dir", h.DataDir, "--node-name", h.Name, "--node-ip", h.IP.String()}, f.cfg.AgentArgs...)
	if h.Pool != "" {
		args = append(args, "--pool", h.Pool)
	}
	cmd := exec.Command("nsenter", args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	// Its own process group: a terminal's ^C reaches `cci up`, which stops
	// the agents in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the agent of host %s (nsenter from util-linux): %w", h.Name, err)
	}
	_ = os.WriteFile(filepath.Join(h.DataDir, "agent.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	var lastMu sync.Mutex
	last := ""
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if strings.TrimSpace(line) != "" {
				lastMu.Lock()
				last = line
				lastMu.Unlock()
			}
			if strings.HasPrefix(line, readyLine) {
				readyCh <- h.Name
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		pw.Close()
	}()
	select {
	case err := <-done:
		<-scanned
		lastMu.Lock()
		defer lastMu.Unlock()
		return fmt.Errorf("%w (last words: %s; log %s)", err, last, logPath)
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return <-done
		}
	}
}

// layoutFile records the fleet's layout for `cci host` commands.
func layoutFile(dataDir string) string { return filepath.Join(dataDir, "hosts", "hosts.json") }

// SaveLayout writes the hosts' layout into the data folder.
func (f *Fleet) SaveLayout() error {
	raw, err := json.MarshalIndent(f.hosts, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(layoutFile(f.cfg.DataDir)), 0o755); err != nil {
		return err
	}
	return os.WriteFile(layoutFile(f.cfg.DataDir), raw, 0o644)
}

// LoadHosts reads the layout a `cci up --hosts N` on dataDir saved.
func LoadHosts(dataDir string) ([]Host, error) {
	raw, err := os.ReadFile(layoutFile(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no hosts in %q: start it with `cci up --hosts N --data-dir %s` first", dataDir, dataDir)
	}
	if err != nil {
		return nil, err
	}
	var hosts []Host
	if err := json.Unmarshal(raw, &hosts); err != nil {
		return nil, fmt.Errorf("%s: %w", layoutFile(dataDir), err)
	}
	return hosts, nil
}

// Down reports whether a host is held down.
func (h Host) Down() bool {
	_, err := os.Stat(h.downFile())
	return err == nil
}

// PowerOff holds the host down and kills every process it runs at once,
// as a host losing power: its agent, containerd, shims and every pod's
// processes. Nothing is cleaned: that is the returning agent's work. It
// returns how many processes it killed.
func PowerOff(h Host) (int, error) {
	if err := os.WriteFile(h.downFile(), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Stat(h.Netns, &st); err != nil {
		return 0, fmt.Errorf("host %s: network namespace %q: %w", h.Name, h.Netns, err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	killed := 0
	// Processes may fork while they are killed: a few passes.
	for pass := 0; pass < 5; pass++ {
		procs, err := listProcs()
		if err != nil {
			return killed, err
		}
		victims := map[int]bool{}
		for pid := range procs {
			if inNetns(pid, want) {
				victims[pid] = true
			}
		}
		// Their descendants too: a pod's processes live in the pod's own
		// namespace, under the host's shims.
		for grew := true; grew; {
			grew = false
			for pid, ppid := range procs {
				if !victims[pid] && victims[ppid] {
					victims[pid] = true
					grew = true
				}
			}
		}
		if len(victims) == 0 {
			break
		}
		for pid := range victims {
			if unix.Kill(pid, unix.SIGKILL) == nil {
				killed++
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return killed, nil
}

// PowerOn lets the supervisor of a running `cci up` start the host again.
func PowerOn(h Host) error {
	if err := os.Remove(h.downFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// inNetns tells whether any thread of process pid is in the network
// namespace want ("net:[inode]"). Not only its first thread: the agent
// runs work inside pods' namespaces on threads it then discards, and when
// the Go runtime picks the main thread for that, the main thread stays in
// the pod's namespace for good, and /proc/PID/ns/net with it.
func inNetns(pid int, want string) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, t := range tasks {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/task/%s/ns/net", pid, t.Name())); err == nil && link == want {
			return true
		}
	}
	return false
}

// listProcs maps every process to its parent.
func listProcs() (map[int]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(raw)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		out[pid] = ppid
	}
	return out, nil
}

// RoutePods keeps a route on the machine to every host's pod range, via
// that host's address, until ctx ends: the control plane runs on the
// machine and reaches pods directly (admission webhooks, aggregated APIs,
// the apiserver's proxy to pods and Services), as the hosts reach each
// other's pods over the overlay. Routes of nodes that went are removed.
func (f *Fleet) RoutePods(ctx context.Context, kube kubernetes.Interface) {
	br, err := netlink.LinkByName(f.cfg.Bridge)
	if err != nil {
		f.cfg.Log.Warn("routes to the hosts' pods: no host bridge", "err", err)
		return
	}
	installed := map[string]bool{}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			want := map[string]bool{}
			for _, n := range nodes.Items {
				gw := nodeIP(n.Status.Addresses)
				dst, err := netip.ParsePrefix(n.Spec.PodCIDR)
				if err != nil || !gw.IsValid() || !f.cfg.CIDR.Contains(gw) {
					continue
				}
				want[dst.String()] = true
				r := &netlink.Route{LinkIndex: br.Attrs().Index, Dst: prefixNet(dst), Gw: gw.AsSlice()}
				if err := netlink.RouteReplace(r); err != nil {
					f.cfg.Log.Warn("route to a host's pods", "node", n.Name, "podCIDR", dst, "err", err)
					continue
				}
				installed[dst.String()] = true
			}
			for dst := range installed {
				if !want[dst] {
					p := netip.MustParsePrefix(dst)
					_ = netlink.RouteDel(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: prefixNet(p)})
					delete(installed, dst)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func nodeIP(addrs []v1.NodeAddress) netip.Addr {
	for _, a := range addrs {
		if a.Type == v1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip
			}
		}
	}
	return netip.Addr{}
}
