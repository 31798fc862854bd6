// Package server runs the CCI control plane in one process: an embedded etcd
// (or an external cluster), the upstream kube-apiserver, kube-controller-manager,
// kube-scheduler and metrics-server (the metrics.k8s.io API, behind the
// apiserver's aggregation layer) configured by arguments, the PKI they share,
// the built-in OCI registry and the cluster DNS.
//
// Start order and readiness (the list in components; (bg) marks a
// component the next one does not wait for):
//
//	pki, kubeconfigs ─► etcd (ready notify) ─► registry (listening)
//	    ─► kube-apiserver (/readyz) ─► RBAC for agents ─► RuntimeClasses
//	    ─► StorageClasses, CSIDrivers, access-mode policy (storage.go)
//	    ─► object store (listening), cci-obs provisioner (bg),
//	       cci-sfs file server (bg), cci-sfs provisioner (bg)
//	    ─► load-balancer controller (bg)
//	    ─► Gateway API CRDs, GatewayClass cci ─► gateway controller (bg)
//	    ─► service check (bg)
//	    ─► kube-dns Service, CoreDNS (internal/dns), its EndpointSlice
//	    ─► Tenant CRD ─► isolation controller (bg) ─► endpoint guard (bg)
//	    ─► tenant controller (synced)
//	    ─► admission webhook (registered; tenancy.go)
//	    ─► usage CRD ─► meter (bg), usage endpoint (bg) ─► console (listening)
//	    ─► kube-controller-manager (bg), kube-scheduler (bg)
//	    ─► metrics API (Service, EndpointSlice, APIService, RBAC) ─► metrics-server (bg)
//	    ─► DNS answers for kubernetes.default ─► ready
//
// internal/supervisor runs the list: the first component to fail, or to
// return before shutdown, ends Run; every component then stops in reverse
// order, so etcd closes after everything that uses it.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	cmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/tools/cache"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/cci-project/cci/internal/claimcheck"
	"github.com/cci-project/cci/internal/dns"
	"github.com/cci-project/cci/internal/endpointguard"
	"github.com/cci-project/cci/internal/evs"
	"github.com/cci-project/cci/internal/gateway"
	gatewaycrds "github.com/cci-project/cci/internal/gateway/crds"
	"github.com/cci-project/cci/internal/isolation"
	"github.com/cci-project/cci/internal/loadbalancer"
	"github.com/cci-project/cci/internal/obs"
	"github.com/cci-project/cci/internal/pki"
	"github.com/cci-project/cci/internal/pool"
	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/internal/servicecheck"
	"github.com/cci-project/cci/internal/sfs"
	"github.com/cci-project/cci/internal/snapshot"
	snapshotcrds "github.com/cci-project/cci/internal/snapshot/crds"
	"github.com/cci-project/cci/internal/supervisor"
	"github.com/cci-project/cci/internal/tenant"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
)

// Config is the control plane's configuration. Zero fields take the defaults
// documented on each field (see Default).
type Config struct {
	// DataDir holds etcd data, PKI, the registry's content and logs. Default "./.cci".
	DataDir string `json:"dataDir"`
	// BindAddress is where the apiserver listens. Default "0.0.0.0".
	BindAddress string `json:"bindAddress"`
	// APIPort is the apiserver's HTTPS port. Default 6443.
	APIPort int `json:"apiPort"`
	// AdvertiseAddress is the IP agents and pods use to reach the apiserver.
	// Default: the host's first non-loopback IPv4 address.
	AdvertiseAddress string `json:"advertiseAddress"`
	// EtcdServers, when set, points at an external etcd cluster instead of the embedded member.
	EtcdServers []string `json:"etcdServers"`
	// EtcdClientPort and EtcdPeerPort are the embedded member's loopback ports. Default 2379 and 2380.
	EtcdClientPort int `json:"etcdClientPort"`
	EtcdPeerPort   int `json:"etcdPeerPort"`
	// RegistryAddr is where the built-in OCI registry listens. Default "127.0.0.1:5000".
	RegistryAddr string `json:"registryAddr"`
	// RegistryExtraAddrs are further addresses the registry serves on.
	RegistryExtraAddrs []string `json:"registryExtraAddrs"`
	// RegistryPublic are repositories of the registry everyone may pull,
	// anonymous clients included: names ("library/web") or prefixes
	// ("cci-test/*"). More are added at run time with `cci image public`.
	// Default ["cci-test/*"]: the project's test images.
	RegistryPublic []string `json:"registryPublic"`
	// ServiceCIDR is the Service IP range. Default "10.43.0.0/16".
	ServiceCIDR string `json:"serviceCIDR"`
	// ClusterCIDR is the pod IP range; each node gets a /NodeCIDRMaskSize of it. Default "10.42.0.0/16", 24.
	ClusterCIDR      string `json:"clusterCIDR"`
	NodeCIDRMaskSize int    `json:"nodeCIDRMaskSize"`
	// WebhookAddr is where the admission webhook for tenant pods listens;
	// the apiserver calls it. Default "127.0.0.1:0": loopback, a free port
	// chosen on first start and kept on later ones.
	WebhookAddr string `json:"webhookAddr"`
	// UsagePort is the HTTPS port of the usage endpoint (metering). Default APIPort+1.
	UsagePort int `json:"usagePort"`
	// ConsolePort is the HTTPS port of the web console (internal/console)
	// on BindAddress. Default APIPort+2; negative: no console.
	ConsolePort int `json:"consolePort"`
	// ObjectStorePort is the port of the object store's S3 API (cci-obs)
	// on BindAddress; hosts, pods and S3 clients reach it at
	// http://<AdvertiseAddress>:<port>. Default APIPort+3.
	ObjectStorePort int `json:"objectStorePort"`
	// FileStorePort is the port of the cci-sfs file server (WebDAV) on
	// BindAddress; hosts reach it at AdvertiseAddress. Default APIPort+4.
	FileStorePort int `json:"fileStorePort"`
	// PriceTable is a YAML or JSON file of prices (see metering.Prices). Default: built-in prices.
	PriceTable string `json:"priceTable"`
	// MetricsPort is the metrics API's (the embedded metrics-server's) HTTPS
	// port on AdvertiseAddress. Default 0: a free port, picked at each start
	// and published in the EndpointSlice of kube-system/metrics-server.
	MetricsPort int `json:"metricsPort"`
	// LBPool is the addresses (IPs or prefixes) the load-balancer controller
	// gives Services of type LoadBalancer; one address serves many Services
	// on different ports. Default: AdvertiseAddress.
	LBPool []string `json:"lbPool"`
	// DNSAddress is IP:port where the cluster DNS server (embedded CoreDNS)
	// listens, UDP and TCP; pods reach it through the kube-dns Service,
	// whose endpoint it is. Port 0 picks a free port at each start.
	// Default "<AdvertiseAddress>:53".
	DNSAddress string `json:"dnsAddress"`
	// FlannelBackend is the overlay between hosts: "vxlan" (default),
	// "host-gw" (hosts on one L2 segment: plain routes), "wireguard-native"
	// (encrypted) or "none" (one host, or a fabric that routes pod CIDRs).
	FlannelBackend string `json:"flannelBackend"`
	// VXLANVNI and VXLANPort are the VXLAN backend's network identifier and
	// UDP port. Default 0: flannel's (VNI 1, port 8472). Clusters whose hosts
	// share a network namespace need different VNIs.
	VXLANVNI  int `json:"vxlanVNI"`
	VXLANPort int `json:"vxlanPort"`
	// UnreachableTolerationSeconds is how long a pod stays bound to a host
	// that is NotReady or unreachable before it is evicted and its
	// controller makes a replacement elsewhere: the apiserver's
	// DefaultTolerationSeconds admission gives every pod that names none
	// these tolerations. With the node monitor's grace period (about 40 s
	// to notice a silent host) a replacement comes within about a minute
	// and a quarter. Default 30 (upstream's is 300).
	UnreachableTolerationSeconds int `json:"unreachableTolerationSeconds"`
	// Log receives the server's own progress messages. Default: slog's default logger.
	Log *slog.Logger `json:"-"`
	// ComponentLog receives the upstream components' logs (etcd, registry). Default: <DataDir>/logs/.
	ComponentLog io.Writer `json:"-"`
}

// Default fills unset fields.
func (c *Config) Default() {
	if c.DataDir == "" {
		c.DataDir = ".cci"
	}
	if c.BindAddress == "" {
		c.BindAddress = "0.0.0.0"
	}
	if c.APIPort == 0 {
		c.APIPort = 6443
	}
	if c.AdvertiseAddress == "" {
		c.AdvertiseAddress = HostIP()
	}
	if c.EtcdClientPort == 0 {
		c.EtcdClientPort = 2379
	}
	if c.EtcdPeerPort == 0 {
		c.EtcdPeerPort = 2380
	}
	if c.RegistryAddr == "" {
		c.RegistryAddr = "127.0.0.1:5000"
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = "10.43.0.0/16"
	}
	if c.ClusterCIDR == "" {
		c.ClusterCIDR = "10.42.0.0/16"
	}
	if c.NodeCIDRMaskSize == 0 {
		c.NodeCIDRMaskSize = 24
	}
	if c.WebhookAddr == "" {
		c.WebhookAddr = "127.0.0.1:0"
	}
	if c.UsagePort == 0 {
		c.UsagePort = c.APIPort + 1
	}
	if c.ConsolePort == 0 {
		c.ConsolePort = c.APIPort + 2
	}
	if c.ObjectStorePort == 0 {
		c.ObjectStorePort = c.APIPort + 3
	}
	if c.FileStorePort == 0 {
		c.FileStorePort = c.APIPort + 4
	}
	// The object store changes the process's working directory
	// (obs.Open): every path must be absolute before it starts.
	if c.PriceTable != "" {
		if abs, err := filepath.Abs(c.PriceTable); err == nil {
			c.PriceTable = abs
		}
	}
	if len(c.LBPool) == 0 {
		c.LBPool = []string{c.AdvertiseAddress}
	}
	if c.DNSAddress == "" {
		c.DNSAddress = net.JoinHostPort(c.AdvertiseAddress, "53")
	}
	if c.FlannelBackend == "" {
		c.FlannelBackend = "vxlan"
	}
	if c.RegistryPublic == nil {
		c.RegistryPublic = []string{"cci-test/*"}
	}
	if c.UnreachableTolerationSeconds == 0 {
		c.UnreachableTolerationSeconds = 30
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Info is what a started control plane tells its callers.
type Info struct {
	// APIServerURL is the HTTPS address of the apiserver, reachable from this host.
	APIServerURL string
	// AdminKubeconfig is the path of the admin kubeconfig.
	AdminKubeconfig string
	// RegistryAddr is host:port of the built-in registry.
	RegistryAddr string
	// UsageURL is the HTTPS address of the usage endpoint.
	UsageURL string
	// ConsoleURL is the web console's address; empty when it is off.
	ConsoleURL string
	// DNSAddress is IP:port of the cluster DNS server.
	DNSAddress string
	// Token is the join token for agents.
	Token string
	// PKI holds every credential path.
	PKI *pki.PKI
}

// Run starts the control plane, calls ready once every component answers,
// and blocks until ctx ends or a component fails.
func Run(ctx context.Context, cfg Config, ready func(*Info)) error {
	cfg.Default()
	cp, err := newControlPlane(cfg)
	if err != nil {
		return err
	}
	return supervisor.Run(ctx, supervisor.Config{
		Log:         cfg.Log,
		StopTimeout: 15 * time.Second,
		Ready: func() {
			if ready != nil {
				ready(cp.info)
			}
		},
	}, cp.components()...)
}

// components is the control plane, in start order; it stops in reverse
// order, so etcd closes after everything that uses it. A Service holds
// the next one back until it is ready, a Background component does not,
// a Step is done once.
func (cp *controlPlane) components() []supervisor.Component {
	var list []supervisor.Component
	if len(cp.cfg.EtcdServers) == 0 {
		list = append(list, supervisor.Service("etcd", cp.runEtcd))
	}
	list = append(list,
		supervisor.Service("registry", cp.runRegistry),
		supervisor.Service("kube-apiserver", supervisor.Probed(cp.runAPIServer, cp.apiServerReady)),
		supervisor.Step("agent RBAC", func(ctx context.Context) error { return ensureAgentRBAC(ctx, cp.admin) }),
		supervisor.Step("class reader RBAC", func(ctx context.Context) error { return ensureClassReaderRBAC(ctx, cp.admin) }),
		supervisor.Step("runtime classes", func(ctx context.Context) error { return ensureRuntimeClasses(ctx, cp.admin) }),
		supervisor.Step("storage classes", func(ctx context.Context) error { return ensureStorage(ctx, cp.admin) }),
		supervisor.Service("object store", supervisor.Probed(cp.obs.Run, cp.obs.Ready)),
		supervisor.Background("cci-obs provisioner", func(ctx context.Context) error {
			return obs.Run(ctx, cp.admin, cp.obs, cp.log.With("component", "obs"))
		}),
		supervisor.Background("cci-sfs file server", cp.sfs.Run),
		supervisor.Background("cci-sfs provisioner", func(ctx context.Context) error { return sfs.Run(ctx, cp.admin, cp.sfs) }),
		supervisor.Step("network settings", func(ctx context.Context) error { return ensureNetworkConfig(ctx, cp.admin, cp.cfg) }),
		// One worker: an address's ports are checked and taken in one step.
		supervisor.Background("load-balancer controller", func(ctx context.Context) error {
			return loadbalancer.New(cp.admin, loadbalancer.Config{Pool: cp.lbPool, Log: cp.log.With("component", "elb")}).Run(ctx, 1)
		}),
		// Gateway API: the standard CRDs, GatewayClass cci, and the
		// controller whose gateways take addresses from the same pool.
		supervisor.Step("gateway API", cp.installGatewayAPI),
		supervisor.Background("gateway controller", func(ctx context.Context) error {
			return gateway.NewController(cp.admin, cp.gatewayClient, cp.gateway, cp.log.With("component", "gateway")).Run(ctx)
		}),
		supervisor.Background("claim check", func(ctx context.Context) error {
			return claimcheck.New(cp.admin, cp.log.With("component", "claim-check")).Run(ctx)
		}),
		// VolumeSnapshots of cci-evs disks: the upstream CRDs, the default
		// VolumeSnapshotClass and the snapshot-controller; the snapshots
		// themselves are taken by the agent of each disk's host.
		supervisor.Step("snapshot API", cp.installSnapshotAPI),
		supervisor.Background("snapshot controller", func(ctx context.Context) error {
			return snapshot.RunController(ctx, cp.admin, cp.snapClient)
		}),
		supervisor.Background("service check", func(ctx context.Context) error {
			return servicecheck.New(cp.admin, cp.log.With("component", "service-check")).Run(ctx)
		}),
		// Right after the apiserver, so that no other Service is given the DNS address.
		supervisor.Service("dns", cp.runDNS),
		// Admission learns from it which pools have hosts.
		supervisor.Service("pool controller", supervisor.Probed(
			func(ctx context.Context) error { return cp.pools.Run(ctx) },
			func(ctx context.Context) error {
				if !cache.WaitForCacheSync(ctx.Done(), cp.pools.Synced) {
					return ctx.Err()
				}
				return nil
			})),
		supervisor.Step("tenant API", func(ctx context.Context) error { return tenant.InstallCRD(ctx, cp.rest) }),
		supervisor.Background("isolation controller", func(ctx context.Context) error {
			return isolation.NewController(cp.admin, cp.log).Run(ctx, 2)
		}),
		supervisor.Background("endpoint guard", func(ctx context.Context) error {
			return endpointguard.NewController(cp.admin, cp.log).Run(ctx, 1)
		}),
		supervisor.Service("tenant controller", cp.runTenantController),
		supervisor.Service("admission webhook", cp.runWebhook),
		supervisor.Step("usage API", cp.setupMetering),
		supervisor.Background("metering", func(ctx context.Context) error { return cp.metering.meter.Run(ctx) }),
		supervisor.Background("usage endpoint", func(ctx context.Context) error {
			return cp.metering.meter.Serve(ctx, cp.metering.endpoint)
		}),
		supervisor.Service("console", cp.runConsole),
		supervisor.Background("kube-controller-manager", cp.runControllerManager),
		supervisor.Background("kube-scheduler", cp.runScheduler),
	)
	// metrics.k8s.io, through the aggregation layer.
	if routable(cp.cfg.AdvertiseAddress) {
		list = append(list,
			supervisor.Step("metrics API", cp.registerMetricsAPI),
			supervisor.Background("metrics-server", func(ctx context.Context) error {
				return runMetricsServer(ctx, metricsServerArgs(cp.pki, filepath.Join(cp.pki.Dir, "metrics-server.kubeconfig"), cp.cfg.AdvertiseAddress, cp.metricsPort))
			}),
		)
	} else {
		cp.log.Warn("metrics API disabled: the advertise address cannot be a Service endpoint; set --advertise-address", "address", cp.cfg.AdvertiseAddress)
	}
	return append(list, supervisor.Step("cluster DNS answers", cp.dnsAnswers))
}

// controlPlane is what the components of one Run share: the configuration,
// the credentials and clients made before any of them starts, and what an
// earlier component hands the later ones (set before it calls ready or,
// for a step, returns; the supervisor starts the next one after that).
type controlPlane struct {
	cfg         Config
	log         *slog.Logger
	dataDir     string
	logDir      string
	hostname    string
	pki         *pki.PKI
	info        *Info
	etcdServers []string
	lbPool      []netip.Addr
	// rest and admin reach the apiserver as the cluster admin.
	rest  *rest.Config
	admin kubernetes.Interface

	// registryAuth is the registry's access check; it learns the tenants
	// once the tenant controller runs.
	registryAuth *registry.Auth
	dns          *dns.Server        // by "dns"
	tenants      *tenant.Controller // by "tenant controller"
	metering     *meteringParts     // by "usage API"
	pools        *pool.Controller
	obs          *obs.Store  // the object store of cci-obs
	sfs          *sfs.Server // the file server of cci-sfs
	metricsPort  int         // by "metrics API"
	// gateway is the Gateway API data plane (the HTTP proxy), whose
	// metrics the control plane serves.
	gateway       *gateway.Dataplane
	gatewayClient gatewayclient.Interface
	snapClient    snapclient.Interface
}

// newControlPlane checks the configuration, makes or loads the PKI and
// writes the components' kubeconfigs: what every component needs and
// nothing that runs.
func newControlPlane(cfg Config) (*controlPlane, error) {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data folder %q: %w", cfg.DataDir, err)
	}
	cp := &controlPlane{cfg: cfg, log: cfg.Log, dataDir: dataDir, logDir: filepath.Join(dataDir, "logs")}
	if err := os.MkdirAll(cp.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("create log folder: %w", err)
	}
	_, serviceNet, err := net.ParseCIDR(cfg.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q: %w", cfg.ServiceCIDR, err)
	}
	serviceIP := make(net.IP, len(serviceNet.IP.To4()))
	copy(serviceIP, serviceNet.IP.To4())
	serviceIP[3]++
	if cp.lbPool, err = loadbalancer.ParsePool(cfg.LBPool); err != nil {
		return nil, err
	}

	cp.hostname, _ = os.Hostname()
	p, err := pki.Ensure(filepath.Join(dataDir, "pki"), pki.Options{
		Hosts:     []string{cfg.AdvertiseAddress, cp.hostname},
		ServiceIP: serviceIP,
	})
	if err != nil {
		return nil, err
	}
	cp.pki = p
	apiURL := "https://127.0.0.1:" + strconv.Itoa(cfg.APIPort)
	cp.info = &Info{
		APIServerURL:    apiURL,
		AdminKubeconfig: filepath.Join(dataDir, "admin.kubeconfig"),
		Token:           p.Token,
		PKI:             p,
	}
	kubeconfigs := map[string][2]string{
		cp.info.AdminKubeconfig:                               {p.AdminCert, p.AdminKey},
		filepath.Join(p.Dir, "controller-manager.kubeconfig"): {p.ControllerCert, p.ControllerKey},
		filepath.Join(p.Dir, "scheduler.kubeconfig"):          {p.SchedulerCert, p.SchedulerKey},
		filepath.Join(p.Dir, "metrics-server.kubeconfig"):     {p.MetricsClientCert, p.MetricsClientKey},
		filepath.Join(p.Dir, "coredns.kubeconfig"):            {p.DNSClientCert, p.DNSClientKey},
	}
	for path, pair := range kubeconfigs {
		if err := p.WriteKubeconfig(path, apiURL, pair[0], pair[1]); err != nil {
			return nil, err
		}
	}
	// Clients connect on their first request, not here.
	if cp.rest, err = clientcmd.BuildConfigFromFlags("", cp.info.AdminKubeconfig); err != nil {
		return nil, fmt.Errorf("load kubeconfig %q: %w", cp.info.AdminKubeconfig, err)
	}
	if cp.admin, err = kubernetes.NewForConfig(cp.rest); err != nil {
		return nil, err
	}
	cp.pools = pool.NewController(cp.admin, cp.log.With("component", "pools"))
	if cp.gatewayClient, err = gatewayclient.NewForConfig(cp.rest); err != nil {
		return nil, err
	}
	if cp.snapClient, err = snapclient.NewForConfig(cp.rest); err != nil {
		return nil, err
	}
	access, err := os.OpenFile(filepath.Join(cp.logDir, "gateway-access.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("gateway access log: %w", err)
	}
	// The proxy listens on the advertise address: the address every
	// host's service proxy reaches the control plane at.
	cp.gateway = gateway.NewDataplane(cfg.AdvertiseAddress, cp.log.With("component", "gateway"), slog.New(slog.NewJSONHandler(access, nil)))
	keys, err := registry.LoadKeys(registry.AuthDir(dataDir))
	if err != nil {
		return nil, err
	}
	public, err := registry.NewPublic(registry.AuthDir(dataDir), cfg.RegistryPublic)
	if err != nil {
		return nil, fmt.Errorf("--registry-public: %w", err)
	}
	cp.registryAuth = &registry.Auth{Keys: keys, Public: public, NodeToken: p.Token}
	storeAddr := net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.ObjectStorePort))
	storeURL := "http://" + net.JoinHostPort(cfg.AdvertiseAddress, strconv.Itoa(cfg.ObjectStorePort))
	if cp.obs, err = obs.Open(filepath.Join(dataDir, "obs"), storeAddr, storeURL); err != nil {
		return nil, err
	}
	cp.sfs = &sfs.Server{
		Pool:     &evs.Pool{Dir: filepath.Join(dataDir, "sfs")},
		Store:    cp.obs,
		Listen:   net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.FileStorePort)),
		Endpoint: "http://" + net.JoinHostPort(cfg.AdvertiseAddress, strconv.Itoa(cfg.FileStorePort)),
		Log:      cp.log.With("component", "sfs"),
	}
	cp.etcdServers = cfg.EtcdServers
	if len(cp.etcdServers) == 0 {
		cp.etcdServers = []string{fmt.Sprintf("http://127.0.0.1:%d", cfg.EtcdClientPort)}
	}
	return cp, nil
}

// runEtcd runs the embedded etcd member; it is ready once it serves.
func (cp *controlPlane) runEtcd(ctx context.Context, ready func()) error {
	e, err := startEtcd(cp.dataDir, cp.cfg.EtcdClientPort, cp.cfg.EtcdPeerPort, filepath.Join(cp.logDir, "etcd.log"))
	if err != nil {
		return err
	}
	defer e.Close()
	cp.log.Info("etcd ready", "data", filepath.Join(cp.dataDir, "etcd"))
	ready()
	select {
	case err := <-e.Err():
		return err
	case <-ctx.Done():
		return nil
	}
}

// registryHosts are the host:port names images of the built-in registry
// are spelled with: its addresses, as pull secrets and Docker configs key
// credentials by them.
func (cp *controlPlane) registryHosts() []string {
	hosts := []string{cp.cfg.RegistryAddr}
	if cp.info.RegistryAddr != "" && cp.info.RegistryAddr != cp.cfg.RegistryAddr {
		hosts = append(hosts, cp.info.RegistryAddr)
	}
	return append(hosts, cp.cfg.RegistryExtraAddrs...)
}

// runRegistry runs the built-in registry; it is ready once it listens.
func (cp *controlPlane) runRegistry(ctx context.Context, ready func()) error {
	regLog, err := os.OpenFile(filepath.Join(cp.logDir, "registry.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer regLog.Close()
	reg, err := registry.New(ctx, registry.Config{Addr: cp.cfg.RegistryAddr, ExtraAddrs: cp.cfg.RegistryExtraAddrs, RootDir: filepath.Join(cp.dataDir, "registry"), Log: regLog, Auth: cp.registryAuth})
	if err != nil {
		return err
	}
	cp.info.RegistryAddr = reg.Addr()
	// The operator's credentials, for `cci image`, crane, skopeo and podman.
	if err := cp.registryAuth.Keys.WriteOperatorConfig(registry.AuthDir(cp.dataDir), cp.registryHosts()); err != nil {
		return err
	}
	ready()
	return reg.Run(ctx)
}

func (cp *controlPlane) runAPIServer(ctx context.Context) error {
	p, cfg := cp.pki, cp.cfg
	args := []string{
		"--etcd-servers=" + join(cp.etcdServers),
		"--bind-address=" + cfg.BindAddress,
		"--secure-port=" + strconv.Itoa(cfg.APIPort),
		"--advertise-address=" + cfg.AdvertiseAddress,
		"--tls-cert-file=" + p.APIServerCert,
		"--tls-private-key-file=" + p.APIServerKey,
		"--client-ca-file=" + p.CACert,
		"--service-account-key-file=" + p.ServiceAccountPub,
		"--service-account-signing-key-file=" + p.ServiceAccountKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=" + cfg.ServiceCIDR,
		"--kubelet-client-certificate=" + p.KubeletClientCert,
		"--kubelet-client-key=" + p.KubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--token-auth-file=" + p.TokenAuthFile,
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(p.Dir, "apiserver-generated"),
		// Once the in-flight requests drained, close the watches within 2 s
		// instead of waiting out the request timeout (60 s) for clients
		// that never stop watching, such as the service proxy of an agent
		// in the same process (the upstream proxy has no stop).
		"--shutdown-send-retry-after=true",
		"--default-not-ready-toleration-seconds=" + strconv.Itoa(cfg.UnreachableTolerationSeconds),
		"--default-unreachable-toleration-seconds=" + strconv.Itoa(cfg.UnreachableTolerationSeconds),
		// A DeleteCollection (kubectl delete pods --all, a namespace's
		// deletion, a Job's clean-up) deletes its objects with this many
		// workers; upstream's default of 1 takes one etcd round trip per
		// object in turn, so a few hundred pods on a busy host outlast the
		// 60 s request timeout and the request fails part done.
		"--delete-collection-workers=16",
	}
	return runAPIServer(ctx, append(args, aggregationArgs(p)...))
}

// apiServerReady waits for the apiserver's /readyz.
func (cp *controlPlane) apiServerReady(ctx context.Context) error {
	if err := waitReady(ctx, cp.admin); err != nil {
		return err
	}
	cp.log.Info("kube-apiserver ready", "url", cp.info.APIServerURL)
	return nil
}

func (cp *controlPlane) setupMetering(ctx context.Context) error {
	mp, err := setupMetering(ctx, &cp.cfg, cp.pki, cp.info.AdminKubeconfig, []string{"localhost", "127.0.0.1", cp.cfg.AdvertiseAddress, cp.hostname})
	if err != nil {
		return err
	}
	// The control plane's own Prometheus metrics (the pools' figures) are
	// served beside the usage reports, with the same authentication: the
	// apiserver's /metrics is upstream's, and metrics-server serves the
	// metrics API, not Prometheus text.
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(pool.NewCollector(cp.pools.Summaries))
	promReg.MustRegister(cp.gateway.Collectors()...)
	mp.endpoint.Metrics = promhttp.HandlerFor(promReg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(cp.log.Handler(), slog.LevelWarn)})
	cp.metering = mp
	cp.info.UsageURL = mp.url
	return nil
}

// installGatewayAPI installs the Gateway API CRDs and GatewayClass cci.
func (cp *controlPlane) installGatewayAPI(ctx context.Context) error {
	if err := gatewaycrds.Install(ctx, cp.rest); err != nil {
		return err
	}
	return gateway.EnsureClass(ctx, cp.admin, cp.gatewayClient)
}

// installSnapshotAPI installs the VolumeSnapshot CRDs and the default
// VolumeSnapshotClass cci-evs and the admission policy of contents.
func (cp *controlPlane) installSnapshotAPI(ctx context.Context) error {
	if err := snapshotcrds.Install(ctx, cp.rest); err != nil {
		return err
	}
	return snapshot.EnsureAPI(ctx, cp.admin, cp.snapClient)
}

func (cp *controlPlane) runControllerManager(ctx context.Context) error {
	p, cfg := cp.pki, cp.cfg
	kubeconfig := filepath.Join(p.Dir, "controller-manager.kubeconfig")
	return runControllerManager(ctx, []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.ServiceAccountKey,
		"--root-ca-file=" + p.CACert,
		"--cluster-signing-cert-file=" + p.CACert,
		"--cluster-signing-key-file=" + p.CAKey,
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + cfg.ClusterCIDR,
		"--node-cidr-mask-size=" + strconv.Itoa(cfg.NodeCIDRMaskSize),
		"--service-cluster-ip-range=" + cfg.ServiceCIDR,
		// A host that dies (agent and containerd gone) is NotReady within
		// 40 s: agents renew their node Lease every 10 s (virtual-kubelet's
		// 40 s lease, renewed at a quarter of it), the node lifecycle
		// controller looks every 2 s and gives up on a node whose lease it
		// has not seen renewed for 25 s: at most 2 + 25 + 2 s after the
		// last renewal. Two renewals may fail in a row before a live host
		// flaps. The defaults (5 s, 50 s) took up to a minute.
		"--node-monitor-period=2s",
		"--node-monitor-grace-period=25s",
		// The HPA acts on usage at most metricsResolution old; the default
		// 15 s sync adds up to 15 s more before it reacts.
		"--horizontal-pod-autoscaler-sync-period=5s",
		// The default 20 requests/s held pod creation of a 200-pod burst
		// for about 9 s (BENCHMARKS.md).
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--profiling=false",
	})
}

func (cp *controlPlane) runScheduler(ctx context.Context) error {
	kubeconfig := filepath.Join(cp.pki.Dir, "scheduler.kubeconfig")
	schedConfig := filepath.Join(cp.pki.Dir, "scheduler-config.yaml")
	if err := os.WriteFile(schedConfig, schedulerConfig(kubeconfig), 0o600); err != nil {
		return fmt.Errorf("write the scheduler's configuration: %w", err)
	}
	return runScheduler(ctx, []string{
		"--config=" + schedConfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--secure-port=0",
	})
}

// registerMetricsAPI publishes metrics-server's Service, endpoint,
// APIService and RBAC before it runs.
func (cp *controlPlane) registerMetricsAPI(ctx context.Context) error {
	port := cp.cfg.MetricsPort
	if port == 0 {
		var err error
		if port, err = freePort(cp.cfg.AdvertiseAddress); err != nil {
			return err
		}
	}
	agg, err := aggregatorFor(cp.info.AdminKubeconfig)
	if err != nil {
		return err
	}
	if err := ensureMetricsAPI(ctx, cp.admin, agg, cp.pki.CACert, cp.cfg.AdvertiseAddress, port); err != nil {
		return err
	}
	cp.metricsPort = port
	cp.log.Info("metrics API registered", "endpoint", net.JoinHostPort(cp.cfg.AdvertiseAddress, strconv.Itoa(port)))
	return nil
}

// dnsAnswers waits until the cluster DNS answers for kubernetes.default:
// the last thing the control plane waits for before it is ready.
func (cp *controlPlane) dnsAnswers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := cp.dns.WaitReady(ctx); err != nil {
		return err
	}
	cp.log.Info("cluster DNS ready", "address", cp.dns.Addr())
	return nil
}

func join(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// RunEtcd runs the control plane's etcd member on its own, as `cci server`
// embeds it (data in <dataDir>/etcd, plain HTTP on loopback), until ctx
// ends: for a `cci server --etcd-servers http://127.0.0.1:PORT` whose etcd
// should be a process of its own, for example to see its CPU and memory
// apart from the apiserver's. ready is called once it serves.
func RunEtcd(ctx context.Context, dataDir string, clientPort, peerPort int, ready func(clientURL string)) error {
	logDir := filepath.Join(dataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	e, err := startEtcd(dataDir, clientPort, peerPort, filepath.Join(logDir, "etcd.log"))
	if err != nil {
		return err
	}
	defer e.Close()
	if ready != nil {
		ready(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-ctx.Done():
		return nil
	}
}

func startEtcd(dataDir string, clientPort, peerPort int, logPath string) (*embed.Etcd, error) {
	ec := embed.NewConfig()
	ec.Name = "cci"
	ec.Dir = filepath.Join(dataDir, "etcd")
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = fmt.Sprintf("%s=%s", ec.Name, peerURL.String())
	ec.LogOutputs = []string{logPath}
	ec.LogLevel = "warn"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %q (is another etcd using ports %d/%d?): %w", ec.Dir, clientPort, peerPort, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd did not become ready in 60 s")
	}
}

// runAPIServer runs the upstream kube-apiserver with args until ctx ends.
// It uses the command's option set directly rather than its cobra command,
// whose constructor installs a process-wide signal handler.
func runAPIServer(ctx context.Context, args []string) error {
	s := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	return apiserver.Run(ctx, completed)
}

func runControllerManager(ctx context.Context, args []string) error {
	s, err := cmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	named := s.Flags(controllermanager.KnownControllers(), controllermanager.ControllersDisabledByDefault(), controllermanager.ControllerAliases())
	s.ParsedFlags = &named
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range named.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	c, err := s.Config(ctx, controllermanager.KnownControllers(), controllermanager.ControllersDisabledByDefault(), controllermanager.ControllerAliases())
	if err != nil {
		return err
	}
	return controllermanager.Run(ctx, c.Complete())
}

// schedulerConfig is kube-scheduler's configuration: no leader election
// (one scheduler per control plane), and tuned for binding many pods fast
// on a large fleet:
//   - client QPS 500 (burst 1000): the default 50 requests/s capped binding
//     at 51 pods/s (BENCHMARKS.md);
//   - percentageOfNodesToScore 10: a pod is placed among the first 10% of
//     the feasible hosts found (at least 100; all of them on a fleet of 100
//     or fewer) instead of the adaptive default (42% of 1,000 hosts). The
//     search starts where the last one stopped, so pods still spread over
//     the whole fleet; the filter and score work per pod shrinks fourfold
//     on 1,000 hosts;
//   - the pods of one workload spread over hosts, as a serverless cloud
//     spreads them over failure domains, so that one host going down takes
//     few replicas of each: PodTopologySpread's default constraint (for
//     pods that name none and belong to a Service, ReplicaSet,
//     StatefulSet …) is maxSkew 1 by kubernetes.io/hostname, instead of
//     upstream's maxSkew 3 by host and 5 by zone (hosts have no zone label
//     here, and with an explicit list a host without the key scores as
//     unfit). It is ScheduleAnyway, a score and not a filter: the spread
//     score (weight 2, 0 or 100 between a host with one more replica and
//     one with one fewer) outweighs the resource scores' few points, so 6
//     replicas on 3 equal Ready hosts land 2/2/2; yet a host that cannot
//     take the pod (NotReady or unreachable: tainted NoSchedule; cordoned;
//     full; another pool) never holds the others back, as a
//     DoNotSchedule constraint would when that host has the fewest
//     replicas (nodeTaintsPolicy Honor leaves out tainted hosts, but not
//     full ones).
func schedulerConfig(kubeconfig string) []byte {
	return []byte(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: ` + strconv.Quote(kubeconfig) + `
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
enableProfiling: false
percentageOfNodesToScore: 10
profiles:
- schedulerName: default-scheduler
  pluginConfig:
  - name: PodTopologySpread
    args:
      defaultingType: List
      defaultConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
`)
}

func runScheduler(ctx context.Context, args []string) error {
	opts := scheduleroptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	cc, sched, err := scheduler.Setup(ctx, opts)
	if err != nil {
		return err
	}
	return scheduler.Run(ctx, cc, sched)
}

// waitReady polls the apiserver's /readyz until it answers ok or two
// minutes pass.
func waitReady(ctx context.Context, c kubernetes.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = fmt.Errorf("%w: %s", err, body)
			return false, nil
		}
		return true, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last answer from /readyz: %v)", err, last)
	}
	return err
}

// AgentClusterRole is what host agents may do: run their node and its pods.
const AgentClusterRole = "cci:agent"

func ensureAgentRBAC(ctx context.Context, c kubernetes.Interface) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: AgentClusterRole},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"get", "update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"get", "update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets", "services", "endpoints", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, Verbs: []string{"create"}},
			// podCertificate projections name the pod's service account
			// (by UID) in their requests, and clusterTrustBundle
			// projections read the bundles: what the node authorizer
			// grants a kubelet.
			{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get"}},
			{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"podcertificaterequests"}, Verbs: []string{"create", "get", "list", "watch"}},
			{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"clustertrustbundles"}, Verbs: []string{"get", "list", "watch"}},
			// Reading events: an agent whose node gets no pod CIDR looks
			// for the controller-manager's CIDRNotAvailable on it.
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "update", "patch", "get", "list"}},
			{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "update", "patch"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}},
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{"node.k8s.io"}, Resources: []string{"runtimeclasses"}, Verbs: []string{"get", "list", "watch"}},
			// cci-evs: each agent provisions, grows and removes the disks
			// of its own host (internal/evs), as the CSI external-provisioner
			// and external-resizer do in their per-node deployment.
			{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims/status"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"}, Verbs: []string{"get", "list", "watch"}},
			// cci-evs snapshots: each agent takes and removes the
			// snapshots of its own host's disks (the CSI snapshotter
			// sidecar's rights, in its per-node deployment) and reads
			// the VolumeSnapshots that claims are restored from.
			{APIGroups: []string{"snapshot.storage.k8s.io"}, Resources: []string{"volumesnapshotclasses", "volumesnapshots"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"snapshot.storage.k8s.io"}, Resources: []string{"volumesnapshotcontents"}, Verbs: []string{"get", "list", "watch", "update", "patch"}},
			{APIGroups: []string{"snapshot.storage.k8s.io"}, Resources: []string{"volumesnapshotcontents/status"}, Verbs: []string{"update", "patch"}},
			// The service proxy.
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"servicecidrs"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: AgentClusterRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: AgentClusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: pki.AgentGroup}},
	}
	return applyClusterRole(ctx, c, role, binding)
}

// RuntimeClasses every cluster has: the handlers every agent serves.
var runtimeClasses = []*nodev1.RuntimeClass{
	// runc: each container in its own runc container; the default for pods
	// without a runtimeClassName.
	{ObjectMeta: metav1.ObjectMeta{Name: "runc"}, Handler: "runc"},
	// gvisor: the whole pod in one gVisor (runsc) sandbox.
	{ObjectMeta: metav1.ObjectMeta{Name: "gvisor"}, Handler: "gvisor"},
}

// ensureRuntimeClasses creates the RuntimeClasses a fresh cluster has; ones
// that exist are left as they are (an admin may have added scheduling or
// overhead to them).
func ensureRuntimeClasses(ctx context.Context, c kubernetes.Interface) error {
	for _, rc := range runtimeClasses {
		if _, err := c.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create RuntimeClass %q: %w", rc.Name, err)
		}
	}
	return nil
}

// HostIP returns the host's first non-loopback IPv4 address, or 127.0.0.1.
func HostIP() string {
	// The address the kernel would use for outside traffic is the best guess;
	// no packet is sent by a UDP "connect".
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		defer c.Close()
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsLoopback() {
			return a.IP.String()
		}
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}
