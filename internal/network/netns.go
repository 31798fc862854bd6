package network

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CreateNetns makes a new network namespace with lo up and keeps it alive
// by bind-mounting it on path (as `ip netns add` does). path must not
// exist. Pods get theirs from Setup; the hosts of `cci up --hosts` use it
// too.
func CreateNetns(path string) error { return createNetns(path) }

func createNetns(path string) (err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns mount point %q: %w", path, err)
	}
	_ = f.Close()
	defer func() {
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	errc := make(chan error, 1)
	go func() {
		// The thread moves into the new namespace and is never moved back:
		// leaving it locked makes the runtime discard it when the goroutine
		// ends, so no other goroutine ever runs in that namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		// What the CNI loopback plugin does, without forking it per pod.
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			errc <- fmt.Errorf("bring up lo in the new network namespace: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount netns on %q: %w", path, err)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// removeNetns unmounts and removes a named netns. A missing one is fine.
func removeNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %q: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %q: %w", path, err)
	}
	return nil
}

// isNetns says whether path is a mounted network namespace (and not just
// the empty mount point a crash can leave).
func isNetns(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %q: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// inNetns runs f on an OS thread inside the network namespace at path.
// Sockets that f creates stay in that namespace after it returns.
func inNetns(path string, f func() error) error {
	ns, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %q: %w", path, err)
	}
	defer ns.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread is discarded rather than moved back.
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %q: %w", path, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// interfaceIPs returns the global unicast addresses of interface name inside
// the netns at path; none if the interface does not exist.
func interfaceIPs(path, name string) ([]net.IP, error) {
	var ips []net.IP
	err := inNetns(path, func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return nil // no such interface: ADD never completed
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return fmt.Errorf("addresses of %q: %w", name, err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				ips = append(ips, n.IP)
			}
		}
		return nil
	})
	return ips, err
}
