package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/isolation"
	"github.com/cci-project/cci/internal/policy"
	"github.com/cci-project/cci/internal/tenant"
	"github.com/cci-project/cci/internal/webhook"
)

// startTenancy installs the Tenant API, runs its controller and serves the
// tenant admission policy, registered with the apiserver. It returns once
// the policy is served for every Tenant the controller has read.
func startTenancy(ctx context.Context, cfg Config, info *Info, existingPools func() []string, goRun func(string, func() error)) error {
	rc, err := clientcmd.BuildConfigFromFlags("", info.AdminKubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %q: %w", info.AdminKubeconfig, err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	if err := tenant.InstallCRD(ctx, rc); err != nil {
		return err
	}
	ctrl := tenant.NewController(kube, dyn, cfg.Log)
	goRun("tenant controller", func() error { return ctrl.Run(ctx, 2) })
	iso := isolation.NewController(kube, cfg.Log)
	goRun("isolation controller", func() error { return iso.Run(ctx, 2) })
	select {
	case <-ctrl.Synced():
	case <-ctx.Done():
		return ctx.Err()
	}

	ca, caKey, err := info.PKI.LoadCA()
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(info.PKI.CACert)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	network, err := tenantNetwork(cfg)
	if err != nil {
		return err
	}
	wcfg := webhook.Config{
		Addr:          webhookAddr(ctx, kube, cfg.WebhookAddr),
		CA:            ca,
		CAKey:         caKey,
		CAPEM:         caPEM,
		Hosts:         []string{cfg.AdvertiseAddress},
		Rules:         ctrl.PolicyRules,
		ExistingPools: existingPools,
		Network:       network,
		Addresses:     webhook.APIAddresses{Kube: kube},
		Log:           cfg.Log,
	}
	srv, err := webhook.Listen(wcfg)
	if err != nil && wcfg.Addr != cfg.WebhookAddr {
		wcfg.Addr = cfg.WebhookAddr
		srv, err = webhook.Listen(wcfg)
	}
	if err != nil {
		return err
	}
	goRun("admission webhook", func() error { return srv.Run(ctx) })
	if err := webhook.Register(ctx, kube, srv.URL(), caPEM); err != nil {
		return err
	}
	cfg.Log.Info("tenant admission policy served", "url", srv.URL())
	return nil
}

// webhookAddr keeps the webhook's port across restarts when the configured
// address leaves the port free (":0"): the port registered last time is
// tried first, so that the apiserver never calls a stale URL.
func webhookAddr(ctx context.Context, kube kubernetes.Interface, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr
	}
	cur, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, webhook.ConfigurationName, metav1.GetOptions{})
	if err != nil || len(cur.Webhooks) == 0 || cur.Webhooks[0].ClientConfig.URL == nil {
		return addr
	}
	u, err := url.Parse(*cur.Webhooks[0].ClientConfig.URL)
	if err != nil {
		return addr
	}
	if p, err := strconv.Atoi(u.Port()); err == nil && p > 0 {
		return net.JoinHostPort(host, u.Port())
	}
	return addr
}

// tenantNetwork is the address space that endpoints written by tenants may
// not point into: the pod and Service ranges, and this host's own
// addresses (the node's published ones are looked up at each request; a
// host may have more).
func tenantNetwork(cfg Config) (policy.Network, error) {
	var n policy.Network
	for _, r := range []struct {
		name, cidrs string
		into        *[]netip.Prefix
	}{{"cluster CIDR", cfg.ClusterCIDR, &n.PodCIDRs}, {"service CIDR", cfg.ServiceCIDR, &n.ServiceCIDRs}} {
		for _, c := range strings.Split(r.cidrs, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(c))
			if err != nil {
				return n, fmt.Errorf("%s %q: %w", r.name, r.cidrs, err)
			}
			*r.into = append(*r.into, p.Masked())
		}
	}
	if a, err := netip.ParseAddr(cfg.AdvertiseAddress); err == nil {
		n.NodeIPs = append(n.NodeIPs, a.Unmap())
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return n, fmt.Errorf("this host's addresses: %w", err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			n.NodeIPs = append(n.NodeIPs, p.Addr().Unmap())
		}
	}
	return n, nil
}
