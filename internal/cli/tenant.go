package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spf13/cobra"

	"github.com/cci-project/cci/internal/policy"
	"github.com/cci-project/cci/internal/pool"
	"github.com/cci-project/cci/internal/tenant"
)

// tenantClients are the admin's clients and where the tenants' kubeconfigs go.
type tenantClients struct {
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	server  string
	dataDir string
}

type tenantFlags struct {
	kubeconfig, dataDir string
}

func (f *tenantFlags) clients() (*tenantClients, error) {
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return nil, err
	}
	kc := f.kubeconfig
	if kc == "" {
		kc = filepath.Join(dataDir, "admin.kubeconfig")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %q (is `cci up` running with --data-dir %s?): %w", kc, f.dataDir, err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &tenantClients{kube: kube, dyn: dyn, server: rc.Host, dataDir: dataDir}, nil
}

func tenantCmd() *cobra.Command {
	var fl tenantFlags
	cmd := &cobra.Command{Use: "tenant", Short: "Create, list, inspect and delete tenants (a namespace, an identity, RBAC, quota and a kubeconfig each)"}
	cmd.PersistentFlags().StringVar(&fl.kubeconfig, "kubeconfig", "", "admin kubeconfig (default <data-dir>/admin.kubeconfig)")
	cmd.PersistentFlags().StringVar(&fl.dataDir, "data-dir", defaultDataDir(), "CCI data folder; tenant kubeconfigs go to <data-dir>/tenants/; $CCI_DATA_DIR")

	var quota, runtimeClass string
	var pools []string
	var allowRunc bool
	var timeout time.Duration
	create := &cobra.Command{
		Use:   "create NAME [--quota cpu=8,memory=32Gi,pods=50,nvidia.com/gpu=0,storage=100Gi] [--allow-runc] [--pools general,gpu]",
		Short: "Create a tenant and write its kubeconfig to <data-dir>/tenants/NAME.kubeconfig",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
				return fmt.Errorf("tenant name %q: %s", name, strings.Join(errs, "; "))
			}
			q, err := parseQuota(quota)
			if err != nil {
				return err
			}
			if runtimeClass == policy.RuntimeRunc && !allowRunc {
				return errors.New("--runtime-class runc needs --allow-runc")
			}
			for _, p := range pools {
				if err := pool.Validate(p); err != nil {
					return fmt.Errorf("--pools: %w", err)
				}
			}
			c, err := fl.clients()
			if err != nil {
				return err
			}
			t := &tenant.Tenant{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       tenant.Spec{Quota: q, AllowRunc: allowRunc, RuntimeClassName: runtimeClass, Pools: pools},
			}
			u, err := tenant.ToUnstructured(t)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if _, err := c.dyn.Resource(tenant.GVR).Create(ctx, u, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("tenant %q exists; see `cci tenant get %s`", name, name)
			} else if err != nil {
				return fmt.Errorf("create tenant %q: %w", name, err)
			}
			t, err = waitTenant(ctx, c, name, timeout)
			if err != nil {
				return err
			}
			path := tenant.KubeconfigPath(c.dataDir, name)
			if err := tenant.WriteKubeconfig(ctx, c.kube, name, c.server, path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tenant %q is %s: namespace %s\n  kubeconfig: %s\n  try: kubectl --kubeconfig %s get pods\n",
				name, t.Status.Phase, t.Status.Namespace, path, path)
			return nil
		},
	}
	create.Flags().StringVar(&quota, "quota", "", "comma-separated cpu=,memory=,pods=,nvidia.com/gpu=,storage= (what its PersistentVolumeClaims ask for),persistentvolumeclaims=,CLASS.storageclass.storage.k8s.io/requests.storage= (missing ones: cpu=8,memory=32Gi,pods=50,nvidia.com/gpu=0,storage=100Gi)")
	create.Flags().BoolVar(&allowRunc, "allow-runc", false, "let the tenant's pods use the runc runtime class (no sandbox)")
	create.Flags().StringVar(&runtimeClass, "runtime-class", "", "runtime class for pods that name none (default gvisor)")
	create.Flags().StringSliceVar(&pools, "pools", []string{pool.Default}, "host pools the tenant's pods may run in, comma-separated (e.g. general,gpu)")
	create.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the tenant to be ready")

	kubeconfig := &cobra.Command{
		Use:   "kubeconfig NAME",
		Short: "Write the tenant's kubeconfig again to <data-dir>/tenants/NAME.kubeconfig",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := fl.clients()
			if err != nil {
				return err
			}
			path := tenant.KubeconfigPath(c.dataDir, args[0])
			if err := tenant.WriteKubeconfig(cmd.Context(), c.kube, args[0], c.server, path); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), path)
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := fl.clients()
			if err != nil {
				return err
			}
			ul, err := c.dyn.Resource(tenant.GVR).List(cmd.Context(), metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list tenants: %w", err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tPHASE\tNAMESPACE\tRUNC\tPODS\tCPU\tMEMORY\tAGE")
			for i := range ul.Items {
				t, err := tenant.FromUnstructured(&ul.Items[i])
				if err != nil {
					return err
				}
				used := quotaUsage(cmd.Context(), c, t.Name)
				fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\n", t.Name, t.Status.Phase, t.Status.Namespace, t.Spec.AllowRunc,
					used(corev1.ResourcePods), used(corev1.ResourceRequestsCPU), used(corev1.ResourceRequestsMemory),
					duration.HumanDuration(time.Since(t.CreationTimestamp.Time)))
			}
			return w.Flush()
		},
	}

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a tenant and its quota (used / hard)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := fl.clients()
			if err != nil {
				return err
			}
			return printTenant(cmd.Context(), cmd.OutOrStdout(), c, args[0])
		},
	}

	var wait bool
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a tenant: its namespace, pods, identity and kubeconfig",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c, err := fl.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.dyn.Resource(tenant.GVR).Delete(ctx, name, metav1.DeleteOptions{}); apierrors.IsNotFound(err) {
				return fmt.Errorf("no tenant %q", name)
			} else if err != nil {
				return fmt.Errorf("delete tenant %q: %w", name, err)
			}
			if err := os.Remove(tenant.KubeconfigPath(c.dataDir, name)); err != nil && !os.IsNotExist(err) {
				return err
			}
			if !wait {
				fmt.Fprintf(cmd.OutOrStdout(), "tenant %q is being deleted\n", name)
				return nil
			}
			err = pollFor(ctx, timeout, func(ctx context.Context) (bool, error) {
				_, err := c.dyn.Resource(tenant.GVR).Get(ctx, name, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			if err != nil {
				return fmt.Errorf("tenant %q not gone after %s (its namespace may still be stopping pods): %w", name, timeout, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tenant %q deleted\n", name)
			return nil
		},
	}
	del.Flags().BoolVar(&wait, "wait", true, "wait until the namespace and its pods are gone")
	del.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait")

	cmd.AddCommand(create, list, get, del, kubeconfig)
	return cmd
}

// parseQuota reads cpu=4,memory=8Gi,pods=10,nvidia.com/gpu=1.
func parseQuota(s string) (corev1.ResourceList, error) {
	q := corev1.ResourceList{}
	if s == "" {
		return q, nil
	}
	known := []string{"cpu", "memory", "pods", "nvidia.com/gpu", "storage", "persistentvolumeclaims"}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		// Storage per class, as ResourceQuota spells it.
		perClass := strings.HasSuffix(k, ".storageclass.storage.k8s.io/requests.storage")
		if !ok || (!slices.Contains(known, k) && !perClass) {
			return nil, fmt.Errorf("--quota %q: want comma-separated KEY=VALUE with KEY one of %s, or CLASS.storageclass.storage.k8s.io/requests.storage", kv, strings.Join(known, ", "))
		}
		qty, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("--quota %s=%s: %w", k, v, err)
		}
		q[corev1.ResourceName(k)] = qty
	}
	return q, nil
}

func pollFor(ctx context.Context, timeout time.Duration, cond wait.ConditionWithContextFunc) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return wait.PollUntilContextCancel(ctx, 300*time.Millisecond, true, cond)
}

// waitTenant waits until the tenant is Ready and returns it.
func waitTenant(ctx context.Context, c *tenantClients, name string, timeout time.Duration) (*tenant.Tenant, error) {
	var t *tenant.Tenant
	err := pollFor(ctx, timeout, func(ctx context.Context) (bool, error) {
		u, err := c.dyn.Resource(tenant.GVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if t, err = tenant.FromUnstructured(u); err != nil {
			return false, err
		}
		return t.Status.Phase == tenant.PhaseReady || t.Status.Phase == tenant.PhaseFailed, nil
	})
	if t != nil && t.Status.Phase == tenant.PhaseFailed {
		return nil, fmt.Errorf("tenant %q failed: %s", name, readyMessage(t))
	}
	if err != nil {
		msg := "no status yet (is the control plane running?)"
		if t != nil {
			msg = readyMessage(t)
		}
		return nil, fmt.Errorf("tenant %q not ready after %s: %s", name, timeout, msg)
	}
	return t, nil
}

func readyMessage(t *tenant.Tenant) string {
	for _, c := range t.Status.Conditions {
		if c.Type == "Ready" {
			return c.Message
		}
	}
	return t.Status.Phase
}

// quotaUsage returns "used/hard" for a resource of the tenant's quota.
func quotaUsage(ctx context.Context, c *tenantClients, name string) func(corev1.ResourceName) string {
	rq, err := c.kube.CoreV1().ResourceQuotas(name).Get(ctx, tenant.RoleName, metav1.GetOptions{})
	return func(r corev1.ResourceName) string {
		if err != nil {
			return "-"
		}
		used, hard := rq.Status.Used[r], rq.Status.Hard[r]
		return used.String() + "/" + hard.String()
	}
}

func printTenant(ctx context.Context, out io.Writer, c *tenantClients, name string) error {
	u, err := c.dyn.Resource(tenant.GVR).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no tenant %q", name)
	} else if err != nil {
		return fmt.Errorf("get tenant %q: %w", name, err)
	}
	t, err := tenant.FromUnstructured(u)
	if err != nil {
		return err
	}
	rc := t.Spec.RuntimeClassName
	if rc == "" {
		rc = policy.RuntimeGVisor
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Name:\t%s\n", t.Name)
	fmt.Fprintf(w, "Phase:\t%s (%s)\n", t.Status.Phase, readyMessage(t))
	fmt.Fprintf(w, "Namespace:\t%s\n", t.Status.Namespace)
	fmt.Fprintf(w, "Runtime class:\t%s (runc allowed: %v)\n", rc, t.Spec.AllowRunc)
	pools := t.Spec.Pools
	if len(pools) == 0 {
		pools = []string{pool.Default}
	}
	fmt.Fprintf(w, "Pools:\t%s\n", strings.Join(pools, ", "))
	path := tenant.KubeconfigPath(c.dataDir, name)
	if _, err := os.Stat(path); err != nil {
		path += " (missing: `cci tenant kubeconfig " + name + "` writes it)"
	}
	fmt.Fprintf(w, "Kubeconfig:\t%s\n", path)
	fmt.Fprintf(w, "Created:\t%s\n", t.CreationTimestamp.Format(time.RFC3339))
	fmt.Fprintln(w, "Quota:\tRESOURCE\tUSED\tHARD")
	rq, err := c.kube.CoreV1().ResourceQuotas(name).Get(ctx, tenant.RoleName, metav1.GetOptions{})
	if err != nil {
		fmt.Fprintf(w, "\t(quota not readable: %v)\n", err)
		return w.Flush()
	}
	keys := make([]string, 0, len(rq.Spec.Hard))
	for k := range rq.Spec.Hard {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	for _, k := range keys {
		used, hard := rq.Status.Used[corev1.ResourceName(k)], rq.Spec.Hard[corev1.ResourceName(k)]
		fmt.Fprintf(w, "\t%s\t%s\t%s\n", k, used.String(), hard.String())
	}
	return w.Flush()
}
