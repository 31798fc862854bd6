// Package connect runs a virtual node in one Kubernetes cluster (A) whose
// pods run in another (B): `cci connect`. Bursting from a user's cluster
// into a CCI tenant is its first use; cells of a front control plane are
// the second.
//
// It stands on the virtual-kubelet library the host agent uses: the node
// controller registers the node and keeps its lease, the pod controller
// hands the pods bound to it to the provider (provider.go), which creates
// copies of them in the tenant's namespace of B and mirrors their status
// back; the kubelet API (logs, exec, attach, port-forward, stats) is
// served by calling B's API for the copy (streams.go).
//
// Start order (internal/supervisor runs it):
//
//	B reachable (retried with back-off) ─► node name held (Lease in A)
//	    ─► informers on B's copies ─► events ─► node controller (ready)
//	    ─► status, resync, capacity and event mirroring (bg)
package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	metricsclient "k8s.io/metrics/pkg/client/clientset/versioned"

	"github.com/cci-project/cci/internal/pool"
	"github.com/cci-project/cci/internal/supervisor"
	"github.com/cci-project/cci/internal/version"
	"github.com/cci-project/cci/internal/vknode"
)

// Taint keeps pods off the virtual node unless they tolerate it.
var Taint = v1.Taint{Key: "virtual-kubelet.io/provider", Value: "cci", Effect: v1.TaintEffectNoSchedule}

// AutoTaint scores the virtual node below A's own nodes for pods that
// tolerate only Taint (cci.io/burst=auto): the scheduler's TaintToleration
// score (weight 3) adds to auto's preferred node affinity (weight 2), which
// alone is outweighed by spreading and free-resource scores (a virtual node
// is never full), so that auto pods go to the virtual node only when A's
// nodes are full. Pods that tolerate the key with every effect do not see it.
var AutoTaint = v1.Taint{Key: Taint.Key, Value: Taint.Value, Effect: v1.TaintEffectPreferNoSchedule}

// Config is `cci connect`'s configuration.
type Config struct {
	// Kubeconfig is cluster A's, where the virtual node is registered.
	// Empty: the in-cluster configuration (connect as a Deployment in A).
	Kubeconfig string `json:"kubeconfig"`
	// To is the kubeconfig of B: a CCI tenant's (`cci tenant create`
	// writes it). The pods run in its context's namespace.
	To string `json:"to"`
	// Namespace overrides the namespace of To's context.
	Namespace string `json:"namespace"`
	// NodeName is the virtual node's name in A. Default "cci-burst".
	NodeName string `json:"nodeName"`
	// Pool is the node's cci.io/pool label. Default "cci".
	Pool string `json:"pool"`
	// NodeIP is the address A's apiserver reaches the node's kubelet API
	// at (and the pods' hostIP). Default: this machine's address towards A.
	NodeIP string `json:"nodeIP"`
	// KubeletPort is the kubelet API's TLS port. Default 10250.
	KubeletPort int `json:"kubeletPort"`
	// DNS chooses the resolver of ClusterFirst pods: "a" (default) gives
	// them a resolv.conf of a pod of A (A's cluster DNS and search path;
	// it answers where B's pods reach A's Service network), "b" leaves
	// them B's.
	DNS string `json:"dns"`
	// ClusterDomain is A's cluster domain. Default "cluster.local".
	ClusterDomain string `json:"clusterDomain"`
	// ClusterDNS is A's DNS server. Default: the ClusterIP of A's Service
	// kube-system/kube-dns.
	ClusterDNS []string `json:"clusterDNS"`
	// PodAPIServer is A's apiserver as the pods reach it (https://HOST:PORT).
	// Default: --kubeconfig's server, or, where that is a loopback
	// address, NodeIP with its port.
	PodAPIServer string `json:"podAPIServer"`
	// Install places in A the mutating webhook that sends pods labelled
	// cci.io/burst (enforce, prefer, auto) to the virtual node; connect
	// serves it on WebhookPort (default KubeletPort+1) and removes it when
	// it stops.
	Install     bool `json:"install"`
	WebhookPort int  `json:"webhookPort"`
	// Cell makes B a cell of A: To is a whole CCI cluster's admin
	// kubeconfig, the node stands for B's hosts of Pool (capacity: their
	// free allocatable, summed), carries no taint but the pool's own, and
	// each pod's copy runs in B in the pod's own namespace, which connect
	// creates there (a tenant's by copying its Tenant, so that B's tenant
	// controller gives it the same quota, limits and isolation).
	Cell bool `json:"cell"`
	// LostAfter is how long B may not answer before the node is NotReady.
	// Default 0 (at once); 60 s for a cell.
	LostAfter time.Duration `json:"lostAfter"`
	// Capacity is the node's capacity for resources B's quota does not
	// cap. Default cpu=1000, memory=4Ti, pods=1000.
	Capacity v1.ResourceList `json:"capacity"`
	// Log receives connect's messages. Default slog's default logger.
	Log *slog.Logger `json:"-"`
}

func (c *Config) defaults() error {
	if c.NodeName == "" {
		c.NodeName = "cci-burst"
	}
	if c.Pool == "" {
		c.Pool = "cci"
		if c.Cell {
			c.Pool = pool.Default
		}
	}
	if c.Cell && c.LostAfter == 0 {
		c.LostAfter = time.Minute
	}
	if c.Cell && c.Namespace != "" {
		return errors.New("--namespace: a cell runs each pod in its own namespace; leave it out with --cell")
	}
	if err := pool.Validate(c.Pool); err != nil {
		return fmt.Errorf("--pool: %w", err)
	}
	if c.KubeletPort == 0 {
		c.KubeletPort = 10250
	}
	if c.WebhookPort == 0 {
		c.WebhookPort = c.KubeletPort + 1
	}
	switch c.DNS {
	case "":
		c.DNS = "a"
	case "a", "b":
	default:
		return fmt.Errorf("--dns %q: choose a (the pods resolve as pods of the cluster they were created in) or b", c.DNS)
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	for _, d := range c.ClusterDNS {
		if net.ParseIP(d) == nil {
			return fmt.Errorf("--cluster-dns %q: not an IP address", d)
		}
	}
	if c.To == "" {
		return errors.New("cci connect needs --to: the kubeconfig of the cluster the pods run in (a tenant's, from `cci tenant create`; with --cell, the cell's admin kubeconfig)")
	}
	defaults := v1.ResourceList{
		v1.ResourceCPU:    resource.MustParse("1000"),
		v1.ResourceMemory: resource.MustParse("4Ti"),
		v1.ResourcePods:   resource.MustParse("1000"),
	}
	if c.Capacity == nil {
		c.Capacity = v1.ResourceList{}
	}
	for k, v := range defaults {
		if _, ok := c.Capacity[k]; !ok {
			c.Capacity[k] = v
		}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// connector is what the parts of one Run share; fields marked "by X" are
// set by component X before the next one starts.
type connector struct {
	cfg     Config
	log     *slog.Logger
	started time.Time

	aREST   *rest.Config
	a       kubernetes.Interface
	bREST   *rest.Config
	b       kubernetes.Interface
	bNS     string
	metrics metricsclient.Interface
	cluster string           // A's kube-system UID
	dns     *v1.PodDNSConfig // nil: B's own DNS
	holder  string           // this process's identity in the Lease
	// apiHost and apiPort are where pods reach A's apiserver.
	apiHost, apiPort string

	bFactory informers.SharedInformerFactory // by "copies"
	aDyn     dynamic.Interface
	bDyn     dynamic.Interface
	// cellNodes and cellPods are B's nodes and bound pods (cells only),
	// by "copies".
	cellNodes corev1listers.NodeLister
	cellPods  corev1listers.PodLister
	// cellNamespaces are the namespaces known to exist in the cell.
	cellNamespaces sync.Map
	recorder       record.EventRecorder // by "events"
	prov           *provider            // by "node"
	status         *nodeStatus          // by "node"
	usage          *usage
}

// Run serves the virtual node until ctx ends. ready is called once the
// node is registered. Pods keep running in B when it returns; the next
// connect of the same name re-adopts them.
func Run(ctx context.Context, cfg Config, ready func()) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	c, err := newConnector(cfg)
	if err != nil {
		return err
	}
	components := []supervisor.Component{
		supervisor.Step("reach both clusters", c.reach),
		supervisor.Service("node name", c.holdName),
		supervisor.Service("copies", c.runCopies),
		supervisor.Service("events", c.runEvents),
		supervisor.Service("node", c.runNode),
		supervisor.Background("event mirror", c.mirrorEvents),
	}
	if cfg.Install {
		components = append(components, supervisor.Service("burst webhook", c.runWebhook))
	}
	return supervisor.Run(ctx, supervisor.Config{
		Log:         c.log,
		StopTimeout: 30 * time.Second,
		Ready: func() {
			c.log.Info("virtual node ready", "kubeletAPI", net.JoinHostPort(c.cfg.NodeIP, strconv.Itoa(c.cfg.KubeletPort)), "namespace", c.bNS)
			if ready != nil {
				ready()
			}
		},
	}, components...)
}

func newConnector(cfg Config) (*connector, error) {
	c := &connector{cfg: cfg, log: cfg.Log.With("node", cfg.NodeName), started: time.Now(),
		usage: &usage{cpu: map[string]float64{}, at: map[string]time.Time{}}}
	var err error
	if cfg.Kubeconfig == "" {
		c.aREST, err = rest.InClusterConfig()
	} else {
		c.aREST, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig of the cluster the node joins (--kubeconfig %q): %w", cfg.Kubeconfig, err)
	}
	c.aREST.UserAgent = "cci-connect/" + version.Version
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.To}, &clientcmd.ConfigOverrides{})
	if c.bREST, err = loader.ClientConfig(); err != nil {
		return nil, fmt.Errorf("the kubeconfig of the cluster the pods run in (--to %q): %w", cfg.To, err)
	}
	c.bREST.UserAgent = "cci-connect/" + version.Version
	c.bREST.QPS, c.bREST.Burst = 100, 200
	c.aREST.QPS, c.aREST.Burst = 100, 200
	c.bNS = cfg.Namespace
	if cfg.Cell {
		c.bNS = metav1.NamespaceAll
	} else if c.bNS == "" {
		ns, _, err := loader.Namespace()
		if err != nil || ns == "" {
			return nil, fmt.Errorf("--to %q names no namespace in its context: give --namespace (a tenant's kubeconfig from `cci tenant create` names its own)", cfg.To)
		}
		c.bNS = ns
	}
	if c.a, err = kubernetes.NewForConfig(vknode.Protobuf(c.aREST)); err != nil {
		return nil, err
	}
	if c.b, err = kubernetes.NewForConfig(c.bREST); err != nil {
		return nil, err
	}
	if c.metrics, err = metricsclient.NewForConfig(c.bREST); err != nil {
		return nil, err
	}
	if c.aDyn, err = dynamic.NewForConfig(c.aREST); err != nil {
		return nil, err
	}
	if c.bDyn, err = dynamic.NewForConfig(c.bREST); err != nil {
		return nil, err
	}
	if c.cfg.NodeIP == "" {
		c.cfg.NodeIP = vknode.NodeIP(c.aREST.Host)
	}
	c.apiHost, c.apiPort = podAPIAddress(cfg.PodAPIServer, c.aREST.Host, c.cfg.NodeIP)
	host, _ := os.Hostname()
	c.holder = fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
	return c, nil
}

// copySelector selects this node's copies (and their objects) in B.
func (c *connector) copySelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelNode: c.cfg.NodeName, LabelCluster: c.cluster})
}

// reach checks both clusters: A's identity and DNS, and B's namespace.
// B is retried with back-off (it may be starting, or the link down): the
// node is not registered before B answers.
func (c *connector) reach(ctx context.Context) error {
	ks, err := c.a.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reach the cluster the node joins at %s (--kubeconfig): %w", c.aREST.Host, err)
	}
	c.cluster = string(ks.UID)
	if c.cfg.DNS == "a" {
		servers := c.cfg.ClusterDNS
		if len(servers) == 0 {
			svc, err := c.a.CoreV1().Services(metav1.NamespaceSystem).Get(ctx, "kube-dns", metav1.GetOptions{})
			if err == nil && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != v1.ClusterIPNone {
				servers = []string{svc.Spec.ClusterIP}
			} else {
				c.log.Warn("the cluster has no Service kube-system/kube-dns: its pods on the virtual node use the DNS of the cluster they run in (--cluster-dns names a server)")
			}
		}
		if len(servers) > 0 {
			c.dns = clusterDNS(servers, c.cfg.ClusterDomain)
		}
	}
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Cap: time.Minute, Steps: 1 << 30}
	for {
		_, err := c.b.CoreV1().ResourceQuotas(c.bNS).List(ctx, metav1.ListOptions{Limit: 1})
		if err == nil {
			return nil
		}
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return fmt.Errorf("the cluster the pods run in (%s, namespace %s) refuses --to's credentials: %w", c.bREST.Host, c.bNS, err)
		}
		d := backoff.Step()
		c.log.Warn("the cluster the pods run in does not answer; retrying", "server", c.bREST.Host, "in", d, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// leaseName is the Lease in A's kube-node-lease that one connect per node
// name holds (the node's own Lease, of the node's name, is the node
// controller's).
func (c *connector) leaseName() string { return "cci-connect-" + c.cfg.NodeName }

const leaseSeconds = 15

// holdName takes the node's name for this process, or refuses when
// another connect holds it, and renews it until ctx ends (then gives it up).
func (c *connector) holdName(ctx context.Context, ready func()) error {
	leases := c.a.CoordinationV1().Leases(v1.NamespaceNodeLease)
	if err := c.takeLease(ctx); err != nil {
		return err
	}
	ready()
	t := time.NewTicker(leaseSeconds * time.Second / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Given up, so that a new connect need not wait it out.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if l, err := leases.Get(sctx, c.leaseName(), metav1.GetOptions{}); err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == c.holder {
				_ = leases.Delete(sctx, c.leaseName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &l.UID}})
			}
			return nil
		case <-t.C:
		}
		l, err := leases.Get(ctx, c.leaseName(), metav1.GetOptions{})
		if err != nil {
			c.log.Warn("renew the node name's lease", "err", err)
			continue
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != c.holder {
			return fmt.Errorf("node %q was taken by another `cci connect` (%s): only one may serve a node", c.cfg.NodeName, holderOf(l))
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec.RenewTime = &now
		if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			c.log.Warn("renew the node name's lease", "err", err)
		}
	}
}

func holderOf(l *coordv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return "unknown"
	}
	return *l.Spec.HolderIdentity
}

func (c *connector) takeLease(ctx context.Context) error {
	leases := c.a.CoordinationV1().Leases(v1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	secs := int32(leaseSeconds)
	spec := coordv1.LeaseSpec{HolderIdentity: &c.holder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now}
	l, err := leases.Get(ctx, c.leaseName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: c.leaseName(), Namespace: v1.NamespaceNodeLease}, Spec: spec}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("node %q is being taken by another `cci connect` at this moment: only one may serve a node; stop the other or choose another --name", c.cfg.NodeName)
		}
		if err != nil {
			return fmt.Errorf("hold node name %q (Lease %s/%s): %w", c.cfg.NodeName, v1.NamespaceNodeLease, c.leaseName(), err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("hold node name %q (Lease %s/%s): %w", c.cfg.NodeName, v1.NamespaceNodeLease, c.leaseName(), err)
	}
	if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
		expires := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
		if time.Now().Before(expires) && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			return fmt.Errorf("node %q is served by another `cci connect` (%s, renewed %s ago): only one may serve a node; stop the other or choose another --name",
				c.cfg.NodeName, holderOf(l), time.Since(l.Spec.RenewTime.Time).Round(time.Second))
		}
	}
	l.Spec = spec
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return fmt.Errorf("node %q is being taken by another `cci connect` at this moment: only one may serve a node", c.cfg.NodeName)
		}
		return fmt.Errorf("hold node name %q: %w", c.cfg.NodeName, err)
	}
	return nil
}

// runCopies watches this node's copies in B (pods, their ConfigMaps and
// Secrets) and the tenant's quota; ready once synced.
func (c *connector) runCopies(ctx context.Context, ready func()) error {
	c.bFactory = informers.NewSharedInformerFactoryWithOptions(c.b, 0, informers.WithNamespace(c.bNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = c.copySelector().String() }))
	quota := informers.NewSharedInformerFactoryWithOptions(c.b, 0, informers.WithNamespace(c.bNS))
	c.bFactory.Core().V1().Pods().Informer()
	c.bFactory.Core().V1().ConfigMaps().Informer()
	c.bFactory.Core().V1().Secrets().Informer()
	quota.Core().V1().ResourceQuotas().Informer()
	synced := []cache.InformerSynced{c.bFactory.Core().V1().Pods().Informer().HasSynced,
		c.bFactory.Core().V1().ConfigMaps().Informer().HasSynced, c.bFactory.Core().V1().Secrets().Informer().HasSynced,
		quota.Core().V1().ResourceQuotas().Informer().HasSynced}
	var cell, nodes informers.SharedInformerFactory
	if c.cfg.Cell {
		// The node's capacity is what the cell's hosts of the pool have
		// free: every bound pod counts, not only this node's copies.
		cell = informers.NewSharedInformerFactoryWithOptions(c.b, 0)
		nodes = informers.NewSharedInformerFactoryWithOptions(c.b, 0,
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = pool.Label + "=" + c.cfg.Pool }))
		c.cellNodes = nodes.Core().V1().Nodes().Lister()
		c.cellPods = cell.Core().V1().Pods().Lister()
		synced = append(synced, nodes.Core().V1().Nodes().Informer().HasSynced, cell.Core().V1().Pods().Informer().HasSynced)
		nodes.Start(ctx.Done())
		defer nodes.Shutdown()
		cell.Start(ctx.Done())
		defer cell.Shutdown()
	}
	c.bFactory.Start(ctx.Done())
	quota.Start(ctx.Done())
	defer c.bFactory.Shutdown()
	defer quota.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	c.status = &nodeStatus{c: c, quotas: quota.Core().V1().ResourceQuotas().Lister(), wake: make(chan struct{}, 1)}
	wake := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.status.poke() },
		UpdateFunc: func(any, any) { c.status.poke() },
		DeleteFunc: func(any) { c.status.poke() },
	}
	_, _ = quota.Core().V1().ResourceQuotas().Informer().AddEventHandler(wake)
	_, _ = c.bFactory.Core().V1().Pods().Informer().AddEventHandler(wake)
	if cell != nil {
		_, _ = cell.Core().V1().Pods().Informer().AddEventHandler(wake)
		_, _ = nodes.Core().V1().Nodes().Informer().AddEventHandler(wake)
	}
	ready()
	<-ctx.Done()
	return nil
}

// runEvents records events in A as the node's kubelet.
func (c *connector) runEvents(ctx context.Context, ready func()) error {
	return vknode.RunEvents(ctx, c.a, c.cfg.NodeName, func(r record.EventRecorder) { c.recorder = r }, ready)
}

// runNode runs the virtual node: virtual-kubelet's node and pod
// controllers with the provider, and the kubelet API; ready once the node
// controller is.
func (c *connector) runNode(ctx context.Context, ready func()) error {
	tlsCfg, auth, err := c.kubeletAPI()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	spec := c.nodeSpec()
	// Registered with the quota's free part already: the scheduler in A
	// may place pods the moment the node exists.
	ours, _ := c.bFactory.Core().V1().Pods().Lister().Pods(c.bNS).List(c.copySelector())
	spec.Status.Capacity, _ = c.status.capacity(ours)
	spec.Status.Allocatable = spec.Status.Capacity.DeepCopy()
	c.status.node = spec.DeepCopy()
	vk, err := nodeutil.NewNode(c.cfg.NodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		c.prov = &provider{
			c:        c,
			aPods:    pc.Pods,
			aConfigs: pc.ConfigMaps,
			aSecrets: pc.Secrets,
			bPods:    c.bFactory.Core().V1().Pods().Lister(),
			bConfigs: c.bFactory.Core().V1().ConfigMaps().Lister(),
			bSecrets: c.bFactory.Core().V1().Secrets().Lister(),
			recorder: c.recorder,
			queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, time.Minute),
				workqueue.TypedRateLimitingQueueConfig[string]{Name: "cci-connect-status"}),
			refusedPods: map[string]*v1.Pod{},
			gone:        map[string]*v1.Pod{},
		}
		c.prov.watchCopies(c.bFactory.Core().V1().Pods().Informer())
		return c.prov, c.status, nil
	},
		nodeutil.WithClient(c.a),
		nodeutil.AttachProviderRoutes(mux),
		vknode.UnthrottledPodQueues(),
		func(nc *nodeutil.NodeConfig) error {
			nc.NodeSpec = *spec
			nc.HTTPListenAddr = net.JoinHostPort("", strconv.Itoa(c.cfg.KubeletPort))
			nc.TLSConfig = tlsCfg
			nc.Handler = nodeutil.WithAuth(auth, mux)
			nc.EventRecorder = vknode.KubeletEvents(c.recorder)
			nc.NumWorkers = 20
			// The provider resolves the downward API itself, with A's
			// values; ConfigMaps and Secrets are copied, never inlined.
			nc.SkipDownwardAPIResolution = true
			nc.InformerResyncPeriod = 10 * time.Minute
			return nil
		},
	)
	if err != nil {
		return fmt.Errorf("create node %q: %w", c.cfg.NodeName, err)
	}
	go c.prov.runStatus(ctx, 8)
	go c.prov.resync(ctx, 2*time.Second)
	go c.status.run(ctx)
	return supervisor.Probed(vk.Run, func(ctx context.Context) error {
		if err := vk.WaitReady(ctx, 2*time.Minute); err != nil {
			return fmt.Errorf("node %q: %w", c.cfg.NodeName, err)
		}
		return nil
	})(ctx, ready)
}

// nodeSpec is the virtual node as registered.
func (c *connector) nodeSpec() *v1.Node {
	now := metav1.Now()
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	capacity := c.cfg.Capacity.DeepCopy()
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: c.cfg.NodeName,
			Labels: map[string]string{
				"type":                   "virtual-kubelet",
				"kubernetes.io/role":     "agent",
				"kubernetes.io/hostname": c.cfg.NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     goruntime.GOARCH,
				pool.Label:               c.cfg.Pool,
				// A's Services of type LoadBalancer do not send traffic
				// through a node that is not one.
				"node.kubernetes.io/exclude-from-external-load-balancers": "true",
			},
			Annotations: map[string]string{"connect.cci.io/to": c.target()},
		},
		Spec: v1.NodeSpec{Taints: c.taints()},
		Status: v1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			Conditions: []v1.NodeCondition{
				cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "cci connect is serving the node"),
				cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "a virtual node has no memory pressure"),
				cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "a virtual node has no disk pressure"),
				cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "a virtual node has no PID pressure"),
			},
			Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: c.cfg.NodeIP},
				{Type: v1.NodeHostName, Address: c.cfg.NodeName},
			},
			DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(c.cfg.KubeletPort)}},
			NodeInfo: v1.NodeSystemInfo{
				KubeletVersion:          version.KubernetesVersion,
				ContainerRuntimeVersion: "cci-connect://" + version.Version,
				OperatingSystem:         "linux",
				Architecture:            goruntime.GOARCH,
				OSImage:                 "CCI virtual node",
			},
		},
	}
	if !c.cfg.Cell {
		node.Status.Conditions = append(node.Status.Conditions, cond(ConditionQuota, v1.ConditionTrue, "QuotaAvailable", "the tenant's quota has room"))
	}
	return node
}

// target says where the pods run, for the node's annotation and messages.
func (c *connector) target() string {
	if c.cfg.Cell {
		return c.bREST.Host + " (a cell, pool " + c.cfg.Pool + ")"
	}
	return c.bREST.Host + " namespace " + c.bNS
}

// taints are the virtual node's: pods opt in to bursting by tolerating
// Taint; a cell's node is where the front's pods of its pool go anyway,
// with the taint the pool's hosts have.
func (c *connector) taints() []v1.Taint {
	if c.cfg.Cell {
		return pool.SetTaint(nil, c.cfg.Pool)
	}
	return []v1.Taint{Taint, AutoTaint}
}

// kubeletAPI is the kubelet API's TLS and authentication, as the host
// agent's: a serving certificate of its own, A's clients checked against
// the CA of A's kubeconfig and by A's TokenReview and SubjectAccessReview.
func (c *connector) kubeletAPI() (*tls.Config, nodeutil.Auth, error) {
	caPEM := c.aREST.CAData
	if len(caPEM) == 0 && c.aREST.CAFile != "" {
		var err error
		if caPEM, err = os.ReadFile(c.aREST.CAFile); err != nil {
			return nil, nil, fmt.Errorf("the CA of --kubeconfig: %w", err)
		}
	}
	return vknode.KubeletAPI(c.a, c.cfg.NodeName, c.cfg.NodeIP, caPEM)
}

// mirrorEvents records in A, on each pod, the events B records on its copy.
func (c *connector) mirrorEvents(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(c.b, 0, informers.WithNamespace(c.bNS),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "involvedObject.kind=Pod" }))
	inf := f.Core().V1().Events().Informer()
	seen := map[string]int32{}
	handle := func(obj any, initial bool) {
		e, ok := obj.(*v1.Event)
		if !ok {
			return
		}
		if initial {
			// What happened before this connect started was mirrored by
			// the one before (or is history).
			seen[string(e.UID)] = e.Count
			return
		}
		if n, ok := seen[string(e.UID)]; ok && n >= e.Count {
			return
		}
		if e.Reason == "Scheduled" {
			// A's scheduler placed the pod; B's placement names a host
			// of B, which a tenant does not see.
			return
		}
		seen[string(e.UID)] = e.Count
		b, err := c.prov.bPods.Pods(e.InvolvedObject.Namespace).Get(e.InvolvedObject.Name)
		if err != nil {
			return
		}
		a, err := c.prov.aPods.Pods(b.Annotations[AnnotNamespace]).Get(b.Annotations[AnnotName])
		if err != nil || string(a.UID) != b.Labels[LabelPodUID] {
			return
		}
		ref, err := refFor(a, e.InvolvedObject.FieldPath)
		if err != nil {
			return
		}
		c.recorder.Event(ref, e.Type, e.Reason, e.Message)
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if e, ok := obj.(*v1.Event); ok {
				delete(seen, string(e.UID))
			}
		},
	})
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	return nil
}

// refFor is A's pod as an event's object, with the copy's field path (the
// container the event is about).
func refFor(a *v1.Pod, fieldPath string) (*v1.ObjectReference, error) {
	return &v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: a.Namespace, Name: a.Name, UID: a.UID,
		ResourceVersion: a.ResourceVersion, FieldPath: fieldPath}, nil
}

// podAPIAddress is the host and port pods reach A's apiserver at.
func podAPIAddress(given, server, nodeIP string) (string, string) {
	if given != "" {
		server = given
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return "", ""
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	if ip := net.ParseIP(host); given == "" && (host == "localhost" || ip != nil && ip.IsLoopback()) {
		host = nodeIP
	}
	return host, port
}
