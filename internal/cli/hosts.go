package cli

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/hostns"
	"github.com/cci-project/cci/internal/server"
)

// hostsFlags are `cci up`'s flags for running several hosts on one machine.
type hostsFlags struct {
	count int
	cidr  string
	pools []string
}

func addHostsFlags(cmd *cobra.Command, h *hostsFlags) {
	f := cmd.Flags()
	f.IntVar(&h.count, "hosts", 0, "run this many hosts, each in its own network namespace with its own address, containerd, pod bridge and agent (0: one host in this process, on the machine's own network)")
	f.StringSliceVar(&h.pools, "hosts-pools", nil, "pools of the hosts of --hosts, in order, e.g. general,general,gpu (a host without one is in --pool's pool)")
	f.StringVar(&h.cidr, "hosts-cidr", "10.44.0.0/24", "address range of the hosts of --hosts: the machine takes the first address, the hosts the next ones, Services of type LoadBalancer the last 16")
}

// newFleet lays out the hosts of `cci up --hosts N` and prepares the server
// config for them: the registry also listens where the hosts reach it, and
// Services of type LoadBalancer take their addresses from the pool routed
// to the hosts.
func newFleet(fl *upFlags, dataDir string) (*hostsns, error) {
	cidr, err := netip.ParsePrefix(fl.hosts.cidr)
	if err != nil {
		return nil, fmt.Errorf("--hosts-cidr %q: %w", fl.hosts.cidr, err)
	}
	prefix := fl.agent.NodeName
	fleet, err := hostns.New(hostns.Config{
		Count:      fl.hosts.count,
		Bridge:     hostns.BridgeFor(fl.agent.Bridge),
		CIDR:       cidr,
		NodePrefix: prefix,
		Pools:      fl.hosts.pools,
		DataDir:    dataDir,
		Log:        fl.server.Log,
	})
	if err != nil {
		return nil, err
	}
	if err := fleet.Setup(); err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	if err := fleet.SaveLayout(); err != nil {
		return nil, err
	}
	gw := cidrGateway(cidr)
	_, port, err := net.SplitHostPort(fl.server.RegistryAddr)
	if err != nil {
		return nil, fmt.Errorf("--registry-addr %q: %w", fl.server.RegistryAddr, err)
	}
	if port == "0" {
		return nil, fmt.Errorf("--registry-addr %q: --hosts needs a fixed registry port", fl.server.RegistryAddr)
	}
	hostsRegistry := net.JoinHostPort(gw.String(), port)
	fl.server.RegistryExtraAddrs = append(fl.server.RegistryExtraAddrs, hostsRegistry)
	if len(fl.server.LBPool) == 0 {
		fl.server.LBPool = []string{hostns.Config{CIDR: cidr}.LBPool().String()}
	}
	return &hostsns{fleet: fleet, registry: hostsRegistry}, nil
}

func cidrGateway(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

type hostsns struct {
	fleet    *hostns.Fleet
	registry string
}

// agentArgs are every host's `cci agent` flags.
func (h *hostsns) agentArgs(fl *upFlags, info *server.Info) []string {
	a := fl.agent
	args := []string{
		"--server", "https://" + net.JoinHostPort(fl.server.AdvertiseAddress, strconv.Itoa(fl.server.APIPort)),
		"--token", info.Token,
		"--insecure-registry", info.RegistryAddr,
		"--registry-mirror", info.RegistryAddr + "=" + h.registry,
		"--builtin-registry", info.RegistryAddr,
		"--kubelet-port", strconv.Itoa(a.KubeletPort),
		"--max-pods", strconv.Itoa(a.MaxPods),
		"--runsc-path", a.RunscPath,
		"--runsc-platform", a.RunscPlatform,
		"--runsc-systrap-fast-path=" + strconv.FormatBool(a.RunscSystrapFastPath),
		"--service-proxy", a.ServiceProxy,
		"--pool", a.Pool,
		"--pod-max-pids", strconv.FormatInt(a.PodMaxPids, 10),
		"--container-log-max-size", a.ContainerLogMaxSize,
		"--container-log-max-files", strconv.Itoa(a.ContainerLogMaxFiles),
		"--accelerators", a.Accelerators,
		"--fake-gpus", strconv.Itoa(a.FakeGPUs),
		"--gpu-sharing", strconv.Itoa(a.GPUSharing),
	}
	for _, d := range a.ClusterDNS {
		args = append(args, "--cluster-dns", d)
	}
	for _, r := range a.InsecureRegistries {
		args = append(args, "--insecure-registry", r)
	}
	for _, m := range a.RegistryMirrors {
		args = append(args, "--registry-mirror", m)
	}
	return args
}

func hostCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "host",
		Short: "List, power off and power on the hosts of `cci up --hosts N`",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir(), "data folder of the `cci up --hosts N`")
	find := func(name string) (hostns.Host, error) {
		hosts, err := hostns.LoadHosts(dataDir)
		if err != nil {
			return hostns.Host{}, err
		}
		names := []string{}
		for _, h := range hosts {
			if h.Name == name {
				return h, nil
			}
			names = append(names, h.Name)
		}
		return hostns.Host{}, fmt.Errorf("no host %q; the hosts are %v", name, names)
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the hosts: name, address, network namespace, up or down",
		RunE: func(cmd *cobra.Command, _ []string) error {
			hosts, err := hostns.LoadHosts(dataDir)
			if err != nil {
				return err
			}
			return printHosts(cmd.OutOrStdout(), hosts)
		},
	}, &cobra.Command{
		Use:   "stop NAME",
		Short: "Power a host off: kill its agent, containerd and every pod process at once, and keep it down",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := find(args[0])
			if err != nil {
				return err
			}
			n, err := hostns.PowerOff(h)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s is down (%d processes killed); `cci host start %s` brings it back\n", h.Name, n, h.Name)
			return nil
		},
	}, &cobra.Command{
		Use:   "start NAME",
		Short: "Power a stopped host on: `cci up` starts its agent again, which re-adopts or cleans its pods",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := find(args[0])
			if err != nil {
				return err
			}
			if err := hostns.PowerOn(h); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s is starting\n", h.Name)
			return nil
		},
	})
	return cmd
}

func printHosts(w io.Writer, hosts []hostns.Host) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIP\tPOOL\tNETNS\tSTATE")
	for _, h := range hosts {
		state := "up"
		if h.Down() {
			state = "down"
		}
		pool := h.Pool
		if pool == "" {
			pool = "general"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.IP, pool, h.Netns, state)
	}
	return tw.Flush()
}

// kubeClient is a clientset for a kubeconfig file.
func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %q: %w", kubeconfig, err)
	}
	return kubernetes.NewForConfig(rc)
}
