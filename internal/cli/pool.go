package cli

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/device"
	"github.com/cci-project/cci/internal/pool"
)

func poolCmd() *cobra.Command {
	var kubeconfig, dataDir string
	var gpus bool
	cmd := &cobra.Command{Use: "pool", Short: "Show the host pools (admin)"}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "admin kubeconfig (default <data-dir>/admin.kubeconfig)")
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir(), "CCI data folder; $CCI_DATA_DIR")
	list := &cobra.Command{
		Use:   "list",
		Short: "One line per pool: hosts Ready/total, then CPU, memory, pods and devices in use/allocatable",
		Long: `One line per host pool. HOSTS is Ready/total; CPU (cores), MEMORY, PODS and
DEVICES (extended resources such as nvidia.com/gpu) are in use/allocatable:
the requests of the unfinished pods bound to the pool's hosts, against the
sum of the hosts' allocatable resources (NotReady hosts included).

With --gpus, one line per accelerator instead, as each host's agent
publishes them on its node: pool, host, index, ID, model, memory, the
pods holding it (several when the host time-slices its GPUs) and its
health.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kc := kubeconfig
			if kc == "" {
				kc = filepath.Join(dataDir, "admin.kubeconfig")
			}
			rc, err := clientcmd.BuildConfigFromFlags("", kc)
			if err != nil {
				return fmt.Errorf("load kubeconfig %q (is `cci up` running with --data-dir %s?): %w", kc, dataDir, err)
			}
			kube, err := kubernetes.NewForConfig(rc)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: pool.Label})
			if err != nil {
				return fmt.Errorf("list hosts: %w", err)
			}
			if gpus {
				return printGPUs(cmd.OutOrStdout(), nodes.Items)
			}
			// Finished pods hold nothing; the rest are read in pages.
			var pods []*corev1.Pod
			opts := metav1.ListOptions{FieldSelector: "status.phase!=Succeeded,status.phase!=Failed", Limit: 500}
			for {
				pl, err := kube.CoreV1().Pods("").List(ctx, opts)
				if err != nil {
					return fmt.Errorf("list pods: %w", err)
				}
				for i := range pl.Items {
					pods = append(pods, &pl.Items[i])
				}
				if opts.Continue = pl.Continue; opts.Continue == "" {
					break
				}
			}
			ns := make([]*corev1.Node, len(nodes.Items))
			for i := range nodes.Items {
				ns[i] = &nodes.Items[i]
			}
			return printPools(cmd.OutOrStdout(), pool.Summarize(ns, pods))
		},
	}
	list.Flags().BoolVar(&gpus, "gpus", false, "one line per accelerator (GPU or NPU) of every host: model, memory, the pods holding it, health")
	cmd.AddCommand(list)
	return cmd
}

// printGPUs writes one line per accelerator, from the annotation each
// host's agent publishes (device.DevicesAnnotation), hosts by pool and
// name. A host whose annotation cannot be read gets a line saying so.
func printGPUs(out io.Writer, nodes []corev1.Node) error {
	sort.Slice(nodes, func(i, j int) bool {
		if a, b := pool.Of(&nodes[i]), pool.Of(&nodes[j]); a != b {
			return a < b
		}
		return nodes[i].Name < nodes[j].Name
	})
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "POOL\tHOST\tINDEX\tID\tMODEL\tMEMORY\tPODS\tHEALTH")
	for i := range nodes {
		n := &nodes[i]
		raw, ok := n.Annotations[device.DevicesAnnotation]
		if !ok {
			continue
		}
		devs, err := device.ParsePublished(raw)
		if err != nil {
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\tunreadable: %v\n", pool.Of(n), n.Name, err)
			continue
		}
		for _, d := range devs {
			pods := "-"
			if len(d.Pods) > 0 {
				pods = strings.Join(d.Pods, ",")
			}
			if d.Replicas > 1 {
				pods = fmt.Sprintf("%s (%d/%d replicas)", pods, len(d.Pods), d.Replicas)
			}
			health := "healthy"
			if d.Unhealthy != "" {
				health = "unhealthy: " + d.Unhealthy
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", pool.Of(n), n.Name, d.Index, d.ID, d.Product,
				formatMemory(*resource.NewQuantity(int64(d.MemoryBytes), resource.BinarySI)), pods, health)
		}
	}
	return w.Flush()
}

// printPools writes one line per pool; amounts are used/allocatable.
func printPools(out io.Writer, pools []pool.Summary) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "POOL\tHOSTS\tCPU\tMEMORY\tPODS\tDEVICES")
	for _, s := range pools {
		devices := []string{}
		for _, d := range s.Devices() {
			devices = append(devices, fmt.Sprintf("%s=%s", d, usedOf(s, d, formatCount)))
		}
		if len(devices) == 0 {
			devices = []string{"-"}
		}
		fmt.Fprintf(w, "%s\t%d/%d\t%s\t%s\t%s\t%s\n", s.Name, s.ReadyHosts, s.Hosts,
			usedOf(s, corev1.ResourceCPU, formatCPU), usedOf(s, corev1.ResourceMemory, formatMemory),
			usedOf(s, corev1.ResourcePods, formatCount), strings.Join(devices, ","))
	}
	return w.Flush()
}

func usedOf(s pool.Summary, name corev1.ResourceName, format func(resource.Quantity) string) string {
	return format(s.Requested[name]) + "/" + format(s.Allocatable[name])
}

// formatCPU writes cores with up to three decimals: 1.25, 2.
func formatCPU(q resource.Quantity) string {
	return strconv.FormatFloat(float64(q.MilliValue())/1000, 'f', -1, 64)
}

// formatMemory writes Gi with one decimal below 10Gi, whole Gi above;
// Mi below 1Gi.
func formatMemory(q resource.Quantity) string {
	b := float64(q.Value())
	switch {
	case b == 0:
		return "0"
	case b < 1<<30:
		return strconv.FormatFloat(b/(1<<20), 'f', 0, 64) + "Mi"
	case b < 10<<30:
		return strconv.FormatFloat(b/(1<<30), 'f', 1, 64) + "Gi"
	default:
		return strconv.FormatFloat(b/(1<<30), 'f', 0, 64) + "Gi"
	}
}

func formatCount(q resource.Quantity) string { return strconv.FormatInt(q.Value(), 10) }
