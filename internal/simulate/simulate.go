// Package simulate runs simulated hosts: many nodes registered against one
// control plane from one process, each a real virtual-kubelet node (node
// object, lease, status, pod controller) whose provider runs no containers.
// Pods bound to a simulated node report Running after a configurable delay
// and stop at once when deleted; the node API (logs, exec, attach,
// port-forward) answers with an error that says the node is simulated.
//
// It is the second implementation of the agent's provider interface (the
// first is internal/runtime), made for control-plane scale tests: a
// thousand hosts on one machine. Pods may steer their simulated life with
// annotations (AnnotationStartDelay, AnnotationRunFor, AnnotationExitCode).
//
// Simulated nodes carry the label LabelSimulated and, unless told
// otherwise, the NoSchedule taint TaintSimulated, so that only pods that
// ask for them (a toleration) land there.
package simulate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/cci-project/cci/internal/pki"
	"github.com/cci-project/cci/internal/pool"
	"github.com/cci-project/cci/internal/version"
	"github.com/cci-project/cci/internal/vknode"
)

const (
	// LabelSimulated is set to "true" on every simulated node.
	LabelSimulated = "node.cci.io/simulated"
	// TaintSimulated keeps ordinary pods off simulated nodes (effect NoSchedule, value "true").
	TaintSimulated = "node.cci.io/simulated"
)

// Config describes a fleet of simulated nodes. Zero fields take the
// defaults given on each.
type Config struct {
	// Kube is how the nodes reach the apiserver (for instance from an admin
	// kubeconfig). Its QPS and Burst are replaced by NodeQPS and NodeBurst.
	// It must name the cluster CA, which also authenticates the apiserver
	// on the node API. Required.
	Kube *rest.Config
	// Nodes is how many nodes to register. Default 1.
	Nodes int
	// NamePrefix names the nodes <prefix>0000, <prefix>0001, …. Default "cci-sim-".
	NamePrefix string
	// StartDelay is how long a pod stays Pending before it runs. Default 0.
	StartDelay time.Duration
	// ListenAddr is the node API's one TLS listener, shared by every node.
	// Default ":10350".
	ListenAddr string
	// NodeIP is published as every node's InternalIP, where the apiserver
	// reaches the node API. Default: the address this host uses to reach
	// the apiserver.
	NodeIP string
	// CPU, Memory and MaxPods are each node's capacity. Defaults "32", "128Gi", 110.
	CPU     string
	Memory  string
	MaxPods int
	// NoTaint leaves out the TaintSimulated taint, so any pod may land on
	// the simulated nodes.
	NoTaint bool
	// NodeQPS and NodeBurst limit each node's API client, as each real
	// agent's is limited. Defaults 50 and 100.
	NodeQPS   float32
	NodeBurst int
	// Parallel is how many nodes register at the same time. Default 20.
	Parallel int
	// DeleteNodes removes the node objects when Run returns.
	DeleteNodes bool
	// Log receives progress messages. Default slog's default logger.
	Log *slog.Logger
}

func (c *Config) defaults() error {
	if c.Kube == nil {
		return errors.New("simulated nodes need API credentials (a kubeconfig)")
	}
	if c.Nodes == 0 {
		c.Nodes = 1
	}
	if c.Nodes < 0 {
		return fmt.Errorf("node count %d is negative", c.Nodes)
	}
	if c.NamePrefix == "" {
		c.NamePrefix = "cci-sim-"
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":10350"
	}
	if c.CPU == "" {
		c.CPU = "32"
	}
	if c.Memory == "" {
		c.Memory = "128Gi"
	}
	if c.MaxPods == 0 {
		c.MaxPods = 110
	}
	if c.NodeQPS == 0 {
		c.NodeQPS = 50
	}
	if c.NodeBurst == 0 {
		c.NodeBurst = 100
	}
	if c.Parallel <= 0 {
		c.Parallel = 20
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.NodeIP == "" {
		c.NodeIP = localIPFor(c.Kube.Host)
	}
	for _, q := range []string{c.CPU, c.Memory} {
		if _, err := resource.ParseQuantity(q); err != nil {
			return fmt.Errorf("node capacity %q: %w", q, err)
		}
	}
	return nil
}

// NodeName is the name of the i-th simulated node.
func (c *Config) NodeName(i int) string {
	return fmt.Sprintf("%s%04d", c.NamePrefix, i)
}

// Run registers the nodes, serves their node API and drives their pods
// until ctx ends. ready is called once every node reports Ready.
func Run(ctx context.Context, cfg Config, ready func()) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Log
	caPEM, err := caData(cfg.Kube)
	if err != nil {
		return err
	}
	shared, err := kubernetes.NewForConfig(cfg.Kube)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// One listener answers for every node: the node is found by the pod.
	ln, port, err := listen(cfg, caPEM)
	if err != nil {
		return err
	}
	f := newFleet(cfg.StartDelay, cfg.NodeIP)
	srv := &http.Server{Handler: f.handler(), ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: shared.CoreV1().Events("")})
	defer broadcaster.Shutdown()

	var (
		wg      sync.WaitGroup
		errMu   sync.Mutex
		firstEr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstEr == nil {
			firstEr = err
		}
		errMu.Unlock()
		cancel()
	}
	start := time.Now()
	sem := make(chan struct{}, cfg.Parallel)
	readyWG := sync.WaitGroup{}
	for i := 0; i < cfg.Nodes; i++ {
		name := cfg.NodeName(i)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		vk, err := newNode(cfg, name, port, f, broadcaster)
		if err != nil {
			<-sem
			fail(err)
			break
		}
		wg.Add(1)
		readyWG.Add(1)
		go func() {
			defer wg.Done()
			if err := vk.Run(ctx); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("simulated node %q: %w", name, err))
			}
		}()
		go func() {
			defer readyWG.Done()
			defer func() { <-sem }()
			if err := vk.WaitReady(ctx, 5*time.Minute); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("simulated node %q not ready: %w", name, err))
			}
		}()
	}
	readyWG.Wait()
	if ctx.Err() == nil {
		log.Info("simulated nodes ready", "nodes", cfg.Nodes, "took", time.Since(start).Round(time.Millisecond), "nodeAPI", net.JoinHostPort(cfg.NodeIP, strconv.Itoa(port)))
		if ready != nil {
			ready()
		}
	}
	<-ctx.Done()
	wg.Wait()
	if cfg.DeleteNodes {
		deleteNodes(shared, cfg, log)
	}
	errMu.Lock()
	defer errMu.Unlock()
	return firstEr
}

func newNode(cfg Config, name string, port int, f *fleet, eb record.EventBroadcaster) (*nodeutil.Node, error) {
	rc := vknode.Protobuf(cfg.Kube) // as a real agent's client talks
	rc.QPS, rc.Burst = cfg.NodeQPS, cfg.NodeBurst
	rc.UserAgent = "cci-simulated-agent/" + version.Version
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	spec, err := nodeSpec(cfg, name, port)
	if err != nil {
		return nil, err
	}
	recorder := eb.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: name})
	return nodeutil.NewNode(name, func(nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		return f.provider(name), nil, nil
	},
		nodeutil.WithClient(kube),
		vknode.UnthrottledPodQueues(),
		func(c *nodeutil.NodeConfig) error {
			c.NodeSpec = *spec
			// No TLS config: the node starts no listener of its own; the
			// fleet's shared one serves every node.
			c.TLSConfig = nil
			c.HTTPListenAddr = net.JoinHostPort("", strconv.Itoa(port))
			c.EventRecorder = vknode.KubeletEvents(recorder)
			c.NumWorkers = 2
			c.InformerResyncPeriod = 0
			return nil
		},
	)
}

func nodeSpec(cfg Config, name string, port int) (*v1.Node, error) {
	capacity := v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse(cfg.CPU),
		v1.ResourceMemory:           resource.MustParse(cfg.Memory),
		v1.ResourcePods:             *resource.NewQuantity(int64(cfg.MaxPods), resource.DecimalSI),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	now := metav1.Now()
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "virtual-kubelet",
				pool.Label:               "simulated",
				LabelSimulated:           "true",
			},
		},
		Status: v1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			Phase:       v1.NodePending,
			Conditions: []v1.NodeCondition{
				cond(v1.NodeReady, v1.ConditionFalse, "KubeletNotReady", "simulated agent starting"),
				cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "simulated"),
				cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "simulated"),
				cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "simulated"),
			},
			Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: cfg.NodeIP},
				{Type: v1.NodeHostName, Address: name},
			},
			DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(port)}},
			NodeInfo: v1.NodeSystemInfo{
				OSImage:                 "CCI simulated host",
				ContainerRuntimeVersion: "simulated://" + version.Version,
				KubeletVersion:          version.KubernetesVersion,
				OperatingSystem:         "linux",
				Architecture:            "amd64",
			},
		},
	}
	if !cfg.NoTaint {
		n.Spec.Taints = []v1.Taint{{Key: TaintSimulated, Value: "true", Effect: v1.TaintEffectNoSchedule}}
	}
	return n, nil
}

// handler serves the kubelet API of every simulated node: a request for a
// pod goes to the node that runs it.
func (f *fleet) handler() http.Handler {
	mux := http.NewServeMux()
	route := func(ns, name string) (*Provider, error) {
		p, ok := f.lookup(ns, name)
		if !ok {
			return nil, fmt.Errorf("pod %s/%s is on no simulated node of this process", ns, name)
		}
		return p, nil
	}
	api.AttachPodRoutes(api.PodHandlerConfig{
		RunInContainer: func(ctx context.Context, ns, pod, c string, cmd []string, a api.AttachIO) error {
			p, err := route(ns, pod)
			if err != nil {
				return err
			}
			return p.RunInContainer(ctx, ns, pod, c, cmd, a)
		},
		AttachToContainer: func(ctx context.Context, ns, pod, c string, a api.AttachIO) error {
			p, err := route(ns, pod)
			if err != nil {
				return err
			}
			return p.AttachToContainer(ctx, ns, pod, c, a)
		},
		GetContainerLogs: func(ctx context.Context, ns, pod, c string, o api.ContainerLogOpts) (io.ReadCloser, error) {
			p, err := route(ns, pod)
			if err != nil {
				return nil, err
			}
			return p.GetContainerLogs(ctx, ns, pod, c, o)
		},
		PortForward: func(ctx context.Context, ns, pod string, port int32, s io.ReadWriteCloser) error {
			p, err := route(ns, pod)
			if err != nil {
				return err
			}
			return p.PortForward(ctx, ns, pod, port, s)
		},
		GetPods:               f.allPods,
		GetPodsFromKubernetes: f.allPods,
	}, mux, false)
	// Only the apiserver (a client certificate from the cluster CA) may call.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "simulated node API: a client certificate from the cluster CA is required", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (f *fleet) allPods(context.Context) ([]*v1.Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*v1.Pod, 0, len(f.pods))
	for _, sp := range f.pods {
		out = append(out, sp.pod.DeepCopy())
	}
	return out, nil
}

func listen(cfg Config, caPEM []byte) (net.Listener, int, error) {
	certPEM, keyPEM, err := pki.SelfSigned("cci-simulated-nodes", []string{cfg.NodeIP, "localhost", "127.0.0.1"})
	if err != nil {
		return nil, 0, fmt.Errorf("node API certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, 0, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, 0, errors.New("the kubeconfig's cluster CA is not PEM")
	}
	ln, err := tls.Listen("tcp", cfg.ListenAddr, &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("node API listener on %q (choose a free address with --listen): %w", cfg.ListenAddr, err)
	}
	return ln, ln.Addr().(*net.TCPAddr).Port, nil
}

func caData(rc *rest.Config) ([]byte, error) {
	if len(rc.TLSClientConfig.CAData) > 0 {
		return rc.TLSClientConfig.CAData, nil
	}
	if rc.TLSClientConfig.CAFile != "" {
		raw, err := os.ReadFile(rc.TLSClientConfig.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read cluster CA: %w", err)
		}
		return raw, nil
	}
	return nil, errors.New("the kubeconfig names no cluster CA; simulated nodes need it to authenticate the apiserver on their node API")
}

func deleteNodes(kube kubernetes.Interface, cfg Config, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i := 0; i < cfg.Nodes; i++ {
		name := cfg.NodeName(i)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				log.Warn("delete simulated node", "node", name, "err", err)
			}
		}()
	}
	wg.Wait()
	log.Info("simulated nodes deleted", "nodes", cfg.Nodes)
}

// localIPFor is the local address used to reach the server's host.
func localIPFor(server string) string {
	host := server
	if u, err := url.Parse(server); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return "127.0.0.1"
	}
	if c, err := net.Dial("udp", net.JoinHostPort(host, "9")); err == nil {
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).IP.String()
	}
	return "127.0.0.1"
}
