// Package serviceproxy runs the upstream Kubernetes service proxy
// (kube-proxy from k8s.io/kubernetes, iptables mode) in the host agent's
// process, so that Service ClusterIPs, NodePorts and load-balancer addresses
// reach their Ready endpoints from every pod and from the host.
//
// Nothing is re-implemented: the proxy is configured by the same versioned
// KubeProxyConfiguration file a kube-proxy DaemonSet reads.
package serviceproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	proxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"
	"sigs.k8s.io/yaml"
)

// minSync is the shortest time between two rewrites of the rules: a new
// Service or endpoint reaches the data path within it, and a burst of pod
// changes costs one rewrite.
const minSync = 250 * time.Millisecond

// Config is what the agent tells the proxy.
type Config struct {
	// NodeName is the agent's node: the proxy reads its pod CIDR and IPs.
	NodeName string
	// Dir receives the proxy's kubeconfig and configuration file.
	Dir string
	// REST is the agent's API client configuration; the proxy uses the same identity.
	REST *rest.Config
	// Mode is "iptables" (default) or "nftables".
	Mode string
	// Name tells this agent's host rules from those of agents of other
	// clusters on the same host (the agent's CNI bridge). In iptables mode
	// the agent refuses Service addresses no Service serves in a table of
	// this name (reject.go); empty: it does not.
	Name string
	// Log receives the messages of what the agent adds to the proxy.
	Log *slog.Logger
}

// Run starts the proxy and returns once it runs; errors it meets later go
// to errs. It must be called after the node is registered with a pod CIDR.
func Run(ctx context.Context, cfg Config, errs chan<- error) error {
	if cfg.Mode == "" {
		cfg.Mode = "iptables"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	kube, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return err
	}
	kubeconfig := filepath.Join(cfg.Dir, "kube-proxy.kubeconfig")
	if err = writeKubeconfig(kubeconfig, cfg.REST); err != nil {
		return fmt.Errorf("service proxy kubeconfig: %w", err)
	}
	var local [2]string
	for i := range local {
		if local[i], err = freeLoopbackAddr(); err != nil {
			return fmt.Errorf("service proxy health and metrics ports: %w", err)
		}
	}
	raw, err := configFile(cfg, kubeconfig, currentOOMScoreAdj(), local[0], local[1])
	if err != nil {
		return err
	}
	path := filepath.Join(cfg.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return err
	}
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse([]string{"--config=" + path}); err != nil {
		return fmt.Errorf("service proxy flags: %w", err)
	}
	if err := opts.Complete(fs); err != nil {
		return fmt.Errorf("service proxy configuration: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("service proxy configuration: %w", err)
	}
	sweepDeletedServices(ctx, kube, cfg.Log)
	// nftables mode refuses them itself.
	switch {
	case cfg.Name == "":
	case cfg.Mode == "iptables":
		if err := refuseUnserved(ctx, kube, cfg.Name, cfg.Log); err != nil {
			// Services still work; only a port no Service serves is not
			// refused. Not worth refusing to run over.
			cfg.Log.Warn("Service addresses that no Service serves are not refused", "err", err)
		}
	default:
		// Left by an earlier start in iptables mode.
		if err := RemoveRejectRules(ctx, cfg.Name); err != nil {
			cfg.Log.Warn("remove the refusal of unserved Service addresses", "err", err)
		}
	}
	go func() {
		// The upstream proxy runs until the process ends; it returns only
		// on a failure.
		err := opts.Run(ctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("stopped")
		}
		if err != nil && ctx.Err() == nil {
			select {
			case errs <- fmt.Errorf("service proxy: %w", err):
			default:
			}
		}
	}()
	return nil
}

// configFile is the proxy's versioned configuration. Local traffic is told
// apart by the node's pod CIDR; health and metrics listen on loopback only
// (the proxy insists on a fixed port, so a free one is picked at each
// start: agents of several clusters may share a host); host sysctls (conntrack table size and timeouts,
// route_localnet) are left as the host has them.
func configFile(cfg Config, kubeconfig string, oomScoreAdj int32, healthz, metrics string) ([]byte, error) {
	zero := int32(0)
	noLocalhostNodePorts := false
	c := proxyv1alpha1.KubeProxyConfiguration{
		TypeMeta:           metav1.TypeMeta{APIVersion: proxyv1alpha1.SchemeGroupVersion.String(), Kind: "KubeProxyConfiguration"},
		HostnameOverride:   cfg.NodeName,
		HealthzBindAddress: healthz,
		MetricsBindAddress: metrics,
		Mode:               proxyv1alpha1.ProxyMode(cfg.Mode),
		DetectLocalMode:    proxyv1alpha1.LocalMode("NodeCIDR"),
		NodePortAddresses:  []string{"primary"},
		OOMScoreAdj:        &oomScoreAdj,
		IPTables: proxyv1alpha1.KubeProxyIPTablesConfiguration{
			LocalhostNodePorts: &noLocalhostNodePorts,
			MinSyncPeriod:      metav1.Duration{Duration: minSync},
		},
		NFTables: proxyv1alpha1.KubeProxyNFTablesConfiguration{
			MinSyncPeriod: metav1.Duration{Duration: minSync},
		},
		Conntrack: proxyv1alpha1.KubeProxyConntrackConfiguration{
			MaxPerCore:            &zero,
			Min:                   &zero,
			TCPEstablishedTimeout: &metav1.Duration{},
			TCPCloseWaitTimeout:   &metav1.Duration{},
		},
	}
	c.ClientConnection.Kubeconfig = kubeconfig
	c.ClientConnection.QPS = 50
	c.ClientConnection.Burst = 100
	return yaml.Marshal(c)
}

// currentOOMScoreAdj keeps the process's OOM score: the proxy would set its
// own default on the whole process otherwise.
func currentOOMScoreAdj() int32 {
	raw, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0
	}
	return int32(v)
}

func writeKubeconfig(path string, rc *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["cci"] = &clientcmdapi.Cluster{
		Server:                   rc.Host,
		CertificateAuthorityData: rc.TLSClientConfig.CAData,
		CertificateAuthority:     rc.TLSClientConfig.CAFile,
	}
	kc.AuthInfos["agent"] = &clientcmdapi.AuthInfo{
		Token:                 rc.BearerToken,
		ClientCertificateData: rc.TLSClientConfig.CertData,
		ClientKeyData:         rc.TLSClientConfig.KeyData,
		ClientCertificate:     rc.TLSClientConfig.CertFile,
		ClientKey:             rc.TLSClientConfig.KeyFile,
	}
	kc.Contexts["cci"] = &clientcmdapi.Context{Cluster: "cci", AuthInfo: "agent"}
	kc.CurrentContext = "cci"
	return clientcmd.WriteToFile(*kc, path)
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
