// Package network gives each pod its own network namespace and IP address
// through CNI: the standard bridge plugin (with host-local IPAM on this
// host's pod subnet) and, for pods that publish host ports, portmap. One
// masquerade rule for the whole pod subnet (ensureMasquerade) and lo, which
// createNetns brings up itself, cost no plugin run per pod: each plugin is
// a process the agent forks, and forking four of them per pod was the
// largest CPU cost of starting one.
//
// A pod's namespace is bind-mounted at <NetnsDir>/cci-<id>, so `ip netns`
// shows it and it outlives the agent; host-local keeps its leases in
// IPAMDir. Both survive an agent restart, and Setup finds an existing
// sandbox again instead of allocating a second address.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/libcni"
)

const (
	// NetworkName is the CNI network name; plugins use it (with the pod id)
	// to name lease folders and iptables chains.
	NetworkName = "cci"
	// netnsPrefix marks the namespaces this package made.
	netnsPrefix = "cci-"
	// podInterface is the pod's interface name, as go-cni numbers them.
	podInterface = "eth0"
	// confName is the full network (bridge and portmap), the one a CNI
	// tool pointed at ConfDir finds; confNameNoPorts is the same network
	// without portmap, for the pods that publish no host port. Both carry
	// the name NetworkName, so libcni's result cache is shared.
	confName        = "10-cci.conflist"
	confNameNoPorts = "90-cci-noports.conflist"
)

// Config describes this host's pod network.
type Config struct {
	// PodCIDR is this host's pod subnet, e.g. "10.88.0.0/24". The bridge
	// gets its first address as the pods' gateway. Required.
	PodCIDR string
	// Bridge is the bridge interface name. Default is "cci0".
	Bridge string
	// PluginDirs are searched for CNI plugin binaries. Default is
	// {"/usr/lib/cni", "/opt/cni/bin"}.
	PluginDirs []string
	// ConfDir receives the generated conflist. Required, e.g.
	// <data>/cni/net.d.
	ConfDir string
	// IPAMDir holds host-local's leases. Required, e.g. <data>/cni/ipam.
	IPAMDir string
	// NetnsDir is where pod namespaces are bind-mounted. Default is
	// "/var/run/netns", where `ip netns` looks.
	NetnsDir string
	// RecordDir keeps a file per namespace this Manager made, until its
	// teardown: NetnsDir is shared by every host and cluster on a machine,
	// so its names alone cannot tell this host's leftovers (Owned). Default
	// is IPAMDir's sibling "netns".
	RecordDir string
	// MTU of the bridge and pod interfaces; 0 leaves the plugin's default.
	// Under an overlay it is the overlay's (the link's less encapsulation).
	MTU int
	// NoMasq are the ranges pod traffic keeps its source address to: the
	// cluster's pod range (pods on other hosts see the real peer, which
	// their NetworkPolicy judges) and its Service range. PodCIDR always is.
	NoMasq []netip.Prefix
}

// PortMapping publishes a pod port on the host (portmap plugin).
type PortMapping struct {
	HostPort      int32
	ContainerPort int32
	Protocol      string // "tcp" (default), "udp" or "sctp"
	HostIP        string // "" for all host addresses
}

// Sandbox is a pod's network: its namespace and addresses.
type Sandbox struct {
	// NetnsPath is the bind-mounted namespace, for the OCI spec's network
	// namespace path.
	NetnsPath string
	// IPs are the pod's addresses, IPv4 first.
	IPs []net.IP
}

// Manager sets up and tears down pod networks. Its methods may be called
// concurrently; calls for the same id are serialised.
type Manager struct {
	cfg     Config
	prefix  netip.Prefix
	cni     gocni.CNI         // bridge and portmap: pods with host ports
	noPorts gocni.CNI         // bridge alone: every other pod
	cache   *libcni.CNIConfig // reads libcni's result cache only
	locks   keyedMutex
	// conntrack forgets the connections of released addresses.
	conntrack conntrackFlusher
}

// New checks cfg, writes the CNI conflist to ConfDir, turns on IP
// forwarding and returns a Manager. It creates no interface: the bridge
// appears with the first pod.
func New(cfg Config) (*Manager, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = "cci0"
	}
	if len(cfg.PluginDirs) == 0 {
		cfg.PluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}
	}
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = "/var/run/netns"
	}
	if cfg.ConfDir == "" || cfg.IPAMDir == "" {
		return nil, fmt.Errorf("network config: ConfDir and IPAMDir are required")
	}
	if cfg.RecordDir == "" {
		cfg.RecordDir = filepath.Join(filepath.Dir(filepath.Clean(cfg.IPAMDir)), "netns")
	}
	if len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("network config: bridge name %q is longer than 15 bytes", cfg.Bridge)
	}
	if cfg.MTU < 0 {
		return nil, fmt.Errorf("network config: MTU %d is negative", cfg.MTU)
	}
	prefix, err := netip.ParsePrefix(cfg.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("network config: pod CIDR %q: %w", cfg.PodCIDR, err)
	}
	prefix = prefix.Masked()
	if prefix.Bits() > prefix.Addr().BitLen()-2 {
		return nil, fmt.Errorf("network config: pod CIDR %q is too small for a gateway and a pod", cfg.PodCIDR)
	}
	for _, p := range []*string{&cfg.ConfDir, &cfg.IPAMDir, &cfg.NetnsDir, &cfg.RecordDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, fmt.Errorf("network config: absolute path of %q: %w", *p, err)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "portmap"} {
		if !pluginExists(cfg.PluginDirs, plugin) {
			return nil, fmt.Errorf("CNI plugin %q not found in %q: install containernetworking-plugins or set PluginDirs", plugin, cfg.PluginDirs)
		}
	}
	for _, dir := range []string{cfg.ConfDir, cfg.IPAMDir, cfg.NetnsDir, cfg.RecordDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %q: %w", dir, err)
		}
	}
	if err := enableForwarding(prefix.Addr().Is4()); err != nil {
		return nil, err
	}
	if err := ensureMasquerade(cfg.Bridge, prefix, cfg.NoMasq); err != nil {
		return nil, err
	}
	if err := dropStaleGateway(cfg.Bridge, prefix); err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, prefix: prefix, cache: libcni.NewCNIConfig(cfg.PluginDirs, nil)}
	for _, c := range []struct {
		name     string
		portmap  bool
		instance *gocni.CNI
	}{{confName, true, &m.cni}, {confNameNoPorts, false, &m.noPorts}} {
		conf, err := conflist(cfg, prefix, c.portmap)
		if err != nil {
			return nil, err
		}
		confPath := filepath.Join(cfg.ConfDir, c.name)
		if err := writeFileAtomic(confPath, conf); err != nil {
			return nil, fmt.Errorf("write CNI config %q: %w", confPath, err)
		}
		cni, err := gocni.New(gocni.WithPluginDir(cfg.PluginDirs), gocni.WithPluginConfDir(cfg.ConfDir), gocni.WithMinNetworkCount(1))
		if err != nil {
			return nil, fmt.Errorf("init CNI: %w", err)
		}
		if err := cni.Load(gocni.WithConfListFile(confPath)); err != nil {
			return nil, fmt.Errorf("load CNI config %q: %w", confPath, err)
		}
		*c.instance = cni
	}
	return m, nil
}

// dropStaleGateway removes from an existing bridge the gateway addresses of
// another pod range: a node deleted and registered again gets a new range,
// and the bridge plugin refuses to add its gateway to a bridge that holds
// another ("already has an IP address different from …"), so no pod of the
// new range could start. Pods of the old range were stopped with their node.
func dropStaleGateway(bridge string, prefix netip.Prefix) error {
	link, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil // not made yet: the bridge plugin makes it
	}
	family := netlink.FAMILY_V4
	if prefix.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return fmt.Errorf("addresses of bridge %s: %w", bridge, err)
	}
	gateway := prefix.Addr().Next()
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() == gateway || ip.IsLinkLocalUnicast() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("remove address %s of another pod range from bridge %s: %w", a.IPNet, bridge, err)
		}
	}
	return nil
}

// forPorts picks the network that runs portmap only when there are host
// ports to publish or, on DEL, to remove.
func (m *Manager) forPorts(ports int) gocni.CNI {
	if ports > 0 {
		return m.cni
	}
	return m.noPorts
}

// Setup gives pod id a network namespace and an address and returns them.
// If id already has a namespace with an address (the agent restarted), it
// returns that sandbox unchanged, ports included: a second ADD would
// allocate a second address. A namespace left without an address by an
// interrupted Setup is cleaned and set up again. On error nothing is left
// behind.
func (m *Manager) Setup(ctx context.Context, id string, ports []PortMapping) (*Sandbox, error) {
	if err := validID(id); err != nil {
		return nil, err
	}
	unlock := m.locks.lock(id)
	defer unlock()

	path := m.netnsPath(id)
	ok, err := isNetns(path)
	if err != nil {
		return nil, err
	}
	created := false
	// Recorded before the namespace exists, so that no crash leaves one
	// this host cannot tell as its own.
	if err := m.record(id); err != nil {
		return nil, err
	}
	if ok {
		ips, err := interfaceIPs(path, podInterface)
		if err != nil {
			return nil, fmt.Errorf("read addresses of pod %q: %w", id, err)
		}
		if len(ips) > 0 {
			sortIPs(ips)
			return &Sandbox{NetnsPath: path, IPs: ips}, nil
		}
		// An interrupted ADD: release whatever it got before trying again.
		if err := m.remove(ctx, id, path); err != nil {
			return nil, fmt.Errorf("clean up half set-up network of pod %q: %w", id, err)
		}
	} else {
		if err := removeNetns(path); err != nil { // a mount point without a namespace
			return nil, err
		}
		if err := createNetns(path); err != nil {
			m.unrecord(id)
			return nil, fmt.Errorf("network namespace for pod %q: %w", id, err)
		}
		created = true
	}

	res, err := m.forPorts(len(ports)).Setup(ctx, id, path, gocni.WithCapabilityPortMap(cniPorts(ports)))
	if err != nil {
		// Release the address, iptables rules and namespace; the caller's
		// ctx may be what failed, so do not use it.
		cerr := m.remove(context.WithoutCancel(ctx), id, path)
		if created && cerr == nil {
			if cerr = removeNetns(path); cerr == nil {
				m.unrecord(id)
			}
		}
		if cerr != nil {
			return nil, fmt.Errorf("set up network of pod %q: %w (clean-up also failed: %v)", id, err, cerr)
		}
		return nil, fmt.Errorf("set up network of pod %q: %w", id, err)
	}
	var ips []net.IP
	if ifc := res.Interfaces[podInterface]; ifc != nil {
		for _, c := range ifc.IPConfigs {
			ips = append(ips, c.IP)
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("set up network of pod %q: CNI returned no address for %s", id, podInterface)
	}
	sortIPs(ips)
	return &Sandbox{NetnsPath: path, IPs: ips}, nil
}

// Teardown releases pod id's address and port mappings (CNI DEL) and
// removes its namespace. A missing namespace or lease is not an error, so
// Teardown may be repeated.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	unlock := m.locks.lock(id)
	defer unlock()

	path := m.netnsPath(id)
	ok, err := isNetns(path)
	if err != nil {
		return err
	}
	ips := m.leasedIPs(id)
	nsArg := path
	if !ok {
		// Without the namespace the plugins can still release the lease and
		// the port mappings; the bridge plugin skips the masquerade rule,
		// which it finds through the namespace's addresses.
		nsArg = ""
	}
	if err := m.remove(ctx, id, nsArg); err != nil {
		return fmt.Errorf("tear down network of pod %q: %w", id, err)
	}
	// Connections of the pod's addresses would keep their NAT mappings
	// and reach the next pod given the same address.
	if err := m.conntrack.flush(ips); err != nil {
		return fmt.Errorf("flush connection tracking of pod %q: %w", id, err)
	}
	if err := removeNetns(path); err != nil {
		return err
	}
	m.unrecord(id)
	return nil
}

// record notes that this Manager makes (or keeps) pod id's namespace.
func (m *Manager) record(id string) error {
	f, err := os.OpenFile(filepath.Join(m.cfg.RecordDir, id), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("record the network namespace of pod %q: %w", id, err)
	}
	return f.Close()
}

// unrecord forgets pod id's namespace, once it is gone. A record left by a
// failed removal only makes Owned list an id whose teardown finds nothing.
func (m *Manager) unrecord(id string) {
	_ = os.Remove(filepath.Join(m.cfg.RecordDir, id))
}

// Owned lists the pod ids whose namespaces this Manager made and has not
// torn down: after a crash, those of pods the host no longer runs are its
// leftovers, and only those (other hosts' namespaces share NetnsDir).
func (m *Manager) Owned() ([]string, error) {
	entries, err := os.ReadDir(m.cfg.RecordDir)
	if err != nil {
		return nil, fmt.Errorf("list recorded network namespaces in %q: %w", m.cfg.RecordDir, err)
	}
	var ids []string
	for _, e := range entries {
		if validID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// remove runs CNI DEL. The portmap plugin removes nothing unless DEL carries
// port mappings too (it returns early on an empty list), so DEL gets the
// ones ADD had, from libcni's result cache (/var/lib/cni/results). Without a
// cache entry it gets a placeholder mapping: portmap deletes its rules by
// pod id, not by port, and a leaked DNAT rule would steal a host port from
// the next pod that asks for it.
func (m *Manager) remove(ctx context.Context, id, netns string) error {
	ports, n, err := m.cachedPorts(id)
	if err != nil {
		return err
	}
	err = m.forPorts(n).Remove(ctx, id, netns, gocni.WithCapability("portMappings", ports))
	// A DEL that failed part-way (the bridge plugin gives up when the
	// masquerade chain of a failed ADD does not exist) must not keep the
	// address: release host-local's leases of id directly.
	if rerr := m.releaseLeases(id); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// releaseLeases removes the host-local lease files that name id. A lease
// file is named after its address and holds the container id, then the
// interface name.
func (m *Manager) releaseLeases(id string) error {
	var errs []error
	_ = filepath.WalkDir(m.cfg.IPAMDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || net.ParseIP(d.Name()) == nil {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if first, _, _ := strings.Cut(string(raw), "\n"); strings.TrimSpace(first) == id {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return nil
	})
	return errors.Join(errs...)
}

// cachedPorts returns the port mappings that ADD recorded for id, and how
// many there are.
func (m *Manager) cachedPorts(id string) (any, int, error) {
	_, rt, err := m.cache.GetNetworkListCachedConfig(
		&libcni.NetworkConfigList{Name: NetworkName},
		&libcni.RuntimeConf{ContainerID: id, IfName: podInterface})
	if err != nil {
		return nil, 0, fmt.Errorf("read CNI cache of pod %q: %w", id, err)
	}
	if rt == nil { // no cache entry
		return []gocni.PortMapping{{HostPort: 1, ContainerPort: 1, Protocol: "tcp"}}, 1, nil
	}
	if p, ok := rt.CapabilityArgs["portMappings"]; ok {
		if list, ok := p.([]any); ok {
			return p, len(list), nil
		}
		return p, 1, nil // not a list: let portmap judge it
	}
	return []gocni.PortMapping{}, 0, nil
}

// Sandboxes lists the ids that have a namespace in NetnsDir made by a
// Manager, for finding leftovers after a crash.
func (m *Manager) Sandboxes() ([]string, error) {
	entries, err := os.ReadDir(m.cfg.NetnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces in %q: %w", m.cfg.NetnsDir, err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), netnsPrefix); ok && validID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Gateway returns the pods' gateway, the bridge's address.
func (m *Manager) Gateway() net.IP {
	return net.IP(m.prefix.Addr().Next().AsSlice())
}

func (m *Manager) netnsPath(id string) string {
	return filepath.Join(m.cfg.NetnsDir, netnsPrefix+id)
}

// idPattern is what libcni accepts as a container id, made stricter on
// length so that the netns name stays a sane file name.
var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,127}$`)

func validID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("pod id %q: want 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit", id)
	}
	return nil
}

// conflist renders the CNI network configuration, with portmap or without.
func conflist(cfg Config, prefix netip.Prefix, portmap bool) ([]byte, error) {
	defaultRoute := "0.0.0.0/0"
	if prefix.Addr().Is6() {
		defaultRoute = "::/0"
	}
	bridge := map[string]any{
		"type":        "bridge",
		"bridge":      cfg.Bridge,
		"isGateway":   true,
		"ipMasq":      false, // one rule for the pod range: ensureMasquerade
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": cfg.IPAMDir,
			"ranges": [][]map[string]string{{{
				"subnet":  prefix.String(),
				"gateway": prefix.Addr().Next().String(),
			}}},
			"routes": []map[string]string{{"dst": defaultRoute}},
		},
	}
	if cfg.MTU > 0 {
		bridge["mtu"] = cfg.MTU
	}
	plugins := []any{bridge}
	if portmap {
		plugins = append(plugins, map[string]any{
			"type":         "portmap",
			"capabilities": map[string]bool{"portMappings": true},
			"snat":         true,
		})
	}
	list := map[string]any{
		"cniVersion": "1.0.0",
		"name":       NetworkName,
		"plugins":    plugins,
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render CNI config: %w", err)
	}
	return b, nil
}

func cniPorts(ports []PortMapping) []gocni.PortMapping {
	out := make([]gocni.PortMapping, 0, len(ports))
	for _, p := range ports {
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		out = append(out, gocni.PortMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: proto, HostIP: p.HostIP})
	}
	return out
}

// enableForwarding turns on routing between the bridge and the host's other
// interfaces, without which pods reach nothing past the gateway.
func enableForwarding(v4 bool) error {
	path := "/proc/sys/net/ipv4/ip_forward"
	if !v4 {
		path = "/proc/sys/net/ipv6/conf/all/forwarding"
	}
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IP forwarding (%s): %w", path, err)
	}
	return nil
}

func pluginExists(dirs []string, name string) bool {
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && !st.IsDir() {
			return true
		}
	}
	return false
}

// sortIPs puts IPv4 addresses first, keeping the order otherwise.
func sortIPs(ips []net.IP) {
	slices.SortStableFunc(ips, func(a, b net.IP) int {
		a4, b4 := a.To4() != nil, b.To4() != nil
		switch {
		case a4 && !b4:
			return -1
		case !a4 && b4:
			return 1
		}
		return 0
	})
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// keyedMutex serialises work per key.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
