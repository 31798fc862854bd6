package cli

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/simulate"
)

// withSimulate adds the `simulate` subcommand to the agent command.
func withSimulate(agent *cobra.Command) *cobra.Command {
	agent.AddCommand(agentSimulateCmd())
	return agent
}

// agentSimulateCmd is `cci agent simulate`: simulated hosts for
// control-plane scale tests.
func agentSimulateCmd() *cobra.Command {
	var (
		c          simulate.Config
		kubeconfig string
		pprofAddr  string
	)
	cmd := &cobra.Command{
		Use:   "simulate --kubeconfig FILE --nodes N",
		Short: "Register N simulated hosts whose pods run no containers (control-plane scale tests)",
		Long: `Register N simulated hosts from this one process. Each is a real node to the
control plane (node object, lease, status updates, pod controller), but its
pods run no containers: they turn Running after --start-delay and stop at once
when deleted; logs and exec answer that the node is simulated.

Simulated nodes carry the label ` + simulate.LabelSimulated + `=true and the taint
` + simulate.TaintSimulated + `=true:NoSchedule, so only pods that tolerate it land there.
Pods may set the annotations ` + simulate.AnnotationStartDelay + `, ` + simulate.AnnotationRunFor + ` and
` + simulate.AnnotationExitCode + ` to steer their simulated life.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			if kubeconfig == "" {
				return fmt.Errorf("simulated nodes need --kubeconfig (for instance <data>/admin.kubeconfig of `cci up`)")
			}
			rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return fmt.Errorf("load kubeconfig %q: %w", kubeconfig, err)
			}
			c.Kube = rc
			c.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			if pprofAddr != "" {
				addr, err := startPprof(pprofAddr)
				if err != nil {
					return err
				}
				c.Log.Info("pprof listening", "addr", addr)
			}
			return simulate.Run(ctx, c, func() {
				fmt.Fprintf(cmd.ErrOrStderr(), "\n%d simulated nodes are ready (%s0000 …)\n\n", c.Nodes, c.NamePrefix)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the control plane; $KUBECONFIG")
	f.IntVar(&c.Nodes, "nodes", 1, "how many simulated nodes to register")
	f.StringVar(&c.NamePrefix, "name-prefix", "cci-sim-", "node names are PREFIX0000, PREFIX0001, …")
	f.DurationVar(&c.StartDelay, "start-delay", 0, "how long a pod stays Pending before it runs")
	f.StringVar(&c.ListenAddr, "listen", ":10350", "node API TLS listener shared by every simulated node")
	f.StringVar(&c.NodeIP, "node-ip", "", "InternalIP published on every node (default: this host's address towards the apiserver)")
	f.StringVar(&c.CPU, "cpu", "32", "CPU capacity of each node")
	f.StringVar(&c.Memory, "memory", "128Gi", "memory capacity of each node")
	f.IntVar(&c.MaxPods, "max-pods", 110, "pod capacity of each node")
	f.BoolVar(&c.NoTaint, "no-taint", false, "leave out the NoSchedule taint, so any pod may land on simulated nodes")
	f.Float32Var(&c.NodeQPS, "node-qps", 50, "API requests per second of each node's client")
	f.IntVar(&c.NodeBurst, "node-burst", 100, "API request burst of each node's client")
	f.IntVar(&c.Parallel, "parallel", 20, "nodes registering at the same time")
	f.BoolVar(&c.DeleteNodes, "delete-nodes", true, "delete the node objects on exit")
	f.StringVar(&pprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6061)")
	return cmd
}
