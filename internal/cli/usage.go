package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/metering"
)

type usageFlags struct {
	kubeconfig, server, tenant, since, until, output string
}

func usageCmd() *cobra.Command {
	var fl usageFlags
	cmd := &cobra.Command{
		Use:   "usage [--tenant T] [--since TIME] [--until TIME] [-o table|json|csv]",
		Short: "Print usage and cost per tenant, namespace, pod and volume",
		Long: `Print metered usage (CPU-core-seconds, GiB-seconds, GPU-seconds) and its cost
per tenant, namespace and pod, as the control plane's usage endpoint serves it,
and beside it the storage: GiB-hours of the provisioned size of the tenants'
bound PersistentVolumes, per StorageClass and per volume, and their cost.
In the table, the pods' COST is theirs alone and the storage's is below it;
in JSON and CSV a tenant's, namespace's or the total's cost is both's.

The caller is whoever the kubeconfig names: the admin sees every tenant, a
tenant (its service-account token, or any identity that may get pods in its
namespace) sees only its own usage.

TIME is RFC 3339 (2026-11-25T02:00:00Z), a UTC date (2026-11-25), "now", or a
duration before now (90m, 24h, 7d). --since defaults to the start of the UTC
month, --until to now.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUsage(cmd, &fl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.kubeconfig, "kubeconfig", "", "credentials and server (default: $KUBECONFIG, else <data-dir>/admin.kubeconfig)")
	f.StringVar(&fl.server, "server", "", "usage endpoint URL (default: the kubeconfig's apiserver host, port + 1)")
	f.StringVar(&fl.tenant, "tenant", "", "only this tenant")
	f.StringVar(&fl.since, "since", "", "start of the window (default: start of the month, UTC)")
	f.StringVar(&fl.until, "until", "", "end of the window (default: now)")
	f.StringVarP(&fl.output, "output", "o", "table", "output format: table, json or csv")
	return cmd
}

func runUsage(cmd *cobra.Command, fl *usageFlags) error {
	switch fl.output {
	case "table", "json", "csv":
	default:
		return fmt.Errorf("output %q: choose table, json or csv", fl.output)
	}
	now := time.Now()
	q := url.Values{}
	for name, v := range map[string]string{"since": fl.since, "until": fl.until} {
		if v == "" {
			continue
		}
		t, err := metering.ParseTime(v, now)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		q.Set(name, t.UTC().Format(time.RFC3339))
	}
	if fl.tenant != "" {
		q.Set("tenant", fl.tenant)
	}
	kubeconfig := fl.kubeconfig
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig == "" {
		kubeconfig = filepath.Join(defaultDataDir(), "admin.kubeconfig")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %q (give --kubeconfig): %w", kubeconfig, err)
	}
	server := fl.server
	if server == "" {
		if server, err = usageURLFor(rc.Host); err != nil {
			return err
		}
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return fmt.Errorf("credentials from %q: %w", kubeconfig, err)
	}
	hc.Timeout = time.Minute
	u := strings.TrimSuffix(server, "/") + metering.UsagePath
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("usage endpoint %s: %w", server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("usage endpoint %s: %w", server, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Message string }
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			return fmt.Errorf("usage endpoint: %s (%s)", e.Message, resp.Status)
		}
		return fmt.Errorf("usage endpoint: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var rep metering.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		return fmt.Errorf("usage endpoint answered something else than a report: %w", err)
	}
	out := cmd.OutOrStdout()
	switch fl.output {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "csv":
		return writeUsageCSV(out, &rep)
	default:
		return writeUsageTable(out, &rep)
	}
}

// usageURLFor is the usage endpoint next to an apiserver: same host, port + 1
// (the server's default --usage-port).
func usageURLFor(apiserver string) (string, error) {
	u, err := url.Parse(apiserver)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("apiserver address %q: give --server", apiserver)
	}
	port := 443
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return "", fmt.Errorf("apiserver address %q: give --server", apiserver)
		}
	}
	return "https://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(port+1)), nil
}

func usageRow(level, tenant, ns, pod string, u metering.Usage) []string {
	return []string{level, tenant, ns, pod,
		strconv.FormatInt(u.Seconds, 10),
		strconv.FormatFloat(u.CoreSeconds, 'f', 3, 64),
		strconv.FormatFloat(u.GiBSeconds, 'f', 3, 64),
		strconv.FormatInt(u.GPUSeconds, 10),
		strconv.FormatFloat(u.Cost, 'f', 6, 64),
	}
}

func writeUsageCSV(out io.Writer, rep *metering.Report) error {
	w := csv.NewWriter(out)
	_ = w.Write([]string{"level", "tenant", "namespace", "pod", "seconds", "coreSeconds", "gibSeconds", "gpuSeconds", "cost_" + rep.Currency,
		"uid", "cpu", "memoryGiB", "gpu", "start", "end", "running", "storageClass", "sizeGiB", "gibHours"})
	// Volume rows put the claim in the pod column and "bound" in running;
	// storage rows are a level's GiB-hours of one class and their cost.
	blank := func(n int) []string { return make([]string, n) }
	storageRows := func(tenant, ns string, u metering.Usage) {
		for _, c := range u.Storage {
			_ = w.Write(append(append(usageRow("storage", tenant, ns, "", metering.Usage{Cost: c.Cost}), blank(7)...),
				c.StorageClass, "", strconv.FormatFloat(c.GiBHours, 'f', 6, 64)))
		}
	}
	for _, t := range rep.Tenants {
		for _, n := range t.Namespaces {
			for _, p := range n.Pods {
				_ = w.Write(append(usageRow("pod", t.Tenant, n.Namespace, p.Name, p.Usage),
					p.UID, strconv.FormatFloat(p.CPU, 'f', -1, 64), strconv.FormatFloat(p.MemoryGiB, 'f', -1, 64), strconv.FormatInt(p.GPU, 10),
					p.Start.Format(time.RFC3339), p.End.Format(time.RFC3339), strconv.FormatBool(p.Running), "", "", ""))
			}
			for _, v := range n.Volumes {
				_ = w.Write(append(usageRow("volume", t.Tenant, n.Namespace, v.Claim, metering.Usage{Seconds: v.Seconds, Cost: v.Cost}),
					v.UID, "", "", "", v.Start.Format(time.RFC3339), v.End.Format(time.RFC3339), strconv.FormatBool(v.Bound),
					v.StorageClass, strconv.FormatFloat(v.SizeGiB, 'f', -1, 64), strconv.FormatFloat(v.GiBHours, 'f', 6, 64)))
			}
			storageRows(t.Tenant, n.Namespace, n.Usage)
			_ = w.Write(append(usageRow("namespace", t.Tenant, n.Namespace, "", n.Usage), blank(10)...))
		}
		storageRows(t.Tenant, "", t.Usage)
		_ = w.Write(append(usageRow("tenant", t.Tenant, "", "", t.Usage), blank(10)...))
	}
	storageRows("", "", rep.Total)
	_ = w.Write(append(usageRow("total", "", "", "", rep.Total), blank(10)...))
	w.Flush()
	return w.Error()
}

// podsOnly is u without its storage: the pods' figures and cost.
func podsOnly(u metering.Usage) metering.Usage {
	c := u.Cost
	for _, s := range u.Storage {
		c -= s.Cost
	}
	u.Cost, u.Storage = math.Round(c*1e9)/1e9, nil
	return u
}

func writeUsageTable(out io.Writer, rep *metering.Report) error {
	fmt.Fprintf(out, "usage from %s to %s (%s)\n\n", rep.Since.Format(time.RFC3339), rep.Until.Format(time.RFC3339), rep.Currency)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TENANT\tNAMESPACE\tPOD\tFLAVOR\tSECONDS\tCORE-S\tGIB-S\tGPU-S\tCOST")
	row := func(tenant, ns, pod, flavor string, u metering.Usage) {
		r := usageRow("", tenant, ns, pod, podsOnly(u))
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", tenant, ns, pod, flavor, r[4], r[5], r[6], r[7], r[8])
	}
	for _, t := range rep.Tenants {
		for _, n := range t.Namespaces {
			for _, p := range n.Pods {
				flavor := fmt.Sprintf("%gC/%gG", p.CPU, p.MemoryGiB)
				if p.GPU > 0 {
					flavor += fmt.Sprintf("/%dGPU", p.GPU)
				}
				name := p.Name
				if p.Running {
					name += " (running)"
				}
				row(t.Tenant, n.Namespace, name, flavor, p.Usage)
			}
			row(t.Tenant, n.Namespace, "*", "", n.Usage)
		}
		row(t.Tenant, "*", "*", "", t.Usage)
	}
	row("TOTAL", "", "", "", rep.Total)
	if err := w.Flush(); err != nil {
		return err
	}
	if len(rep.Total.Storage) == 0 {
		return nil
	}

	// Storage: the provisioned size of bound volumes, by the GiB-hour.
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TENANT\tNAMESPACE\tCLAIM\tCLASS\tSIZE\tSECONDS\tGIB-H\tPER-GIB-H\tCOST")
	srow := func(tenant, ns, claim, size, seconds string, s metering.StorageUsage) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", tenant, ns, claim, s.StorageClass, size, seconds,
			strconv.FormatFloat(s.GiBHours, 'f', 6, 64), strconv.FormatFloat(s.PerGiBHour, 'f', -1, 64), strconv.FormatFloat(s.Cost, 'f', 6, 64))
	}
	classes := func(tenant, ns, claim string, u metering.Usage) {
		for _, s := range u.Storage {
			srow(tenant, ns, claim, "", "", s)
		}
	}
	for _, t := range rep.Tenants {
		if len(t.Storage) == 0 {
			continue
		}
		for _, n := range t.Namespaces {
			for _, v := range n.Volumes {
				claim := v.Claim
				if v.Bound {
					claim += " (bound)"
				}
				srow(t.Tenant, n.Namespace, claim, strconv.FormatFloat(v.SizeGiB, 'f', -1, 64)+"Gi", strconv.FormatInt(v.Seconds, 10), v.StorageUsage)
			}
			classes(t.Tenant, n.Namespace, "*", n.Usage)
		}
		classes(t.Tenant, "*", "*", t.Usage)
	}
	classes("TOTAL", "", "", rep.Total)
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\ncost: %s %s (pods %s, storage %s)\n", strconv.FormatFloat(rep.Total.Cost, 'f', 6, 64), rep.Currency,
		strconv.FormatFloat(podsOnly(rep.Total).Cost, 'f', 6, 64), strconv.FormatFloat(rep.Total.Cost-podsOnly(rep.Total).Cost, 'f', 6, 64))
	return nil
}
