// Package agent runs a CCI host: it joins a control plane with a join token,
// registers this host as a node through virtual-kubelet, serves the kubelet
// API (logs, exec, attach, port-forward) over TLS, and runs the pods bound to
// it through the containerd-backed runtime.
//
// Start order and readiness (the list in components; (bg) marks a
// component the next one does not wait for):
//
//	join: token and node name checked (newHostAgent; nothing on the host touched yet)
//	    ─► containerd (answers; unless --containerd-socket) ─► containerd client
//	    ─► node registration (pod CIDR assigned) ─► network settings
//	    ─► overlay (this host registered with it) ─► pod network
//	    ─► NetworkPolicy enforcer ─► tenant containment ─► events ─► pod certificates
//	    ─► node controller (virtual-kubelet ready) ─► republish pod statuses
//	    ─► pod status watch ─► node deletion watch (bg)
//	    ─► service proxy (running; unless "off") ─► ready
//
// internal/supervisor runs the list: the first component to fail, or to
// return before shutdown, ends Run; every component then stops in reverse
// order, so containerd stops after everything that uses it. Pods keep
// running: the node controller stops driving them, not the pods.
package agent

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"golang.org/x/sys/unix"
	certificatesv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/record"
	"k8s.io/kubernetes/pkg/kubelet/clustertrustbundle"
	"k8s.io/kubernetes/pkg/kubelet/podcertificate"
	"k8s.io/utils/clock"

	cciContainerd "github.com/cci-project/cci/internal/containerd"
	"github.com/cci-project/cci/internal/containment"
	"github.com/cci-project/cci/internal/device"
	"github.com/cci-project/cci/internal/evs"
	"github.com/cci-project/cci/internal/netpol"
	"github.com/cci-project/cci/internal/network"
	"github.com/cci-project/cci/internal/overlay"
	"github.com/cci-project/cci/internal/pki"
	"github.com/cci-project/cci/internal/pool"
	"github.com/cci-project/cci/internal/rclone"
	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/internal/runtime"
	"github.com/cci-project/cci/internal/serviceproxy"
	"github.com/cci-project/cci/internal/snapshot"
	"github.com/cci-project/cci/internal/supervisor"
	"github.com/cci-project/cci/internal/version"
	"github.com/cci-project/cci/internal/vknode"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
)

// Config is the host agent's configuration.
type Config struct {
	// Server is the apiserver URL, e.g. https://10.0.0.1:6443.
	Server string `json:"server"`
	// Token is the join token printed by the server (<data>/pki/token).
	Token string `json:"token"`
	// DataDir holds containerd's root and state, pod records, volumes, logs. Default "./.cci".
	DataDir string `json:"dataDir"`
	// NodeName defaults to the host name.
	NodeName string `json:"nodeName"`
	// NodeIP is published as the node's InternalIP; the apiserver reaches the kubelet API there.
	NodeIP string `json:"nodeIP"`
	// KubeletPort is the kubelet API's TLS port. Default 10250.
	KubeletPort int `json:"kubeletPort"`
	// ContainerdSocket uses a running containerd instead of starting one.
	ContainerdSocket string `json:"containerdSocket"`
	// InsecureRegistries are reached over plain HTTP (the built-in registry is one).
	InsecureRegistries []string `json:"insecureRegistries"`
	// Bridge is the Linux bridge pods attach to. Default "cci0"; agents of
	// different clusters on one host need different bridges.
	Bridge string `json:"bridge"`
	// MaxPods is the node's pod capacity. Default 110.
	MaxPods int `json:"maxPods"`
	// RunscPath is gVisor's runsc, which runs the pods of the gvisor
	// RuntimeClass. Default: the current runsc make setup builds at
	// /usr/local/lib/cci/runsc, else "runsc" looked up in PATH.
	RunscPath string `json:"runscPath"`
	// RunscPlatform is runsc's --platform. Default: the runsc's own
	// (systrap for a current runsc, ptrace for Debian's 2022 one), but
	// ptrace where that is kvm (KVM may be missing, and hangs on some hosts).
	RunscPlatform string `json:"runscPlatform"`
	// RunscSystrapFastPath keeps systrap's spinning fast path, which
	// the agent turns off by default (see runtime.RunscConfig).
	RunscSystrapFastPath bool `json:"runscSystrapFastPath"`
	// ClusterDNS is the DNS server of pods with dnsPolicy ClusterFirst.
	// Default: the ClusterIP of the Service kube-system/kube-dns.
	ClusterDNS []string `json:"clusterDNS"`
	// RegistryMirrors are "REGISTRY=MIRROR" pairs of host:port: images named
	// after REGISTRY are pulled from MIRROR (e.g. the built-in registry's
	// loopback address, as image names spell it, and the address where a
	// host in its own network namespace reaches it). A mirror of a plain
	// HTTP registry is reached over plain HTTP too.
	RegistryMirrors []string `json:"registryMirrors"`
	// BuiltinRegistry is the control plane's registry (host:port, as
	// images name it). The agent pulls from it with its join token, which
	// the registry accepts as the host's credential (user node@cci), for
	// pods of namespaces that are not a tenant's; a tenant's pods pull
	// with the tenant's own credentials. Empty: no host credential.
	BuiltinRegistry string `json:"builtinRegistry"`
	// Pool is the host pool this host joins: its node gets the label
	// cci.io/pool=<Pool> and, for every pool but "general", the taint
	// cci.io/pool=<Pool>:NoSchedule, so that only pods admitted to the pool
	// land here. A DNS-1123 label. Default "general".
	Pool string `json:"pool"`
	// ServiceProxy is the mode of the host's service proxy (the upstream
	// kube-proxy, in-process): "iptables" (default), "nftables", or "off"
	// where the host runs a service proxy of its own.
	ServiceProxy string `json:"serviceProxy"`
	// PodMaxPids is the most processes a pod may have, as the kubelet's
	// --pod-max-pids: a fork bomb stays in its pod. Default 4096; -1: no limit.
	PodMaxPids int64 `json:"podMaxPids"`
	// ContainerLogMaxSize is the size at which a container's log file is
	// rotated (a quantity such as 10Mi), and ContainerLogMaxFiles how many
	// files of a container's run are kept, as the kubelet's settings of
	// these names. Defaults "10Mi" and 5.
	ContainerLogMaxSize  string `json:"containerLogMaxSize"`
	ContainerLogMaxFiles int    `json:"containerLogMaxFiles"`
	// Accelerators picks the vendor of the host's accelerators: "auto"
	// (default: Ascend where /dev/davinci* exist, else NVIDIA through
	// NVML, none where its driver is missing), "nvidia", "ascend" or "none".
	Accelerators string `json:"accelerators"`
	// FakeGPUs gives the host this many fake nvidia.com/gpu devices for
	// tests and demos (harmless device nodes; see internal/device). 0: none.
	FakeGPUs int `json:"fakeGPUs"`
	// GPUSharing shares each NVIDIA GPU (real or fake) among this many pods
	// by time-slicing: the node advertises every GPU as that many
	// nvidia.com/gpu, and a pod given one gets the whole physical GPU,
	// as NVIDIA's device plugin does with time-slicing replicas. Nothing
	// fences the pods' memory or time from each other. 0 or 1 (default):
	// whole GPUs, never shared.
	GPUSharing int `json:"gpuSharing"`
	// EVSDir holds this host's cci-evs disks (sparse files on loop
	// devices) and their mounts; its file system's free space is what the
	// host may provision. Default <DataDir>/evs.
	EVSDir string `json:"evsDir"`
	// Log receives the agent's messages. Default slog's default logger.
	Log *slog.Logger `json:"-"`
}

// logMaxSize is ContainerLogMaxSize in bytes (0: the runtime's default).
func (c *Config) logMaxSize() (int64, error) {
	if c.ContainerLogMaxSize == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(c.ContainerLogMaxSize)
	if err != nil || q.Value() < 1024 {
		return 0, fmt.Errorf("container log max size %q: want a size of 1Ki or more, such as 10Mi", c.ContainerLogMaxSize)
	}
	return q.Value(), nil
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		c.DataDir = ".cci"
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = abs
	if c.EVSDir == "" {
		c.EVSDir = filepath.Join(c.DataDir, "evs")
	}
	if c.EVSDir, err = filepath.Abs(c.EVSDir); err != nil {
		return err
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("host name: %w", err)
		}
		c.NodeName = strings.ToLower(h)
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = 10250
	}
	if c.MaxPods == 0 {
		c.MaxPods = 110
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Pool == "" {
		c.Pool = pool.Default
	}
	if err := pool.Validate(c.Pool); err != nil {
		return fmt.Errorf("--pool: %w", err)
	}
	for _, d := range c.ClusterDNS {
		if net.ParseIP(d) == nil {
			return fmt.Errorf("cluster DNS %q: not an IP address", d)
		}
	}
	switch c.ServiceProxy {
	case "":
		c.ServiceProxy = "iptables"
	case "iptables", "nftables", "off":
	default:
		return fmt.Errorf("service proxy mode %q: choose iptables, nftables or off", c.ServiceProxy)
	}
	if _, err := c.mirrors(); err != nil {
		return err
	}
	if _, err := c.logMaxSize(); err != nil {
		return err
	}
	if c.ContainerLogMaxFiles == 1 || c.ContainerLogMaxFiles < 0 {
		return fmt.Errorf("container log max files %d: want 2 or more (the current file and a rotated one)", c.ContainerLogMaxFiles)
	}
	if _, err := c.DeviceBackend(); err != nil {
		return err
	}
	if c.PodMaxPids < -1 {
		return fmt.Errorf("pod max pids %d: want a positive number, or -1 for no limit", c.PodMaxPids)
	}
	if c.Server == "" || c.Token == "" {
		return errors.New("the agent needs --server and --token (the token is in the server's <data>/pki/token)")
	}
	return nil
}

// registryCredentials are the host's credentials for the built-in registry.
func (a *hostAgent) registryCredentials() *runtime.RegistryCredentials {
	if a.cfg.BuiltinRegistry == "" || a.cfg.Token == "" {
		return nil
	}
	return &runtime.RegistryCredentials{Hosts: []string{a.cfg.BuiltinRegistry}, Username: registry.NodeUser, Password: a.cfg.Token}
}

// mirrors parses RegistryMirrors.
func (c *Config) mirrors() (map[string]string, error) {
	out := map[string]string{}
	for _, m := range c.RegistryMirrors {
		from, to, ok := strings.Cut(m, "=")
		if !ok || from == "" || to == "" || strings.Contains(to, "/") {
			return nil, fmt.Errorf("registry mirror %q: want REGISTRY=MIRROR, both host:port, e.g. 127.0.0.1:5000=10.44.0.1:5000", m)
		}
		out[from] = to
	}
	return out, nil
}

// Run joins the control plane and runs pods until ctx ends. Pods keep
// running after it returns; the next agent on the same data folder
// re-adopts them. ready is called once the node is registered and ready.
//
// Run returns an error wrapping ErrNodeDeleted when the host's node was
// deleted from the cluster while it ran; its pods are stopped then.
func Run(ctx context.Context, cfg Config, ready func()) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	a, err := newHostAgent(ctx, cfg)
	if err != nil {
		return err
	}
	return supervisor.Run(ctx, supervisor.Config{
		Log: a.log,
		// Stopping the node controller waits for its workers, and
		// containerd gets 10 s before SIGKILL; what is left behind past
		// this is only stopped by the next agent.
		StopTimeout: time.Minute,
		Ready: func() {
			a.log.Info("node ready", "kubeletAPI", net.JoinHostPort(a.cfg.NodeIP, strconv.Itoa(a.cfg.KubeletPort)))
			if ready != nil {
				ready()
			}
		},
	}, a.components()...)
}

// components is the host agent, in start order; it stops in reverse
// order, so containerd stops after everything that uses it. A Service
// holds the next one back until it is ready, a Background component does
// not, a Step is done once.
func (a *hostAgent) components() []supervisor.Component {
	var list []supervisor.Component
	if a.cfg.ContainerdSocket == "" {
		list = append(list, supervisor.Service("containerd", a.runContainerd))
	}
	list = append(list,
		supervisor.Service("containerd client", a.runContainerdClient),
		// Before the node registers: it advertises them.
		supervisor.Service("devices", a.runDevices),
		// The node object before the network: the controller-manager gives
		// it the pod CIDR that the network is made of.
		supervisor.Step("node registration", a.register),
		supervisor.Step("network settings", func(ctx context.Context) (err error) {
			a.clusterNet, err = clusterNetwork(ctx, a.kube)
			return err
		}),
		supervisor.Service("overlay", a.runOverlay),
		supervisor.Step("pod network", a.podNetwork),
		// Its rules survive the agent (they fail open while it is down)
		// and are rewritten when it starts.
		supervisor.Service("network policy enforcer", a.runNetworkPolicy),
		// Before any pod starts: tenant pods are held away from the host
		// and the operator's pods from their first packet. Its table
		// survives the agent, as the pods do.
		supervisor.Service("tenant containment", a.runContainment),
		supervisor.Service("events", a.runEvents),
		supervisor.Service("pod certificates", a.runPodCertificates),
		// Before the pods: a re-adopted pod's volumes are mounted already,
		// and a new one's disk is made here.
		supervisor.Background("cci-evs provisioner", func(ctx context.Context) error {
			return evs.Run(ctx, a.kube, evs.APISnapshots{Client: a.snaps}, a.cfg.NodeName, a.evs, a.log.With("component", "evs"))
		}),
		// The snapshots of this host's disks (the snapshot-controller in
		// the control plane labels each VolumeSnapshotContent with the
		// host of its volume).
		supervisor.Background("cci-evs snapshotter", func(ctx context.Context) error {
			return snapshot.RunSidecar(ctx, a.kube, a.snaps, a.cfg.NodeName, &evs.Snapshotter{Node: a.cfg.NodeName, Pool: a.evs, Log: a.log.With("component", "evs-snapshot")})
		}),
		supervisor.Service("node controller", a.runNode),
		supervisor.Step("republish", func(context.Context) error {
			a.rt.Load().Republish()
			return nil
		}),
		supervisor.Service("pod status watch", func(ctx context.Context, ready func()) error {
			watchPodStatus(ctx, a.kube, a.cfg.NodeName, a.rt.Load())
			ready()
			<-ctx.Done()
			return nil
		}),
		supervisor.Background("node deletion watch", a.watchNodeDeleted),
	)
	if a.cfg.ServiceProxy != "off" {
		list = append(list, supervisor.Service("kube-proxy", a.runServiceProxy))
	} else {
		list = append(list, supervisor.Step("service refusal removal", func(ctx context.Context) error {
			// The host's own proxy decides what its Service addresses refuse.
			if err := serviceproxy.RemoveRejectRules(ctx, a.cfg.Bridge); err != nil {
				a.log.Warn("remove the refusal of unserved Service addresses", "err", err)
			}
			return nil
		}))
	}
	return list
}

// hostAgent is what the components of one Run share: the configuration,
// the API client made before any of them starts, and what an earlier
// component hands the later ones (set before it calls ready or, for a
// step, returns; the supervisor starts the next one after that).
type hostAgent struct {
	cfg      Config
	log      *slog.Logger
	restCfg  *rest.Config
	caPEM    []byte
	kube     kubernetes.Interface
	snaps    snapclient.Interface
	id       string // the host id (HostIDAnnotation)
	mirrors  map[string]string
	insecure []string // registries reached over plain HTTP, mirrors included
	// nodeGone receives a signal when the node informer sees a node of
	// this name deleted; "node deletion watch" checks it against the API.
	nodeGone chan struct{}
	evs      *evs.Pool // this host's cci-evs disks

	daemon      *cciContainerd.Daemon // by "containerd"; nil with --containerd-socket
	ctrd        *containerd.Client    // by "containerd client"
	ctrdVersion string                // by "containerd client"
	nodeSpec    *v1.Node              // by "node registration"
	registered  *v1.Node              // by "node registration"
	clusterNet  clusterNet            // by "network settings"
	mtu         int                   // by "overlay"; 0 without one
	netMgr      *network.Manager      // by "pod network"
	recorder    record.EventRecorder  // by "events"
	devices     *device.Manager       // by "devices"
	// status publishes the node's status changes; by "node registration".
	status *nodeStatus
	// by "pod certificates"
	trustBundles clustertrustbundle.Manager
	podCerts     *podcertificate.IssuingManager
	// rt is set by "node controller"; the pod certificate informers,
	// started before it, read it from their own goroutines.
	rt atomic.Pointer[runtime.Runtime]
	// contain is set by "tenant containment"; the runtime tells it of
	// its pods' IPs through podAddresses.
	contain atomic.Pointer[containment.Table]
}

// podAddresses passes the runtime's word of its pods' IPs to the tenant
// containment that runs now, if any.
type podAddresses struct{ a *hostAgent }

func (p podAddresses) PodAddressed(ctx context.Context, pod *v1.Pod, ips []netip.Addr) error {
	if t := p.a.contain.Load(); t != nil {
		return t.PodAddressed(ctx, pod, ips)
	}
	return nil
}

func (p podAddresses) PodReleased(ctx context.Context, uid types.UID) {
	if t := p.a.contain.Load(); t != nil {
		t.PodReleased(ctx, uid)
	}
}

// newHostAgent joins the control plane: it learns the cluster CA from the
// join token and checks the token and the node name with the apiserver,
// before anything on the host is touched.
func newHostAgent(ctx context.Context, cfg Config) (*hostAgent, error) {
	a := &hostAgent{
		cfg:      cfg,
		log:      cfg.Log.With("node", cfg.NodeName, "pool", cfg.Pool),
		nodeGone: make(chan struct{}, 1),
		evs:      &evs.Pool{Dir: cfg.EVSDir},
	}
	var err error
	if a.restCfg, a.caPEM, err = joinConfig(cfg.Server, cfg.Token); err != nil {
		return nil, err
	}
	if a.kube, err = kubernetes.NewForConfig(vknode.Protobuf(a.restCfg)); err != nil {
		return nil, err
	}
	if a.snaps, err = snapclient.NewForConfig(a.restCfg); err != nil {
		return nil, err
	}
	if a.id, err = hostID(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := checkJoin(ctx, a.kube, cfg.Server, cfg.NodeName, a.id); err != nil {
		return nil, err
	}
	if a.cfg.NodeIP == "" {
		a.cfg.NodeIP = vknode.NodeIP(a.restCfg.Host)
	}
	a.mirrors, _ = cfg.mirrors()
	a.insecure = slices.Clone(cfg.InsecureRegistries)
	for from, to := range a.mirrors {
		if plain, _ := docker.MatchLocalhost(from); plain || slices.Contains(a.insecure, from) {
			a.insecure = append(a.insecure, to)
		}
	}
	return a, nil
}

// runContainerd runs the agent's own containerd, ready once it answers.
// Listed first, it stops last; its containers keep running.
func (a *hostAgent) runContainerd(ctx context.Context, ready func()) error {
	d, err := cciContainerd.Start(ctx, cciContainerd.Config{
		Root:    filepath.Join(a.cfg.DataDir, "containerd", "root"),
		State:   filepath.Join(a.cfg.DataDir, "containerd", "state"),
		LogPath: filepath.Join(a.cfg.DataDir, "logs", "containerd.log"),
	})
	if err != nil {
		return err
	}
	a.daemon = d
	a.log.Info("containerd ready", "socket", d.Address())
	ready()
	select {
	case <-ctx.Done():
		if err := d.Stop(); err != nil {
			a.log.Warn("stop containerd", "err", err)
		}
		return nil
	case <-d.Done():
		// It kept dying and was given up on: pods can no longer be run.
		return d.Err()
	}
}

// runContainerdClient connects to containerd (the agent's own or the one
// at --containerd-socket); ready once it answered a Version call.
func (a *hostAgent) runContainerdClient(ctx context.Context, ready func()) error {
	address := a.cfg.ContainerdSocket
	if a.daemon != nil {
		address = a.daemon.Address()
	}
	ctrd, err := containerd.New(address, containerd.WithDefaultNamespace("cci"), containerd.WithTimeout(20*time.Second))
	if err != nil {
		return fmt.Errorf("connect to containerd at %q: %w", address, err)
	}
	defer ctrd.Close()
	v, err := ctrd.Version(namespaces.WithNamespace(ctx, "cci"))
	if err != nil {
		return fmt.Errorf("containerd at %q: %w", address, err)
	}
	a.ctrd, a.ctrdVersion = ctrd, v.Version
	ready()
	<-ctx.Done()
	return nil
}

// register creates or refreshes the node object and waits for its pod CIDR.
func (a *hostAgent) register(ctx context.Context) error {
	spec := buildNode(a.cfg, a.ctrdVersion)
	spec.Annotations = map[string]string{HostIDAnnotation: a.id}
	withDevices(spec, a.devices)
	registered, err := registerNode(ctx, a.kube, spec)
	if err != nil {
		return err
	}
	podCIDR := registered.Spec.PodCIDR
	spec.Spec.PodCIDR = podCIDR
	spec.Spec.PodCIDRs = []string{podCIDR}
	a.nodeSpec, a.registered = spec, registered
	a.status = newNodeStatus(spec)
	a.log.Info("node registered", "podCIDR", podCIDR, "ip", a.cfg.NodeIP, "hostID", a.id)
	return nil
}

// runOverlay runs the overlay that joins this host's pod subnet to the
// other hosts' (flannel, internal/overlay): ready once this host is
// registered with it. Without an overlay (a control plane that publishes
// none, or backend "none") it is ready at once and does nothing.
func (a *hostAgent) runOverlay(ctx context.Context, ready func()) error {
	if a.clusterNet.netConf == nil {
		ready()
		<-ctx.Done()
		return nil
	}
	kubeconfig := filepath.Join(a.cfg.DataDir, "agent", "overlay", "kubeconfig")
	if err := writeKubeconfig(kubeconfig, a.restCfg, a.caPEM); err != nil {
		return err
	}
	ov, err := overlay.Start(ctx, overlay.Config{
		NodeName:   a.cfg.NodeName,
		Kubeconfig: kubeconfig,
		NetConf:    a.clusterNet.netConf,
		NodeIP:     a.cfg.NodeIP,
		Dir:        filepath.Join(a.cfg.DataDir, "agent", "overlay"),
		Log:        a.log,
	})
	if err != nil {
		return err
	}
	if ov == nil {
		ready()
		<-ctx.Done()
		return nil
	}
	a.mtu = ov.MTU()
	ready()
	return ov.Run(ctx)
}

// podNetwork sets up the bridge network of this host's pods.
func (a *hostAgent) podNetwork(context.Context) (err error) {
	a.netMgr, err = network.New(network.Config{
		PodCIDR: a.registered.Spec.PodCIDR,
		Bridge:  a.cfg.Bridge,
		ConfDir: filepath.Join(a.cfg.DataDir, "cni", "net.d"),
		IPAMDir: filepath.Join(a.cfg.DataDir, "cni", "ipam"),
		MTU:     a.mtu,
		NoMasq:  a.clusterNet.internal,
	})
	return err
}

// runNetworkPolicy enforces NetworkPolicy for this host's pods; ready once
// the enforcer is made (it starts enforcing when its informers synced).
func (a *hostAgent) runNetworkPolicy(ctx context.Context, ready func()) error {
	enforcer, err := netpol.New(netpol.Config{NodeName: a.cfg.NodeName, PodCIDR: a.registered.Spec.PodCIDR, Bridge: a.cfg.Bridge, Kube: a.kube, Log: a.log})
	if err != nil {
		return err
	}
	ready()
	return enforcer.Run(ctx)
}

// runContainment keeps the pods of tenant namespaces away from the hosts,
// link-local addresses and the operator's pods; ready once its rules are
// written.
func (a *hostAgent) runContainment(ctx context.Context, ready func()) error {
	cfg := containment.Config{NodeName: a.cfg.NodeName, Bridge: a.cfg.Bridge, Kube: a.kube, Log: a.log}
	if u, err := url.Parse(a.restCfg.Host); err == nil {
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
			cfg.ControlPlane = append(cfg.ControlPlane, ip)
		}
	}
	if a.clusterNet.podRange.IsValid() {
		cfg.PodRanges = append(cfg.PodRanges, a.clusterNet.podRange)
	}
	t, err := containment.New(cfg)
	if err != nil {
		return err
	}
	a.contain.Store(t)
	return t.Run(ctx, ready)
}

// runEvents records events as a kubelet reports them.
func (a *hostAgent) runEvents(ctx context.Context, ready func()) error {
	return vknode.RunEvents(ctx, a.kube, a.cfg.NodeName, func(r record.EventRecorder) { a.recorder = r }, ready)
}

// runPodCertificates serves ClusterTrustBundle and podCertificate
// projections with the kubelet's own managers, as the kubelet wires them
// (kubelet.go). Its node informer also tells "node deletion watch" when
// the node goes.
func (a *hostAgent) runPodCertificates(ctx context.Context, ready func()) error {
	a.trustBundles = clustertrustbundle.NewLazyInformerManager(ctx, a.kube, 2*a.cfg.MaxPods)
	pcrInformers := informers.NewSharedInformerFactoryWithOptions(a.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.cfg.NodeName).String()
	}))
	nodeInformers := informers.NewSharedInformerFactoryWithOptions(a.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", a.cfg.NodeName).String()
	}))
	a.podCerts = podcertificate.NewIssuingManager(a.kube, runtimePods{a.rt.Load}, a.recorder,
		pcrInformers.Certificates().V1().PodCertificateRequests(), nodeInformers.Core().V1().Nodes(),
		types.NodeName(a.cfg.NodeName), clock.RealClock{})
	_, _ = nodeInformers.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(any) {
			select {
			case a.nodeGone <- struct{}{}:
			default:
			}
		},
	})
	// A pod waiting for its certificate mounts it as soon as it is issued
	// (the issuer takes the request's new state first), not at its next
	// retry.
	wake := func(obj any) {
		if pcr, ok := obj.(*certificatesv1.PodCertificateRequest); ok {
			if rt := a.rt.Load(); rt != nil {
				time.AfterFunc(300*time.Millisecond, func() { rt.WakePod(pcr.Spec.PodUID) })
			}
		}
	}
	_, _ = pcrInformers.Certificates().V1().PodCertificateRequests().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    wake,
		UpdateFunc: func(_, obj any) { wake(obj) },
	})
	pcrInformers.Start(ctx.Done())
	nodeInformers.Start(ctx.Done())
	defer pcrInformers.Shutdown()
	defer nodeInformers.Shutdown()
	ready()
	a.podCerts.Run(ctx)
	return nil
}

// runNode runs the node through virtual-kubelet with the containerd-backed
// runtime as its provider, and the kubelet API; ready once the node
// controller is. When it stops, the runtime stops driving pods but leaves
// them running (Runtime.Shutdown).
func (a *hostAgent) runNode(ctx context.Context, ready func()) error {
	tlsCfg, auth, err := a.kubeletAPI()
	if err != nil {
		return err
	}
	logMax, err := a.cfg.logMaxSize()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	vk, err := nodeutil.NewNode(a.cfg.NodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		rt, err := runtime.New(ctx, runtime.Config{
			NodeName:            a.cfg.NodeName,
			HostIP:              a.cfg.NodeIP,
			StateDir:            filepath.Join(a.cfg.DataDir, "agent"),
			InsecureRegistries:  a.insecure,
			RegistryMirrors:     a.mirrors,
			RegistryCredentials: a.registryCredentials(),
			ClusterDNS:          a.cfg.ClusterDNS,
			Allocatable:         a.nodeSpec.Status.Allocatable.DeepCopy(),
			Runsc:               runtime.RunscConfig{Path: a.cfg.RunscPath, Platform: a.cfg.RunscPlatform, SystrapFastPath: a.cfg.RunscSystrapFastPath},
			Containerd:          a.ctrd,
			Devices:             a.devices,
			AdjustNode:          func(n *v1.Node) { withDeviceResources(n, a.devices) },
			Network:             a.netMgr,
			Addresses:           podAddresses{a},
			Kube:                a.kube,
			ConfigMaps:          pc.ConfigMaps,
			Secrets:             pc.Secrets,
			Services:            pc.Services,
			Recorder:            a.recorder,
			Log:                 a.log,
			TrustBundles:        a.trustBundles,
			PodCertificates:     a.podCerts,
			Claims: &claimVolumes{
				evs:    &evs.Host{Node: a.cfg.NodeName, Pool: a.evs},
				remote: &rclone.Mounter{Dir: filepath.Join(a.cfg.DataDir, "remote-volumes")},
				kube:   a.kube,
			},
			PodPidsLimit:         a.cfg.PodMaxPids,
			ContainerLogMaxSize:  logMax,
			ContainerLogMaxFiles: a.cfg.ContainerLogMaxFiles,
		})
		if err != nil {
			return nil, nil, err
		}
		a.rt.Store(rt)
		return rt, a.status, nil
	},
		nodeutil.WithClient(a.kube),
		nodeutil.AttachProviderRoutes(mux),
		vknode.UnthrottledPodQueues(),
		func(c *nodeutil.NodeConfig) error {
			c.NodeSpec = *a.nodeSpec
			c.HTTPListenAddr = net.JoinHostPort("", strconv.Itoa(a.cfg.KubeletPort))
			c.TLSConfig = tlsCfg
			c.Handler = nodeutil.WithAuth(auth, mux)
			c.EventRecorder = vknode.KubeletEvents(a.recorder)
			c.NumWorkers = 20
			// The runtime computes environments itself when a container
			// starts (pod IP known, kubelet error reasons).
			c.SkipDownwardAPIResolution = true
			c.InformerResyncPeriod = 10 * time.Minute
			return nil
		},
	)
	if err != nil {
		return fmt.Errorf("create node: %w", err)
	}
	rt := a.rt.Load()
	rt.Start()
	defer rt.Shutdown()
	if a.daemon != nil {
		a.daemon.OnRestart(func() {
			a.log.Warn("containerd restarted; re-attaching pods")
			rt.Reattach()
		})
	}
	return supervisor.Probed(vk.Run, func(ctx context.Context) error {
		if err := vk.WaitReady(ctx, 2*time.Minute); err != nil {
			return fmt.Errorf("node %q: %w", a.cfg.NodeName, err)
		}
		// With a node provider of its own, virtual-kubelet leaves the
		// Ready condition to it.
		if err := a.status.ready(ctx); err != nil {
			return fmt.Errorf("node %q: mark ready: %w", a.cfg.NodeName, err)
		}
		return nil
	})(ctx, ready)
}

// kubeletAPI is the kubelet API's TLS and authentication: a serving
// certificate of the agent's own (the apiserver does not verify kubelet
// certificates by default) and client certificates checked against the
// cluster CA.
func (a *hostAgent) kubeletAPI() (*tls.Config, nodeutil.Auth, error) {
	return vknode.KubeletAPI(a.kube, a.cfg.NodeName, a.cfg.NodeIP, a.caPEM)
}

// watchNodeDeleted returns once the node was deleted from the cluster
// (kubectl delete node), after stopping its pods, with an error wrapping
// ErrNodeDeleted: virtual-kubelet only logs the failing status updates and
// would keep the pods running on a node that no longer exists.
func (a *hostAgent) watchNodeDeleted(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-waitNodeDeleted(ctx, a.kube, a.registered, a.nodeGone):
	}
	a.log.Warn("node deleted from the cluster; stopping its pods")
	// The pods stop even if the agent is being stopped meanwhile.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := a.rt.Load().StopAll(sctx); err != nil {
		return fmt.Errorf("node %q was deleted from the cluster: %w; %w", a.cfg.NodeName, ErrNodeDeleted, err)
	}
	return fmt.Errorf("node %q was deleted from the cluster; its pods were stopped; restart the agent to register it again: %w", a.cfg.NodeName, ErrNodeDeleted)
}

// runServiceProxy runs the upstream kube-proxy beside the agent (a child
// process it restarts); ready once it runs.
func (a *hostAgent) runServiceProxy(ctx context.Context, ready func()) error {
	stopped, err := serviceproxy.Run(ctx, serviceproxy.Config{
		NodeName: a.cfg.NodeName,
		Dir:      filepath.Join(a.cfg.DataDir, "agent", "proxy"),
		REST:     a.restCfg,
		Mode:     a.cfg.ServiceProxy,
		Name:     a.cfg.Bridge,
		Log:      a.log,
		LogFile:  filepath.Join(a.cfg.DataDir, "logs", "kube-proxy.log"),
	})
	if err != nil {
		return err
	}
	a.log.Info("service proxy running", "mode", a.cfg.ServiceProxy)
	ready()
	<-stopped
	return nil
}

// waitNodeDeleted closes the returned channel once the node the agent
// registered is gone from the API (or replaced by another of its name):
// each delete the informer sees is checked against the API itself.
func waitNodeDeleted(ctx context.Context, kube kubernetes.Interface, registered *v1.Node, deleted <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-deleted:
			}
			n, err := kube.CoreV1().Nodes().Get(ctx, registered.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) || err == nil && n.UID != registered.UID {
				close(done)
				return
			}
		}
	}()
	return done
}

// runtimePods shows the pod certificate issuer the pods the runtime runs,
// as the kubelet's pod manager does; none before the runtime exists.
type runtimePods struct{ rt func() *runtime.Runtime }

func (p runtimePods) GetPodByUID(uid types.UID) (*v1.Pod, bool) {
	if rt := p.rt(); rt != nil {
		return rt.PodByUID(uid)
	}
	return nil, false
}

func (p runtimePods) GetPods() []*v1.Pod {
	if rt := p.rt(); rt != nil {
		return rt.Pods()
	}
	return nil
}

// joinConfig builds the agent's API client from a join token: the CA is
// learned from the apiserver's TLS chain and accepted only if its hash
// matches the one in the token.
func joinConfig(server, token string) (*rest.Config, []byte, error) {
	tok, err := pki.ParseToken(token)
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return nil, nil, fmt.Errorf("server URL %q: expected https://HOST:PORT", server)
	}
	var caPEM []byte
	err = wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // checked against the pinned hash below
		if err != nil {
			return false, nil
		}
		defer conn.Close()
		for _, c := range conn.ConnectionState().PeerCertificates {
			if c.IsCA && pki.CAHash(c.Raw) == tok.CAHash {
				caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
				return true, nil
			}
		}
		return false, fmt.Errorf("the server at %q does not present the CA named in the join token: the token is wrong (or this is another cluster's server); "+
			"use the one in the server's <data>/pki/token", server)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("join %q: %w", server, err)
	}
	cfg := &rest.Config{
		Host:            server,
		BearerToken:     tok.Secret,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             200,
		Burst:           400,
		UserAgent:       "cci-agent/" + version.Version,
	}
	return cfg, caPEM, nil
}

func buildNode(cfg Config, runtimeVersion string) *v1.Node {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	kernel := unix.ByteSliceToString(uts.Release[:])
	cpu := resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI)
	mem := resource.NewQuantity(memTotal(), resource.BinarySI)
	pods := resource.NewQuantity(int64(cfg.MaxPods), resource.DecimalSI)
	storage := resource.NewQuantity(diskTotal(cfg.DataDir), resource.BinarySI)
	capacity := v1.ResourceList{v1.ResourceCPU: *cpu, v1.ResourceMemory: *mem, v1.ResourcePods: *pods, v1.ResourceEphemeralStorage: *storage}
	// The node's Hostname address is its name, as a kubelet with
	// --hostname-override gives it: the hosts of `cci up --hosts` share
	// the machine's host name, and clients take the address to name one
	// host.
	hostname := cfg.NodeName
	now := metav1.Now()
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: cfg.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": cfg.NodeName,
				"kubernetes.io/os":       goruntime.GOOS,
				"kubernetes.io/arch":     goruntime.GOARCH,
				"beta.kubernetes.io/os":  goruntime.GOOS,
				pool.Label:               cfg.Pool,
			},
		},
		Spec: v1.NodeSpec{Taints: pool.SetTaint(nil, cfg.Pool)},
		Status: v1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			Phase:       v1.NodePending,
			Conditions: []v1.NodeCondition{
				cond(v1.NodeReady, v1.ConditionFalse, "KubeletNotReady", "agent starting"),
				cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "agent has sufficient memory available"),
				cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "agent has no disk pressure"),
				cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "agent has sufficient PID available"),
			},
			Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: cfg.NodeIP},
				{Type: v1.NodeHostName, Address: hostname},
			},
			DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(cfg.KubeletPort)}},
			NodeInfo: v1.NodeSystemInfo{
				KernelVersion:           kernel,
				OSImage:                 osImage(),
				ContainerRuntimeVersion: "containerd://" + runtimeVersion,
				KubeletVersion:          version.KubernetesVersion,
				KubeProxyVersion:        "",
				OperatingSystem:         goruntime.GOOS,
				Architecture:            goruntime.GOARCH,
			},
		},
	}
}

// registerNode creates (or refreshes) the node object and waits for the
// controller-manager to assign it a pod CIDR; it returns the node with it.
func registerNode(ctx context.Context, kube kubernetes.Interface, n *v1.Node) (*v1.Node, error) {
	nodes := kube.CoreV1().Nodes()
	existing, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		existing, err = nodes.Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("register node %q: %w", n.Name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("look up node %q: %w", n.Name, err)
	default:
		// The host may have changed pools since it last registered: its
		// label and taint follow; the label of CCI before pools goes.
		existing.Labels = mergeLabels(existing.Labels, n.Labels)
		existing.Annotations = mergeLabels(existing.Annotations, n.Annotations)
		delete(existing.Labels, legacyPoolLabel)
		existing.Spec.Taints = pool.SetTaint(existing.Spec.Taints, n.Labels[pool.Label])
		if existing, err = nodes.Update(ctx, existing, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("update node %q: %w", n.Name, err)
		}
	}
	var unavailable error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if existing.Spec.PodCIDR != "" {
			return true, nil
		}
		got, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		existing = got
		if existing.Spec.PodCIDR != "" {
			return true, nil
		}
		// The range allocator says so at once, and retries only when
		// nodes go: waiting out the minute would only hide the cause.
		if unavailable = cidrNotAvailable(ctx, kube, existing); unavailable != nil {
			return false, unavailable
		}
		return false, nil
	})
	if unavailable != nil {
		return nil, unavailable
	}
	if err != nil {
		return nil, fmt.Errorf("node %q got no pod CIDR from the controller-manager (is the control plane's controller-manager running?): %w", n.Name, err)
	}
	return existing, nil
}

// legacyPoolLabel is the pool label of CCI before host pools (always
// "x86"); a node that registers again loses it.
const legacyPoolLabel = "node.cci.io/pool"

func mergeLabels(a, b map[string]string) map[string]string {
	if a == nil {
		a = map[string]string{}
	}
	for k, v := range b {
		a[k] = v
	}
	return a
}

func memTotal() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}

func diskTotal(dir string) int64 {
	var st unix.Statfs_t
	_ = os.MkdirAll(dir, 0o755)
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * st.Bsize
}

func osImage() string {
	raw, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "Linux"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}

// watchPodStatus passes on to the runtime the conditions other
// controllers set on this node's pods that have readiness gates: the node's
// pod controller hands the runtime spec changes only, and a pod's Ready
// condition waits for its gates, as on a kubelet. It also hands over every
// change another writer makes to the conditions the agent owns, so that
// the agent writes its own back (the node controller marks a node's pods
// NotReady while the node is: for example while the agent restarts).
func watchPodStatus(ctx context.Context, kube kubernetes.Interface, node string, rt *runtime.Runtime) {
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "spec.nodeName=" + node
	}))
	_, _ = factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod, ok := obj.(*v1.Pod); ok {
				rt.CheckAPIStatus(pod)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			old, ok1 := oldObj.(*v1.Pod)
			cur, ok2 := newObj.(*v1.Pod)
			if !ok1 || !ok2 {
				return
			}
			if runtime.KubeletConditionsChanged(old, cur) || runtime.ForeignConditionsChanged(old, cur) {
				rt.CheckAPIStatus(cur)
			}
			if len(cur.Spec.ReadinessGates) == 0 || !runtime.ForeignConditionsChanged(old, cur) {
				return
			}
			_ = rt.UpdatePod(ctx, cur)
		},
	})
	factory.Start(ctx.Done())
}

// clusterNet is what every host of a cluster shares about its network.
type clusterNet struct {
	// internal are the pod and Service ranges: traffic to them keeps its
	// pod source address.
	internal []netip.Prefix
	// podRange is the cluster's pod range (clusterCIDR); invalid when the
	// control plane publishes none.
	podRange netip.Prefix
	// netConf is the overlay's net-conf.json; nil when the control plane
	// publishes none (an older one).
	netConf []byte
}

// clusterNetwork reads the control plane's network settings
// (kube-system/cci-network).
func clusterNetwork(ctx context.Context, kube kubernetes.Interface) (clusterNet, error) {
	var out clusterNet
	cm, err := kube.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, "cci-network", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("read the cluster's network settings (ConfigMap kube-system/cci-network): %w", err)
	}
	for _, key := range []string{"clusterCIDR", "serviceCIDR"} {
		if v := cm.Data[key]; v != "" {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return out, fmt.Errorf("ConfigMap kube-system/cci-network: %s %q: %w", key, v, err)
			}
			out.internal = append(out.internal, p.Masked())
			if key == "clusterCIDR" {
				out.podRange = p.Masked()
			}
		}
	}
	if v := cm.Data["net-conf.json"]; v != "" {
		out.netConf = []byte(v)
	}
	return out, nil
}

// writeKubeconfig writes the agent's own credentials for a library that
// reads only kubeconfig files (flannel).
func writeKubeconfig(path string, rc *rest.Config, caPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cci"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	cfg.Contexts["cci"] = &clientcmdapi.Context{Cluster: "cci", AuthInfo: "agent"}
	cfg.CurrentContext = "cci"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %q: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}
