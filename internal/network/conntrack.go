package network

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// flowFilter selects connection-tracking entries by a predicate.
type flowFilter func(*netlink.ConntrackFlow) bool

func (f flowFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool { return f(flow) }

// FlushConntrack deletes the connection-tracking entries, IPv4 and IPv6,
// that match. A connection the kernel still tracks keeps its NAT mapping
// (to a Service endpoint, to a pod) after the rules that made it are gone.
func FlushConntrack(match func(*netlink.ConntrackFlow) bool) (uint, error) {
	var n uint
	var errs []error
	for _, family := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		d, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, family, flowFilter(match))
		n += d
		if err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// FlowTouches says whether a flow has ip at either end, in either direction.
func FlowTouches(f *netlink.ConntrackFlow, ip net.IP) bool {
	return f.Forward.SrcIP.Equal(ip) || f.Forward.DstIP.Equal(ip) || f.Reverse.SrcIP.Equal(ip) || f.Reverse.DstIP.Equal(ip)
}

// leasedIPs are the addresses host-local leased to id.
func (m *Manager) leasedIPs(id string) []net.IP {
	var ips []net.IP
	_ = filepath.WalkDir(m.cfg.IPAMDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		ip := net.ParseIP(d.Name())
		if ip == nil {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if first, _, _ := strings.Cut(string(raw), "\n"); strings.TrimSpace(first) == id {
			ips = append(ips, ip)
		}
		return nil
	})
	return ips
}
