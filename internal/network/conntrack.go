package network

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

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
	return flushConntrack([]netlink.InetFamily{unix.AF_INET, unix.AF_INET6}, match)
}

// flushConntrack is FlushConntrack for some address families. Each family
// is one dump of the whole table: the kernel walks every hash bucket (there
// are 262,144 on a host with 24 GiB) however few entries there are, which
// costs milliseconds of CPU.
func flushConntrack(families []netlink.InetFamily, match func(*netlink.ConntrackFlow) bool) (uint, error) {
	var n uint
	var errs []error
	for _, family := range families {
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

// conntrackFlusher deletes the connection-tracking entries of released pod
// addresses, one table dump for all the pods torn down meanwhile: a burst
// of deletions pays for a few dumps instead of one (per family) each.
type conntrackFlusher struct {
	mu      sync.Mutex
	ips     map[string]net.IP
	waiters []chan error
	running bool
}

// flush returns once no entry of ips is left, or the dump that looked for
// them failed.
func (c *conntrackFlusher) flush(ips []net.IP) error {
	if len(ips) == 0 {
		return nil
	}
	done := make(chan error, 1)
	c.mu.Lock()
	if c.ips == nil {
		c.ips = map[string]net.IP{}
	}
	for _, ip := range ips {
		c.ips[ip.String()] = ip
	}
	c.waiters = append(c.waiters, done)
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	return <-done
}

// run dumps the table for what is pending, again and again while more
// arrives during a dump.
func (c *conntrackFlusher) run() {
	for {
		c.mu.Lock()
		ips, waiters := c.ips, c.waiters
		c.ips, c.waiters = nil, nil
		if len(waiters) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		var families []netlink.InetFamily
		var v4, v6 bool
		for _, ip := range ips {
			if ip.To4() != nil {
				v4 = true
			} else {
				v6 = true
			}
		}
		if v4 {
			families = append(families, unix.AF_INET)
		}
		if v6 {
			families = append(families, unix.AF_INET6)
		}
		_, err := flushConntrack(families, func(f *netlink.ConntrackFlow) bool {
			for _, end := range []net.IP{f.Forward.SrcIP, f.Forward.DstIP, f.Reverse.SrcIP, f.Reverse.DstIP} {
				if _, ok := ips[end.String()]; ok {
					return true
				}
			}
			return false
		})
		for _, w := range waiters {
			w <- err
		}
	}
}
