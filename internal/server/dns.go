package server

import (
	"context"
	"fmt"
	"io"

	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/dns"
)

// startDNS reserves the kube-dns Service's address, starts the embedded
// CoreDNS and keeps the Service pointed at it. It runs right after the
// apiserver is ready, so that no other Service is given the DNS address.
func startDNS(ctx context.Context, cfg Config, admin kubernetes.Interface, kubeconfig string, logw io.Writer, goRun func(string, func() error)) (*dns.Server, error) {
	clusterIP, err := dns.ClusterIP(cfg.ServiceCIDR)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if err := dns.EnsureService(ctx, admin, clusterIP); err != nil {
		return nil, err
	}
	if err := dns.EnsureRBAC(ctx, admin); err != nil {
		return nil, err
	}
	srv, err := dns.Start(dns.Config{Address: cfg.DNSAddress, Kubeconfig: kubeconfig, Log: logw})
	if err != nil {
		return nil, err
	}
	goRun("dns", func() error {
		<-ctx.Done()
		return srv.Stop()
	})
	if !routable(srv.IP()) {
		cfg.Log.Warn("cluster DNS is not published as the kube-dns Service: its address cannot be a Service endpoint; set --dns-address or --advertise-address to the host's IP", "address", srv.Addr())
		return srv, nil
	}
	if err := dns.PublishEndpoints(ctx, admin, srv.IP(), srv.Port()); err != nil {
		return srv, err
	}
	goRun("dns Service", func() error { return dns.Keep(ctx, admin, clusterIP, srv.IP(), srv.Port(), cfg.Log) })
	cfg.Log.Info("cluster DNS started", "address", srv.Addr(), "service", clusterIP.String())
	return srv, nil
}
