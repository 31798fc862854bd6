package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/hostns"
	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/internal/simulate"
	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/internal/vknode"
)

// ClusterOptions says how to start a cluster of the bench's own.
type ClusterOptions struct {
	// Binary is the cci executable. Default: this process's executable.
	Binary string
	// DataDir is the cluster's data folder. Default: a new temporary
	// folder, removed by Close.
	DataDir string
	// ControlPlaneOnly runs `cci server` (no host agent) instead of `cci up`.
	ControlPlaneOnly bool
	// MaxPods is the host agent's pod capacity. Default 250 (a /24 pod
	// subnet holds 253 pods); more gives each node a larger pod subnet.
	MaxPods int
	// SeparateEtcd runs etcd as a process of its own (`cci etcd`) and the
	// control plane with --etcd-servers, so that the CPU and memory of
	// etcd and of the apiserver are seen apart.
	SeparateEtcd bool
	// ClusterCIDR is the pod range. Default "10.79.0.0/16"; scale uses a
	// larger one so that a thousand simulated nodes each get a subnet.
	ClusterCIDR string
	// Bridge is the CNI bridge, so that the bench's cluster does not share
	// cci0 with another `cci up` on the host. Default "cci-bench0".
	Bridge string
	// ServiceProxy is the agent's --service-proxy; default: the binary's
	// own (the upstream kube-proxy). "off" where another cluster on the
	// host runs its service proxy: two would rewrite each other's rules.
	ServiceProxy string
	// Pprof serves net/http/pprof from the cluster process, for profiles.
	Pprof bool
	// Hosts runs `cci up --hosts N`: N hosts, each a `cci agent` in a
	// network namespace of its own, joined by the VXLAN overlay, on the
	// bench's own hosts range (HostsCIDR) and VXLAN identifier (HostsVNI)
	// so that a user's `cci up --hosts` may run beside it. 0: one host in
	// the `cci up` process.
	Hosts int
	// HostsCIDR is the hosts' address range. Default "10.44.250.0/24":
	// apart from `cci up`'s default (10.44.0.0/24) and the test suites'
	// (10.44.0-99.0/24).
	HostsCIDR string
	// HostsVNI is the overlay's VXLAN identifier. Default 250.
	HostsVNI int
	// Runsc is the agent's --runsc-path; "" leaves the agent's default.
	Runsc string
	// Log receives progress lines. Default os.Stderr.
	Log io.Writer
}

// Cluster is a CCI cluster the bench measures: its own child process, or
// one that runs already (Attach).
type Cluster struct {
	Rest       *rest.Config
	Kube       kubernetes.Interface
	Kubeconfig string
	// DataDir is the cluster's data folder; "" when unknown (then node-side
	// checks such as leftovers and the floor are skipped).
	DataDir string
	// ContainerdSocket is the host agent's containerd; "" when unknown.
	ContainerdSocket string
	// Registry is host:port of the built-in registry.
	Registry string
	// PprofAddr serves the cluster process's net/http/pprof; "" when not.
	PprofAddr string
	// PID is the cci process (control plane and agent); 0 when unknown.
	PID int
	// EtcdPID is etcd's own process (ClusterOptions.SeparateEtcd); 0 when
	// etcd runs inside the cci process.
	EtcdPID int
	// EtcdDir is etcd's data folder (member/snap/db below it).
	EtcdDir string

	cmd     *exec.Cmd
	binary  string   // the cci executable of cmd
	args    []string // cmd's arguments, for Restart
	nodes   int      // host nodes waitReady waits for
	etcd    *exec.Cmd
	etcdEnd chan struct{} // closed when the etcd child has exited
	etcdRun etcdRun       // how etcd was started, for RestartEtcd
	bridge  string        // the CNI bridge the child was told to use, removed by Close
	// hostsBridge is the machine's bridge to the hosts of `cci up
	// --hosts`; Close tears the hosts down.
	hostsBridge string
	exited      chan struct{}
	exitErr     error
	logPath     string
	tmp         bool
	keep        bool
	log         io.Writer
}

// StartCluster starts `cci up` (or `cci server`) as a child process on
// free ports and waits until it is ready.
func StartCluster(ctx context.Context, o ClusterOptions) (*Cluster, error) {
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the cci binary: %w", err)
		}
		o.Binary = exe
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.MaxPods == 0 {
		o.MaxPods = 250
	}
	if o.ClusterCIDR == "" {
		o.ClusterCIDR = "10.79.0.0/16"
	}
	if o.Bridge == "" {
		o.Bridge = "cci-bench0"
	}
	c := &Cluster{log: o.Log, exited: make(chan struct{})}
	if o.DataDir == "" {
		dir, err := os.MkdirTemp("", "cci-bench-")
		if err != nil {
			return nil, err
		}
		o.DataDir, c.tmp = dir, true
	} else {
		c.keep = true
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	c.DataDir = dataDir
	c.EtcdDir = filepath.Join(dataDir, "etcd")

	role := "up"
	if o.ControlPlaneOnly {
		role = "server"
	}
	help, err := exec.CommandContext(ctx, o.Binary, role, "--help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s %s --help: %w: %s", o.Binary, role, err, help)
	}
	has := func(flag string) bool { return bytes.Contains(help, []byte("--"+flag+" ")) }

	ports, err := freePorts(9)
	if err != nil {
		return nil, err
	}
	c.Registry = fmt.Sprintf("127.0.0.1:%d", ports[3])
	args := []string{role,
		"--data-dir", dataDir,
		"--api-port", strconv.Itoa(ports[0]),
		"--etcd-client-port", strconv.Itoa(ports[1]),
		"--etcd-peer-port", strconv.Itoa(ports[2]),
		"--registry-addr", c.Registry,
		"--cluster-cidr", o.ClusterCIDR,
	}
	if mask := nodeCIDRMask(o.MaxPods); mask != 24 && has("node-cidr-mask-size") {
		args = append(args, "--node-cidr-mask-size", strconv.Itoa(mask))
	}
	// Ports of newer roles default to api-port + 1 and such: free ones.
	if has("usage-port") {
		args = append(args, "--usage-port", strconv.Itoa(ports[6]))
	}
	if has("object-store-port") {
		args = append(args, "--object-store-port", strconv.Itoa(ports[7]))
	}
	if has("file-store-port") {
		args = append(args, "--file-store-port", strconv.Itoa(ports[8]))
	}
	// Cluster DNS on a free port of the host's address, not port 53.
	if has("dns-address") {
		args = append(args, "--dns-address", net.JoinHostPort(outboundIP(), "0"))
	}
	if !o.ControlPlaneOnly {
		args = append(args, "--kubelet-port", strconv.Itoa(ports[4]), "--max-pods", strconv.Itoa(o.MaxPods))
		if o.ServiceProxy != "" && has("service-proxy") {
			args = append(args, "--service-proxy", o.ServiceProxy)
		}
		if has("cni-bridge") {
			args = append(args, "--cni-bridge", o.Bridge)
			c.bridge = o.Bridge
		}
		if o.Runsc != "" {
			args = append(args, "--runsc-path", o.Runsc)
		}
		if o.Hosts > 0 {
			if !has("hosts") {
				return nil, fmt.Errorf("%s up has no --hosts: build cci from a tree that has `cci up --hosts N`", o.Binary)
			}
			if o.HostsCIDR == "" {
				o.HostsCIDR = "10.44.250.0/24"
			}
			if o.HostsVNI == 0 {
				o.HostsVNI = 250
			}
			args = append(args, "--hosts", strconv.Itoa(o.Hosts), "--hosts-cidr", o.HostsCIDR, "--vxlan-vni", strconv.Itoa(o.HostsVNI))
			c.hostsBridge = hostns.BridgeFor(o.Bridge)
			// An interrupted earlier run may have left hosts of this bridge.
			hostns.Teardown(c.log, c.hostsBridge, "")
		}
	}
	if o.Pprof {
		if has("pprof-addr") {
			c.PprofAddr = fmt.Sprintf("127.0.0.1:%d", ports[5])
			args = append(args, "--pprof-addr", c.PprofAddr)
		} else {
			fmt.Fprintf(o.Log, "bench: %s %s has no --pprof-addr; no profiles\n", o.Binary, role)
		}
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	c.logPath = filepath.Join(dataDir, "bench-cluster.log")
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	if o.SeparateEtcd {
		url, err := c.startEtcd(ctx, o.Binary, filepath.Join(dataDir, "etcd-member"), ports[1], ports[2], logFile)
		if err != nil {
			logFile.Close()
			_ = c.Close()
			return nil, err
		}
		args = append(args, "--etcd-servers", url)
	}
	logFile.Close()
	c.binary, c.args, c.nodes = o.Binary, args, 0
	if !o.ControlPlaneOnly {
		c.nodes = max(1, o.Hosts)
	}
	fmt.Fprintf(o.Log, "bench: starting %s %s (data %s, log %s)\n", filepath.Base(o.Binary), strings.Join(args, " "), dataDir, c.logPath)
	start := time.Now()
	if err := c.spawn(); err != nil {
		return nil, err
	}

	if err := c.waitReady(ctx, c.nodes); err != nil {
		_ = c.Close()
		return nil, err
	}
	fmt.Fprintf(o.Log, "bench: cluster ready in %.1fs\n", time.Since(start).Seconds())
	if !o.ControlPlaneOnly {
		c.ContainerdSocket = filepath.Join(dataDir, "containerd", "state", "containerd.sock")
		if err := c.PushImages(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	return c, nil
}

// spawn starts the cluster child with the arguments StartCluster chose,
// its output appended to the cluster log.
func (c *Cluster) spawn() error {
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.binary, c.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a Ctrl-C on the bench must not stop the
	// cluster before the bench removed its pods.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", c.binary, err)
	}
	exited := make(chan struct{})
	c.cmd, c.PID, c.exited = cmd, cmd.Process.Pid, exited
	go func() {
		err := cmd.Wait()
		logFile.Close()
		c.exitErr = err
		close(exited)
	}()
	return nil
}

// Restart stops the cluster child with sig (SIGKILL: a crash; SIGTERM: a
// clean stop, which waits for the child to exit) and starts it again on
// the same data folder and ports, as an operator restarting `cci up`. It
// returns when the new process was started, and how long the old one
// took to exit; WaitAPI then measures how soon the API answers.
func (c *Cluster) Restart(sig syscall.Signal) (stopped time.Duration, err error) {
	if c.cmd == nil {
		return 0, errors.New("restart: the cluster is not the bench's own child")
	}
	t0 := time.Now()
	select {
	case <-c.exited:
	default:
		if err := c.cmd.Process.Signal(sig); err != nil {
			return 0, fmt.Errorf("signal the cluster process %d: %w", c.PID, err)
		}
		select {
		case <-c.exited:
		case <-time.After(2 * time.Minute):
			_ = c.cmd.Process.Kill()
			<-c.exited
			return 0, fmt.Errorf("the cluster process %d did not exit within 2 minutes of %v; killed it", c.PID, sig)
		}
	}
	stopped = time.Since(t0)
	return stopped, c.spawn()
}

// WaitAPI waits until the restarted cluster's apiserver answers /readyz
// and nodes host nodes are Ready again.
func (c *Cluster) WaitAPI(ctx context.Context) error { return c.waitReady(ctx, c.nodes) }

// Attach measures a cluster that runs already. dataDir (optional) is its
// data folder on this host, for the floor and node-side checks.
func Attach(kubeconfig, dataDir, containerdSocket, registry string) (*Cluster, error) {
	c := &Cluster{Kubeconfig: kubeconfig, Registry: registry, keep: true, log: os.Stderr, exited: make(chan struct{})}
	if dataDir != "" {
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, err
		}
		c.DataDir = abs
		c.EtcdDir = filepath.Join(abs, "etcd")
		c.PID = readPidFile(filepath.Join(abs, "cci.lock"))
		if containerdSocket == "" {
			containerdSocket = filepath.Join(abs, "containerd", "state", "containerd.sock")
		}
	}
	c.ContainerdSocket = containerdSocket
	if err := c.connect(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) connect() error {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %q: %w", c.Kubeconfig, err)
	}
	// The bench is the only client of note; let it go as fast as the
	// apiserver allows.
	rc.QPS, rc.Burst = 1000, 2000
	rc.UserAgent = "cci-bench"
	// Built-in types in protobuf, as client-go controllers (and the
	// agent) talk; JSON would also make the apiserver encode every pod
	// event a second time for the bench's watch alone.
	kube, err := kubernetes.NewForConfig(vknode.Protobuf(rc))
	if err != nil {
		return err
	}
	c.Rest, c.Kube = rc, kube
	return nil
}

// waitReady waits until the apiserver is ready and nodes host nodes are Ready.
func (c *Cluster) waitReady(ctx context.Context, nodes int) error {
	c.Kubeconfig = filepath.Join(c.DataDir, "admin.kubeconfig")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var last error
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		select {
		case <-c.exited:
			return false, fmt.Errorf("the cluster process exited: %v\n%s", c.exitErr, c.logTail(30))
		default:
		}
		if c.Kube == nil {
			if _, err := os.Stat(c.Kubeconfig); err != nil {
				return false, nil
			}
			if err := c.connect(); err != nil {
				last = err
				return false, nil
			}
		}
		if _, err := c.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			last = err
			return false, nil
		}
		if nodes == 0 {
			return true, nil
		}
		list, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "!" + simulate.LabelSimulated})
		if err != nil {
			last = err
			return false, nil
		}
		ready := 0
		for _, n := range list.Items {
			if nodeReady(&n) {
				ready++
			}
		}
		if ready >= nodes {
			return true, nil
		}
		last = fmt.Errorf("%d of %d host nodes are Ready", ready, nodes)
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("cluster not ready: %w (last: %v; log %s)", err, last, c.logPath)
	}
	return nil
}

// userDockerConfig says whether $DOCKER_CONFIG was set when the process
// started (then pushes use it).
var _, userDockerConfig = os.LookupEnv("DOCKER_CONFIG")

// PushImages builds the test images and pushes them to the cluster's registry.
func (c *Cluster) PushImages(ctx context.Context) error {
	if c.Registry == "" {
		return errors.New("no registry address: pass --registry")
	}
	// Pushes authenticate as the operator of the cluster (the Docker
	// config in its data folder), unless the user's $DOCKER_CONFIG says
	// otherwise. An earlier cluster of this process (a test's) set it to
	// its own folder: that one's credentials are refused here.
	if !userDockerConfig && c.DataDir != "" {
		if err := os.Setenv("DOCKER_CONFIG", registry.AuthDir(c.DataDir)); err != nil {
			return err
		}
	}
	if _, err := testimage.Build(ctx, c.Registry, ""); err != nil {
		return fmt.Errorf("push test images to %s: %w", c.Registry, err)
	}
	return nil
}

// Image is the reference of a test image in the cluster's registry.
func (c *Cluster) Image(short string) string {
	return c.Registry + "/" + short
}

// Close stops the cluster child (SIGINT, then SIGKILL after a minute) and
// removes its temporary data folder. An attached cluster is left alone.
func (c *Cluster) Close() error {
	if c.cmd == nil && c.etcd == nil {
		return nil
	}
	c.stopChild()
	// etcd goes last: the control plane needs it to stop cleanly.
	if c.etcd != nil {
		_ = c.etcd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.etcdEnd:
		case <-time.After(30 * time.Second):
			_ = c.etcd.Process.Kill()
			<-c.etcdEnd
		}
		c.etcd = nil
	}
	// Hosts, their pods' processes and their namespaces outlive `cci up`
	// by design; the bench's own hosts are gone for good.
	if c.hostsBridge != "" {
		hostns.Teardown(c.log, c.hostsBridge, c.DataDir)
	}
	// The bridge outlives the agent (pods of a restarted agent keep
	// using it); the bench's own cluster is gone for good, so is its bridge.
	if c.bridge != "" {
		if out, err := exec.Command("ip", "link", "delete", "dev", c.bridge).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("Cannot find device")) {
			fmt.Fprintf(c.log, "bench: remove bridge %s: %v: %s\n", c.bridge, err, bytes.TrimSpace(out))
		}
	}
	// runsc pins an empty network namespace under its root and never lets
	// it go; it holds no data to inspect, so it goes even where the data
	// folder stays (--data-dir given, or kept after a failure).
	hostns.ReleaseNullNetns(c.DataDir)
	if c.tmp && !c.keep {
		if m := hostns.MountsUnder(c.DataDir); len(m) > 0 {
			return fmt.Errorf("left %s in place: %d mounts remain under it (first %s)", c.DataDir, len(m), m[0])
		}
		if err := os.RemoveAll(c.DataDir); err != nil {
			return fmt.Errorf("remove %s: %w", c.DataDir, err)
		}
	}
	return nil
}

// stopChild stops the cci child: SIGINT, then SIGKILL after a minute.
func (c *Cluster) stopChild() {
	if c.cmd == nil {
		return
	}
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.exited:
		case <-time.After(time.Minute):
			fmt.Fprintf(c.log, "bench: cluster did not stop in a minute; killing it\n")
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
}

// startEtcd starts `cci etcd` with its data in dir and waits until it
// answers on its client port; it returns the client URL.
func (c *Cluster) startEtcd(ctx context.Context, binary, dir string, clientPort, peerPort int, log io.Writer) (string, error) {
	cmd := exec.Command(binary, "etcd", "--data-dir", dir,
		"--client-port", strconv.Itoa(clientPort), "--peer-port", strconv.Itoa(peerPort))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	fmt.Fprintf(c.log, "bench: starting %s etcd (data %s)\n", filepath.Base(binary), dir)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s etcd: %w", binary, err)
	}
	c.etcd, c.EtcdPID, c.EtcdDir = cmd, cmd.Process.Pid, filepath.Join(dir, "etcd")
	c.etcdRun = etcdRun{binary: binary, dir: dir, clientPort: clientPort, peerPort: peerPort}
	end := make(chan struct{})
	c.etcdEnd = end
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(end) }()
	url := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		// /health answers once the member serves (it has no peers to wait for).
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, nil
			}
		}
		select {
		case <-c.etcdEnd:
			c.etcd, c.EtcdPID = nil, 0
			return "", fmt.Errorf("%s etcd exited: %v (see %s)", binary, waitErr, filepath.Join(dir, "logs", "etcd.log"))
		case <-ctx.Done():
			return "", fmt.Errorf("%s etcd did not answer on %s within a minute", binary, url)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// etcdRun is how startEtcd started etcd's own process.
type etcdRun struct {
	binary, dir          string
	clientPort, peerPort int
}

// RestartEtcd sends etcd's own process sig, waits until it has exited and
// starts it again on the same data folder and ports, as its supervisor
// would; it returns once etcd answers again.
func (c *Cluster) RestartEtcd(ctx context.Context, sig syscall.Signal) error {
	if c.etcd == nil {
		return errors.New("etcd runs inside the cluster process: it has no process of its own to restart")
	}
	_ = c.etcd.Process.Signal(sig)
	select {
	case <-c.etcdEnd:
	case <-time.After(time.Minute):
		return fmt.Errorf("etcd %d did not exit within a minute of %s", c.EtcdPID, sig)
	}
	c.etcd, c.EtcdPID = nil, 0
	log, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	r := c.etcdRun
	_, err = c.startEtcd(ctx, r.binary, r.dir, r.clientPort, r.peerPort, log)
	return err
}

// nodeCIDRMask is the node pod-subnet size that holds maxPods addresses
// besides the network, gateway and broadcast ones: /24 up to 253 pods.
func nodeCIDRMask(maxPods int) int {
	mask := 24
	for mask > 16 && 1<<(32-mask)-3 < maxPods {
		mask--
	}
	return mask
}

// Keep leaves the data folder in place after Close.
func (c *Cluster) Keep() { c.keep = true }

func (c *Cluster) logTail(n int) string {
	raw, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// processGroups names the processes whose CPU and memory the bench watches.
func (c *Cluster) processGroups() map[string][]int {
	g := map[string][]int{"bench (this process)": {os.Getpid()}}
	if c.PID != 0 {
		g["cci (control plane + agent)"] = []int{c.PID}
	}
	if c.DataDir != "" {
		if pid := readPidFile(filepath.Join(c.DataDir, "containerd", "state", "cci-containerd.pid")); pid != 0 {
			g["containerd"] = []int{pid}
		}
	}
	if c.ContainerdSocket != "" {
		g["shims (+runc)"] = shimPids(c.ContainerdSocket)
	}
	return g
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// outboundIP is the address this host's default route leaves from, which
// cci takes as its advertise address; loopback when there is none.
func outboundIP() string {
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}
