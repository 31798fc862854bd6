package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/cci-project/cci/internal/connect"
)

func connectCmd() *cobra.Command {
	var (
		c        connect.Config
		capacity map[string]string
	)
	cmd := &cobra.Command{
		Use:   "connect --kubeconfig A.kubeconfig --to TENANT.kubeconfig [--name cci-burst] | --kubeconfig FRONT.kubeconfig --to CELL-ADMIN.kubeconfig --cell --name cell-1 [--pool general]",
		Short: "Run a virtual node in a Kubernetes cluster whose pods run in CCI (bursting), or in another CCI cell",
		Long: `Registers a virtual node in the cluster of --kubeconfig (A). Pods bound to it
(they tolerate the taint virtual-kubelet.io/provider=cci:NoSchedule) run as
copies in the namespace of --to (B, e.g. a tenant's kubeconfig from
` + "`cci tenant create`" + `); their status, events, logs, exec, attach, port-forward
and usage are A's as for any pod. The node's capacity is what B's quota leaves.

With --cell, B is a whole CCI cluster (its admin kubeconfig) that becomes a
cell of A (the front): one connect per pool of the cell; the node's capacity
is the cell's free allocatable in the pool, the front's scheduler places
tenants' pods on it, the cell's scheduler on one of its hosts.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			c.Capacity = v1.ResourceList{}
			for k, v := range capacity {
				q, err := resource.ParseQuantity(v)
				if err != nil {
					return fmt.Errorf("--capacity %s=%s: %w", k, v, err)
				}
				c.Capacity[v1.ResourceName(k)] = q
			}
			return connect.Run(ctx, c, func() {
				fmt.Fprintf(cmd.ErrOrStderr(), "\nCCI connect is ready: node %q serves pods in %s\n\n", c.NodeName, c.To)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig of the cluster the virtual node joins (default: in-cluster)")
	f.StringVar(&c.To, "to", "", "kubeconfig of the cluster the pods run in: a CCI tenant's (`cci tenant create` writes it)")
	f.StringVar(&c.Namespace, "namespace", "", "namespace of --to the pods run in (default: its context's)")
	f.StringVar(&c.NodeName, "name", "cci-burst", "name of the virtual node")
	f.StringVar(&c.Pool, "pool", "", "the node's cci.io/pool label (default cci; with --cell, the cell's pool the node stands for: general)")
	f.StringVar(&c.NodeIP, "node-ip", "", "IP the apiserver of --kubeconfig reaches this process's kubelet API at (default: this host's address towards it)")
	f.IntVar(&c.KubeletPort, "kubelet-port", 10250, "kubelet API TLS port")
	f.StringVar(&c.DNS, "dns", "a", "resolver of ClusterFirst pods: a (as pods of the --kubeconfig cluster: needs its Service network reachable from where the pods run) or b")
	f.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "cluster domain of the --kubeconfig cluster")
	f.StringSliceVar(&c.ClusterDNS, "cluster-dns", nil, "DNS server of the --kubeconfig cluster (default: its kube-system/kube-dns Service)")
	f.StringVar(&c.PodAPIServer, "pod-api-server", "", "URL the pods reach the --kubeconfig cluster's apiserver at, given to them as KUBERNETES_SERVICE_HOST/_PORT (default: --kubeconfig's server; this host's address when that is a loopback one)")
	f.BoolVar(&c.Install, "install", false, "place in the --kubeconfig cluster the webhook that sends pods labelled cci.io/burst=enforce|prefer|auto to the node (served by this process; removed when it stops)")
	f.IntVar(&c.WebhookPort, "webhook-port", 0, "TLS port of the burst webhook (default: --kubelet-port + 1)")
	f.BoolVar(&c.Cell, "cell", false, "make --to (a whole CCI cluster's admin kubeconfig) a cell of the --kubeconfig cluster (the front): the node stands for the cell's hosts of --pool (default general), with their free allocatable as capacity and no taint; pods run in the cell in their own namespace (a tenant's is made there from its Tenant)")
	f.DurationVar(&c.LostAfter, "lost-after", 0, "how long the cluster of --to may not answer before the node is NotReady (default: at once; 60s with --cell)")
	f.StringToStringVar(&capacity, "capacity", nil, "capacity for resources the tenant's quota does not cap, e.g. cpu=1000,memory=4Ti,pods=1000")
	return cmd
}
