// Package netpol enforces Kubernetes NetworkPolicies (networking.k8s.io/v1)
// for the pods of one host.
//
// The policy evaluation is kube-network-policies' (sigs.k8s.io): its
// PolicyEngine with the standard NetworkPolicy evaluator and a pod-info
// provider over informers says which local pod IPs any policy selects and
// whether a given packet may pass. The dataplane is ours, because the
// upstream one needs nftables' queue expression, which some kernels lack:
//
//	mangle FORWARD ─► CCI-NETPOL-<bridge>
//	    established/related ─► RETURN (policies judge new connections only)
//	    service proxy's masquerade mark ─► RETURN (the pod sees the host)
//	    -d <managed pod IP>  ─► NFQUEUE <n> --queue-bypass   (ingress)
//	    -s <managed pod IP>  ─► NFQUEUE <n> --queue-bypass   (egress)
//	NFQUEUE <n> ─► this package's listener ─► PolicyEngine ─► accept | drop
//
// Pods talk across the Linux bridge, and with br_netfilter bridged IPv4
// traffic walks iptables' FORWARD hook, so pod-to-pod traffic on one host
// is judged there as well as traffic routed to and from other hosts.
// Traffic the host itself sends to a pod (probes, port-forward, a service
// proxy that masquerades to the bridge address) leaves through OUTPUT and
// is never queued: as Kubernetes documents, traffic between a pod and its
// own node is always allowed. So is traffic the service proxy marks for
// masquerading to a host address (NodePort and load-balancer traffic from
// outside): its source NAT comes after FORWARD, and the pod sees it coming
// from the host.
//
// Failure mode: fail open. While the agent is down the rules stay in place
// and --queue-bypass lets every packet pass; when the agent starts again it
// rewrites the chain from the current policies. When a policy changes, the
// tracked connections it now denies are forgotten by conntrack, so their
// next packet is judged like a new connection's.
package netpol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
	"sigs.k8s.io/kube-network-policies/pkg/api"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
	"sigs.k8s.io/kube-network-policies/pkg/podinfo"
)

// Config is the policy enforcer's configuration.
type Config struct {
	// NodeName is this host's node; only its pods are enforced here.
	NodeName string
	// PodCIDR is this host's pod range; its family picks iptables or ip6tables.
	PodCIDR string
	// Bridge is the Linux bridge the pods attach to. Default "cci0".
	Bridge string
	// Queue is the NFQUEUE number. Default DefaultQueue(Bridge).
	Queue uint16
	// MasqueradeBit is the bit of the packet mark the service proxy
	// (kube-proxy) sets on traffic it masquerades to a host address; such
	// traffic is host traffic to the pod and never queued. Default 14,
	// kube-proxy's default; -1 judges it like any other.
	MasqueradeBit int
	// Resync is how often the rules are rewritten even without a change
	// (repairs a chain someone else flushed). Default 30s.
	Resync time.Duration
	// Kube reads pods, namespaces and NetworkPolicies (cluster-wide).
	Kube kubernetes.Interface
	// Log receives the enforcer's messages. Default slog's default logger.
	Log *slog.Logger
}

// Enforcer keeps this host's NFQUEUE rules in step with the policies and
// answers the queue. Run it once.
type Enforcer struct {
	cfg      Config
	engine   *networkpolicy.PolicyEngine
	factory  informers.SharedInformerFactory
	ipt      utiliptables.Interface
	ipv6     bool
	chain    string
	log      *slog.Logger
	kick     chan struct{}
	lastData []byte
}

// New checks cfg and builds the enforcer; nothing runs until Run.
func New(cfg Config) (*Enforcer, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = "cci0"
	}
	if cfg.Queue == 0 {
		cfg.Queue = DefaultQueue(cfg.Bridge)
	}
	if cfg.MasqueradeBit == 0 {
		cfg.MasqueradeBit = 14
	}
	if cfg.MasqueradeBit > 31 {
		return nil, fmt.Errorf("network policy: masquerade bit %d is not in 0-31", cfg.MasqueradeBit)
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Kube == nil || cfg.NodeName == "" {
		return nil, errors.New("network policy: Kube and NodeName are required")
	}
	prefix, err := netip.ParsePrefix(cfg.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("network policy: pod CIDR %q: %w", cfg.PodCIDR, err)
	}
	proto := utiliptables.ProtocolIPv4
	if prefix.Addr().Is6() {
		proto = utiliptables.ProtocolIPv6
	}
	e := &Enforcer{
		cfg:     cfg,
		factory: informers.NewSharedInformerFactory(cfg.Kube, 0),
		ipt:     utiliptables.New(proto),
		ipv6:    prefix.Addr().Is6(),
		chain:   ChainName(cfg.Bridge),
		log:     cfg.Log.With("component", "netpol"),
		kick:    make(chan struct{}, 1),
	}
	if err := e.ipt.Present(); err != nil {
		return nil, fmt.Errorf("network policy: %s not usable: %w", proto, err)
	}
	e.engine = newEngine(cfg.NodeName, e.factory)
	e.engine.SetDataplaneSyncCallbacks(e.requestSync)
	return e, nil
}

// newEngine is kube-network-policies' engine with the standard
// NetworkPolicy evaluator for the pods of node, over f's informers (pods,
// namespaces and policies of the whole cluster: a policy's peers may be
// anywhere).
func newEngine(node string, f informers.SharedInformerFactory) *networkpolicy.PolicyEngine {
	pods := f.Core().V1().Pods()
	namespaces := f.Core().V1().Namespaces()
	policies := f.Networking().V1().NetworkPolicies()
	evaluator := networkpolicy.NewStandardNetworkPolicy(node, namespaces, pods, policies)
	provider := podinfo.NewInformerProvider(pods, namespaces, nil, nil)
	return networkpolicy.NewPolicyEngine(provider, []api.PolicyEvaluator{evaluator})
}

// ensureBridgeNetfilter makes bridged traffic (pod to pod on this host)
// walk iptables, where the policy rules are. It needs the br_netfilter
// module; the switch is host-wide, as for every bridge-based CNI setup.
func ensureBridgeNetfilter(ipv6 bool) error {
	name := "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if ipv6 {
		name = "/proc/sys/net/bridge/bridge-nf-call-ip6tables"
	}
	cur, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("br_netfilter not loaded: %w", err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(name, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("turn on %s: %w", name, err)
	}
	return nil
}

// requestSync asks the sync loop for a rewrite; it never blocks.
func (e *Enforcer) requestSync() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Run enforces until ctx ends. It returns an error only when it cannot
// start (no queue, no iptables); the rules are left in place on return.
func (e *Enforcer) Run(ctx context.Context) error {
	e.factory.Start(ctx.Done())
	defer e.factory.Shutdown()
	synced := e.factory.WaitForCacheSync(ctx.Done())
	for typ, ok := range synced {
		if !ok {
			return fmt.Errorf("network policy: informer for %v did not sync", typ)
		}
	}
	if err := ensureBridgeNetfilter(e.ipv6); err != nil {
		// Not fatal (pods still run), but say loudly what is not enforced.
		e.log.Error("traffic between pods of this host bypasses iptables: network policies are not enforced for it; run `modprobe br_netfilter`", "err", err)
	}
	// The listener first: the rules send packets to a queue that must be
	// answered (with --queue-bypass an unanswered queue passes packets,
	// but a bound and slow one would hold them).
	q, err := openQueue(ctx, e.cfg.Queue, e.verdict, e.log)
	if err != nil {
		return err
	}
	defer q.Close()
	if _, err := e.sync(ctx, true); err != nil {
		// Not fatal: the loop retries; bad rules must not stop the node.
		e.log.Error("network policy rules", "err", err)
	}
	e.log.Info("network policy enforcement started", "chain", e.chain, "queue", e.cfg.Queue)

	resync := time.NewTicker(e.cfg.Resync)
	defer resync.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-e.kick:
			// Let a burst of informer events settle into one rewrite.
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
		case <-resync.C:
			force = true
		}
		managed, err := e.sync(ctx, force)
		if err != nil {
			e.log.Error("network policy rules", "err", err)
			// Try again soon rather than at the next resync.
			time.AfterFunc(2*time.Second, e.requestSync)
			continue
		}
		// Something changed (a policy, a pod): connections the policies
		// deny now end too, not only new ones.
		if !force {
			if err := e.forgetDenied(ctx, managed); err != nil {
				e.log.Warn("network policy: established connections", "err", err)
			}
		}
	}
}

// sync writes the chain for the IPs the engine manages now; unchanged
// rules are not rewritten unless force is set. It returns the managed IPs.
func (e *Enforcer) sync(ctx context.Context, force bool) ([]netip.Addr, error) {
	if !e.engine.Ready() {
		return nil, errors.New("policy engine not ready")
	}
	ips, divertAll, err := e.engine.GetManagedIPs(ctx)
	if err != nil {
		return nil, fmt.Errorf("managed IPs: %w", err)
	}
	rs := ruleSet{chain: e.chain, bridge: e.cfg.Bridge, queue: e.cfg.Queue, ipv6: e.ipv6, ips: ips, divertAll: divertAll}
	if e.cfg.MasqueradeBit >= 0 {
		rs.masqMark = 1 << uint(e.cfg.MasqueradeBit)
	}
	data := rs.restoreData()
	if !force && bytes.Equal(data, e.lastData) {
		return ips, nil
	}
	// The chain must exist before the jump to it, and the jump before
	// (or with) its rules; each step is idempotent.
	if _, err := e.ipt.EnsureChain(utiliptables.TableMangle, utiliptables.Chain(e.chain)); err != nil {
		return nil, fmt.Errorf("create chain %q: %w", e.chain, err)
	}
	if err := e.ipt.Restore(utiliptables.TableMangle, data, utiliptables.NoFlushTables, utiliptables.NoRestoreCounters); err != nil {
		e.lastData = nil
		return nil, fmt.Errorf("write chain %q: %w", e.chain, err)
	}
	if _, err := e.ipt.EnsureRule(utiliptables.Prepend, utiliptables.TableMangle, utiliptables.ChainForward, jumpRule(e.chain)...); err != nil {
		e.lastData = nil
		return nil, fmt.Errorf("jump to %q from mangle FORWARD: %w", e.chain, err)
	}
	if !bytes.Equal(data, e.lastData) {
		e.log.Info("network policy rules written", "managedIPs", len(ips), "divertAll", divertAll)
	}
	e.lastData = data
	return ips, nil
}

// RemoveRules deletes the chain for bridge and the jump to it, for a host
// that stops running pods on bridge for good (the agent itself leaves its
// rules in place when it stops). Missing rules are no error.
func RemoveRules(bridge string, ipv6 bool) error {
	proto := utiliptables.ProtocolIPv4
	if ipv6 {
		proto = utiliptables.ProtocolIPv6
	}
	ipt := utiliptables.New(proto)
	chain := utiliptables.Chain(ChainName(bridge))
	// No chain, no jump: iptables refuses a jump to a missing chain.
	if ok, _ := ipt.ChainExists(utiliptables.TableMangle, chain); !ok {
		return nil
	}
	if err := ipt.DeleteRule(utiliptables.TableMangle, utiliptables.ChainForward, jumpRule(string(chain))...); err != nil {
		return fmt.Errorf("delete jump to %q: %w", chain, err)
	}
	if err := ipt.FlushChain(utiliptables.TableMangle, chain); err != nil {
		return fmt.Errorf("flush %q: %w", chain, err)
	}
	if err := ipt.DeleteChain(utiliptables.TableMangle, chain); err != nil {
		return fmt.Errorf("delete %q: %w", chain, err)
	}
	return nil
}
