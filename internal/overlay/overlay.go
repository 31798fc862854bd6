// Package overlay joins a host's pod subnet to every other host's, so that
// a pod reaches any pod by its IP whatever host either runs on. It embeds
// flannel (github.com/flannel-io/flannel) as a library, the way k3s does:
// flannel's Kubernetes subnet manager reads each node's pod CIDR (given by
// the controller-manager) and publishes this host's tunnel endpoint in its
// node's annotations; the backend (VXLAN, or host-gw for hosts on one L2
// segment, or WireGuard) routes each other host's pod CIDR to it.
//
// The pods' own bridge, addresses and masquerade stay with package network:
// flannel here only routes between hosts, and tells network the MTU its
// pods must use so that encapsulated packets still fit the host's link.
package overlay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/flannel-io/flannel/pkg/backend"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/subnet/kube"

	// The backends CCI offers, registered with flannel's backend manager.
	_ "github.com/flannel-io/flannel/pkg/backend/hostgw"
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"
	_ "github.com/flannel-io/flannel/pkg/backend/wireguard"
)

// Backends are the flannel backends CCI offers, and "none" (one host, or a
// fabric that routes pod CIDRs by itself).
var Backends = []string{"vxlan", "host-gw", "wireguard-native", "none"}

// annotationPrefix is flannel's usual node annotation prefix, so that its
// tools read CCI's nodes as they read any flannel cluster's.
const annotationPrefix = "flannel.alpha.coreos.com"

// NetConf is the cluster-wide overlay configuration every host must share:
// flannel's net-conf.json. The control plane publishes it (see
// server.NetworkConfigMap).
type NetConf struct {
	// Network is the cluster's pod range; every host's pod CIDR lies in it.
	Network string `json:"Network"`
	// Backend is flannel's backend block: {"Type":"vxlan","VNI":1,"Port":8472}.
	Backend map[string]any `json:"Backend"`
}

// BuildNetConf renders the net-conf.json of a cluster. vni and port apply
// to VXLAN only (0: flannel's defaults, VNI 1 and port 8472); one host may
// run several clusters' hosts when their VNIs differ.
func BuildNetConf(clusterCIDR, backendType string, vni, port int) ([]byte, error) {
	if _, _, err := net.ParseCIDR(clusterCIDR); err != nil {
		return nil, fmt.Errorf("cluster CIDR %q: %w", clusterCIDR, err)
	}
	be := map[string]any{"Type": backendType}
	switch backendType {
	case "vxlan":
		if vni > 0 {
			be["VNI"] = vni
		}
		if port > 0 {
			be["Port"] = port
		}
	case "host-gw", "wireguard-native", "none":
	default:
		return nil, fmt.Errorf("overlay backend %q: choose one of %v", backendType, Backends)
	}
	return json.MarshalIndent(NetConf{Network: clusterCIDR, Backend: be}, "", "  ")
}

// Config is one host's overlay.
type Config struct {
	// NodeName is this host's node.
	NodeName string
	// Kubeconfig is a kubeconfig file flannel's subnet manager uses to watch
	// nodes and annotate its own (flannel reads only files).
	Kubeconfig string
	// NetConf is the cluster's net-conf.json (BuildNetConf).
	NetConf []byte
	// NodeIP is this host's address towards the other hosts; the interface
	// that holds it carries the tunnel.
	NodeIP string
	// Dir holds the net-conf.json and flannel's subnet.env.
	Dir string
	// Log receives progress messages (flannel itself logs through klog).
	Log *slog.Logger
}

// Overlay is one host's running overlay.
type Overlay struct {
	cfg     Config
	network backend.Network
	wg      sync.WaitGroup
}

// BackendType returns the Type of a net-conf.json, "none" when it has none.
func BackendType(netConf []byte) (string, error) {
	var nc NetConf
	if err := json.Unmarshal(netConf, &nc); err != nil {
		return "", fmt.Errorf("overlay net-conf: %w", err)
	}
	t, _ := nc.Backend["Type"].(string)
	if t == "" {
		t = "none"
	}
	return t, nil
}

// Start registers this host with the overlay: it brings up the tunnel
// device, publishes this host's endpoint on its node and returns once
// routes to the other hosts can be installed. Run then keeps them current.
// It returns nil, nil when the configured backend is "none".
func Start(ctx context.Context, cfg Config) (*Overlay, error) {
	t, err := BackendType(cfg.NetConf)
	if err != nil {
		return nil, err
	}
	if t == "none" {
		return nil, nil
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	confPath := filepath.Join(cfg.Dir, "net-conf.json")
	if err := os.WriteFile(confPath, cfg.NetConf, 0o644); err != nil {
		return nil, fmt.Errorf("write overlay net-conf: %w", err)
	}
	// flannel's kube subnet manager learns its node from NODE_NAME; one
	// process runs one host.
	if err := os.Setenv("NODE_NAME", cfg.NodeName); err != nil {
		return nil, err
	}
	sm, err := kube.NewSubnetManager(ctx, "", cfg.Kubeconfig, annotationPrefix, confPath, false)
	if err != nil {
		return nil, fmt.Errorf("overlay subnet manager: %w", err)
	}
	netCfg, err := sm.GetNetworkConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("overlay network config: %w", err)
	}
	stack, err := ipmatch.GetIPFamily(netCfg.EnableIPv4, netCfg.EnableIPv6)
	if err != nil {
		return nil, err
	}
	ext, err := ipmatch.LookupExtIface(cfg.NodeIP, "", "", stack, ipmatch.PublicIPOpts{PublicIP: cfg.NodeIP})
	if err != nil {
		return nil, fmt.Errorf("overlay: the interface of node IP %s: %w (pass --node-ip with an address of this host that the other hosts reach)", cfg.NodeIP, err)
	}
	be, err := backend.NewManager(ctx, sm, ext).GetBackend(netCfg.BackendType)
	if err != nil {
		return nil, fmt.Errorf("overlay backend %q: %w", netCfg.BackendType, err)
	}
	o := &Overlay{cfg: cfg}
	o.network, err = be.RegisterNetwork(ctx, &o.wg, netCfg)
	if err != nil {
		return nil, fmt.Errorf("overlay: register this host with backend %q: %w", netCfg.BackendType, err)
	}
	if err := sm.HandleSubnetFile(filepath.Join(cfg.Dir, "subnet.env"), netCfg, false, o.network.Lease().Subnet, o.network.Lease().IPv6Subnet, o.network.MTU()); err != nil {
		cfg.Log.Warn("overlay: write subnet.env", "err", err)
	}
	cfg.Log.Info("overlay ready", "backend", netCfg.BackendType, "interface", ext.Iface.Name, "subnet", o.network.Lease().Subnet.String(), "mtu", o.network.MTU())
	return o, nil
}

// MTU is what pod interfaces must use: the host link's MTU less the
// backend's encapsulation.
func (o *Overlay) MTU() int { return o.network.MTU() }

// Run keeps the routes to the other hosts current until ctx ends, and
// returns then without waiting for flannel's goroutines: its network's Run
// can block for good after cancellation (its loop may return on the device
// watcher's exit while its lease watcher still sends it an event), which
// would hold up the stop of everything started before the overlay.
func (o *Overlay) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.network.Run(ctx)
		o.wg.Wait()
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return ctx.Err()
}
