package runtime

import (
	"fmt"
	"os"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Limits of a resolv.conf that the C library honours; a kubelet trims to
// the same.
const (
	maxNameservers = 3
	maxSearches    = 32
	maxSearchChars = 2048
)

// resolver is the content of one resolv.conf.
type resolver struct {
	nameservers, searches, options []string
}

func parseResolvConf(raw string) resolver {
	var r resolver
	for _, line := range strings.Split(raw, "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			r.nameservers = append(r.nameservers, f[1])
		case "search", "domain":
			// The last search or domain line wins, as in the C library.
			r.searches = append([]string(nil), f[1:]...)
		case "options":
			r.options = append(r.options, f[1:]...)
		}
	}
	return r
}

// resolvConf is the pod's /etc/resolv.conf, written as a kubelet writes it:
//
//   - ClusterFirst (the default), and ClusterFirstWithHostNet: the cluster
//     DNS server, the search path <ns>.svc.<domain> svc.<domain> <domain>
//     followed by the host's, and ndots:5; where no cluster DNS is known, or
//     for a hostNetwork pod under ClusterFirst, the host's file instead.
//   - Default: the host's file.
//   - None: only the pod's dnsConfig.
//
// The pod's dnsConfig is then merged in: nameservers and searches appended
// (duplicates dropped), options replacing those of the same name.
func (r *Runtime) resolvConf(pod *v1.Pod) []byte {
	hostRaw, _ := os.ReadFile(r.cfg.HostResolvConf)
	host := parseResolvConf(string(hostRaw))
	return renderResolvConf(podResolver(pod, host, r.clusterDNS(), r.cfg.ClusterDomain))
}

// clusterDNS is the configured cluster DNS server, else the kube-dns
// Service's ClusterIP.
func (r *Runtime) clusterDNS() []string {
	if len(r.cfg.ClusterDNS) > 0 || r.cfg.Services == nil {
		return r.cfg.ClusterDNS
	}
	svc, err := r.cfg.Services.Services(metav1.NamespaceSystem).Get("kube-dns")
	if err != nil || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == v1.ClusterIPNone {
		return nil
	}
	return []string{svc.Spec.ClusterIP}
}

func podResolver(pod *v1.Pod, host resolver, clusterDNS []string, domain string) resolver {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = v1.DNSClusterFirst
	}
	clusterFirst := policy == v1.DNSClusterFirstWithHostNet || policy == v1.DNSClusterFirst && !pod.Spec.HostNetwork
	var out resolver
	switch {
	case policy == v1.DNSNone:
	case clusterFirst && len(clusterDNS) > 0:
		out.nameservers = slices.Clone(clusterDNS)
		out.searches = append([]string{pod.Namespace + ".svc." + domain, "svc." + domain, domain}, host.searches...)
		out.options = []string{"ndots:5"}
	default:
		out = host
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		out.nameservers = appendNew(out.nameservers, dc.Nameservers...)
		out.searches = appendNew(out.searches, dc.Searches...)
		for _, o := range dc.Options {
			opt := o.Name
			if o.Value != nil {
				opt = o.Name + ":" + *o.Value
			}
			out.options = slices.DeleteFunc(out.options, func(have string) bool {
				name, _, _ := strings.Cut(have, ":")
				return name == o.Name
			})
			out.options = append(out.options, opt)
		}
	}
	if len(out.nameservers) > maxNameservers {
		out.nameservers = out.nameservers[:maxNameservers]
	}
	out.searches = trimSearches(out.searches)
	return out
}

func appendNew(list []string, add ...string) []string {
	for _, a := range add {
		if a != "" && !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list
}

func trimSearches(s []string) []string {
	s = appendNew(nil, s...)
	if len(s) > maxSearches {
		s = s[:maxSearches]
	}
	for len(s) > 0 && len(strings.Join(s, " ")) > maxSearchChars {
		s = s[:len(s)-1]
	}
	return s
}

func renderResolvConf(r resolver) []byte {
	var b strings.Builder
	if len(r.searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(r.searches, " "))
	}
	for _, s := range r.nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(r.options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(r.options, " "))
	}
	return []byte(b.String())
}
