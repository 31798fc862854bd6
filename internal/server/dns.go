package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cci-project/cci/internal/dns"
)

// runDNS reserves the kube-dns Service's address, starts the embedded
// CoreDNS and keeps the Service pointed at it. It is ready once CoreDNS
// listens and its endpoint is published; that it answers is waited for
// last (dnsAnswers), as it needs the apiserver's Services.
func (cp *controlPlane) runDNS(ctx context.Context, ready func()) error {
	clusterIP, err := dns.ClusterIP(cp.cfg.ServiceCIDR)
	if err != nil {
		return err
	}
	if err := dns.EnsureService(ctx, cp.admin, clusterIP); err != nil {
		return err
	}
	if err := dns.EnsureRBAC(ctx, cp.admin); err != nil {
		return err
	}
	logw, err := os.OpenFile(filepath.Join(cp.logDir, "coredns.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer logw.Close()
	srv, err := dns.Start(dns.Config{Address: cp.cfg.DNSAddress, Kubeconfig: filepath.Join(cp.pki.Dir, "coredns.kubeconfig"), Log: logw})
	if err != nil {
		return err
	}
	cp.dns = srv
	cp.info.DNSAddress = srv.Addr()
	err = cp.publishDNS(ctx, ready, srv, clusterIP)
	if stopErr := srv.Stop(); err == nil && stopErr != nil {
		err = fmt.Errorf("stop CoreDNS: %w", stopErr)
	}
	return err
}

// publishDNS makes srv the kube-dns Service's endpoint and keeps it so
// until ctx ends.
func (cp *controlPlane) publishDNS(ctx context.Context, ready func(), srv *dns.Server, clusterIP net.IP) error {
	if !routable(srv.IP()) {
		cp.log.Warn("cluster DNS is not published as the kube-dns Service: its address cannot be a Service endpoint; set --dns-address or --advertise-address to the host's IP", "address", srv.Addr())
		ready()
		<-ctx.Done()
		return nil
	}
	if err := dns.PublishEndpoints(ctx, cp.admin, srv.IP(), srv.Port()); err != nil {
		return err
	}
	cp.log.Info("cluster DNS started", "address", srv.Addr(), "service", clusterIP.String())
	ready()
	return dns.Keep(ctx, cp.admin, clusterIP, srv.IP(), srv.Port(), cp.log)
}
