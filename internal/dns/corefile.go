package dns

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"
)

// Zone is the cluster's DNS domain, the one pods' resolv.conf search paths end in.
const Zone = "cluster.local"

// CorefileOptions is what the generated Corefile depends on.
type CorefileOptions struct {
	// IP and Port are where the server listens (UDP and TCP).
	IP   string
	Port int
	// Kubeconfig authenticates the kubernetes plugin to the apiserver.
	Kubeconfig string
	// Upstreams are the resolvers names outside the cluster go to, as
	// "ip" or "ip:port". None: such names fail at once (SERVFAIL). One that
	// is this server itself is left out: forwarding to it would loop.
	Upstreams []string
}

// Corefile renders the CoreDNS configuration: the cluster zone and reverse
// zones from the kubernetes plugin, everything else forwarded to the host's
// resolvers, answers cached for 30 s.
func Corefile(o CorefileOptions) (string, error) {
	if net.ParseIP(o.IP) == nil {
		return "", fmt.Errorf("dns: listen address %q is not an IP address", o.IP)
	}
	if o.Port <= 0 || o.Port > 65535 {
		return "", fmt.Errorf("dns: listen port %d out of range 1-65535", o.Port)
	}
	if o.Kubeconfig == "" {
		return "", fmt.Errorf("dns: no kubeconfig for the kubernetes plugin")
	}
	// Corefile tokens are split at white space and braces; a path with
	// either would change the configuration's meaning.
	if strings.ContainsAny(o.Kubeconfig, " \t\n{}\"#") {
		return "", fmt.Errorf("dns: kubeconfig path %q has a space, quote, brace or '#', which a Corefile cannot hold", o.Kubeconfig)
	}
	var upstreams []string
	for _, u := range o.Upstreams {
		ip, port, err := splitUpstream(u)
		if err != nil {
			return "", err
		}
		if ip.Equal(net.ParseIP(o.IP)) && port == o.Port {
			continue
		}
		upstreams = append(upstreams, u)
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".:%d {\n", o.Port)
	fmt.Fprintf(&b, "    bind %s\n", o.IP)
	b.WriteString("    errors\n")
	fmt.Fprintf(&b, "    kubernetes %s in-addr.arpa ip6.arpa {\n", Zone)
	fmt.Fprintf(&b, "        kubeconfig %s\n", o.Kubeconfig)
	b.WriteString("        pods insecure\n")
	b.WriteString("        fallthrough in-addr.arpa ip6.arpa\n")
	b.WriteString("        ttl 30\n")
	b.WriteString("    }\n")
	if len(upstreams) > 0 {
		fmt.Fprintf(&b, "    forward . %s\n", strings.Join(upstreams, " "))
	}
	b.WriteString("    cache 30\n")
	b.WriteString("}\n")
	return b.String(), nil
}

// splitUpstream checks one upstream, "ip" or "ip:port" ("[ip6]:port"),
// and returns its address and port (53 where it has none).
func splitUpstream(u string) (net.IP, int, error) {
	host, port := u, 53
	if h, p, err := net.SplitHostPort(u); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return nil, 0, fmt.Errorf("dns: upstream %q: bad port", u)
		}
		host, port = h, n
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("dns: upstream %q is not an IP address", u)
	}
	return ip, port, nil
}

// Nameservers reads the resolvers of a resolv.conf, in order, each as "ip"
// or, for IPv6, "[ip]:53". Names that are not IP addresses are skipped. A
// file without nameserver lines gives none and no error.
func Nameservers(r io.Reader) ([]string, error) {
	cc, err := mdns.ClientConfigFromReader(r)
	if err != nil {
		return nil, fmt.Errorf("parse resolv.conf: %w", err)
	}
	var out []string
	for _, s := range cc.Servers {
		// An IPv6 address with a zone (fe80::1%eth0) cannot be forwarded to
		// reliably from CoreDNS's forward plugin; leave those out.
		if net.ParseIP(s) == nil {
			continue
		}
		if strings.Contains(s, ":") {
			out = append(out, "["+s+"]:53")
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// HostNameservers reads the resolvers of the resolv.conf at path. A file
// that does not exist gives none.
func HostNameservers(path string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", path, err)
	}
	defer f.Close()
	ns, err := Nameservers(f)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	return ns, nil
}
