package serviceproxy

// Refusing Service addresses that no Service port serves.
//
// kube-proxy's iptables mode rewrites a connection to a ClusterIP only on
// a port and protocol some Service has there. Any other packet to the
// Service range goes on unrewritten, out of the host's default route, and
// where the outer network answers for every address (as on some cloud
// networks) a TCP connection to a ClusterIP port that no Service serves
// "succeeds" with a stranger. kube-proxy's nftables mode rejects such
// packets itself; in iptables mode the agent adds the same refusal in a
// small nftables table of its own:
//
//	table inet cci-services-<name>
//	  set cidrs4 / cidrs6: the cluster's Service ranges (ServiceCIDR objects)
//	  chain forward (pods), chain output (the host, hostNetwork pods):
//	    filter hooks at priority filter-1, after kube-proxy's DNAT, before
//	    iptables' filter chains: a new connection whose destination is still
//	    in a Service range was rewritten by no Service, and is refused (TCP:
//	    reset; other protocols: ICMP port unreachable)
//
// The table is per agent name (its CNI bridge): agents of several clusters
// may share a host. It stays when the agent stops, as the pods do.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/knftables"
)

// rejectTable names the agent's table of refusals.
func rejectTable(name string) string { return "cci-services-" + name }

// rejectRules is the table's whole content for the given Service ranges.
func rejectRules(tx *knftables.Transaction, cidrs []netip.Prefix) {
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("cci: refuse Service addresses that no Service port rewrote")})
	for _, set := range []struct{ name, typ string }{{"cidrs4", "ipv4_addr"}, {"cidrs6", "ipv6_addr"}} {
		tx.Add(&knftables.Set{Name: set.name, Type: set.typ, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		tx.Flush(&knftables.Set{Name: set.name})
	}
	for _, p := range cidrs {
		set := "cidrs4"
		if p.Addr().Is6() {
			set = "cidrs6"
		}
		tx.Add(&knftables.Element{Set: set, Key: []string{p.Masked().String()}})
	}
	prio := knftables.FilterPriority + " - 1"
	for _, ch := range []struct {
		name string
		hook knftables.BaseChainHook
	}{{"forward", knftables.ForwardHook}, {"output", knftables.OutputHook}} {
		tx.Add(&knftables.Chain{Name: ch.name, Type: knftables.PtrTo(knftables.FilterType), Hook: knftables.PtrTo(ch.hook), Priority: &prio})
		tx.Flush(&knftables.Chain{Name: ch.name})
		for _, ip := range []struct{ family, set string }{{"ip", "cidrs4"}, {"ip6", "cidrs6"}} {
			tx.Add(&knftables.Rule{Chain: ch.name, Rule: knftables.Concat(
				"ct state new", ip.family, "daddr", "@"+ip.set, "meta l4proto tcp", "reject with tcp reset")})
			tx.Add(&knftables.Rule{Chain: ch.name, Rule: knftables.Concat(
				"ct state new", ip.family, "daddr", "@"+ip.set, "reject with icmpx type port-unreachable")})
		}
	}
}

// refuseUnserved keeps the agent's refusal table in step with the
// cluster's ServiceCIDR objects until ctx ends. It returns once the table
// is written for the ranges known at start.
func refuseUnserved(ctx context.Context, kube kubernetes.Interface, name string, log *slog.Logger) error {
	nft, err := knftables.New(knftables.InetFamily, rejectTable(name))
	if err != nil {
		return fmt.Errorf("nftables for refusing unserved Service addresses (needs the nft command, nftables 1.0.1 or later): %w", err)
	}
	factory := informers.NewSharedInformerFactory(kube, 0)
	inf := factory.Networking().V1().ServiceCIDRs()
	lister := inf.Lister()
	var mu sync.Mutex
	var last []netip.Prefix
	write := func() error {
		mu.Lock()
		defer mu.Unlock()
		objs, err := lister.List(labels.Everything())
		if err != nil {
			return err
		}
		cidrs := serviceRanges(objs)
		if last != nil && slices.Equal(cidrs, last) {
			return nil
		}
		tx := nft.NewTransaction()
		rejectRules(tx, cidrs)
		if err := nft.Run(ctx, tx); err != nil {
			return fmt.Errorf("write nftables table %q: %w", rejectTable(name), err)
		}
		last = cidrs
		log.Info("refusing unserved Service addresses", "table", rejectTable(name), "ranges", cidrs)
		return nil
	}
	resync := func() {
		if err := write(); err != nil && ctx.Err() == nil {
			log.Warn("refuse unserved Service addresses", "err", err)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { resync() },
		UpdateFunc: func(any, any) { resync() },
		DeleteFunc: func(any) { resync() },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return fmt.Errorf("list ServiceCIDRs: %w", ctx.Err())
	}
	return write()
}

// serviceRanges lists the ranges of the ServiceCIDR objects, sorted, each
// once and none inside another (an nftables interval set refuses
// overlapping elements). One being deleted still holds Services until they
// go, so it counts until it is gone.
func serviceRanges(objs []*networkingv1.ServiceCIDR) []netip.Prefix {
	var all []netip.Prefix
	for _, o := range objs {
		for _, c := range o.Spec.CIDRs {
			if p, err := netip.ParsePrefix(c); err == nil {
				all = append(all, p.Masked())
			}
		}
	}
	// Wider first, so that a range inside one already kept is dropped.
	slices.SortFunc(all, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range all {
		if !slices.ContainsFunc(out, func(q netip.Prefix) bool { return q.Overlaps(p) }) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// RemoveRejectRules deletes the refusal table of the agent of this name,
// if there is one: for an agent whose proxy no longer runs in iptables
// mode, tests, and hosts that retire a cluster.
func RemoveRejectRules(ctx context.Context, name string) error {
	nft, err := knftables.New(knftables.InetFamily, rejectTable(name))
	if err != nil {
		return nil // no nft command or no nftables: no table either
	}
	tx := nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("delete nftables table %q: %w", rejectTable(name), err)
	}
	return nil
}
