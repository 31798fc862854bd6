// Package cli is the `cci` command line: one binary, roles by subcommand.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/cci-project/cci/internal/agent"
	"github.com/cci-project/cci/internal/hostns"
	"github.com/cci-project/cci/internal/image"
	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/internal/server"
	"github.com/cci-project/cci/internal/serviceproxy"
	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/internal/version"
)

// Execute runs the command line and returns the process exit code.
func Execute() int {
	root := &cobra.Command{
		Use:           "cci",
		Short:         "CCI: a serverless container engine on upstream Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(withPprof(upCmd()), withPprof(serverCmd()), withSimulate(withPprof(agentCmd())), imageCmd(), hostCmd(), tenantCmd(), poolCmd(), deviceCmd(), usageCmd(), versionCmd(), benchCmd(), etcdCmd(), kubeProxyCmd(), connectCmd(), releaseCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		if errors.Is(err, agent.ErrNodeDeleted) {
			// The hosts of `cci up --hosts` stay down on it.
			return hostns.ExitNodeDeleted
		}
		return 1
	}
	return 0
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "cci %s (kubernetes %s)\n", version.Version, version.KubernetesVersion)
		},
	}
}

func defaultDataDir() string {
	if d := os.Getenv("CCI_DATA_DIR"); d != "" {
		return d
	}
	return ".cci"
}

type upFlags struct {
	server server.Config
	agent  agent.Config
	hosts  hostsFlags
}

func addServerFlags(cmd *cobra.Command, c *server.Config) {
	f := cmd.Flags()
	f.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "folder for all state (etcd, PKI, registry, pods, logs); $CCI_DATA_DIR")
	f.StringVar(&c.BindAddress, "bind-address", "0.0.0.0", "address the apiserver listens on")
	f.IntVar(&c.APIPort, "api-port", 6443, "apiserver HTTPS port")
	f.StringVar(&c.AdvertiseAddress, "advertise-address", "", "IP agents and pods use to reach the apiserver (default: the host's primary IP)")
	f.StringSliceVar(&c.EtcdServers, "etcd-servers", nil, "external etcd cluster URLs (default: an embedded member)")
	f.IntVar(&c.EtcdClientPort, "etcd-client-port", 2379, "embedded etcd client port (loopback)")
	f.IntVar(&c.EtcdPeerPort, "etcd-peer-port", 2380, "embedded etcd peer port (loopback)")
	f.StringVar(&c.RegistryAddr, "registry-addr", "127.0.0.1:5000", "address of the built-in OCI registry")
	f.StringSliceVar(&c.RegistryPublic, "registry-public", []string{"cci-test/*"}, "repositories of the built-in registry anyone may pull (names, or prefixes ending in /*); `cci image public` adds more")
	f.StringVar(&c.ServiceCIDR, "service-cidr", "10.43.0.0/16", "Service IP range")
	f.StringVar(&c.ClusterCIDR, "cluster-cidr", "10.42.0.0/16", "pod IP range, split into one subnet per host")
	f.IntVar(&c.NodeCIDRMaskSize, "node-cidr-mask-size", 24, "prefix length of each host's pod subnet (24: 253 pods; a host with --max-pods over 253 needs a shorter one)")
	f.StringSliceVar(&c.LBPool, "lb-pool", nil, "addresses (IPs or prefixes) for Services of type LoadBalancer (default: the advertise address)")
	f.StringVar(&c.WebhookAddr, "webhook-addr", "127.0.0.1:0", "address of the tenant admission webhook the apiserver calls (port 0: chosen once, then kept)")
	f.IntVar(&c.UsagePort, "usage-port", 0, "HTTPS port of the usage endpoint (default: api-port + 1)")
	f.IntVar(&c.ConsolePort, "console-port", 0, "HTTPS port of the web console (default: api-port + 2; -1: no console)")
	f.IntVar(&c.ObjectStorePort, "object-store-port", 0, "port of the object store's S3 API (cci-obs buckets) on the bind address (default: api-port + 3)")
	f.IntVar(&c.FileStorePort, "file-store-port", 0, "port of the cci-sfs file server (WebDAV) on the bind address (default: api-port + 4)")
	f.StringVar(&c.PriceTable, "price-table", "", "YAML or JSON price table: currency, perCoreSecond, perGiBSecond, perGPUSecond (default: built-in prices)")
	f.IntVar(&c.MetricsPort, "metrics-port", 0, "HTTPS port of the metrics API (metrics-server) on the advertise address (default: a free port)")
	f.StringVar(&c.FlannelBackend, "flannel-backend", "vxlan", "pod network between hosts: vxlan, host-gw (hosts on one L2 segment), wireguard-native (encrypted) or none")
	f.IntVar(&c.VXLANVNI, "vxlan-vni", 0, "VXLAN network identifier of the overlay (default 1; clusters whose hosts share a network namespace need different ones)")
	f.IntVar(&c.VXLANPort, "vxlan-port", 0, "UDP port of the VXLAN overlay (default 8472)")
	f.IntVar(&c.UnreachableTolerationSeconds, "unreachable-toleration-seconds", 30, "seconds a pod stays on a NotReady or unreachable host before it is evicted and replaced elsewhere (pods that set their own tolerations keep them)")
	f.StringVar(&c.DNSAddress, "dns-address", "", "IP:port of the cluster DNS server, UDP and TCP; the kube-dns Service points at it (default: <advertise-address>:53; port 0: a free port)")
}

func addAgentFlags(cmd *cobra.Command, c *agent.Config, standalone bool) {
	f := cmd.Flags()
	if standalone {
		f.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "folder for the agent's state (containerd, pods, logs)")
		f.StringVar(&c.Server, "server", "", "apiserver URL, e.g. https://10.0.0.1:6443")
		f.StringVar(&c.Token, "token", "", "join token (the server's <data>/pki/token)")
		f.StringVar(&c.BuiltinRegistry, "builtin-registry", "", "the server's built-in registry (host:port as images name it): pods outside tenant namespaces pull from it with the join token")
	}
	// Also `cci up`'s: its hosts pull from other registries than its own
	// (another CCI's built-in one), which its own hosts' network namespaces
	// may reach at another address than the machine does.
	f.StringSliceVar(&c.InsecureRegistries, "insecure-registry", nil, "registries (host:port) reached over plain HTTP, e.g. the server's built-in registry")
	f.StringSliceVar(&c.RegistryMirrors, "registry-mirror", nil, "REGISTRY=MIRROR (both host:port): pull images named after REGISTRY from MIRROR, e.g. 127.0.0.1:5000=10.0.0.1:5000")
	f.StringVar(&c.NodeName, "node-name", "", "node name (default: the host name)")
	f.StringVar(&c.NodeIP, "node-ip", "", "IP the apiserver uses to reach this host's kubelet API")
	f.IntVar(&c.KubeletPort, "kubelet-port", 10250, "kubelet API TLS port")
	f.StringVar(&c.ContainerdSocket, "containerd-socket", "", "use this running containerd instead of starting one")
	f.IntVar(&c.MaxPods, "max-pods", 110, "pods this host may run")
	f.StringVar(&c.Pool, "pool", "general", "host pool this host joins (label and, except for general, taint cci.io/pool=NAME); tenants choose pools")
	f.StringVar(&c.Accelerators, "accelerators", "auto", "accelerators pods may be given: auto (Ascend where /dev/davinci* exist, else NVIDIA GPUs through NVML, none without the driver), nvidia, ascend or none")
	f.IntVar(&c.FakeGPUs, "fake-gpus", 0, "give the host this many fake nvidia.com/gpu devices, for tests and demos (harmless device nodes, injected through CDI like real ones)")
	f.IntVar(&c.GPUSharing, "gpu-sharing", 0, "share each NVIDIA GPU among this many pods by time-slicing: each is advertised as that many nvidia.com/gpu, and a pod given one gets the whole GPU, unfenced (0 or 1: whole GPUs, never shared)")
	f.StringVar(&c.Bridge, "cni-bridge", "cci0", "Linux bridge the pods attach to (one per cluster on a host)")
	f.StringVar(&c.RunscPath, "runsc-path", "", "gVisor's runsc, which runs the pods of the gvisor RuntimeClass, e.g. /usr/bin/runsc for Debian's of 2022 (default: the current one make setup builds at /usr/local/lib/cci/runsc, else runsc in PATH)")
	f.StringVar(&c.RunscPlatform, "runsc-platform", "", "runsc --platform for gvisor pods (systrap, ptrace, kvm; default: the runsc's own default, but ptrace instead of kvm)")
	f.BoolVar(&c.RunscSystrapFastPath, "runsc-systrap-fast-path", false, "keep gVisor's systrap fast path (spinning for syscalls instead of sleeping): lower syscall latency for a few busy sandboxes, CPU taken from the others where many share a core (default: off, --systrap-disable-fast-path)")
	f.Int64Var(&c.PodMaxPids, "pod-max-pids", 4096, "most processes a pod may have, as the kubelet's flag of this name (-1: no limit)")
	f.StringVar(&c.ContainerLogMaxSize, "container-log-max-size", "10Mi", "size at which a container's log file is rotated, as the kubelet's containerLogMaxSize")
	f.IntVar(&c.ContainerLogMaxFiles, "container-log-max-files", 5, "log files kept per container run, the current one included, as the kubelet's containerLogMaxFiles")
	f.StringVar(&c.EVSDir, "evs-dir", "", "folder for this host's cci-evs disks (sparse files on loop devices); its file system's free space is what the host can provision (default: <data-dir>/evs)")
	f.StringSliceVar(&c.ClusterDNS, "cluster-dns", nil, "DNS server of ClusterFirst pods (default: the kube-dns Service's ClusterIP)")
	f.StringVar(&c.ServiceProxy, "service-proxy", "iptables", "service proxy mode (the upstream kube-proxy, a child process of the agent): iptables, nftables, or off where the host runs its own")
}

// controlPlaneGC lets the heap of a process that runs the control plane
// grow to three times its live size between collections (GOGC=200) instead
// of twice: with a thousand hosts the garbage collector was the largest
// single cost of binding pods, and at 200 the control plane spent 27% less
// CPU per pod and bound 133 pods/s instead of 88 (BENCHMARKS.md), for a
// third more memory. A GOGC in the environment wins.
func controlPlaneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(200)
	}
}

func upCmd() *cobra.Command {
	var fl upFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the control plane and a host agent in one process, data in one folder",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUp(cmd.Context(), cmd.ErrOrStderr(), &fl)
		},
	}
	addServerFlags(cmd, &fl.server)
	addAgentFlags(cmd, &fl.agent, false)
	addHostsFlags(cmd, &fl.hosts)
	return cmd
}

func runUp(ctx context.Context, stderr io.Writer, fl *upFlags) error {
	start := time.Now()
	controlPlaneGC()
	ctx, stop := signalContext(ctx)
	defer stop()
	dataDir, unlock, logger, err := prepareDataDir(fl.server.DataDir, stderr)
	if err != nil {
		return err
	}
	defer unlock()
	fl.server.DataDir = dataDir
	fl.server.Log = logger
	fl.agent.DataDir = dataDir
	fl.agent.Log = logger

	var fleet *hostsns
	if fl.hosts.count > 0 {
		if fl.server.AdvertiseAddress == "" {
			fl.server.AdvertiseAddress = server.HostIP()
		}
		if fleet, err = newFleet(fl, dataDir); err != nil {
			return err
		}
	}

	serverDone := make(chan error, 1)
	infoCh := make(chan *server.Info, 1)
	sctx, cancelServer := context.WithCancel(context.Background())
	defer cancelServer()
	go func() {
		serverDone <- server.Run(sctx, fl.server, func(i *server.Info) { infoCh <- i })
	}()
	var info *server.Info
	select {
	case info = <-infoCh:
	case err := <-serverDone:
		return err
	case <-ctx.Done():
		cancelServer()
		return <-serverDone
	}

	banner := func() {
		fmt.Fprintf(stderr, "\nCCI is ready (%.1fs)\n", time.Since(start).Seconds())
		fmt.Fprintf(stderr, "  kubeconfig: %s\n", info.AdminKubeconfig)
		fmt.Fprintf(stderr, "  apiserver:  %s\n", info.APIServerURL)
		fmt.Fprintf(stderr, "  registry:   %s\n", info.RegistryAddr)
		fmt.Fprintf(stderr, "  usage:      %s\n", info.UsageURL)
		if info.ConsoleURL != "" {
			fmt.Fprintf(stderr, "  console:    %s\n", info.ConsoleURL)
		}
		fmt.Fprintf(stderr, "  dns:        %s\n", info.DNSAddress)
		fmt.Fprintf(stderr, "  join token: %s\n", filepath.Join(info.PKI.Dir, "token"))
		if fleet != nil {
			fmt.Fprintf(stderr, "  hosts:      %d (cci host list --data-dir %s)\n", len(fleet.fleet.Hosts()), dataDir)
		}
		fmt.Fprintf(stderr, "  try: kubectl --kubeconfig %s get nodes\n\n", info.AdminKubeconfig)
	}
	agentDone := make(chan error, 1)
	if fleet != nil {
		admin, err := kubeClient(info.AdminKubeconfig)
		if err != nil {
			cancelServer()
			return errors.Join(err, <-serverDone)
		}
		go fleet.fleet.RoutePods(ctx, admin)
		args := fleet.agentArgs(fl, info)
		go func() { agentDone <- fleet.fleet.Run(ctx, args, banner) }()
	} else {
		fl.agent.Server = info.APIServerURL
		fl.agent.Token = info.Token
		fl.agent.InsecureRegistries = append(fl.agent.InsecureRegistries, info.RegistryAddr)
		fl.agent.BuiltinRegistry = info.RegistryAddr
		go func() { agentDone <- agent.Run(ctx, fl.agent, banner) }()
	}
	var runErr error
	select {
	case runErr = <-agentDone:
		if ctx.Err() == nil && errors.Is(runErr, agent.ErrNodeDeleted) {
			// The host's node was deleted (kubectl delete node): its pods
			// are stopped, and the control plane serves on for the other
			// hosts; this host registers again at the next `cci up`.
			logger.Warn("this host's agent stopped; the control plane keeps serving", "err", runErr)
			fmt.Fprintf(stderr, "\n%v\nThe control plane keeps serving; run `cci up` again to bring this host back.\n\n", runErr)
			select {
			case runErr = <-serverDone:
				return runErr
			case <-ctx.Done():
				runErr = nil
			}
		} else if ctx.Err() == nil && runErr != nil {
			runErr = fmt.Errorf("agent: %w", runErr)
		}
	case runErr = <-serverDone:
		// The agent follows the server down.
		stop()
		if err := <-agentDone; err != nil {
			logger.Warn("agent stopped", "err", err)
		}
		return runErr
	}
	// The agent returned (signal or failure); stop the control plane after it
	// so that the agent's last status updates reach the apiserver.
	cancelServer()
	if err := <-serverDone; err != nil {
		// A control plane that failed first is the cause of the agent's error.
		runErr = errors.Join(fmt.Errorf("control plane: %w", err), runErr)
	}
	logger.Info("stopped; pods keep running and are re-adopted at the next start")
	return runErr
}

func serverCmd() *cobra.Command {
	var c server.Config
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (etcd, kube-apiserver, controller-manager, scheduler, registry)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			controlPlaneGC()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			dataDir, unlock, logger, err := prepareDataDir(c.DataDir, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer unlock()
			c.DataDir, c.Log = dataDir, logger
			return server.Run(ctx, c, func(i *server.Info) {
				fmt.Fprintf(cmd.ErrOrStderr(), "\nCCI control plane is ready\n  kubeconfig: %s\n  apiserver:  %s\n  registry:   %s\n  console:    %s\n  join token: %s\n\n",
					i.AdminKubeconfig, i.APIServerURL, i.RegistryAddr, i.ConsoleURL, filepath.Join(i.PKI.Dir, "token"))
			})
		},
	}
	addServerFlags(cmd, &c)
	return cmd
}

func etcdCmd() *cobra.Command {
	var (
		dataDir          string
		clientPort, peer int
	)
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run the control plane's etcd member as a process of its own, for cci server --etcd-servers",
		Long: `Run the etcd member that cci server otherwise embeds, alone: data in
<data-dir>/etcd, plain HTTP on 127.0.0.1. Then start the control plane with
cci server --etcd-servers http://127.0.0.1:<client-port>. With etcd in its own
process its CPU and memory are seen apart from the apiserver's (cci bench
scale does this).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			controlPlaneGC()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			dir, unlock, logger, err := prepareDataDir(dataDir, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer unlock()
			return server.RunEtcd(ctx, dir, clientPort, peer, func(url string) {
				logger.Info("etcd ready", "client", url, "data", filepath.Join(dir, "etcd"))
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", filepath.Join(defaultDataDir(), "etcd-member"), "folder for etcd's data and log (not the data folder of a cci server or cci up)")
	f.IntVar(&clientPort, "client-port", 2379, "client port (loopback)")
	f.IntVar(&peer, "peer-port", 2380, "peer port (loopback)")
	return cmd
}

// kubeProxyCmd is the service proxy process a host agent starts and keeps
// running (internal/serviceproxy); not meant to be run by hand.
func kubeProxyCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:    "kube-proxy --config FILE",
		Short:  "Run the upstream service proxy with a configuration a host agent wrote",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			return serviceproxy.RunProcess(ctx, config)
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the KubeProxyConfiguration file")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func agentCmd() *cobra.Command {
	var c agent.Config
	cmd := &cobra.Command{
		Use:   "agent --server URL --token TOKEN",
		Short: "Run a host agent that joins a control plane and runs pods on this host",
		RunE: func(cmd *cobra.Command, _ []string) error {
			controlPlaneGC()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			dataDir, unlock, logger, err := prepareDataDir(c.DataDir, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer unlock()
			c.DataDir, c.Log = dataDir, logger
			if strings.HasPrefix(c.Token, "@") {
				raw, err := os.ReadFile(c.Token[1:])
				if err != nil {
					return fmt.Errorf("read token file: %w", err)
				}
				c.Token = strings.TrimSpace(string(raw))
			}
			return agent.Run(ctx, c, func() {
				fmt.Fprintf(cmd.ErrOrStderr(), "\nCCI agent is ready: node %q joined %s\n\n", c.NodeName, c.Server)
			})
		},
	}
	addAgentFlags(cmd, &c, true)
	return cmd
}

func imageCmd() *cobra.Command {
	var registryAddr, name, dataDir string
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Work with images in the built-in registry",
		Long: `Work with images in the built-in registry.

Pushes authenticate as the operator with the credentials the control plane
writes to <data-dir>/registry-auth/config.json (unless $DOCKER_CONFIG names
other ones). Standard clients use the same file:
  DOCKER_CONFIG=<data-dir>/registry-auth crane push …
  skopeo copy --dest-authfile <data-dir>/registry-auth/config.json …`,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return useOperatorCredentials(dataDir)
		},
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir(), "CCI data folder, where the operator's registry credentials are; $CCI_DATA_DIR")
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Push the images of a docker-archive or OCI-layout tar into the registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := image.Import(cmd.Context(), args[0], registryAddr, name)
			if err != nil {
				return err
			}
			for _, r := range refs {
				fmt.Fprintln(cmd.OutOrStdout(), r)
			}
			return nil
		},
	}
	imp.Flags().StringVar(&registryAddr, "registry", "127.0.0.1:5000", "registry host:port to push to")
	imp.Flags().StringVar(&name, "name", "", "repository:tag for images the archive does not name")
	var busybox string
	test := &cobra.Command{
		Use:   "build-test-images",
		Short: "Build the project's test images from Debian's busybox-static and push them to the registry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			refs, err := testimage.Build(cmd.Context(), registryAddr, busybox)
			if err != nil {
				return err
			}
			for _, name := range []string{testimage.HTTPD, testimage.Shell} {
				fmt.Fprintln(cmd.OutOrStdout(), refs[name])
			}
			return nil
		},
	}
	test.Flags().StringVar(&registryAddr, "registry", "127.0.0.1:5000", "registry host:port to push to")
	test.Flags().StringVar(&busybox, "busybox", testimage.DefaultBusybox, "static busybox binary to build from")
	public := func(make bool) *cobra.Command {
		use, short := "public REPOSITORY…", "Let everyone pull these repositories (names, or prefixes such as team/*), anonymous clients and every tenant included"
		if !make {
			use, short = "private REPOSITORY…", "Take repositories off the public list: only the operator and the owning tenant pull them"
		}
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				for _, repo := range args {
					if err := registry.SetPublic(registry.AuthDir(dataDir), repo, make); err != nil {
						return err
					}
				}
				list, err := registry.ReadPublicFile(registry.AuthDir(dataDir))
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "public repositories (besides --registry-public of the server): %s\n", strings.Join(list, ", "))
				return nil
			},
		}
	}
	var self image.SelfOptions
	buildSelf := &cobra.Command{
		Use:   "build-self",
		Short: "Build an image of this cci binary (with the shared libraries it needs, from this machine) and push it, e.g. to run cci connect inside a cluster",
		Long: `Builds an image of this cci binary with no base image: the binary at
/usr/local/bin/cci (the entrypoint), its program interpreter and the shared
libraries it needs, taken from this machine as the dynamic loader finds them,
/tmp, /etc/passwd and this machine's CA bundle. It is pushed to --registry as
--name, or written to --output as a docker-archive tar for any registry
(` + "`docker load`, `skopeo copy docker-archive:FILE docker://…`" + `).

  cci image build-self --registry registry.example:5000   # prints registry.example:5000/cci/cci:<version>
  cci image build-self --output cci-image.tar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self.Registry = registryAddr
			start := time.Now()
			built, err := image.BuildSelf(cmd.Context(), self)
			if err != nil {
				return err
			}
			where := "pushed"
			if self.Output != "" {
				where = "written to " + self.Output
			}
			libs := "a static binary"
			if len(built.Loader) > 0 {
				libs = strings.Join(built.Loader, ", ")
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "image %s %s in %s: %s, layer %.1f MiB (%.1f MiB gzipped), with %s\n", built.Ref, where,
				time.Since(start).Round(100*time.Millisecond), built.Digest, float64(built.Size)/(1<<20), float64(built.CompressedSize)/(1<<20), libs)
			fmt.Fprintln(cmd.OutOrStdout(), built.Ref)
			return nil
		},
	}
	buildSelf.Flags().StringVar(&registryAddr, "registry", "127.0.0.1:5000", "registry host:port to push to")
	buildSelf.Flags().StringVar(&self.Name, "name", image.SelfName(version.Version), "repository:tag of the image")
	buildSelf.Flags().StringVar(&self.Output, "output", "", "write the image to this docker-archive tar file instead of pushing it")
	cmd.AddCommand(imp, test, buildSelf, public(true), public(false))
	return cmd
}

// useOperatorCredentials points Docker-config clients (go-containerregistry's
// default keychain, which `cci image` pushes with) at the operator's
// credentials in dataDir, unless $DOCKER_CONFIG already names a folder.
func useOperatorCredentials(dataDir string) error {
	if os.Getenv("DOCKER_CONFIG") != "" {
		return nil
	}
	dir := registry.AuthDir(dataDir)
	if _, err := os.Stat(filepath.Join(dir, registry.DockerConfigFile)); err != nil {
		// Pushes go anonymous and the registry says what is missing.
		return nil
	}
	return os.Setenv("DOCKER_CONFIG", dir)
}

// signalContext ends on the first SIGINT or SIGTERM.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
}

// prepareDataDir creates the data folder, takes its lock (so a second cci
// on the same folder refuses to start instead of corrupting it) and sends
// the upstream components' logs to <data>/logs/cci.log.
func prepareDataDir(dir string, stderr io.Writer) (string, func(), *slog.Logger, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, "logs"), 0o755); err != nil {
		return "", nil, nil, fmt.Errorf("create data folder %q: %w", abs, err)
	}
	lockPath := filepath.Join(abs, "cci.lock")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", nil, nil, fmt.Errorf("open lock %q: %w", lockPath, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid, _ := os.ReadFile(lockPath)
			return "", nil, nil, fmt.Errorf("data folder %q is in use by another cci (pid %s); stop it first or choose another --data-dir", abs, strings.TrimSpace(string(pid)))
		}
		return "", nil, nil, fmt.Errorf("lock %q: %w", lockPath, err)
	}
	_ = lock.Truncate(0)
	_, _ = lock.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)

	logFile, err := os.OpenFile(filepath.Join(abs, "logs", "cci.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		lock.Close()
		return "", nil, nil, err
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	// Every severity goes to the one log file, each line once (one_output):
	// a severity without a writer of its own would make klog create files
	// in the temporary folder.
	_ = fs.Set("one_output", "true")
	klog.SetOutput(logFile)
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(stderr, logFile), &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(logger)
	unlock := func() {
		klog.Flush()
		logFile.Close()
		_ = unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		lock.Close()
	}
	return abs, unlock, logger, nil
}
