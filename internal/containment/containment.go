// Package containment keeps the pods of tenants away from the host they run
// on and from the operator's pods: a tenant's pod may open connections to
// the pods of tenant namespaces (whose NetworkPolicies then judge them), to
// Services, to cluster DNS and to the world outside the cluster, and to
// nothing else of the cluster. Refused, from a pod of a tenant namespace:
//
//   - every address of this host (the kubelet API, the containerd and
//     control-plane ports, the registry, the usage endpoint, whatever else
//     listens there), except DNS and what the service proxy or a hostPort
//     rewrote there (a Service of the cluster served by the host, such as
//     the apiserver behind the kubernetes Service);
//   - the addresses of the other hosts and of the control plane, unless a
//     Service rewrote the connection there;
//   - link-local addresses, among them 169.254.169.254, the metadata
//     service of cloud VMs (a pod that reaches it may read the host's
//     credentials);
//   - the pod ranges, except the pods of tenant namespaces: the pods of the
//     operator's namespaces are as closed to tenants as other tenants' are,
//     by IP and through Services.
//
// It fails closed: a pod that arrives on this host's bridge is held to these
// rules unless it is known (from the API) to be a live pod of a namespace
// that is neither a tenant's nor isolated, and a destination in the pod
// ranges is refused unless it is known to be a live pod of a tenant
// namespace. A pod that just started is thus treated as a tenant's until
// the agent sees it, as a NetworkPolicy engine treats an unknown peer.
//
// The dataplane is one nftables table per agent (named after its bridge:
// agents of several clusters may share a host):
//
//	table inet cci-contain-<bridge>
//	  sets trusted4/6   live pods of this host in the operator's namespaces
//	       tenants4/6   live pods of tenant namespaces, on every host
//	       ranges4/6    the pod ranges of every node
//	       hosts4/6     the nodes' addresses, their bridge gateways, the control plane's
//	  chain input   (hook input,   priority filter - 1) ─┐ from the bridge, new,
//	  chain forward (hook forward, priority filter - 1) ─┴ not trusted ─► refuse unless allowed
//
// Both hooks come after the service proxy's DNAT, so a Service address is
// judged by the pod or host it was rewritten to. Traffic the host itself
// sends to pods (probes, port-forward, NodePort and load-balancer traffic)
// does not come from the bridge, and its replies belong to established
// connections: both pass. The table stays when the agent stops, as the pods
// do (they stay contained), and the next agent rewrites it; Remove deletes
// it for a host that retires the agent.
package containment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"

	"github.com/cci-project/cci/internal/isolation"
)

// TenantLabel marks a tenant's namespace (the tenant package's label; not
// imported from there to keep the agent free of the tenant controller).
const TenantLabel = "cci.io/tenant"

// Config is the containment's configuration.
type Config struct {
	// NodeName is this host's node; its pods' sources are judged here.
	NodeName string
	// Bridge is the Linux bridge this host's pods attach to; it names the
	// table too. Default "cci0".
	Bridge string
	// ControlPlane are addresses of the control plane's hosts (the
	// apiserver's, the usage endpoint's), refused like the nodes'.
	ControlPlane []netip.Addr
	// PodRanges are the cluster's pod ranges beyond the nodes' own (e.g.
	// the cluster CIDR, which covers nodes that have not joined yet).
	PodRanges []netip.Prefix
	// Resync is how often the table is rewritten even without a change
	// (repairs a table someone else flushed). Default 1 minute.
	Resync time.Duration
	// Kube reads pods, namespaces and nodes (cluster-wide).
	Kube kubernetes.Interface
	// Log receives the messages. Default slog's default logger.
	Log *slog.Logger
}

// TableName is the nftables table (family inet) of the agent whose pods
// attach to bridge.
func TableName(bridge string) string { return "cci-contain-" + bridge }

// Tenant tells whether the pods of namespace ns are contained: it belongs
// to a tenant, or is isolated by label.
func Tenant(ns *corev1.Namespace) bool {
	return ns.Labels[TenantLabel] != "" || ns.Labels[isolation.Label] == isolation.DefaultDeny
}

// state is what the table holds.
type state struct {
	trusted, tenants, hosts []netip.Addr
	ranges                  []netip.Prefix
}

func (s state) equal(o state) bool {
	return slices.Equal(s.trusted, o.trusted) && slices.Equal(s.tenants, o.tenants) &&
		slices.Equal(s.hosts, o.hosts) && slices.Equal(s.ranges, o.ranges)
}

// Run keeps the table in step with the cluster until ctx ends; ready is
// called once the table is written for the first time. It returns an
// error when it cannot start (no nftables).
func Run(ctx context.Context, cfg Config, ready func()) error {
	if cfg.Bridge == "" {
		cfg.Bridge = "cci0"
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Kube == nil || cfg.NodeName == "" {
		return errors.New("containment: Kube and NodeName are required")
	}
	log := cfg.Log.With("component", "containment", "table", TableName(cfg.Bridge))
	nft, err := knftables.New(knftables.InetFamily, TableName(cfg.Bridge))
	if err != nil {
		return fmt.Errorf("containment of tenant pods needs nftables (the nft command, 1.0.1 or later): %w", err)
	}
	f := informers.NewSharedInformerFactory(cfg.Kube, 0)
	pods, namespaces, nodes := f.Core().V1().Pods(), f.Core().V1().Namespaces(), f.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), namespaces.Informer(), nodes.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("containment: informer for %v did not sync", typ)
		}
	}
	var last state
	written := false
	write := func(force bool) error {
		s, err := collect(cfg, pods.Lister(), namespaces.Lister(), nodes.Lister())
		if err != nil {
			return err
		}
		if written && !force && s.equal(last) {
			return nil
		}
		tx := nft.NewTransaction()
		rules(tx, cfg.Bridge, s)
		if err := nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("write nftables table %q: %w", TableName(cfg.Bridge), err)
		}
		if !written || !s.equal(last) {
			log.Info("tenant pods contained", "trustedPods", len(s.trusted), "tenantPods", len(s.tenants), "hosts", len(s.hosts), "podRanges", len(s.ranges))
		}
		last, written = s, true
		return nil
	}
	if err := write(true); err != nil {
		return err
	}
	ready()
	resync := time.NewTicker(cfg.Resync)
	defer resync.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			// A burst of pod events makes one rewrite.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
		case <-resync.C:
			force = true
		}
		if err := write(force); err != nil && ctx.Err() == nil {
			log.Error("containment of tenant pods", "err", err)
			time.AfterFunc(2*time.Second, func() { poke(nil) })
		}
	}
}

// collect reads the sets from the informers' caches.
func collect(cfg Config, pods corelisters.PodLister, namespaces corelisters.NamespaceLister, nodes corelisters.NodeLister) (state, error) {
	nsList, err := namespaces.List(labels.Everything())
	if err != nil {
		return state{}, err
	}
	tenantNS := map[string]bool{}
	for _, ns := range nsList {
		tenantNS[ns.Name] = Tenant(ns)
	}
	podList, err := pods.List(labels.Everything())
	if err != nil {
		return state{}, err
	}
	nodeList, err := nodes.List(labels.Everything())
	if err != nil {
		return state{}, err
	}
	return build(cfg, podList, tenantNS, nodeList), nil
}

// build computes the sets: tenantNS says which namespaces are contained (a
// namespace not in it, not yet seen, counts as a tenant's: fail closed).
func build(cfg Config, pods []*corev1.Pod, tenantNS map[string]bool, nodes []*corev1.Node) state {
	var s state
	for _, p := range pods {
		if p.Spec.HostNetwork || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			// A pod being deleted may lose its IP to a new pod any moment.
			continue
		}
		tenant, known := tenantNS[p.Namespace]
		tenant = tenant || !known
		for _, ip := range podIPs(p) {
			switch {
			case tenant:
				s.tenants = append(s.tenants, ip)
			case p.Spec.NodeName == cfg.NodeName:
				s.trusted = append(s.trusted, ip)
			}
		}
	}
	for _, c := range isolation.HostCIDRs(nodes) {
		if p, err := netip.ParsePrefix(c); err == nil {
			s.hosts = append(s.hosts, p.Addr())
		}
	}
	for _, a := range cfg.ControlPlane {
		if a.IsValid() && !a.IsLoopback() {
			s.hosts = append(s.hosts, a.Unmap())
		}
	}
	ranges := slices.Clone(cfg.PodRanges)
	for _, n := range nodes {
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil {
				ranges = append(ranges, p)
			}
		}
	}
	s.ranges = outermost(ranges)
	for _, l := range []*[]netip.Addr{&s.trusted, &s.tenants, &s.hosts} {
		slices.SortFunc(*l, netip.Addr.Compare)
		*l = slices.Compact(*l)
	}
	return s
}

// podIPs are the pod's IPs from its status.
func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// outermost sorts the prefixes and drops those inside another (an nftables
// interval set refuses overlapping elements).
func outermost(all []netip.Prefix) []netip.Prefix {
	for i := range all {
		all[i] = all[i].Masked()
	}
	slices.SortFunc(all, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range all {
		if p.IsValid() && !slices.ContainsFunc(out, func(q netip.Prefix) bool { return q.Overlaps(p) }) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// rules is the table's whole content for s: declaring a set or chain and
// flushing it in the same transaction replaces it atomically.
func rules(tx *knftables.Transaction, bridge string, s state) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("cci: tenant pods reach neither the hosts nor the operator's pods")})
	type set struct {
		name, typ string
		interval  bool
		elems     []string
	}
	split := func(name string, addrs []netip.Addr) []set {
		var v4, v6 []string
		for _, a := range addrs {
			if a.Is4() {
				v4 = append(v4, a.String())
			} else {
				v6 = append(v6, a.String())
			}
		}
		return []set{{name + "4", "ipv4_addr", false, v4}, {name + "6", "ipv6_addr", false, v6}}
	}
	var v4r, v6r []string
	for _, p := range s.ranges {
		if p.Addr().Is4() {
			v4r = append(v4r, p.String())
		} else {
			v6r = append(v6r, p.String())
		}
	}
	sets := append(append(append(split("trusted", s.trusted), split("tenants", s.tenants)...), split("hosts", s.hosts)...),
		set{"ranges4", "ipv4_addr", true, v4r}, set{"ranges6", "ipv6_addr", true, v6r})
	for _, st := range sets {
		obj := &knftables.Set{Name: st.name, Type: st.typ}
		if st.interval {
			obj.Flags = []knftables.SetFlag{knftables.IntervalFlag}
		}
		tx.Add(obj)
		tx.Flush(&knftables.Set{Name: st.name})
		for _, e := range st.elems {
			tx.Add(&knftables.Element{Set: st.name, Key: []string{e}})
		}
	}

	refuse := func(chain, match, why string) {
		c := knftables.PtrTo(why)
		tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(match, "meta l4proto tcp reject with tcp reset"), Comment: c})
		tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(match, "reject with icmpx type admin-prohibited"), Comment: c})
	}
	prio := knftables.FilterPriority + " - 1"
	for _, ch := range []struct {
		name string
		hook knftables.BaseChainHook
	}{{"input", knftables.InputHook}, {"forward", knftables.ForwardHook}} {
		tx.Add(&knftables.Chain{Name: ch.name, Type: knftables.PtrTo(knftables.FilterType), Hook: knftables.PtrTo(ch.hook), Priority: &prio})
		tx.Flush(&knftables.Chain{Name: ch.name})
		// Only new connections from this host's pods are judged; replies
		// to the host's probes and to allowed connections pass.
		tx.Add(&knftables.Rule{Chain: ch.name, Rule: knftables.Concat("iifname !=", bridge, "return")})
		tx.Add(&knftables.Rule{Chain: ch.name, Rule: "ct state established,related return"})
		tx.Add(&knftables.Rule{Chain: ch.name, Rule: "ip saddr @trusted4 return", Comment: knftables.PtrTo("a pod of the operator")})
		tx.Add(&knftables.Rule{Chain: ch.name, Rule: "ip6 saddr @trusted6 return", Comment: knftables.PtrTo("a pod of the operator")})
	}
	// To this host.
	tx.Add(&knftables.Rule{Chain: "input", Rule: "ct status dnat return", Comment: knftables.PtrTo("a Service or hostPort served by the host")})
	tx.Add(&knftables.Rule{Chain: "input", Rule: "meta l4proto { tcp, udp } th dport 53 return", Comment: knftables.PtrTo("DNS")})
	tx.Add(&knftables.Rule{Chain: "input", Rule: "meta l4proto ipv6-icmp return", Comment: knftables.PtrTo("neighbour discovery")})
	refuse("input", "", "the host's own ports are closed to tenant pods")
	// Through this host.
	refuse("forward", "ip daddr 169.254.0.0/16", "link-local: the metadata service")
	refuse("forward", "ip6 daddr fe80::/10", "link-local")
	for _, fam := range []string{"ip", "ip6"} {
		n := "4"
		if fam == "ip6" {
			n = "6"
		}
		tx.Add(&knftables.Rule{Chain: "forward", Rule: knftables.Concat(fam, "daddr", "@hosts"+n, "ct status dnat return"), Comment: knftables.PtrTo("a Service served by a host")})
		refuse("forward", knftables.Concat(fam, "daddr", "@hosts"+n), "other hosts and the control plane")
		refuse("forward", knftables.Concat(fam, "daddr", "@ranges"+n, fam, "daddr", "!=", "@tenants"+n), "pods of the operator's namespaces")
	}
}

// Remove deletes the table of the agent whose bridge is bridge, if there
// is one: for a host that retires the agent, and tests.
func Remove(ctx context.Context, bridge string) error {
	nft, err := knftables.New(knftables.InetFamily, TableName(bridge))
	if err != nil {
		return nil // no nft command or no nftables: no table either
	}
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("delete nftables table %q: %w", TableName(bridge), err)
	}
	return nil
}
