package connect

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admregv1 "k8s.io/api/admissionregistration/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/pki"
)

// BurstLabel on a pod (template) asks the webhook that `cci connect
// --install` places in A to send it to the virtual node:
//
//	enforce  only the virtual node
//	prefer   the virtual node first, A's nodes when it is full
//	auto     A's nodes first, the virtual node when they are full
const BurstLabel = "cci.io/burst"

// burstPatch is the JSON patch that sends pod to the virtual node as its
// BurstLabel asks; nil when the label asks for nothing known.
func burstPatch(pod *v1.Pod) ([]map[string]any, error) {
	mode := pod.Labels[BurstLabel]
	virtual := v1.NodeSelectorTerm{MatchExpressions: []v1.NodeSelectorRequirement{{Key: "type", Operator: v1.NodeSelectorOpIn, Values: []string{"virtual-kubelet"}}}}
	local := v1.NodeSelectorTerm{MatchExpressions: []v1.NodeSelectorRequirement{{Key: "type", Operator: v1.NodeSelectorOpNotIn, Values: []string{"virtual-kubelet"}}}}
	aff := pod.Spec.Affinity.DeepCopy()
	if aff == nil {
		aff = &v1.Affinity{}
	}
	if aff.NodeAffinity == nil {
		aff.NodeAffinity = &v1.NodeAffinity{}
	}
	na := aff.NodeAffinity
	switch mode {
	case "enforce":
		req := na.RequiredDuringSchedulingIgnoredDuringExecution
		if req == nil || len(req.NodeSelectorTerms) == 0 {
			na.RequiredDuringSchedulingIgnoredDuringExecution = &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{virtual}}
		} else {
			// Terms are ORed: the virtual node's requirement goes into each.
			for i := range req.NodeSelectorTerms {
				req.NodeSelectorTerms[i].MatchExpressions = append(req.NodeSelectorTerms[i].MatchExpressions, virtual.MatchExpressions...)
			}
		}
	case "prefer":
		na.PreferredDuringSchedulingIgnoredDuringExecution = append(na.PreferredDuringSchedulingIgnoredDuringExecution, v1.PreferredSchedulingTerm{Weight: 100, Preference: virtual})
	case "auto":
		na.PreferredDuringSchedulingIgnoredDuringExecution = append(na.PreferredDuringSchedulingIgnoredDuringExecution, v1.PreferredSchedulingTerm{Weight: 100, Preference: local})
	default:
		return nil, fmt.Errorf("label %s=%q: choose enforce, prefer or auto", BurstLabel, mode)
	}
	tolerations := append([]v1.Toleration{}, pod.Spec.Tolerations...)
	// auto tolerates only the NoSchedule taint: the node's PreferNoSchedule
	// one (AutoTaint) then scores it below A's own nodes.
	effect := v1.TaintEffect("")
	if mode == "auto" {
		effect = v1.TaintEffectNoSchedule
	}
	tolerations = append(tolerations, v1.Toleration{Key: Taint.Key, Operator: v1.TolerationOpExists, Effect: effect})
	return []map[string]any{
		{"op": "add", "path": "/spec/affinity", "value": aff},
		{"op": "add", "path": "/spec/tolerations", "value": tolerations},
	}, nil
}

// serveWebhook answers A's apiserver's AdmissionReviews of pods.
func (c *connector) serveWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
	if err != nil {
		http.Error(w, "read AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	var pod v1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err == nil {
		if pod.Namespace == "" {
			pod.Namespace = review.Request.Namespace
		}
		patch, err := burstPatch(&pod)
		refusal := error(nil)
		if err == nil {
			refusal = c.wouldRefuse(r.Context(), &pod)
		}
		switch {
		case err != nil:
			resp.Allowed = false
			resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest, Message: err.Error()}
		case refusal != nil && pod.Labels[BurstLabel] == "enforce":
			// Failed later on the node, a ReplicaSet's pod would be
			// replaced at once, and again: thousands a minute. Refused
			// here, the ReplicaSet reports FailedCreate and backs off.
			resp.Allowed = false
			resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden,
				Message: fmt.Sprintf("%s=enforce: %v", BurstLabel, refusal)}
		case refusal != nil:
			// prefer and auto: the pod stays on A's own nodes.
			resp.Warnings = []string{fmt.Sprintf("%s=%s: kept on this cluster's own nodes: %v", BurstLabel, pod.Labels[BurstLabel], refusal)}
		default:
			raw, _ := json.Marshal(patch)
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = raw, &pt
		}
	}
	out, _ := json.Marshal(admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Response: resp})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// wouldRefuse says why the virtual node would refuse pod, nil when it
// would take it or cannot tell: a field that cannot pass, or B's admission
// (a flavor CCI does not offer, a policy), asked with a dry run of the
// copy's creation. Quota is not a refusal (it frees up), nor is B being
// out of reach.
func (c *connector) wouldRefuse(ctx context.Context, pod *v1.Pod) error {
	if pod.Name == "" { // a controller's pod: generateName is not applied yet
		p := pod.DeepCopy()
		p.Name = p.GenerateName + "admission"
		pod = p
	}
	t := c.copyTarget(pod.Namespace)
	pl, err := translate(pod, t)
	var r *refused
	if errors.As(err, &r) {
		return err
	}
	if err != nil || c.b == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = c.b.CoreV1().Pods(t.Namespace).Create(ctx, pl.Pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil, apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota"):
		return nil
	case apierrors.IsForbidden(err), apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return &refused{Field: "admission", Why: fmt.Sprintf("the cluster behind node %s refuses the pod: %s", c.cfg.NodeName, apiMessage(err))}
	}
	return nil
}

// runWebhook serves the burst webhook on WebhookPort and registers it in
// A (a MutatingWebhookConfiguration named after the node, removed again
// when connect stops); ready once registered.
func (c *connector) runWebhook(ctx context.Context, ready func()) error {
	certPEM, keyPEM, err := pki.SelfSigned(c.cfg.NodeName+"-webhook", []string{c.cfg.NodeIP, "127.0.0.1"})
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(c.cfg.WebhookPort)))
	if err != nil {
		return fmt.Errorf("the burst webhook's port %d (--webhook-port): %w", c.cfg.WebhookPort, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/burst", c.serveWebhook)
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()

	url := "https://" + net.JoinHostPort(c.cfg.NodeIP, strconv.Itoa(c.cfg.WebhookPort)) + "/burst"
	ignore := admregv1.Ignore // A keeps working while connect is down
	none := admregv1.SideEffectClassNone
	timeout := int32(5)
	name := "cci-connect-" + c.cfg.NodeName
	cfg := &admregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admregv1.MutatingWebhook{{
			Name:                    "burst.connect.cci.io",
			ClientConfig:            admregv1.WebhookClientConfig{URL: &url, CABundle: certPEM},
			Rules:                   []admregv1.RuleWithOperations{{Operations: []admregv1.OperationType{admregv1.Create}, Rule: admregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy:           &ignore,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ObjectSelector:          &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: BurstLabel, Operator: metav1.LabelSelectorOpExists}}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{metav1.NamespaceSystem}}}},
		}},
	}
	hooks := c.a.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := hooks.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = hooks.Create(ctx, cfg, metav1.CreateOptions{})
	case err == nil:
		cfg.ResourceVersion = cur.ResourceVersion
		_, err = hooks.Update(ctx, cfg, metav1.UpdateOptions{})
	}
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("install the burst webhook in the cluster (MutatingWebhookConfiguration %s): %w", name, err)
	}
	c.log.Info("burst webhook installed", "url", url, "label", BurstLabel)
	ready()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("burst webhook: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = hooks.Delete(sctx, name, metav1.DeleteOptions{})
	return srv.Shutdown(sctx)
}
