package cli

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cci-project/cci/internal/bench"
)

// benchCmd is `cci bench SCENARIO`: measure pod start latency, burst
// throughput, churn, density and control-plane scale against the bare
// runtime of the same machine.
func benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure pod start latency, burst, churn, density, scale, the pod network, the gateway and storage against the floor of this machine",
		Long: `Measure CCI on this machine. Unless --kubeconfig names a running cluster, each
scenario starts its own ` + "`cci up`" + ` (or ` + "`cci server`" + `) on a temporary data folder and
free ports, pushes the test images, measures, and removes everything again.

Every scenario with containers also measures the floor (the same image started
straight through containerd) in the same run and prints its ratio to it.
Results: a table on stdout, <out>/<scenario>.json and a self-contained
<out>/<scenario>.html chart; docs/bench.md explains every figure.`,
	}
	cmd.AddCommand(
		benchScenarioCmd("start", "N pods created one after another: create→Running and create→first instruction", nil),
		benchScenarioCmd("floor", "The same image started straight through containerd: the floor of this machine", nil),
		benchScenarioCmd("burst", "N pods at once from a Deployment scaled from 0 and a Job: all Running, pods/s/core, API p99, profiles", func(cmd *cobra.Command, c *bench.Config) {
			cmd.Flags().StringSliceVar(&c.BurstModes, "modes", []string{"deployment", "job"}, "deployment and/or job")
			cmd.Flags().BoolVar(&c.ViaConnect, "via-connect", false, "compare a Deployment burst created directly with the same through a `cci connect` virtual node from a second control plane, in one run")
		}),
		benchScenarioCmd("churn", "N pods (default 10000) created and deleted in waves, runc and gVisor mixed, with volumes, probes and a Service: nothing may leak (with --rates: the highest steady rate instead)", func(cmd *cobra.Command, c *bench.Config) {
			cmd.Flags().IntVar(&c.Wave, "wave", 100, "pods created at once in each wave")
			cmd.Flags().IntVar(&c.GVisorEvery, "gvisor-every", 2, "every N-th pod runs under gVisor, the others under runc (1: all)")
			cmd.Flags().DurationVar(&c.ChurnFor, "for", 0, "start no wave after this long (0: run all --pods); the leftovers and the engine's processes are checked either way")
			cmd.Flags().DurationVar(&c.Settle, "settle", 30*time.Second, "pause before the goroutines, open files and memory of the engine are read, before the first wave and after the last")
			cmd.Flags().IntVar(&c.Hosts, "hosts", 0, "hosts of the bench's own `cci up --hosts` (0: one host in the `cci up` process)")
			cmd.Flags().Float64SliceVar(&c.ChurnRates, "rates", nil, "instead of waves: create → Running → delete at these pods per second in turn (e.g. 2,4,8,16) and report the highest rate whose p99 start stays under --target")
			cmd.Flags().DurationVar(&c.ChurnStep, "step", 20*time.Second, "how long each rate runs")
			cmd.Flags().DurationVar(&c.Target, "target", time.Second, "p99 create→Running limit")
		}),
		benchScenarioCmd("density", "Idle pods until p99 start passes the target or memory runs short: pods reached, memory per pod", func(cmd *cobra.Command, c *bench.Config) {
			cmd.Flags().IntVar(&c.DensityBatch, "batch", 1, "pods started at a time (p99 is over the last max(20, batch) pods)")
			cmd.Flags().DurationVar(&c.Target, "target", time.Second, "p99 create→Running limit over the last pods")
			cmd.Flags().Int64Var(&c.DensityMinFree, "min-free", 0, "stop when MemAvailable falls below this many bytes (default 10% of MemTotal)")
		}),
		benchScenarioCmd("scale", "The control plane against simulated hosts: pods bound per second, time to all Running, control-plane CPU", func(cmd *cobra.Command, c *bench.Config) {
			cmd.Flags().IntVar(&c.Nodes, "nodes", 1000, "simulated hosts")
			cmd.Flags().DurationVar(&c.StartDelay, "start-delay", 0, "how long a simulated pod stays Pending")
			cmd.Flags().IntVar(&c.Workers, "workers", 50, "parallel pod creates")
		}),
		benchScenarioCmd("network", "Pod-to-pod TCP throughput and round-trip time on one host and across hosts (VXLAN), against the hosts' own paths", func(cmd *cobra.Command, c *bench.Config) {
			cmd.Flags().IntVar(&c.Hosts, "hosts", 2, "hosts of the bench's own `cci up --hosts`")
			cmd.Flags().DurationVar(&c.NetStreamFor, "stream-for", 2*time.Second, "how long each throughput stream writes")
			cmd.Flags().IntVar(&c.NetStreams, "streams", 3, "throughput streams per path, one after another (the median counts)")
			cmd.Flags().IntVar(&c.NetPings, "pings", 2000, "round trips timed per message size (1 B and 1400 B) per path")
			cmd.Flags().StringVar(&c.Source, "source", "", "the CCI source tree, where the measuring program is built from (default: found from the working folder)")
		}),
		benchScenarioCmd("gateway", "Requests through a Gateway of class cci to one pod against the same straight to the pod IP, and the time a weight shift takes to reach clients", func(cmd *cobra.Command, c *bench.Config) {
			cmd.Flags().IntVar(&c.GatewayRequests, "requests", 2000, "requests each way (straight to the pod, through the Gateway), split over alternating rounds")
			cmd.Flags().IntVar(&c.GatewayClients, "clients", 4, "keep-alive clients sending at once")
		}),
		benchScenarioCmd("storage", "Sequential and random read/write throughput and IOPS of each StorageClass in a pod, against the same program on the host's data folder, and claim create→pod Running", func(cmd *cobra.Command, c *bench.Config) {
			f := cmd.Flags()
			f.StringSliceVar(&c.StorageClasses, "classes", bench.StorageClasses, "StorageClasses to measure")
			f.IntVar(&c.StorageSizeMiB, "size-mib", 64, "test file in MiB: written and read sequentially, then the random tests' file")
			f.IntVar(&c.StorageRandOps, "rand-ops", 4096, "random 4 KiB writes, and as many reads, on each volume at most")
			f.DurationVar(&c.StorageRandFor, "rand-for", 30*time.Second, "time limit of each random test")
			f.IntVar(&c.StorageClaims, "claims", 3, "claims of each class timed from create to their pod Running, one after another")
			f.StringVar(&c.StorageDirect, "direct", "auto", "O_DIRECT: auto (where the file system takes it), on (fail where not), off")
			f.StringVar(&c.Source, "source", "", "the CCI source tree, where the measuring program is built from (default: found from the working folder)")
		}),
		benchScenarioCmd("chaos", "A steady workload while agents, containerd, shims, the control plane, hosts and etcd are killed at random: nothing may be lost", func(cmd *cobra.Command, c *bench.Config) {
			f := cmd.Flags()
			f.IntVar(&c.Rounds, "rounds", 100, "faults to inject, one per round")
			f.IntVar(&c.Completions, "completions", 200, "completions of the workload's Job")
			f.StringSliceVar(&c.Faults, "faults", bench.AllFaults, "faults to pick from at random: "+strings.Join(bench.AllFaults, ", ")+" (host only with --hosts, etcd only with --etcd-apart)")
			f.BoolVar(&c.EtcdApart, "etcd-apart", false, "run the bench's own cluster's etcd as a process of its own (cci etcd), which the etcd fault kills")
			f.Uint64Var(&c.Seed, "seed", 0, "seed of the random choices, to repeat a run (default: from the clock; the report gives it)")
			f.IntVar(&c.Hosts, "hosts", 0, "hosts of the bench's own `cci up --hosts` (0: one host in the `cci up` process)")
			f.DurationVar(&c.RecoveryTimeout, "recovery-timeout", 5*time.Minute, "how long one round may take to recover before the run fails")
		}),
	)
	return cmd
}

func benchScenarioCmd(name, short string, extra func(*cobra.Command, *bench.Config)) *cobra.Command {
	c := bench.Config{Scenario: name}
	var (
		profile bool
		out     string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			if cmd.Flags().Changed("profile") {
				c.Profile = &profile
			}
			c.Out = out
			if !cmd.Flags().Changed("out") {
				c.Out = filepath.Join("bench-results", name+"-"+time.Now().Format("20060102-150405"))
			}
			c.Log = cmd.ErrOrStderr()
			rep, err := bench.Run(ctx, c)
			if rep != nil {
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					if jerr := enc.Encode(rep); jerr != nil && err == nil {
						err = jerr
					}
				} else {
					rep.WriteTable(cmd.OutOrStdout())
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Kubeconfig, "kubeconfig", "", "measure this running cluster instead of starting one")
	f.StringVar(&c.DataDir, "data-dir", "", "the running cluster's data folder (for the floor and host checks), or where the bench's own cluster keeps its data (default: a temporary folder)")
	f.StringVar(&c.ContainerdSocket, "containerd-socket", "", "the agent's containerd socket (default <data-dir>/containerd/state/containerd.sock)")
	f.StringVar(&c.Registry, "registry", "127.0.0.1:5000", "the running cluster's registry, where the test images are pushed")
	f.StringVar(&c.PprofAddr, "pprof-addr", "", "the running cluster's pprof listener (cci up --pprof-addr), for --profile")
	f.BoolVar(&c.KeepData, "keep-data", false, "keep the bench's own cluster's data folder")
	f.BoolVar(&c.EmbeddedEtcd, "embedded-etcd", false, "scale: keep etcd inside the cci server process (its default) instead of a cci etcd process of its own")
	f.StringVar(&out, "out", "", "folder for JSON, HTML and profiles (default bench-results/<scenario>-<time>; \"\" for none)")
	f.IntVar(&c.Pods, "pods", 0, "N (default: start 200, floor 200, burst 100, density until a limit, scale 10000)")
	f.IntVar(&c.MaxPods, "max-pods", 0, "pod capacity of the bench's own host, which gets a pod subnet to match (default 250; a burst of N over 240: N+10)")
	f.IntVar(&c.FloorPods, "floor-pods", 50, "containers the floor starts for the ratios")
	f.StringVar(&c.RuntimeClass, "runtime-class", "", "RuntimeClass of the pods (runc by default; gvisor where the cluster offers it)")
	f.StringVar(&c.Runsc, "runsc", "", "runsc of gvisor pods in the bench's own cluster and in the floor, e.g. /usr/bin/runsc for Debian's (default: the agent's, the current one at /usr/local/lib/cci/runsc, else runsc in PATH)")
	f.DurationVar(&c.PodTimeout, "pod-timeout", 2*time.Minute, "how long one pod may take to run")
	f.BoolVar(&profile, "profile", false, "CPU and heap profiles of the cluster process (default on for burst with the bench's own cluster)")
	f.IntVar(&c.ProfileSeconds, "profile-seconds", 20, "length of the CPU profile")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON instead of a table")
	f.StringVar(&c.Bridge, "bridge", "", "CNI bridge of the bench's own cluster (default cci-bench0), so that two benches may run at once")
	f.StringVar(&c.ClusterCIDR, "cluster-cidr", "", "pod range of the bench's own cluster (default 10.79.0.0/16)")
	f.StringVar(&c.Binary, "binary", "", "cci executable for the bench's cluster and simulated nodes (default: this one)")
	_ = f.MarkHidden("binary")
	if extra != nil {
		extra(cmd, &c)
	}
	return cmd
}

// withPprof adds --pprof-addr to a long-running command: net/http/pprof
// served from the process, so that `go tool pprof` (and `cci bench`) can
// profile the control plane and the agent while they work.
func withPprof(cmd *cobra.Command) *cobra.Command {
	var addr string
	cmd.Flags().StringVar(&addr, "pprof-addr", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060 (off by default)")
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if addr != "" {
			if _, err := startPprof(addr); err != nil {
				return err
			}
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
	return cmd
}

// startPprof serves the pprof handlers on addr for the life of the process
// and returns the address it listens on.
func startPprof(addr string) (string, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("pprof listener on %q: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}
