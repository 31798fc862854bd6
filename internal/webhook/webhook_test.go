package webhook

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/cci-project/cci/internal/policy"
)

// review sends obj through handler as the apiserver would and returns the answer.
func review(t *testing.T, h http.HandlerFunc, op admissionv1.Operation, resource string, obj any) *admissionv1.AdmissionResponse {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "u1", Operation: op, Namespace: "acme",
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: resource},
			Object:   runtime.RawExtension{Raw: raw},
		},
	})
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("answer %d %q: %v", rec.Code, rec.Body.String(), err)
	}
	if out.Response.UID != "u1" {
		t.Errorf("answer UID %q", out.Response.UID)
	}
	return out.Response
}

func TestMutatePatchesPod(t *testing.T) {
	s := &Server{cfg: Config{Log: slog.New(slog.DiscardHandler), Rules: func(ns string) policy.Rules {
		if ns != "acme" {
			t.Errorf("rules asked for %q", ns)
		}
		return policy.Rules{}
	}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "i"}},
			Containers: []corev1.Container{{Name: "main", Image: "i", Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{corev1.ResourceCPU: resourceMust("750m"), corev1.ResourceMemory: resourceMust("2Gi")},
			}}},
		},
	}
	resp := review(t, s.serve(s.mutate), admissionv1.Create, "pods", pod)
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("answer %+v", resp)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(pod)
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("apply %s: %v", resp.Patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[policy.FlavorAnnotation] != `{"cpu":"0.75","memory":"2Gi","gpu":0}` {
		t.Errorf("annotation %q", got.Annotations[policy.FlavorAnnotation])
	}
	if got.Spec.RuntimeClassName == nil || *got.Spec.RuntimeClassName != "gvisor" {
		t.Errorf("runtimeClassName %v", got.Spec.RuntimeClassName)
	}
	if r := got.Spec.Containers[0].Resources; r.Requests.Cpu().String() != "750m" || r.Requests.Memory().String() != "2Gi" {
		t.Errorf("container resources %v", r)
	}
	if r := got.Spec.InitContainers[0].Resources; r.Limits.Cpu().String() != "250m" || r.Limits.Memory().String() != "512Mi" {
		t.Errorf("init container resources %v", r)
	}
	// The patched pod passes the validating webhook.
	if resp := review(t, s.serve(s.validate), admissionv1.Create, "pods", &got); !resp.Allowed {
		t.Errorf("validating webhook refuses the mutated pod: %v", resp.Result)
	}
}

func TestRefusalIsForbidden(t *testing.T) {
	s := &Server{cfg: Config{Log: slog.New(slog.DiscardHandler), Rules: func(string) policy.Rules { return policy.Rules{} }}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	for name, h := range map[string]http.HandlerFunc{"mutate": s.serve(s.mutate), "validate": s.serve(s.validate)} {
		resp := review(t, h, admissionv1.Create, "pods", pod)
		if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden ||
			!strings.Contains(resp.Result.Message, "hostNetwork is not allowed") {
			t.Errorf("%s: answer %+v", name, resp.Result)
		}
	}
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort}}
	if resp := review(t, s.serve(s.validate), admissionv1.Update, "services", svc); resp.Allowed {
		t.Error("NodePort service allowed")
	}
}

func resourceMust(s string) resource.Quantity { return resource.MustParse(s) }
