// Package dns serves the cluster's DNS: CoreDNS, embedded as a library with
// only the plugins the cluster needs, answering for cluster.local (Services,
// headless Services' pods and named ports, ExternalNames, pods) and the
// reverse zones from the Kubernetes API, and forwarding every other name to
// the resolvers of the host it runs on.
//
// Pods reach it through the kube-dns Service (the 10th address of the
// Service range), whose one endpoint is this server's listen address; this
// package keeps that Service and its EndpointSlice in place (service.go).
package dns

import (
	"context"
	"errors"
	"fmt"
	"io"
	golog "log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	mdns "github.com/miekg/dns"
	"k8s.io/klog/v2"

	// The plugins the Corefile uses; importing one registers it.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

// directives are the plugins a query passes through, in order (the order
// of CoreDNS's own plugin.cfg, restricted to ours).
var directives = []string{"bind", "errors", "cache", "kubernetes", "forward"}

// caddyMu serialises the process-wide CoreDNS state (directives, quiet
// flags) with starting an instance.
var caddyMu sync.Mutex

// Config is the DNS server's configuration.
type Config struct {
	// Address is host:port to listen on, UDP and TCP. Port 0 picks a port
	// free on both.
	Address string
	// Kubeconfig authenticates the kubernetes plugin to the apiserver.
	Kubeconfig string
	// ResolvConf is the file naming the resolvers that names outside the
	// cluster go to. Default "/etc/resolv.conf".
	ResolvConf string
	// Log receives CoreDNS's own log (startup, the errors plugin, the
	// kubernetes plugin's client). CoreDNS writes it through the standard
	// library's log package, so Start points that package's output, process
	// wide, at Log. Nil: leave the log package as it is.
	Log io.Writer
	// Upstreams, when not nil, replaces the resolvers of ResolvConf; an
	// empty list means none.
	Upstreams []string
}

// Server is a running CoreDNS instance. Stop may be called once, from any
// goroutine.
type Server struct {
	inst *caddy.Instance
	ip   string
	port int
}

// Start checks the listen address, renders the Corefile and starts
// CoreDNS. It returns once the sockets are bound; answers for the cluster
// zone may lag until the kubernetes plugin has synced (see WaitReady).
func Start(cfg Config) (*Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("dns: listen address %q: %w; give it as IP:PORT with --dns-address", cfg.Address, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("dns: listen address %q: %q is not an IP address; give it as IP:PORT with --dns-address", cfg.Address, host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("dns: listen address %q: bad port %q; give it as IP:PORT with --dns-address", cfg.Address, portStr)
	}
	if port == 0 {
		if port, err = FreePort(host); err != nil {
			return nil, err
		}
	}
	// Bind both sockets ourselves first: CoreDNS's own error for a taken
	// port comes wrapped in Corefile context, and says nothing of the flag.
	if err := checkListen(host, port); err != nil {
		return nil, err
	}
	upstreams := cfg.Upstreams
	if upstreams == nil {
		path := cfg.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		if upstreams, err = HostNameservers(path); err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
	}
	corefile, err := Corefile(CorefileOptions{IP: host, Port: port, Kubeconfig: cfg.Kubeconfig, Upstreams: upstreams})
	if err != nil {
		return nil, err
	}

	caddyMu.Lock()
	defer caddyMu.Unlock()
	if err := dnsserver.SetDirectives(directives); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	caddy.Quiet, dnsserver.Quiet = true, true
	if cfg.Log != nil {
		golog.SetOutput(cfg.Log)
	}
	inst, err := caddy.Start(caddy.CaddyfileInput{
		Contents:       []byte(corefile),
		Filepath:       "Corefile",
		ServerTypeName: "dns",
	})
	// The kubernetes plugin points klog, process-wide, at CoreDNS's log;
	// the apiserver and the other components in this process log through
	// klog too, and their lines belong in their own log file. (What they
	// log while CoreDNS starts lands in CoreDNS's log.)
	klog.ClearLogger()
	if err != nil {
		return nil, fmt.Errorf("dns: start CoreDNS on %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), err)
	}
	return &Server{inst: inst, ip: host, port: port}, nil
}

// IP and Port are where the server listens.
func (s *Server) IP() string { return s.ip }
func (s *Server) Port() int  { return s.port }

// Addr is IP:Port.
func (s *Server) Addr() string { return net.JoinHostPort(s.ip, strconv.Itoa(s.port)) }

// Stop shuts the server down and releases its sockets.
func (s *Server) Stop() error {
	err := errors.Join(s.inst.ShutdownCallbacks()...)
	err = errors.Join(err, s.inst.Stop())
	s.inst.Wait()
	return err
}

// WaitReady queries the server for kubernetes.default.svc.cluster.local
// until it answers with an address, or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error {
	name := "kubernetes.default.svc." + Zone + "."
	var last error
	for {
		rrs, rcode, err := Query(ctx, "udp", s.Addr(), name, mdns.TypeA)
		switch {
		case err != nil:
			last = err
		case rcode != mdns.RcodeSuccess || len(rrs) == 0:
			last = fmt.Errorf("answer %s with %d records", mdns.RcodeToString[rcode], len(rrs))
		default:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dns: %s does not answer for %s: %w", s.Addr(), name, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Query asks server (IP:port) over network ("udp" or "tcp") for name's
// records of type qtype and returns the answer section and rcode.
func Query(ctx context.Context, network, server, name string, qtype uint16) ([]mdns.RR, int, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	c := &mdns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, server)
	if err != nil {
		return nil, 0, err
	}
	return r.Answer, r.Rcode, nil
}

// checkListen binds ip:port on UDP and TCP and lets go again.
func checkListen(ip string, port int) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("dns: %w; choose another with --dns-address", err)
	}
	pc.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dns: %w; choose another with --dns-address", err)
	}
	l.Close()
	return nil
}

// FreePort returns a port free for both UDP and TCP on ip.
func FreePort(ip string) (int, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, fmt.Errorf("dns: find a free port on %s: %w", ip, err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		pc.Close()
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("dns: no port free for both UDP and TCP on %s", ip)
}
