// Package e2e checks CCI end to end as a user meets it: one `cci up` on a
// temporary data folder with real etcd, kube-apiserver, containerd, runc and
// CNI, driven with the real kubectl binary and client-go.
//
// The tests run as root, in file order, against one shared instance; the
// restart tests stop and start it again.
package e2e

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// instance is the one `cci up` every test talks to.
type instance struct {
	bin, dataDir string
	args         []string
	kubeconfig   string
	registry     string
	clusterCIDR  string
	bridge       string
	// dnsAddr is where the cluster DNS listens: the host's IP (pods reach
	// it through the kube-dns Service) and a port free for UDP and TCP.
	dnsAddr string

	mu     sync.Mutex
	cmd    *exec.Cmd
	output *bytes.Buffer
	done   chan error
}

var cci *instance

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e tests need root (containerd, network namespaces, mounts): run them with sudo or as root")
		return 1
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e tests need the kubectl binary on PATH")
		return 1
	}
	work, err := os.MkdirTemp("", "cci-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keep := os.Getenv("CCI_E2E_KEEP") != ""
	defer func() {
		if !keep {
			os.RemoveAll(work)
		}
	}()

	// One build of cci for the whole suite, or a binary given by CCI_E2E_BIN.
	bin := os.Getenv("CCI_E2E_BIN")
	if bin == "" {
		bin = filepath.Join(work, "cci")
		build := exec.Command("go", "build", "-o", bin, "./cmd/cci")
		build.Dir = repoRoot()
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build cci:", err)
			return 1
		}
	}

	ports := freePorts(5)
	// The usage endpoint listens on the apiserver's port + 1 (where
	// `cci usage` looks for it): the apiserver port must have a free successor.
	ports[0] = freePortWithFreeNext()
	// Bridge and pod range of their own, so that suites in other checkouts
	// (and a `cci up` of the user) can run on the same host at once.
	n := os.Getpid() % 100
	cci = &instance{
		bin:         bin,
		dataDir:     filepath.Join(work, "data"),
		registry:    fmt.Sprintf("127.0.0.1:%d", ports[3]),
		clusterCIDR: fmt.Sprintf("10.%d.0.0/16", 100+n),
		bridge:      fmt.Sprintf("cci-e2e%d", n),
		dnsAddr:     freeDNSAddr(),
	}
	cci.args = []string{"up",
		"--data-dir", cci.dataDir,
		"--api-port", strconv.Itoa(ports[0]),
		"--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]),
		"--registry-addr", cci.registry,
		"--kubelet-port", strconv.Itoa(ports[4]),
		"--cluster-cidr", cci.clusterCIDR,
		"--cni-bridge", cci.bridge,
		"--dns-address", cci.dnsAddr,
	}
	cci.kubeconfig = filepath.Join(cci.dataDir, "admin.kubeconfig")
	// A bridge of the same name left by an earlier run (with another
	// address) would make every pod's network set-up fail: start clean, and
	// leave nothing behind.
	removeBridges(cci.bridge, cci.bridge+"b")
	defer removeBridges(cci.bridge, cci.bridge+"b")
	removeNetpolRules(cci.bridge)
	defer removeNetpolRules(cci.bridge)
	if _, err := cci.start(); err != nil {
		fmt.Fprintln(os.Stderr, "start cci up:", err)
		return 1
	}
	out, err := exec.Command(bin, "image", "build-test-images", "--registry", cci.registry).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build test images: %v\n%s", err, out)
		cci.stop(syscall.SIGTERM)
		return 1
	}
	code := m.Run()
	if err := cci.stop(syscall.SIGTERM); err != nil {
		fmt.Fprintln(os.Stderr, "stop cci up:", err)
	}
	cleanupPods(cci.dataDir)
	if code != 0 || keep {
		fmt.Fprintf(os.Stderr, "cci output:\n%s\nlogs in %s\n", cci.output.String(), filepath.Join(cci.dataDir, "logs"))
	}
	return code
}

// start runs `cci up` and waits for its ready banner; it returns the time
// from start to ready.
func (c *instance) start() (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd := exec.Command(c.bin, c.args...)
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

// stop signals `cci up` and waits for it to exit.
func (c *instance) stop(sig syscall.Signal) error {
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

// cleanupPods removes what pods left on the host once the instance is gone:
// the tests stop cci up with pods still running (they outlive the agent by
// design), so the suite tidies up after itself.
func cleanupPods(dataDir string) {
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
	// Only this instance's pods' namespaces: suites of other checkouts may
	// run on the host at the same time.
	entries, _ := os.ReadDir(filepath.Join(dataDir, "agent", "pods"))
	for _, e := range entries {
		p := filepath.Join("/var/run/netns", "cci-"+e.Name())
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		_ = os.Remove(p)
	}
	raw, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dataDir) {
			_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

func freePorts(n int) []int {
	var ports []int
	for range n {
		ports = append(ports, pickPort(func(p int) bool { return tcpFree("0.0.0.0", p) }))
	}
	return ports
}

// handedOut holds the ports pickPort gave, so that it gives none twice.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// pickPort returns a random port below the kernel's ephemeral range for
// which free holds. Ports of that range are what outgoing connections get:
// while cci is stopped in the restart tests, any connection on the host may
// take its ports, and the next start fails with "address already in use".
func pickPort(free func(int) bool) int {
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
	for {
		p := 10000 + mrand.Intn(low-10000-1)
		if !handedOut.m[p] && free(p) {
			handedOut.m[p] = true
			return p
		}
	}
}

func tcpFree(ip string, p int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// freeDNSAddr returns the host's IP (the one its default route leaves
// from, as cci picks its advertise address) with a port free on both UDP
// and TCP.
func freeDNSAddr() string {
	ip := "127.0.0.1"
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		ip = c.LocalAddr().(*net.UDPAddr).IP.String()
		c.Close()
	}
	port := pickPort(func(p int) bool {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(p)))
		if err != nil {
			return false
		}
		pc.Close()
		return tcpFree(ip, p)
	})
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// removeBridges deletes the named Linux bridges if they exist.
func removeBridges(names ...string) {
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

// freePortWithFreeNext returns a free port p whose p+1 is free as well.
func freePortWithFreeNext() int {
	p := pickPort(func(p int) bool { return tcpFree("0.0.0.0", p) && tcpFree("0.0.0.0", p+1) })
	handedOut.Lock()
	handedOut.m[p+1] = true
	handedOut.Unlock()
	return p
}

// client returns a client-go clientset for the admin kubeconfig.
func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", cci.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// kubectl runs the real kubectl against the instance.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", cci.kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return dropStreamNoise(string(out)), err
}

// dropStreamNoise removes the line kubectl 1.32's websocket client logs now
// and then on stderr when a stream ends ("Unknown stream id 1, discarding
// message"): it is about kubectl's own stream bookkeeping, not the output
// of the command the test ran.
func dropStreamNoise(out string) string {
	if !strings.Contains(out, "Unknown stream id") {
		return out
	}
	var kept []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if strings.Contains(l, "websocket.go") && strings.Contains(l, "Unknown stream id") {
			continue
		}
		kept = append(kept, l)
	}
	return strings.Join(kept, "")
}

// mustKubectl runs kubectl and fails the test on error.
func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// image is the full reference of a test image in the instance's registry.
func image(name string) string { return cci.registry + "/" + name }
