// Package serviceproxy runs the upstream Kubernetes service proxy
// (kube-proxy from k8s.io/kubernetes, iptables or nftables mode) beside the
// host agent, as a child process the agent keeps running, so that Service ClusterIPs, NodePorts and load-balancer addresses
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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	// Binary is the cci binary that runs the proxy (`cci kube-proxy`);
	// empty: this process's own.
	Binary string
	// LogFile receives the proxy process's output; empty: kube-proxy.log
	// in Dir.
	LogFile string
}

// Run starts the proxy and returns once it runs. The proxy is a process of
// its own (`cci kube-proxy`, the upstream command's code): the upstream
// proxy ends its process on purpose when the node is deleted or its pod
// CIDR or addresses change, expecting to be started again, and would take
// the agent (and with `cci up` the control plane) down with it. Run starts
// it again after each exit, with back-off, until ctx ends; the proxy dies
// with the agent's process. Its output goes to cfg.LogFile. It must be
// called after the node is registered with a pod CIDR. The returned channel
// closes once the proxy stopped after ctx ended.
func Run(ctx context.Context, cfg Config) (<-chan struct{}, error) {
	if cfg.Mode == "" {
		cfg.Mode = "iptables"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("service proxy: find the cci binary: %w", err)
		}
		cfg.Binary = exe
	}
	if cfg.LogFile == "" {
		cfg.LogFile = filepath.Join(cfg.Dir, "kube-proxy.log")
	}
	kube, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(cfg.Dir, "kube-proxy.kubeconfig")
	if err = writeKubeconfig(kubeconfig, cfg.REST); err != nil {
		return nil, fmt.Errorf("service proxy kubeconfig: %w", err)
	}
	path := filepath.Join(cfg.Dir, "kube-proxy.yaml")
	if err := writeConfig(cfg, kubeconfig, path); err != nil {
		return nil, err
	}
	// Checked here, so that a bad configuration is the agent's error and
	// not a restart loop.
	if _, err := proxyOptions(path); err != nil {
		return nil, err
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
	pidFile := filepath.Join(cfg.Dir, "kube-proxy.pid")
	stopLeftover(pidFile, cfg.Binary, cfg.Log)
	p, err := startProcess(cfg, path, pidFile)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		supervise(ctx, cfg, path, pidFile, p)
	}()
	return done, nil
}

// supervise waits for the proxy process and starts it again until ctx
// ends, then stops it.
func supervise(ctx context.Context, cfg Config, path, pidFile string, p *process) {
	backoff := time.Second
	for {
		began := time.Now()
		select {
		case <-ctx.Done():
			p.stop(10 * time.Second)
			_ = os.Remove(pidFile)
			return
		case err := <-p.done:
			if ctx.Err() != nil {
				_ = os.Remove(pidFile)
				return
			}
			if time.Since(began) > time.Minute {
				backoff = time.Second
			}
			cfg.Log.Warn("service proxy exited; starting it again", "err", err, "in", backoff, "log", cfg.LogFile)
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			// Fresh loopback ports at each start: the last ones may be
			// taken meanwhile.
			err := writeConfig(cfg, filepath.Join(cfg.Dir, "kube-proxy.kubeconfig"), path)
			if err == nil {
				var next *process
				if next, err = startProcess(cfg, path, pidFile); err == nil {
					p = next
					break
				}
			}
			cfg.Log.Warn("start the service proxy", "err", err, "retry in", backoff)
		}
	}
}

// process is one run of `cci kube-proxy`.
type process struct {
	cmd  *exec.Cmd
	done chan error
}

func startProcess(cfg Config, path, pidFile string) (*process, error) {
	logFile, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("service proxy log: %w", err)
	}
	cmd := exec.Command(cfg.Binary, "kube-proxy", "--config", path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// It dies with the agent, even one killed with SIGKILL: a proxy left
	// behind would rewrite the host's rules from a stale view.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the service proxy (%s kube-proxy): %w", cfg.Binary, err)
	}
	logFile.Close()
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	p := &process{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// stop asks the proxy to end (its rules stay, as a stopped kube-proxy
// leaves them) and kills it after grace.
func (p *process) stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stopLeftover kills a proxy an earlier agent of this data folder left
// running (the parent-death signal covers all but a few corner cases, such
// as a binary replaced under a running agent).
func stopLeftover(pidFile, binary string, log *slog.Logger) {
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "kube-proxy\x00--config\x00") {
		return
	}
	log.Warn("stopping a service proxy left over from an earlier agent", "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeConfig writes the proxy's configuration file, with free loopback
// ports for its health and metrics servers.
func writeConfig(cfg Config, kubeconfig, path string) error {
	var local [2]string
	var err error
	for i := range local {
		if local[i], err = freeLoopbackAddr(); err != nil {
			return fmt.Errorf("service proxy health and metrics ports: %w", err)
		}
	}
	raw, err := configFile(cfg, kubeconfig, currentOOMScoreAdj(), local[0], local[1])
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}

// proxyOptions reads and checks the proxy's configuration file.
func proxyOptions(path string) (*proxyapp.Options, error) {
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := fs.Parse([]string{"--config=" + path}); err != nil {
		return nil, fmt.Errorf("service proxy flags: %w", err)
	}
	if err := opts.Complete(fs); err != nil {
		return nil, fmt.Errorf("service proxy configuration: %w", err)
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("service proxy configuration: %w", err)
	}
	return opts, nil
}

// RunProcess is `cci kube-proxy --config PATH`: the upstream proxy with the
// configuration Run wrote, until ctx ends or the proxy ends its process.
func RunProcess(ctx context.Context, path string) error {
	opts, err := proxyOptions(path)
	if err != nil {
		return err
	}
	err = opts.Run(ctx)
	if err == nil && ctx.Err() == nil {
		err = errors.New("service proxy stopped")
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
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
