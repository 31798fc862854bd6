package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1apply "k8s.io/client-go/applyconfigurations/discovery/v1"
	rbacv1apply "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	apiregv1apply "k8s.io/kube-aggregator/pkg/client/applyconfiguration/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
	msoptions "sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"

	"github.com/cci-project/cci/internal/pki"
)

// The metrics API: metrics-server runs in-process, serving metrics.k8s.io on
// the advertise address; the aggregation layer reaches it through the
// selector-less Service kube-system/metrics-server, whose one endpoint this
// file publishes (--enable-aggregator-routing: no Service proxy is needed).
const (
	metricsNamespace = "kube-system"
	metricsPortName  = "https"
	fieldManager     = "cci-server"
	// metricsResolution is how often metrics-server scrapes every node
	// (its minimum); the HPA sees usage at most this old.
	metricsResolution = "10s"
)

// aggregationArgs configure the apiserver's aggregation layer: the identity
// it presents to extension API servers and how they check it.
func aggregationArgs(p *pki.PKI) []string {
	return []string{
		"--requestheader-client-ca-file=" + p.FrontProxyCACert,
		"--requestheader-allowed-names=" + pki.FrontProxyClient,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.FrontProxyClientCert,
		"--proxy-client-key-file=" + p.FrontProxyClientKey,
		"--enable-aggregator-routing=true",
	}
}

// metricsServerArgs are metrics-server's flags. The agents' kubelet API
// serves a self-signed certificate (as the apiserver, metrics-server does
// not check it); metrics-server authenticates to it with its own client
// certificate, which the agent checks against the cluster CA.
func metricsServerArgs(p *pki.PKI, kubeconfig, bindIP string, port int) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--client-ca-file=" + p.CACert,
		"--requestheader-client-ca-file=" + p.FrontProxyCACert,
		"--requestheader-allowed-names=" + pki.FrontProxyClient,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--bind-address=" + bindIP,
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + p.MetricsServingCert,
		"--tls-private-key-file=" + p.MetricsServingKey,
		"--kubelet-insecure-tls",
		"--kubelet-use-node-status-port",
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--kubelet-request-timeout=5s",
		"--metric-resolution=" + metricsResolution,
	}
}

// runMetricsServer runs the upstream metrics-server with args until ctx
// ends, from its option set as its command would (without the command's
// process-wide logging set-up, which the apiserver in this process owns).
func runMetricsServer(ctx context.Context, args []string) error {
	o := msoptions.NewOptions()
	fs := pflag.NewFlagSet("metrics-server", pflag.ContinueOnError)
	for _, f := range o.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	errs := o.KubeletClient.Validate()
	errs = append(errs, o.GenericServerRunOptions.Validate()...)
	if len(errs) > 0 {
		return utilerrors.NewAggregate(errs)
	}
	cfg, err := o.ServerConfig()
	if err != nil {
		return err
	}
	s, err := cfg.Complete()
	if err != nil {
		return err
	}
	return s.RunUntil(ctx.Done())
}

// routable tells whether ip can be a Service endpoint (loopback and
// unspecified addresses are refused by EndpointSlice validation).
func routable(ip string) bool {
	parsed := net.ParseIP(ip)
	return parsed != nil && !parsed.IsLoopback() && !parsed.IsUnspecified() && !parsed.IsLinkLocalUnicast()
}

// freePort asks the kernel for a free TCP port on ip.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ensureMetricsAPI publishes metrics-server to the aggregation layer and
// gives it the rights it needs: the Service and its one endpoint (ip:port),
// the APIService v1beta1.metrics.k8s.io trusting the cluster CA, and RBAC.
// Server-side apply makes it idempotent; a restart on another port updates
// the endpoint.
func ensureMetricsAPI(ctx context.Context, c kubernetes.Interface, agg aggregator.Interface, caFile, ip string, port int) error {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	apply := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	name := pki.MetricsServerService
	user := rbacv1apply.Subject().WithAPIGroup("rbac.authorization.k8s.io").WithKind("User").WithName(pki.MetricsServer)
	verbs := []string{"get", "list", "watch"}

	var errs []error
	_, err = c.RbacV1().ClusterRoles().Apply(ctx, rbacv1apply.ClusterRole(pki.MetricsServer).WithRules(
		rbacv1apply.PolicyRule().WithAPIGroups("").WithResources("nodes/metrics").WithVerbs("get"),
		rbacv1apply.PolicyRule().WithAPIGroups("").WithResources("pods", "nodes").WithVerbs(verbs...),
	), apply)
	errs = append(errs, err)
	_, err = c.RbacV1().ClusterRoleBindings().Apply(ctx, rbacv1apply.ClusterRoleBinding(pki.MetricsServer).
		WithRoleRef(rbacv1apply.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName(pki.MetricsServer)).
		WithSubjects(user), apply)
	errs = append(errs, err)
	// Delegated authentication and authorization of its callers.
	_, err = c.RbacV1().ClusterRoleBindings().Apply(ctx, rbacv1apply.ClusterRoleBinding("metrics-server:system:auth-delegator").
		WithRoleRef(rbacv1apply.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName("system:auth-delegator")).
		WithSubjects(user), apply)
	errs = append(errs, err)
	_, err = c.RbacV1().RoleBindings(metricsNamespace).Apply(ctx, rbacv1apply.RoleBinding("metrics-server-auth-reader", metricsNamespace).
		WithRoleRef(rbacv1apply.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName("extension-apiserver-authentication-reader")).
		WithSubjects(user), apply)
	errs = append(errs, err)
	// Who may read the metrics API: whoever may view, edit or admin.
	_, err = c.RbacV1().ClusterRoles().Apply(ctx, rbacv1apply.ClusterRole("system:aggregated-metrics-reader").
		WithLabels(map[string]string{
			"rbac.authorization.k8s.io/aggregate-to-view":  "true",
			"rbac.authorization.k8s.io/aggregate-to-edit":  "true",
			"rbac.authorization.k8s.io/aggregate-to-admin": "true",
		}).
		WithRules(rbacv1apply.PolicyRule().WithAPIGroups("metrics.k8s.io").WithResources("pods", "nodes").WithVerbs(verbs...)), apply)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("metrics-server RBAC: %w", err)
	}

	_, err = c.CoreV1().Services(metricsNamespace).Apply(ctx, corev1apply.Service(name, metricsNamespace).
		WithSpec(corev1apply.ServiceSpec().WithType(corev1.ServiceTypeClusterIP).WithPorts(
			corev1apply.ServicePort().WithName(metricsPortName).WithProtocol(corev1.ProtocolTCP).WithPort(443).
				WithTargetPort(intstr.FromInt32(int32(port))))), apply)
	if err != nil {
		return fmt.Errorf("metrics-server Service: %w", err)
	}
	// A slice managed by us, not by the EndpointSlice controllers (the
	// Service has no selector and no Endpoints object to mirror).
	_, err = c.DiscoveryV1().EndpointSlices(metricsNamespace).Apply(ctx, discoveryv1apply.EndpointSlice(name, metricsNamespace).
		WithLabels(map[string]string{
			discoveryv1.LabelServiceName: name,
			discoveryv1.LabelManagedBy:   "cci.io-server",
		}).
		WithAddressType(discoveryv1.AddressTypeIPv4).
		WithPorts(discoveryv1apply.EndpointPort().WithName(metricsPortName).WithProtocol(corev1.ProtocolTCP).WithPort(int32(port))).
		WithEndpoints(discoveryv1apply.Endpoint().WithAddresses(ip).
			WithConditions(discoveryv1apply.EndpointConditions().WithReady(true))), apply)
	if err != nil {
		return fmt.Errorf("metrics-server EndpointSlice: %w", err)
	}
	_, err = agg.ApiregistrationV1().APIServices().Apply(ctx, apiregv1apply.APIService("v1beta1.metrics.k8s.io").
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": fieldManager}).
		WithSpec(apiregv1apply.APIServiceSpec().
			WithGroup("metrics.k8s.io").WithVersion("v1beta1").
			WithService(apiregv1apply.ServiceReference().WithNamespace(metricsNamespace).WithName(name).WithPort(443)).
			WithCABundle(caPEM...).
			WithGroupPriorityMinimum(100).WithVersionPriority(100)), apply)
	if err != nil {
		return fmt.Errorf("APIService v1beta1.metrics.k8s.io: %w", err)
	}
	return nil
}

// aggregatorFor is an apiregistration client for the kubeconfig.
func aggregatorFor(kubeconfig string) (aggregator.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %q: %w", kubeconfig, err)
	}
	return aggregator.NewForConfig(rc)
}
