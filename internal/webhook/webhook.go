// Package webhook serves the tenant admission policy (package policy) to
// the apiserver as a mutating and a validating admission webhook over
// HTTPS, and registers both with the apiserver for tenant namespaces only
// (namespaces labelled cci.io/tenant). Admin namespaces never reach it.
//
// A webhook rather than ValidatingAdmissionPolicy/MutatingAdmissionPolicy
// (CEL): naming the nearest valid flavor, adding up init containers and
// sidecars as the scheduler does and normalising each container are
// arithmetic that is plain Go and table-tested in package policy, and the
// rules differ per tenant (runc allowed or not), read from the Tenant the
// controller already caches.
package webhook

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/pki"
	"github.com/cci-project/cci/internal/policy"
)

// maxReviewBytes bounds an AdmissionReview's size.
const maxReviewBytes = 8 << 20

// ConfigurationName names the webhook configurations CCI registers.
const ConfigurationName = "cci-tenant-policy"

// RulesFor returns the policy rules of the tenant that owns namespace ns.
// It is called concurrently.
type RulesFor func(ns string) policy.Rules

// Config says where the webhook listens and how it decides.
type Config struct {
	// Addr is host:port to listen on. Default "127.0.0.1:0": loopback, any
	// free port, as the apiserver calling it runs in the same process.
	Addr string
	// CA signs the serving certificate; CAPEM is its certificate, given to
	// the apiserver as the webhooks' caBundle.
	CA    *x509.Certificate
	CAKey crypto.Signer
	CAPEM []byte
	// Hosts are extra names and IPs for the serving certificate.
	Hosts []string
	// Rules gives each namespace's rules.
	Rules RulesFor
	// ExistingPools lists the host pools that have hosts, at each request
	// (policy.Rules.ExistingPools). Nil: pools are not checked for hosts.
	// It is called concurrently.
	ExistingPools func() []string
	// Network is the cluster's pod and Service ranges and the control-plane
	// host's own addresses, for the check of endpoints that tenants write;
	// Addresses adds the nodes' addresses and the namespace's pod IPs to it
	// at each request.
	Network   policy.Network
	Addresses Addresses
	// Log receives refusals and failures.
	Log *slog.Logger
}

// Addresses tells who holds which address, for the check of endpoints that
// tenants write. It is called concurrently, once per such request.
type Addresses interface {
	// NodeIPs returns the addresses of every node.
	NodeIPs(ctx context.Context) ([]netip.Addr, error)
	// PodIPs returns the IPs of the pods in namespace ns that have not
	// finished (a finished pod's IP may already be another pod's).
	PodIPs(ctx context.Context, ns string) ([]netip.Addr, error)
}

// APIAddresses reads Addresses from the apiserver at each call, so that a
// pod just started or deleted is seen as it is.
type APIAddresses struct {
	Kube kubernetes.Interface
}

// NodeIPs lists the nodes' InternalIP and ExternalIP addresses.
func (a APIAddresses) NodeIPs(ctx context.Context) ([]netip.Addr, error) {
	nodes, err := a.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	var out []netip.Addr
	for _, n := range nodes.Items {
		for _, addr := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(addr.Address); err == nil {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// PodIPs lists the pods of ns that are not Succeeded or Failed.
func (a APIAddresses) PodIPs(ctx context.Context, ns string) ([]netip.Addr, error) {
	pods, err := a.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods of %q: %w", ns, err)
	}
	var out []netip.Addr
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, pip := range p.Status.PodIPs {
			if ip, err := netip.ParseAddr(pip.IP); err == nil {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// Server is a listening admission webhook.
type Server struct {
	cfg Config
	ln  net.Listener
	url string
}

// Listen binds the webhook's port with a certificate from the CA.
func Listen(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	hosts := append([]string{"127.0.0.1", "localhost"}, cfg.Hosts...)
	certPEM, keyPEM, err := pki.Issue(cfg.CA, cfg.CAKey, "cci-admission-webhook", nil, true, hosts)
	if err != nil {
		return nil, fmt.Errorf("admission webhook certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", cfg.Addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, fmt.Errorf("admission webhook: listen on %s: %w", cfg.Addr, err)
	}
	host, _, _ := net.SplitHostPort(cfg.Addr)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return &Server{cfg: cfg, ln: ln, url: "https://" + net.JoinHostPort(host, strconv.Itoa(port))}, nil
}

// URL is the webhook's base address.
func (s *Server) URL() string { return s.url }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/mutate", s.serve(s.mutate))
	mux.HandleFunc("/validate", s.serve(s.validate))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serve decodes an AdmissionReview, lets decide answer it and writes the
// review back.
func (s *Server) serve(decide func(context.Context, *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// The apiserver's requests are far smaller (it caps objects at
		// about 3 MiB); a larger body is refused, not truncated and
		// misread.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, fmt.Sprintf("AdmissionReview larger than %d bytes", maxReviewBytes), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "read AdmissionReview: "+err.Error(), http.StatusBadRequest)
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
			return
		}
		resp := decide(r.Context(), review.Request)
		resp.UID = review.Request.UID
		if !resp.Allowed {
			s.cfg.Log.Info("admission refused", "tenant", review.Request.Namespace, "kind", review.Request.Kind.Kind,
				"name", review.Request.Name, "dryRun", review.Request.DryRun != nil && *review.Request.DryRun, "reason", resp.Result.Message)
		}
		out, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Response: resp,
		})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

func allow() *admissionv1.AdmissionResponse { return &admissionv1.AdmissionResponse{Allowed: true} }

// deny maps an error to the answer: a policy refusal is 403 Forbidden with
// the policy's message, anything else (a request we cannot read) 400.
func deny(err error) *admissionv1.AdmissionResponse {
	if err == nil {
		return allow()
	}
	var refusal *policy.Refusal
	if errors.As(err, &refusal) {
		return &admissionv1.AdmissionResponse{Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden,
			Message: policy.RefusalPrefix + err.Error(),
		}}
	}
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest, Message: err.Error(),
	}}
}

func decode[T any](raw []byte) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func patched(ops []patchOp) *admissionv1.AdmissionResponse {
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny(err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}
}

// mutate normalises tenant pods (pods CREATE) and Services (CREATE and
// UPDATE) and answers with a JSON patch.
func (s *Server) mutate(_ context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.SubResource != "" {
		return allow()
	}
	if req.Resource.Resource == "services" && (req.Operation == admissionv1.Create || req.Operation == admissionv1.Update) {
		return mutateService(req)
	}
	if req.Resource.Resource != "pods" || req.Operation != admissionv1.Create {
		return allow()
	}
	pod, err := decode[corev1.Pod](req.Object.Raw)
	if err != nil {
		return deny(err)
	}
	if err := policy.AdmitPod(pod, s.rules(req.Namespace)); err != nil {
		return deny(err)
	}
	// "add" replaces a member that exists, so it serves either way.
	ops := []patchOp{
		{"add", "/metadata/annotations", pod.Annotations},
		{"add", "/spec/runtimeClassName", *pod.Spec.RuntimeClassName},
		{"add", "/spec/nodeSelector", pod.Spec.NodeSelector},
	}
	if len(pod.Spec.Tolerations) > 0 {
		ops = append(ops, patchOp{"add", "/spec/tolerations", pod.Spec.Tolerations})
	}
	if len(pod.Spec.ImagePullSecrets) > 0 {
		ops = append(ops, patchOp{"add", "/spec/imagePullSecrets", pod.Spec.ImagePullSecrets})
	}
	for i, c := range pod.Spec.InitContainers {
		ops = append(ops, patchOp{"add", fmt.Sprintf("/spec/initContainers/%d/resources", i), c.Resources})
	}
	for i, c := range pod.Spec.Containers {
		ops = append(ops, patchOp{"add", fmt.Sprintf("/spec/containers/%d/resources", i), c.Resources})
	}
	return patched(ops)
}

// rules are the namespace's tenant rules with the pools that have hosts now.
func (s *Server) rules(ns string) policy.Rules {
	r := s.cfg.Rules(ns)
	if s.cfg.ExistingPools != nil {
		r.ExistingPools = s.cfg.ExistingPools()
		if r.ExistingPools == nil {
			r.ExistingPools = []string{}
		}
	}
	return r
}

// mutateService applies policy.AdmitService: no node ports for a tenant
// LoadBalancer.
func mutateService(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	svc, err := decode[corev1.Service](req.Object.Raw)
	if err != nil {
		return deny(err)
	}
	var old *corev1.Service
	if req.Operation == admissionv1.Update {
		if old, err = decode[corev1.Service](req.OldObject.Raw); err != nil {
			return deny(err)
		}
	}
	before := svc.DeepCopy()
	policy.AdmitService(svc, old)
	if apiequality.Semantic.DeepEqual(before, svc) {
		return allow()
	}
	var ops []patchOp
	if svc.Spec.AllocateLoadBalancerNodePorts != nil {
		ops = append(ops, patchOp{"add", "/spec/allocateLoadBalancerNodePorts", *svc.Spec.AllocateLoadBalancerNodePorts})
	}
	if len(svc.Spec.Ports) > 0 {
		ops = append(ops, patchOp{"add", "/spec/ports", svc.Spec.Ports})
	}
	return patched(ops)
}

// validate is the last word on tenant pods and refuses workloads whose pods
// would be refused, Services that reach past the tenant, DaemonSets, and
// endpoints written by the tenant that point into the cluster.
func (s *Server) validate(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.SubResource != "" || (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) {
		return allow()
	}
	rules := s.rules(req.Namespace)
	raw := req.Object.Raw
	switch req.Resource.Resource {
	case "pods":
		pod, err := decode[corev1.Pod](raw)
		if err != nil {
			return deny(err)
		}
		if req.Operation == admissionv1.Update {
			old, err := decode[corev1.Pod](req.OldObject.Raw)
			if err != nil {
				return deny(err)
			}
			return deny(policy.CheckPodUpdate(old, pod))
		}
		return deny(policy.CheckAdmitted(pod, rules))
	case "services":
		svc, err := decode[corev1.Service](raw)
		if err != nil {
			return deny(err)
		}
		return deny(policy.CheckService(svc))
	case "daemonsets":
		ds, err := decode[appsv1.DaemonSet](raw)
		if err != nil {
			return deny(err)
		}
		return deny(policy.CheckDaemonSet(ds))
	case "endpoints", "endpointslices":
		return s.validateEndpoints(ctx, req)
	case "deployments":
		return template(raw, rules, func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template })
	case "replicasets":
		return template(raw, rules, func(d *appsv1.ReplicaSet) *corev1.PodTemplateSpec { return &d.Spec.Template })
	case "statefulsets":
		return template(raw, rules, func(d *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &d.Spec.Template })
	case "jobs":
		return template(raw, rules, func(d *batchv1.Job) *corev1.PodTemplateSpec { return &d.Spec.Template })
	case "cronjobs":
		return template(raw, rules, func(d *batchv1.CronJob) *corev1.PodTemplateSpec { return &d.Spec.JobTemplate.Spec.Template })
	}
	return allow()
}

// SystemIdentity reports whether a request comes from Kubernetes' or CCI's
// own components rather than a tenant: a system: user that is not a
// service account (system:kube-controller-manager, system:apiserver …), a
// service account of kube-system (the controllers of kube-controller-manager
// run as these), or a member of system:masters (the admin and CCI). Tenants
// authenticate as service accounts of their own namespace, which are not
// system identities. Labels such as endpointslice.kubernetes.io/managed-by
// are not looked at: a tenant can set them.
func SystemIdentity(u authenticationv1.UserInfo) bool {
	const sa = "system:serviceaccount:"
	switch {
	case slices.Contains(u.Groups, "system:masters"):
		return true
	case strings.HasPrefix(u.Username, sa):
		return strings.HasPrefix(u.Username, sa+"kube-system:")
	default:
		return strings.HasPrefix(u.Username, "system:") && u.Username != "system:anonymous"
	}
}

// systemIdentityCEL is SystemIdentity as a CEL expression, for the
// endpoints webhook's matchConditions: the controllers' own writes never
// wait for the webhook.
const systemIdentityCEL = `(has(request.userInfo.groups) && 'system:masters' in request.userInfo.groups) || ` +
	`(request.userInfo.username.startsWith('system:serviceaccount:') ? request.userInfo.username.startsWith('system:serviceaccount:kube-system:') : ` +
	`(request.userInfo.username.startsWith('system:') && request.userInfo.username != 'system:anonymous'))`

// validateEndpoints refuses Endpoints and EndpointSlices that a tenant
// writes with an address inside the cluster (see policy.Network).
func (s *Server) validateEndpoints(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if SystemIdentity(req.UserInfo) {
		return allow()
	}
	n := s.cfg.Network
	n.NodeIPs = slices.Clone(n.NodeIPs)
	if s.cfg.Addresses != nil {
		nodes, err := s.cfg.Addresses.NodeIPs(ctx)
		if err != nil {
			return deny(fmt.Errorf("check endpoint addresses: %w", err))
		}
		pods, err := s.cfg.Addresses.PodIPs(ctx, req.Namespace)
		if err != nil {
			return deny(fmt.Errorf("check endpoint addresses: %w", err))
		}
		n.NodeIPs = append(n.NodeIPs, nodes...)
		n.OwnPodIPs = pods
	}
	if req.Resource.Resource == "endpoints" {
		ep, err := decode[corev1.Endpoints](req.Object.Raw)
		if err != nil {
			return deny(err)
		}
		return deny(policy.CheckEndpoints(ep, n))
	}
	slice, err := decode[discoveryv1.EndpointSlice](req.Object.Raw)
	if err != nil {
		return deny(err)
	}
	return deny(policy.CheckEndpointSlice(slice, n))
}

func template[T any](raw []byte, rules policy.Rules, spec func(*T) *corev1.PodTemplateSpec) *admissionv1.AdmissionResponse {
	obj, err := decode[T](raw)
	if err != nil {
		return deny(err)
	}
	return deny(policy.CheckTemplate(spec(obj), rules))
}

// Register creates or updates the webhook configurations so that the
// apiserver sends tenant namespaces' requests to baseURL, trusting caPEM.
// Failures to reach the webhook refuse the request (failurePolicy Fail):
// a tenant pod never escapes the policy.
func Register(ctx context.Context, kube kubernetes.Interface, baseURL string, caPEM []byte) error {
	selector := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: TenantLabel, Operator: metav1.LabelSelectorOpExists}}}
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	timeout := int32(10)
	scope := admissionregistrationv1.NamespacedScope
	rule := func(group string, ops []admissionregistrationv1.OperationType, resources ...string) admissionregistrationv1.RuleWithOperations {
		version := "v1"
		return admissionregistrationv1.RuleWithOperations{Operations: ops, Rule: admissionregistrationv1.Rule{
			APIGroups: []string{group}, APIVersions: []string{version}, Resources: resources, Scope: &scope,
		}}
	}
	create := []admissionregistrationv1.OperationType{admissionregistrationv1.Create}
	write := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
	mutateURL, validateURL := baseURL+"/mutate", baseURL+"/validate"
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.tenant-policy.cci.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &mutateURL, CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{rule("", create, "pods"), rule("", write, "services")},
			NamespaceSelector:       selector,
			FailurePolicy:           &fail,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &ifNeeded,
		}},
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigurationName},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "workloads.tenant-policy.cci.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &validateURL, CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{
				rule("", write, "pods", "services"),
				rule("apps", write, "deployments", "replicasets", "statefulsets", "daemonsets"),
				rule("batch", write, "jobs", "cronjobs"),
			},
			NamespaceSelector:       selector,
			FailurePolicy:           &fail,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}, {
			// Endpoints that tenants write by hand, for selectorless
			// Services; the controllers' own are not sent.
			Name:         "endpoints.tenant-policy.cci.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &validateURL, CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{
				rule("", write, "endpoints"),
				rule("discovery.k8s.io", write, "endpointslices"),
			},
			MatchConditions:         []admissionregistrationv1.MatchCondition{{Name: "not-a-system-identity", Expression: "!(" + systemIdentityCEL + ")"}},
			NamespaceSelector:       selector,
			FailurePolicy:           &fail,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	mw := kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if cur, err := mw.Get(ctx, ConfigurationName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		_, err = mw.Create(ctx, mutating, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create mutating webhook configuration: %w", err)
		}
	} else if err != nil {
		return err
	} else {
		mutating.ResourceVersion = cur.ResourceVersion
		if _, err := mw.Update(ctx, mutating, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update mutating webhook configuration: %w", err)
		}
	}
	vw := kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if cur, err := vw.Get(ctx, ConfigurationName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		_, err = vw.Create(ctx, validating, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create validating webhook configuration: %w", err)
		}
	} else if err != nil {
		return err
	} else {
		validating.ResourceVersion = cur.ResourceVersion
		if _, err := vw.Update(ctx, validating, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update validating webhook configuration: %w", err)
		}
	}
	return nil
}

// TenantLabel is the namespace label the webhooks select on (tenant.Label;
// repeated here so that this package does not depend on the controller).
const TenantLabel = "cci.io/tenant"
