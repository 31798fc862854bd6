package cli

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/cci-project/cci/internal/release"
)

func releaseCmd() *cobra.Command {
	var kubeconfig, dataDir, namespace string
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Blue-green and canary releases of a Deployment behind an HTTPRoute (docs/gateway.md)",
		Long: `Blue-green and canary releases over the Gateway API. ROUTE is an HTTPRoute
whose first rule sends the app's traffic to a Service; a Deployment of the
same name runs its pods (e.g. web-blue). The state is the objects
themselves: the candidate Deployment and Service (web-green), the
backendRefs' weights and the route's release.cci.io/ annotations.`,
	}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default <data-dir>/admin.kubeconfig; a tenant's works in its namespace)")
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir(), "CCI data folder; $CCI_DATA_DIR")
	cmd.PersistentFlags().StringVarP(&namespace, "namespace", "n", "", "namespace of the route (default: the kubeconfig's)")
	rel := func(route string, cmd *cobra.Command) (*release.Release, error) {
		kc := kubeconfig
		if kc == "" {
			kc = filepath.Join(dataDir, "admin.kubeconfig")
		}
		loader := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kc}
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loader, &clientcmd.ConfigOverrides{})
		rc, err := cc.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %q: %w", kc, err)
		}
		ns := namespace
		if ns == "" {
			if ns, _, err = cc.Namespace(); err != nil {
				return nil, err
			}
		}
		kube, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, err
		}
		gw, err := gatewayclient.NewForConfig(rc)
		if err != nil {
			return nil, err
		}
		return &release.Release{Kube: kube, Gateway: gw, Namespace: ns, Route: route, Out: cmd.OutOrStdout()}, nil
	}

	var image, container string
	var timeout, delay time.Duration
	start := &cobra.Command{
		Use:   "start ROUTE --image IMAGE",
		Short: "Create the candidate beside the stable Deployment, wait until it is Ready, add it to the route with weight 0",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				return fmt.Errorf("give the candidate's image with --image")
			}
			r, err := rel(args[0], cmd)
			if err != nil {
				return err
			}
			return r.Start(cmd.Context(), image, container, timeout)
		},
	}
	start.Flags().StringVar(&image, "image", "", "the candidate's image")
	start.Flags().StringVar(&container, "container", "", "the container whose image changes (default: the first)")
	start.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait until the candidate is Ready")
	shift := &cobra.Command{
		Use:   "shift ROUTE PERCENT",
		Short: "Send PERCENT of the requests to the candidate, the rest to the stable Deployment",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("percent %q: give a number from 0 to 100", args[1])
			}
			r, err := rel(args[0], cmd)
			if err != nil {
				return err
			}
			return r.Shift(cmd.Context(), p)
		},
	}
	promote := &cobra.Command{
		Use:   "promote ROUTE",
		Short: "Send every request to the candidate, which becomes the stable one; scale the old one to 0 after --delay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rel(args[0], cmd)
			if err != nil {
				return err
			}
			return r.Promote(cmd.Context(), delay)
		},
	}
	abort := &cobra.Command{
		Use:   "abort ROUTE",
		Short: "Send every request back to the stable Deployment at once; scale the candidate to 0 after --delay",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := rel(args[0], cmd)
			if err != nil {
				return err
			}
			return r.Abort(cmd.Context(), delay)
		},
	}
	for _, c := range []*cobra.Command{promote, abort} {
		c.Flags().DurationVar(&delay, "delay", 10*time.Second, "wait this long (requests in flight finish) before scaling down")
	}
	cmd.AddCommand(start, shift, promote, abort)
	return cmd
}
