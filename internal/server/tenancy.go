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

	"github.com/cci-project/cci/internal/policy"
	"github.com/cci-project/cci/internal/supervisor"
	"github.com/cci-project/cci/internal/tenant"
	"github.com/cci-project/cci/internal/webhook"
)

// runTenantController runs the Tenant controller (its CRD is installed
// by the step before); it is ready once it has read every Tenant, so that
// the admission webhook started next serves the policy of each.
func (cp *controlPlane) runTenantController(ctx context.Context, ready func()) error {
	dyn, err := dynamic.NewForConfig(cp.rest)
	if err != nil {
		return err
	}
	ctrl := tenant.NewController(cp.admin, dyn, cp.log).WithRegistry(tenant.RegistryAccess{
		Hosts:    cp.registryHosts(),
		Password: cp.registryAuth.Keys.Tenant,
	})
	cp.tenants = ctrl
	cp.registryAuth.SetTenants(ctrl.UID)
	synced := func(ctx context.Context) error {
		select {
		case <-ctrl.Synced():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return supervisor.Probed(func(ctx context.Context) error { return ctrl.Run(ctx, 2) }, synced)(ctx, ready)
}

// runWebhook serves the tenant admission policy; it is ready once the
// apiserver has it registered.
func (cp *controlPlane) runWebhook(ctx context.Context, ready func()) error {
	cfg := cp.cfg
	ca, caKey, err := cp.pki.LoadCA()
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(cp.pki.CACert)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	network, err := tenantNetwork(cfg)
	if err != nil {
		return err
	}
	wcfg := webhook.Config{
		Addr:          webhookAddr(ctx, cp.admin, cfg.WebhookAddr),
		CA:            ca,
		CAKey:         caKey,
		CAPEM:         caPEM,
		Hosts:         []string{cfg.AdvertiseAddress},
		Rules:         cp.tenants.PolicyRules,
		ExistingPools: cp.pools.Existing,
		Network:       network,
		Addresses:     webhook.APIAddresses{Kube: cp.admin},
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
	register := func(ctx context.Context) error {
		if err := webhook.Register(ctx, cp.admin, srv.URL(), caPEM); err != nil {
			return err
		}
		cp.log.Info("tenant admission policy served", "url", srv.URL())
		return nil
	}
	return supervisor.Probed(srv.Run, register)(ctx, ready)
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
