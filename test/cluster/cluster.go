// Package cluster runs a private `cci up` for a test package: its own data
// folder, free ports, pod range and bridge, so that suites of several
// packages and checkouts can run on one host at once, and it tidies up what
// the instance's pods leave on the host when it is gone.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	mrand "math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cci-project/cci/internal/containment"
	"github.com/cci-project/cci/internal/evs"
	"github.com/cci-project/cci/internal/hostns"
	"github.com/cci-project/cci/internal/netpol"
	"github.com/cci-project/cci/internal/serviceproxy"
)

// PodMaxPids is the pods limit of every instance's hosts.
const PodMaxPids = 512

// Instance is one `cci up`. Start and Stop may be called again (restart
// tests); they are safe for concurrent use.
type Instance struct {
	Bin, DataDir string
	Args         []string
	Kubeconfig   string
	Registry     string
	ClusterCIDR  string
	// ServiceCIDR is the instance's Service range, the slot's own: each
	// agent refuses pod traffic to the unserved addresses of its cluster's
	// range, so two clusters on one machine sharing a range would refuse
	// each other's ClusterIPs, and test packages could not run side by side.
	ServiceCIDR string
	Bridge      string
	// DNSAddr is where the cluster DNS listens: the host's IP (pods reach
	// it through the kube-dns Service) and a port free for UDP and TCP.
	DNSAddr string
	// ConsoleURL is the web console's address (its port a free one).
	ConsoleURL string
	// ObjectStoreURL is the cci-obs S3 API's address on this host.
	ObjectStoreURL string
	// Hosts is the number of hosts of `cci up --hosts` (WithHosts); 0 for
	// one host in the `cci up` process.
	Hosts int
	// HostsGateway is the machine's address on the hosts' network
	// (WithHosts): where the hosts reach the control plane and registry.
	HostsGateway string

	mu     sync.Mutex
	cmd    *exec.Cmd
	output *bytes.Buffer
	done   chan error
}

// New describes an instance with its data under work, run from bin; it
// starts nothing. slot picks its pod and Service ranges and bridge name (two
// instances on one host need different slots, 0-99).
func New(bin, work string, slot int) *Instance {
	ports := FreePorts(8)
	// The usage endpoint listens on the apiserver's port + 1 (where
	// `cci usage` looks for it): the apiserver port must have a free successor.
	ports[0] = freePortWithFreeNext()
	n := slot % 100
	c := &Instance{
		Bin:         bin,
		DataDir:     filepath.Join(work, "data"),
		Registry:    fmt.Sprintf("127.0.0.1:%d", ports[3]),
		ClusterCIDR: fmt.Sprintf("10.%d.0.0/16", 100+n),
		// A /20 per slot in 10.200.0.0/13: 4096 addresses, 100 slots.
		ServiceCIDR:    fmt.Sprintf("10.%d.%d.0/20", 200+n/16, n%16*16),
		Bridge:         fmt.Sprintf("cci-e2e%d", n),
		DNSAddr:        FreeDNSAddr(),
		ConsoleURL:     fmt.Sprintf("https://127.0.0.1:%d/", ports[5]),
		ObjectStoreURL: fmt.Sprintf("http://127.0.0.1:%d", ports[6]),
	}
	c.Args = []string{"up",
		"--data-dir", c.DataDir,
		"--api-port", strconv.Itoa(ports[0]),
		"--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]),
		"--registry-addr", c.Registry,
		"--kubelet-port", strconv.Itoa(ports[4]),
		"--console-port", strconv.Itoa(ports[5]),
		"--object-store-port", strconv.Itoa(ports[6]),
		"--file-store-port", strconv.Itoa(ports[7]),
		"--cluster-cidr", c.ClusterCIDR,
		"--service-cidr", c.ServiceCIDR,
		"--cni-bridge", c.Bridge,
		"--dns-address", c.DNSAddr,
		// One host, in the machine's own network namespace, shared with
		// the clusters of other test packages and with the second agents
		// some tests join: an overlay there would route each agent's pod
		// range to the others' tunnel, over their own bridges (WithHosts
		// turns VXLAN on, each host in a namespace of its own).
		"--flannel-backend", "none",
		// A pods limit a fork bomb reaches in a moment (TestForkBombContained);
		// the default, 4096, would take a while on a small test machine.
		"--pod-max-pids", strconv.Itoa(PodMaxPids),
	}
	// CCI_E2E_RUNSC picks the runsc of gvisor pods, so that the suites run
	// against either build (Debian's /usr/bin/runsc, or the current one of
	// make setup) whichever the agent's default is.
	if runsc := os.Getenv("CCI_E2E_RUNSC"); runsc != "" {
		c.Args = append(c.Args, "--runsc-path", runsc)
	}
	c.Kubeconfig = filepath.Join(c.DataDir, "admin.kubeconfig")
	return c
}

// WithHosts makes the instance run n hosts, each in its own network
// namespace (`cci up --hosts n`), on a hosts range and VXLAN identifier of
// the slot's own.
func (c *Instance) WithHosts(n, slot int) *Instance {
	c.Hosts = n
	c.HostsGateway = fmt.Sprintf("10.44.%d.1", slot%100)
	c.Args = append(c.Args, "--hosts", strconv.Itoa(n),
		"--hosts-cidr", fmt.Sprintf("10.44.%d.0/24", slot%100),
		"--vxlan-vni", strconv.Itoa(100+slot%100), "--flannel-backend", "vxlan")
	return c
}

// PullsFrom lets the hosts of c (WithHosts) pull the images named after
// other's registry (a loopback address, which is the host's own in its
// network namespace) from where they reach it: other's hosts' gateway,
// where other's registry listens as well (other must be WithHosts too).
func (c *Instance) PullsFrom(other *Instance) *Instance {
	_, port, _ := net.SplitHostPort(other.Registry)
	c.Args = append(c.Args, "--registry-mirror", other.Registry+"="+net.JoinHostPort(other.HostsGateway, port))
	return c
}

// Build compiles cci from the repository at root into dir and returns the
// binary's path.
func Build(root, dir string) (string, error) {
	bin := filepath.Join(dir, "cci")
	// The versions `make build` stamps: clients (kubectl, the conformance
	// suite) read the apiserver's, and refuse "v0.0.0-master".
	list := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes")
	list.Dir = root
	kube, err := list.Output()
	if err != nil {
		return "", fmt.Errorf("the k8s.io/kubernetes version of go.mod: %w", err)
	}
	kv := strings.TrimSpace(string(kube))
	minor := ""
	if parts := strings.Split(kv, "."); len(parts) > 1 {
		minor = parts[1]
	}
	ldflags := "-X github.com/cci-project/cci/internal/version.Version=test -X k8s.io/component-base/version.gitVersion=" + kv +
		" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=" + minor
	// The Gateway API and VolumeSnapshot CRDs the binary embeds are
	// copied from their modules by go generate, as make build does.
	gen := exec.Command("go", "generate", "./internal/gateway/crds", "./internal/snapshot/crds")
	gen.Dir = root
	gen.Stdout, gen.Stderr = os.Stderr, os.Stderr
	if err := gen.Run(); err != nil {
		return "", fmt.Errorf("go generate ./internal/gateway/crds ./internal/snapshot/crds: %w", err)
	}
	build := exec.Command("go", "build", "-ldflags", ldflags, "-o", bin, "./cmd/cci")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build cci: %w", err)
	}
	return bin, nil
}

// Prepare removes what an earlier run with the same bridge may have left
// (a bridge of that name with another address would make every pod's
// network set-up fail).
func (c *Instance) Prepare() {
	if c.Hosts > 0 {
		c.removeHosts()
	}
	RemoveBridges(c.Bridge, c.Bridge+"b")
	RemoveNetpolRules(c.Bridge)
	if err := serviceproxy.RemoveRejectRules(context.Background(), c.Bridge); err != nil {
		fmt.Fprintln(os.Stderr, "remove Service refusal rules:", err)
	}
	for _, b := range []string{c.Bridge, c.Bridge + "b"} {
		if err := containment.Remove(context.Background(), b); err != nil {
			fmt.Fprintln(os.Stderr, "remove tenant containment rules:", err)
		}
	}
}

// Start runs `cci up` and waits for its ready banner; it returns the time
// from start to ready.
func (c *Instance) Start() (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd := exec.Command(c.Bin, c.Args...)
	out := &bytes.Buffer{}
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(out, pw)
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		pw.Close()
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		closed := false
		for sc.Scan() {
			if !closed && strings.HasPrefix(sc.Text(), "CCI is ready") {
				close(ready)
				closed = true
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case <-ready:
	case err := <-done:
		return 0, fmt.Errorf("cci up exited before ready: %v\n%s", err, out.String())
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		return 0, fmt.Errorf("cci up not ready after 3 minutes\n%s", out.String())
	}
	took := time.Since(begin)
	c.cmd, c.output, c.done = cmd, out, done
	return took, nil
}

// Stop signals `cci up` and waits for it to exit.
func (c *Instance) Stop(sig syscall.Signal) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case err := <-c.done:
		c.cmd = nil
		return err
	case <-time.After(60 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.cmd = nil
		return fmt.Errorf("cci up did not stop within 60 s of %v", sig)
	}
}

// Running tells whether `cci up` runs (started and not stopped).
func (c *Instance) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd != nil
}

// Process is the running `cci up`, or nil.
func (c *Instance) Process() *os.Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	return c.cmd.Process
}

// Exited is closed, with the exit error, when the running `cci up` exits;
// nil when none runs.
func (c *Instance) Exited() <-chan error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	return c.done
}

// Output is what `cci up` printed since its last start.
func (c *Instance) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.output == nil {
		return ""
	}
	return c.output.String()
}

// Cleanup removes what the instance's pods left on the host once the
// instance is gone: pods outlive `cci up` by design, so a suite that stops
// it tidies up after itself, and removes its bridge and rules.
func (c *Instance) Cleanup() {
	if c.Hosts > 0 {
		c.removeHosts()
	}
	CleanupPods(c.DataDir)
	RemoveBridges(c.Bridge, c.Bridge+"b")
	RemoveNetpolRules(c.Bridge)
	if err := serviceproxy.RemoveRejectRules(context.Background(), c.Bridge); err != nil {
		fmt.Fprintln(os.Stderr, "remove Service refusal rules:", err)
	}
	for _, b := range []string{c.Bridge, c.Bridge + "b"} {
		if err := containment.Remove(context.Background(), b); err != nil {
			fmt.Fprintln(os.Stderr, "remove tenant containment rules:", err)
		}
	}
}

// CleanupPods kills the containers of the pods of the instance with data
// in dataDir and removes their network namespaces and mounts. Only that
// instance's: suites of other checkouts may run on the host at the same time.
func CleanupPods(dataDir string) {
	out, _ := exec.Command("pgrep", "-f", "containerd-shim-runc-v2 -namespace cci .*"+dataDir).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			// The shim's children are the containers; killing the process
			// group of each container would need its pid, so kill by parent.
			kids, _ := exec.Command("pgrep", "-P", strconv.Itoa(pid)).Output()
			for _, k := range strings.Fields(string(kids)) {
				if kp, err := strconv.Atoi(k); err == nil {
					_ = syscall.Kill(kp, syscall.SIGKILL)
				}
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dataDir, "agent", "pods"))
	hosts, _ := os.ReadDir(filepath.Join(dataDir, "hosts"))
	for _, h := range hosts {
		more, _ := os.ReadDir(filepath.Join(dataDir, "hosts", h.Name(), "agent", "pods"))
		entries = append(entries, more...)
	}
	ids := map[string]bool{}
	for _, e := range entries {
		ids[e.Name()] = true
	}
	// And the networks the agents recorded as theirs, of pods whose folder
	// went first (a teardown that failed).
	recorded, _ := filepath.Glob(filepath.Join(dataDir, "cni", "netns", "*"))
	more, _ := filepath.Glob(filepath.Join(dataDir, "hosts", "*", "cni", "netns", "*"))
	for _, r := range append(recorded, more...) {
		ids[filepath.Base(r)] = true
	}
	for id := range ids {
		p := filepath.Join("/var/run/netns", "cci-"+id)
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		_ = os.Remove(p)
	}
	raw, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dataDir) {
			_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
	// The cci-evs disks' loop devices (once unmounted above): a host has
	// few, and each left attached would pin its removed file's space.
	for _, dev := range evs.LoopDevicesUnder(dataDir) {
		_ = exec.Command("losetup", "-d", dev).Run()
	}
}

// RemoveBridges deletes the named Linux bridges and their masquerade chains
// if they exist.
func RemoveBridges(names ...string) {
	for _, n := range names {
		_ = exec.Command("ip", "link", "delete", n, "type", "bridge").Run()
		chain := "CCI-MASQ-" + n
		rules, _ := exec.Command("iptables-save", "-t", "nat").Output()
		for _, l := range strings.Split(string(rules), "\n") {
			if strings.HasPrefix(l, "-A POSTROUTING ") && strings.HasSuffix(l, "-j "+chain) {
				// The line keeps iptables-save's quoting of the comment.
				_ = exec.Command("sh", "-c", "iptables -t nat "+strings.Replace(l, "-A POSTROUTING", "-D POSTROUTING", 1)).Run()
			}
		}
		_ = exec.Command("iptables", "-t", "nat", "-F", chain).Run()
		_ = exec.Command("iptables", "-t", "nat", "-X", chain).Run()
	}
}

// RemoveNetpolRules deletes the rules the NetworkPolicy engine keeps for
// the bridge, if any.
func RemoveNetpolRules(bridge string) {
	if err := netpol.RemoveRules(bridge, false); err != nil {
		fmt.Fprintln(os.Stderr, "remove network policy rules:", err)
	}
}

// FreePorts returns n free TCP ports, none handed out before.
func FreePorts(n int) []int {
	var ports []int
	for range n {
		ports = append(ports, PickPort(func(p int) bool { return TCPFree("0.0.0.0", p) }))
	}
	return ports
}

// handedOut holds the ports PickPort gave, so that it gives none twice.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
	// suite is the test package's suite (Setup's), whose block of ports
	// PickPort gives from.
	suite string
}{m: map[int]bool{}}

// portSuites are the cluster test packages that may run at once (make
// test runs several beside test/e2e). Each picks its ports from a block
// of its own: a port one package checked free, or let go while its cci
// restarts, is never another's pick. Other callers share the last block.
var portSuites = []string{"e2e", "console", "fleet", "conformance", "gatewayconformance", "cells", "connect", "chaos"}

// portBlock is the part of [10000, low) that suite picks ports from.
func portBlock(suite string, low int) (from, to int) {
	i := slices.Index(portSuites, suite)
	if i < 0 {
		i = len(portSuites)
	}
	size := (low - 10000) / (len(portSuites) + 1)
	return 10000 + i*size, 10000 + (i+1)*size
}

// PickPort returns a random port below the kernel's ephemeral range for
// which free holds, in the block of the package's suite (portBlock). Ports
// of that range are what outgoing connections get: while cci is stopped in
// the restart tests, any connection on the host may take its ports, and
// the next start fails with "address already in use".
func PickPort(free func(int) bool) int {
	low := 32768
	if raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(raw)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				low = v
			}
		}
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	from, to := portBlock(handedOut.suite, low)
	for {
		p := from + mrand.Intn(to-from)
		if !handedOut.m[p] && free(p) {
			handedOut.m[p] = true
			return p
		}
	}
}

// TCPFree tells whether ip:p can be listened on now.
func TCPFree(ip string, p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// HostIP is the host's IP its default route leaves from, as cci picks its
// advertise address.
func HostIP() string {
	ip := "127.0.0.1"
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		ip = c.LocalAddr().(*net.UDPAddr).IP.String()
		c.Close()
	}
	return ip
}

// FreeDNSAddr returns the host's IP with a port free on both UDP and TCP.
func FreeDNSAddr() string {
	ip := HostIP()
	port := PickPort(func(p int) bool {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(p)))
		if err != nil {
			return false
		}
		pc.Close()
		return TCPFree(ip, p)
	})
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// freePortWithFreeNext returns a free port p whose p+1 is free as well.
func freePortWithFreeNext() int {
	p := PickPort(func(p int) bool { return TCPFree("0.0.0.0", p) && TCPFree("0.0.0.0", p+1) })
	handedOut.Lock()
	handedOut.m[p+1] = true
	handedOut.Unlock()
	return p
}

// Keep tells whether the user asked to keep a suite's data folder and see
// cci's output (CCI_E2E_KEEP set).
func Keep() bool { return os.Getenv("CCI_E2E_KEEP") != "" }

// Setup is what every cluster test package does before its tests: it
// checks that it runs as root with the tools it needs on PATH, makes the
// suite's work folder and builds cci once for the whole package (or takes
// the binary CCI_E2E_BIN names). done removes the work folder unless Keep.
func Setup(suite string, tools ...string) (bin, work string, done func(), err error) {
	handedOut.Lock()
	handedOut.suite = suite
	handedOut.Unlock()
	if os.Geteuid() != 0 {
		return "", "", nil, fmt.Errorf("%s tests need root (containerd, network namespaces, mounts): run them with sudo or as root", suite)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return "", "", nil, fmt.Errorf("%s tests need %s on PATH (make setup installs it)", suite, tool)
		}
	}
	work, done, err = WorkDir("cci-" + suite + "-")
	if err != nil {
		return "", "", nil, err
	}
	if bin = os.Getenv("CCI_E2E_BIN"); bin == "" {
		if bin, err = Build(RepoRoot(), work); err != nil {
			done()
			return "", "", nil, err
		}
	}
	return bin, work, done, nil
}

// WorkDir makes a suite's temporary folder; remove deletes it unless Keep.
func WorkDir(prefix string) (dir string, remove func(), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return dir, func() {
		if !Keep() {
			os.RemoveAll(dir)
		}
	}, nil
}

// RepoRoot is the repository of a test package two levels below it
// (test/<package>), where `go test` runs it.
func RepoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

// removeHosts powers off every host of `cci up --hosts` (their agents,
// containerds and pods) and removes their namespaces, the machine's bridge
// to them (its routes go with it) and the hosts' iptables rules.
func (c *Instance) removeHosts() {
	hostns.Teardown(io.Discard, hostns.BridgeFor(c.Bridge), c.DataDir)
}

// slotLocks holds the lock files of the slots this process claimed, open
// for its lifetime: the kernel releases them when it exits, however it ends.
var slotLocks []*os.File

// ClaimSlots claims n consecutive free slots (see New) for this process and
// returns the first. Test packages that run side by side (go test -p N)
// each hold their own: a slot's pod and Service ranges, bridge, hosts range
// and VXLAN identifier are then never another running cluster's.
func ClaimSlots(n int) (int, error) {
	dir := filepath.Join(os.TempDir(), "cci-test-slots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("slot locks: %w", err)
	}
	// From 1: slot 0's hosts range is 10.44.0.0/24, `cci up --hosts`'s
	// default, which a user's cluster on the machine may hold.
	for base := 1; base+n <= 100; base++ {
		var held []*os.File
		for i := base; i < base+n; i++ {
			f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(i)), os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				return 0, fmt.Errorf("slot lock %d: %w", i, err)
			}
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				f.Close()
				break
			}
			held = append(held, f)
		}
		if len(held) == n {
			slotLocks = append(slotLocks, held...)
			return base, nil
		}
		for _, f := range held {
			f.Close()
		}
	}
	return 0, fmt.Errorf("no %d free test slots of 100 under %s: other test runs hold them", n, dir)
}
