package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/typeurl/v2"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/internal/version"
)

// Scenarios, in the order the README lists them.
var Scenarios = []string{"start", "floor", "burst", "churn", "density", "scale", "network", "gateway", "storage", "chaos"}

// Config is one bench run. Zero fields take the scenario's defaults.
type Config struct {
	// Scenario is one of Scenarios.
	Scenario string

	// Cluster, when set, is measured as is (tests share one).
	Cluster *Cluster
	// Kubeconfig measures a running cluster instead of starting one.
	Kubeconfig string
	// DataDir is the running cluster's data folder (for the floor and
	// node-side checks), or where the bench's own cluster keeps its data
	// (default: a temporary folder, removed afterwards).
	DataDir string
	// ContainerdSocket overrides <DataDir>/containerd/state/containerd.sock.
	ContainerdSocket string
	// Registry is the running cluster's registry. Default "127.0.0.1:5000".
	Registry string
	// PprofAddr is the running cluster's pprof listener (`cci up
	// --pprof-addr`), for profiles.
	PprofAddr string
	// Binary is the cci executable for the bench's own cluster and the
	// simulated nodes. Default: this process's executable.
	Binary string
	// KeepData leaves the bench's own cluster's data folder in place.
	KeepData bool
	// EmbeddedEtcd keeps scale's etcd inside the `cci server` process,
	// as `cci server` runs it by default, instead of a `cci etcd` of its own.
	EmbeddedEtcd bool
	// EtcdApart runs the bench's own cluster with etcd as a process of its
	// own (`cci etcd`, and `cci up --etcd-servers`), so that chaos can kill
	// etcd alone (FaultEtcd).
	EtcdApart bool
	// MaxPods is the pod capacity of the bench's own host. Default 250
	// (a /24 pod subnet), or N+10 for a burst of more; a larger capacity
	// gets the host a larger pod subnet.
	MaxPods int

	// Out receives <scenario>.json, <scenario>.html and profiles; "" writes nothing.
	Out string

	// Pods is N: start 200, floor 200, burst 100, density: until a limit,
	// scale 10000.
	Pods int
	// FloorPods is how many containers the floor starts for the ratio
	// the other scenarios print. Default 50.
	FloorPods int
	// RuntimeClass is the pods' RuntimeClass ("" or "runc": the node's
	// default runtime, runc; "gvisor": runsc).
	RuntimeClass string
	// Runsc is the runsc of gvisor pods, in the bench's own cluster and in
	// the floor. Default: the agent's (the current runsc of make setup,
	// else "runsc" in PATH).
	Runsc string
	// PodTimeout is how long one pod may take to run. Default 2m.
	PodTimeout time.Duration

	// Profile takes CPU and heap profiles of the cluster process (burst
	// profiles by default when the bench starts its own cluster).
	Profile *bool
	// ProfileSeconds is the CPU profile's length. Default 20.
	ProfileSeconds int

	// BurstModes are "deployment" and/or "job". Default both.
	BurstModes []string
	// ViaConnect makes burst a comparison: a Deployment burst created
	// directly in the bench's own cluster, then the same through a `cci
	// connect` virtual node from a second control plane (needs the
	// bench's own cluster).
	ViaConnect bool

	// ChurnRates are the pods/s churn tries, in order, until p99 start
	// passes Target. Default 2, 4, 8, 16.
	ChurnRates []float64
	// ChurnStep is how long each rate runs. Default 20s.
	ChurnStep time.Duration
	// Target is churn's and density's p99 start limit. Default 1s.
	Target time.Duration

	// DensityBatch is how many pods density starts at a time. Default 1:
	// one after another, so that start latency is not queueing; the p99
	// is taken over the last max(20, batch) pods.
	DensityBatch int
	// DensityMinFree stops density when MemAvailable falls below it.
	// Default 10% of MemTotal.
	DensityMinFree int64

	// Nodes is how many simulated hosts scale registers. Default 1000.
	Nodes int
	// StartDelay is how long a simulated pod stays Pending. Default 0.
	StartDelay time.Duration
	// Workers create scale's pods in parallel. Default 50.
	Workers int

	// Hosts is how many hosts network's own cluster runs (`cci up
	// --hosts`). Default 2; the paths measured are host 1 → host 1 and
	// host 1 → host 2.
	Hosts int
	// NetStreamFor is how long each throughput stream of network writes.
	// Default 2s.
	NetStreamFor time.Duration
	// NetStreams is how many streams network runs on each path, one after
	// another; the median counts. Default 3.
	NetStreams int
	// NetPings is how many round trips network times for each message
	// size on each path. Default 2000.
	NetPings int
	// Source is the CCI source tree network builds its measuring program
	// from. Default: found from the working folder or the executable.
	Source string

	// GatewayRequests is how many requests gateway sends each way
	// (straight to the pod, through the Gateway). Default 2000.
	GatewayRequests int
	// GatewayClients is how many keep-alive clients send them at once.
	// Default 4.
	GatewayClients int

	// StorageClasses are the StorageClasses storage measures. Default
	// cci-evs, cci-sfs, cci-obs.
	StorageClasses []string
	// StorageSizeMiB is storage's test file: written and read
	// sequentially, then the random tests' file. Default 64.
	StorageSizeMiB int
	// StorageRandOps is how many random 4 KiB writes, and as many reads,
	// storage makes at most on each volume. Default 4096.
	StorageRandOps int
	// StorageRandFor bounds each random test of storage. Default 30s.
	StorageRandFor time.Duration
	// StorageClaims is how many claims of each class storage times from
	// create to their pod Running, one after another. Default 3.
	StorageClaims int
	// StorageDirect is the program's O_DIRECT choice: "auto" (where the
	// file system takes it), "on" or "off". Default "auto".
	StorageDirect string

	// Rounds is how many faults chaos injects. Default 100.
	Rounds int
	// Completions is the completions of chaos's Job. Default 200.
	Completions int
	// Faults are the faults chaos picks from at random (AllFaults; "host"
	// only with Hosts). Default all.
	Faults []string
	// Seed seeds chaos's choices; the report gives it, so that a run can be
	// repeated. Default: from the clock.
	Seed uint64
	// RecoveryTimeout is how long chaos waits for the cluster to recover
	// from one fault before it gives up. Default 5m.
	RecoveryTimeout time.Duration

	// Wave is how many pods churn's waves create at once (with Pods and
	// no ChurnRates). Default 100.
	Wave int
	// GVisorEvery puts every GVisorEvery-th pod of churn's waves under
	// gVisor, the others under runc. Default 2 (half).
	GVisorEvery int
	// ChurnFor, when set, stops churn's waves once this long has passed
	// (the leftovers and the engine's processes are still checked).
	ChurnFor time.Duration
	// Settle is how long churn waits after its last wave before it reads
	// the processes' goroutines, files and memory again. Default 30s.
	Settle time.Duration

	// Bridge and ClusterCIDR override the bench's own cluster's CNI bridge
	// and pod range (defaults "cci-bench0" and "10.79.0.0/16"), so that
	// two benches may run on one machine.
	Bridge      string
	ClusterCIDR string

	// Log receives progress lines. Default os.Stderr.
	Log io.Writer
}

// churnWaves tells whether churn runs waves of pods (the default) rather
// than the rate ladder (ChurnRates given).
func (c *Config) churnWaves() bool { return c.Scenario == "churn" && len(c.ChurnRates) == 0 }

func (c *Config) defaults() error {
	if !slices.Contains(Scenarios, c.Scenario) {
		return fmt.Errorf("unknown scenario %q: choose one of %s", c.Scenario, strings.Join(Scenarios, ", "))
	}
	if c.Pods == 0 {
		switch c.Scenario {
		case "start", "floor":
			c.Pods = 200
		case "burst":
			c.Pods = 100
		case "scale":
			c.Pods = 10000
		case "churn":
			if c.churnWaves() {
				c.Pods = 10000
			}
		}
	}
	if c.Pods < 0 {
		return fmt.Errorf("--pods %d is negative", c.Pods)
	}
	if c.FloorPods == 0 {
		c.FloorPods = 50
	}
	if c.MaxPods == 0 && c.Scenario == "burst" && c.Pods+10 > 250 {
		c.MaxPods = c.Pods + 10
	}
	if c.MaxPods < 0 || c.MaxPods > 65000 {
		return fmt.Errorf("--max-pods %d: give 1 to 65000", c.MaxPods)
	}
	if c.Registry == "" {
		c.Registry = "127.0.0.1:5000"
	}
	if c.PodTimeout == 0 {
		c.PodTimeout = 2 * time.Minute
	}
	if c.Profile == nil {
		p := c.Scenario == "burst" && c.Kubeconfig == "" && c.Cluster == nil
		c.Profile = &p
	}
	if c.ProfileSeconds == 0 {
		c.ProfileSeconds = 20
	}
	if c.ViaConnect && (c.Scenario != "burst" || c.Kubeconfig != "" || c.Cluster != nil) {
		return errors.New("--via-connect: only burst, with the bench's own cluster (leave out --kubeconfig)")
	}
	if len(c.BurstModes) == 0 {
		c.BurstModes = []string{"deployment", "job"}
	}
	for _, m := range c.BurstModes {
		if m != "deployment" && m != "job" {
			return fmt.Errorf("burst mode %q: choose deployment or job", m)
		}
	}
	if c.Wave == 0 {
		c.Wave = 100
	}
	if c.Settle == 0 {
		c.Settle = 30 * time.Second
	}
	if c.GVisorEvery == 0 {
		c.GVisorEvery = 2
	}
	if c.Wave < 0 || c.Settle < 0 || c.GVisorEvery < 0 {
		return fmt.Errorf("--wave %d, --settle %s, --gvisor-every %d: give positive values", c.Wave, c.Settle, c.GVisorEvery)
	}
	if c.Rounds == 0 {
		c.Rounds = 100
	}
	if c.Completions == 0 {
		c.Completions = 200
	}
	if c.Rounds < 0 || c.Completions < 0 {
		return fmt.Errorf("--rounds %d, --completions %d: give positive values", c.Rounds, c.Completions)
	}
	if len(c.Faults) == 0 {
		c.Faults = AllFaults
	}
	for _, f := range c.Faults {
		if !slices.Contains(AllFaults, f) {
			return fmt.Errorf("fault %q: choose from %s", f, strings.Join(AllFaults, ", "))
		}
	}
	if c.Scenario == "chaos" && !slices.ContainsFunc(c.Faults, func(f string) bool {
		return (f != FaultHost || c.Hosts > 0) && (f != FaultEtcd || c.EtcdApart)
	}) {
		return errors.New("--faults host needs --hosts N (hosts of the bench's own `cci up --hosts`), and --faults etcd needs --etcd-apart")
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.RecoveryTimeout == 0 {
		c.RecoveryTimeout = 5 * time.Minute
	}
	if c.ChurnStep == 0 {
		c.ChurnStep = 20 * time.Second
	}
	if c.Target == 0 {
		c.Target = time.Second
	}
	if c.DensityBatch == 0 {
		c.DensityBatch = 1
	}
	if c.DensityMinFree == 0 {
		c.DensityMinFree = memInfo()["MemTotal"] / 10
	}
	if c.Nodes == 0 {
		c.Nodes = 1000
	}
	if c.Workers == 0 {
		c.Workers = 50
	}
	if c.Hosts == 0 && c.Scenario == "network" {
		c.Hosts = 2
	}
	if c.Scenario == "network" && c.Hosts < 2 {
		return fmt.Errorf("--hosts %d: the network bench needs two hosts or more", c.Hosts)
	}
	if c.NetStreamFor == 0 {
		c.NetStreamFor = 2 * time.Second
	}
	if c.NetStreams == 0 {
		c.NetStreams = 3
	}
	if c.NetPings == 0 {
		c.NetPings = 2000
	}
	if c.NetStreamFor < 0 || c.NetStreams < 0 || c.NetPings < 1 {
		return fmt.Errorf("--stream-for %s, --streams %d, --pings %d: give positive values", c.NetStreamFor, c.NetStreams, c.NetPings)
	}
	if c.GatewayRequests == 0 {
		c.GatewayRequests = 2000
	}
	if c.GatewayClients == 0 {
		c.GatewayClients = 4
	}
	if c.GatewayRequests < 0 || c.GatewayClients < 0 {
		return fmt.Errorf("--requests %d, --clients %d: give positive values", c.GatewayRequests, c.GatewayClients)
	}
	if len(c.StorageClasses) == 0 {
		c.StorageClasses = StorageClasses
	}
	if c.StorageSizeMiB == 0 {
		c.StorageSizeMiB = 64
	}
	if c.StorageRandOps == 0 {
		c.StorageRandOps = 4096
	}
	if c.StorageRandFor == 0 {
		c.StorageRandFor = 30 * time.Second
	}
	if c.StorageClaims == 0 {
		c.StorageClaims = 3
	}
	if c.StorageSizeMiB < 0 || c.StorageRandOps < 0 || c.StorageRandFor < 0 || c.StorageClaims < 0 {
		return fmt.Errorf("--size-mib %d, --rand-ops %d, --rand-for %s, --claims %d: give positive values", c.StorageSizeMiB, c.StorageRandOps, c.StorageRandFor, c.StorageClaims)
	}
	switch c.StorageDirect {
	case "":
		c.StorageDirect = "auto"
	case "auto", "on", "off":
	default:
		return fmt.Errorf("--direct %q: choose auto, on or off", c.StorageDirect)
	}
	for _, class := range c.StorageClasses {
		if class == "" || strings.ContainsAny(class, " /") {
			return fmt.Errorf("--classes: %q is not a StorageClass name", class)
		}
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
	return nil
}

// ErrRuntimeClassUnavailable says the cluster cannot run the asked runtime
// class; nothing was measured.
var ErrRuntimeClassUnavailable = errors.New("runtime class not available")

// bench is one run in progress.
type bench struct {
	cfg   Config
	c     *Cluster
	kube  kubernetes.Interface
	rep   *Report
	runID string
	ns    string
	log   io.Writer
	image string
	// own: the cluster was started by this run and is thrown away after it.
	own bool
	// skipNamespaceDelete: the scenario leaves its namespace to the
	// cluster's end (scale's pods on simulated nodes that are gone).
	skipNamespaceDelete bool
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// Run runs one scenario and returns its report; the report is also
// written to cfg.Out when set. A cluster of its own is started and
// stopped unless cfg.Cluster or cfg.Kubeconfig names one.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, runID: randomID(), log: cfg.Log}
	b.ns = "cci-bench-" + cfg.Scenario + "-" + b.runID
	b.rep = &Report{
		Scenario: cfg.Scenario,
		Started:  time.Now(),
		Version:  version.Version,
		Commit:   gitCommit(),
		Machine:  machine(),
		Params:   params(cfg),
	}

	switch {
	case cfg.Cluster != nil:
		b.c = cfg.Cluster
	case cfg.Kubeconfig != "":
		c, err := Attach(cfg.Kubeconfig, cfg.DataDir, cfg.ContainerdSocket, cfg.Registry)
		if err != nil {
			return nil, err
		}
		c.PprofAddr = cfg.PprofAddr
		b.c = c
		if cfg.Scenario != "scale" {
			if err := c.PushImages(ctx); err != nil {
				return nil, err
			}
		}
	default:
		cidr := clusterCIDR(cfg.Scenario)
		if cfg.ClusterCIDR != "" {
			cidr = cfg.ClusterCIDR
		}
		c, serr := StartCluster(ctx, ClusterOptions{
			Bridge:           cfg.Bridge,
			Binary:           cfg.Binary,
			DataDir:          cfg.DataDir,
			ControlPlaneOnly: cfg.Scenario == "scale",
			// The control plane's own figures in scale are apiserver and
			// etcd apart.
			SeparateEtcd: cfg.Scenario == "scale" && !cfg.EmbeddedEtcd || cfg.EtcdApart,
			MaxPods:      cfg.MaxPods,
			ServiceProxy: serviceProxyFor(cfg.Scenario),
			ClusterCIDR:  cidr,
			Hosts:        hostsFor(cfg),
			// chaos and churn read the processes' goroutines from pprof.
			Pprof: *cfg.Profile || cfg.Scenario == "chaos" || cfg.Scenario == "churn",
			Runsc: cfg.Runsc,
			Log:   cfg.Log,
		})
		if serr != nil {
			return nil, serr
		}
		if cfg.KeepData {
			c.Keep()
		}
		b.c, b.own = c, true
		defer func() {
			if err != nil && !errors.Is(err, ErrRuntimeClassUnavailable) && c.tmp && !c.keep {
				// A failed run's cluster logs say why: keep them.
				c.Keep()
				b.rep.note("the cluster's data and logs are kept in %s", c.DataDir)
				b.logf("keeping %s for inspection", c.DataDir)
			}
			if cerr := c.Close(); cerr != nil {
				b.logf("stop cluster: %v", cerr)
				b.rep.note("stopping the bench's cluster: %v", cerr)
			}
		}()
	}
	b.kube = b.c.Kube
	b.image = b.c.Image(testimage.Shell)

	switch cfg.Scenario {
	case "floor":
		err = b.floorScenario(ctx)
	case "start":
		err = b.withNamespace(ctx, b.start)
	case "burst":
		if cfg.ViaConnect {
			err = b.withNamespace(ctx, b.burstViaConnect)
		} else {
			err = b.withNamespace(ctx, b.burst)
		}
	case "churn":
		if cfg.churnWaves() {
			err = b.withNamespace(ctx, b.churnWaves)
		} else {
			err = b.withNamespace(ctx, b.churn)
		}
	case "density":
		err = b.withNamespace(ctx, b.density)
	case "scale":
		err = b.withNamespace(ctx, b.scale)
	case "network":
		err = b.withNamespace(ctx, b.network)
	case "gateway":
		err = b.withNamespace(ctx, b.gateway)
	case "storage":
		err = b.withNamespace(ctx, b.storage)
	case "chaos":
		err = b.withNamespace(ctx, b.chaos)
	}
	b.rep.Took = time.Since(b.rep.Started).Round(time.Millisecond).String()
	if cfg.Out != "" && (err == nil || len(b.rep.Results) > 0 || b.rep.Floor != nil) {
		// Partial results are written too: they say how far a failed run got.
		if werr := b.rep.write(cfg.Out); werr != nil && err == nil {
			err = werr
		}
	}
	return b.rep, err
}

// hostsFor is the number of hosts of the bench's own cluster: network
// runs `cci up --hosts`, the others one host in the `cci up` process.
func hostsFor(c Config) int {
	if c.Scenario == "network" || c.Scenario == "chaos" || c.Scenario == "churn" {
		return c.Hosts
	}
	return 0
}

// serviceProxyFor is the service proxy of the bench's own cluster: the
// agent's default, but none for storage, which uses no Service: without a
// kube-proxy of its own its cluster may run beside another on this host
// (the end-to-end suites') without the two rewriting each other's rules.
func serviceProxyFor(scenario string) string {
	if scenario == "storage" {
		return "off"
	}
	return ""
}

func clusterCIDR(scenario string) string {
	if scenario == "scale" {
		// A /24 for each of thousands of simulated nodes.
		return "10.128.0.0/9"
	}
	return ""
}

// withNamespace runs f in a fresh namespace and removes it afterwards,
// also when f fails or the bench is interrupted.
func (b *bench) withNamespace(ctx context.Context, f func(context.Context) error) error {
	if err := b.createNamespace(ctx); err != nil {
		return err
	}
	err := f(ctx)
	if b.skipNamespaceDelete {
		return err
	}
	// Clean up even when ctx ended (Ctrl-C): pods left behind would keep
	// running in the cluster.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	b.logf("removing namespace %s", b.ns)
	if derr := b.deleteNamespace(cctx, 4*time.Minute); derr != nil {
		b.rep.note("cleanup: %v", derr)
		if err == nil {
			err = derr
		}
	}
	return err
}

// checkRuntimeClass refuses a runtime class the cluster does not offer,
// rather than measuring another runtime under its name.
func (b *bench) checkRuntimeClass(ctx context.Context) error {
	rc := b.cfg.RuntimeClass
	if rc == "" || rc == "runc" {
		return nil
	}
	_, err := b.kube.NodeV1().RuntimeClasses().Get(ctx, rc, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		var names []string
		if l, err := b.kube.NodeV1().RuntimeClasses().List(ctx, metav1.ListOptions{}); err == nil {
			for _, c := range l.Items {
				names = append(names, c.Name)
			}
		}
		offered := "none"
		if len(names) > 0 {
			offered = strings.Join(names, ", ")
		}
		return fmt.Errorf("%w: the cluster has no RuntimeClass %q (it offers: %s); nothing was measured", ErrRuntimeClassUnavailable, rc, offered)
	}
	if err != nil {
		return fmt.Errorf("look up RuntimeClass %q: %w", rc, err)
	}
	return nil
}

// verifyRuntime checks, in the agent's containerd, that the pod's
// container really ran under the asked runtime class and not plain runc.
func (b *bench) verifyRuntime(ctx context.Context, uid types.UID) error {
	rc := b.cfg.RuntimeClass
	if rc == "" || rc == "runc" {
		return nil
	}
	if b.c.ContainerdSocket == "" {
		b.rep.note("runtime class %q not verified: the agent's containerd socket is unknown", rc)
		return nil
	}
	client, err := containerd.New(b.c.ContainerdSocket, containerd.WithDefaultNamespace(agentNamespace))
	if err != nil {
		return fmt.Errorf("verify runtime: %w", err)
	}
	defer client.Close()
	ctr, err := client.LoadContainer(ctx, string(uid)+"-c")
	if err != nil {
		return fmt.Errorf("verify runtime of the warm-up pod: %w", err)
	}
	info, err := ctr.Info(ctx)
	if err != nil {
		return fmt.Errorf("verify runtime of the warm-up pod: %w", err)
	}
	binary := ""
	if info.Runtime.Options != nil {
		if v, err := typeurl.UnmarshalAny(info.Runtime.Options); err == nil {
			if o, ok := v.(*runcoptions.Options); ok {
				binary = o.BinaryName
			}
		}
	}
	if info.Runtime.Name == "io.containerd.runc.v2" && (binary == "" || filepath.Base(binary) == "runc") {
		return fmt.Errorf("%w: the pod asked for RuntimeClass %q but its container ran under plain runc (the agent does not honour runtime classes yet); refusing to report runc's figures as %q", ErrRuntimeClassUnavailable, rc, rc)
	}
	return nil
}

// warmup runs one pod to Running and deletes it, so that the image is
// unpacked on the node and first-use costs stay out of the figures. It
// returns the pod's UID.
func (b *bench) warmup(ctx context.Context, o podOpts) (types.UID, error) {
	pod := b.pod("warmup-"+randomID(), o)
	created, err := b.kube.CoreV1().Pods(b.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("warm-up pod: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		_ = b.kube.CoreV1().Pods(b.ns).Delete(dctx, pod.Name, metav1.DeleteOptions{})
		_ = waitGone(dctx, b.kube, b.ns, pod.Name)
	}()
	var last *v1.Pod
	deadline := time.Now().Add(b.cfg.PodTimeout)
	for time.Now().Before(deadline) {
		last, err = b.kube.CoreV1().Pods(b.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil && (last.Status.Phase == v1.PodRunning || last.Status.Phase == v1.PodSucceeded) {
			return created.UID, b.verifyRuntime(ctx, created.UID)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("warm-up pod did not run in %s: %s", b.cfg.PodTimeout, podProblem(last))
}

// podProblem says what a pod that does not run is waiting for.
func podProblem(p *v1.Pod) string {
	if p == nil {
		return "no status"
	}
	var parts []string
	parts = append(parts, "phase "+string(p.Status.Phase))
	if p.Spec.NodeName == "" {
		parts = append(parts, "not scheduled")
	}
	for _, c := range p.Status.Conditions {
		if c.Status != v1.ConditionTrue && c.Message != "" {
			parts = append(parts, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			parts = append(parts, fmt.Sprintf("container %s waiting: %s %s", cs.Name, w.Reason, w.Message))
		}
	}
	if p.Status.Message != "" {
		parts = append(parts, p.Status.Message)
	}
	return strings.Join(parts, "; ")
}

func waitGone(ctx context.Context, kube kubernetes.Interface, ns, name string) error {
	for {
		_, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// floorFor measures the floor for a scenario's ratios, or notes why not.
func (b *bench) floorFor(ctx context.Context, n, parallel int) *Floor {
	if b.c.ContainerdSocket == "" {
		b.rep.note("no floor: the agent's containerd socket is unknown (pass --data-dir or --containerd-socket)")
		return nil
	}
	f, err := b.floor(ctx, n, parallel)
	if err != nil {
		b.rep.note("no floor: %v", err)
		b.logf("floor failed: %v", err)
		return nil
	}
	b.rep.Floor = f
	return f
}

func params(c Config) map[string]any {
	p := map[string]any{"pods": c.Pods, "floorPods": c.FloorPods, "runtimeClass": c.RuntimeClass}
	if c.MaxPods != 0 {
		p["maxPods"] = c.MaxPods
	}
	switch c.Scenario {
	case "burst":
		p["modes"] = c.BurstModes
		if c.ViaConnect {
			p["viaConnect"] = true
		}
	case "chaos":
		p["rounds"] = c.Rounds
		p["completions"] = c.Completions
		p["faults"] = c.Faults
		p["seed"] = c.Seed
		p["hosts"] = c.Hosts
	case "churn":
		if c.churnWaves() {
			p["wave"] = c.Wave
			p["hosts"] = c.Hosts
			break
		}
		p["rates"] = c.ChurnRates
		p["step"] = c.ChurnStep.String()
		p["target"] = c.Target.String()
	case "density":
		p["batch"] = c.DensityBatch
		p["target"] = c.Target.String()
		p["minFreeBytes"] = c.DensityMinFree
	case "scale":
		p["nodes"] = c.Nodes
		p["startDelay"] = c.StartDelay.String()
		p["workers"] = c.Workers
	case "network":
		p["hosts"] = c.Hosts
		p["streamFor"] = c.NetStreamFor.String()
		p["streams"] = c.NetStreams
		p["pings"] = c.NetPings
		p["sizes"] = netSizes
	case "gateway":
		p["requests"] = c.GatewayRequests
		p["clients"] = c.GatewayClients
	case "storage":
		p["classes"] = c.StorageClasses
		p["sizeMiB"] = c.StorageSizeMiB
		p["randOps"] = c.StorageRandOps
		p["randFor"] = c.StorageRandFor.String()
		p["claims"] = c.StorageClaims
		p["direct"] = c.StorageDirect
	}
	if c.Kubeconfig != "" {
		p["kubeconfig"] = c.Kubeconfig
	}
	return p
}

// gitCommit is the commit the running binary was built from (Go records
// it at build time; "+dirty" when the tree had changes), or else the
// working directory's HEAD.
func gitCommit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 7 {
			rev = rev[:7]
		}
		if rev != "" && dirty {
			rev += "+dirty"
		}
		if rev != "" {
			return rev
		}
	}
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
