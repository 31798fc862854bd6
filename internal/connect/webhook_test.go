package connect

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// review sends pod to the webhook and returns its answer.
func review(t *testing.T, c *connector, pod *v1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	raw, _ := json.Marshal(pod)
	body, _ := json.Marshal(admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{UID: "1", Namespace: "shop", Object: runtime.RawExtension{Raw: raw}}})
	rec := httptest.NewRecorder()
	c.serveWebhook(rec, httptest.NewRequest(http.MethodPost, "/burst", bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("webhook answered %d: %s", rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("webhook's answer: %v %s", err, rec.Body)
	}
	return out.Response
}

// A pod the virtual node would refuse is refused when it is created (for
// enforce), or kept on A's nodes (prefer, auto), rather than failed on the
// node, where its ReplicaSet would replace it without end.
func TestWebhookRefusesAtAdmission(t *testing.T) {
	b := fake.NewClientset()
	flavor := "admission webhook \"pods.tenant-policy.cci.io\" denied the request: pod flavor 0.1 CPU / 0.125 GiB is not offered"
	b.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*v1.Pod)
		if len(a.(k8stesting.CreateActionImpl).CreateOptions.DryRun) == 0 {
			t.Errorf("the webhook created pod %s in B for real", pod.Name)
		}
		if pod.Spec.Containers[0].Resources.Limits.Cpu().MilliValue() == 100 {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, pod.Name, &flavorError{flavor})
		}
		if pod.Spec.Containers[0].Resources.Limits.Cpu().MilliValue() == 500 {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, pod.Name, &flavorError{"exceeded quota: cci-tenant"})
		}
		return true, pod, nil
	})
	c := &connector{cfg: Config{NodeName: "cci-burst"}, b: b, bNS: "acme", cluster: "uid"}
	pod := func(mode, cpu string, hostPath bool) *v1.Pod {
		p := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Labels: map[string]string{BurstLabel: mode}},
			Spec: v1.PodSpec{Containers: []v1.Container{{Name: "c", Image: "x",
				Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceCPU: resource.MustParse(cpu)}}}}},
		}
		if hostPath {
			p.Spec.Volumes = []v1.Volume{{Name: "h", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/"}}}}
		}
		return p
	}

	for _, tc := range []struct {
		name             string
		pod              *v1.Pod
		allowed, patched bool
		says             string
	}{
		{"fits", pod("enforce", "250m", false), true, true, ""},
		{"enforce, no flavor", pod("enforce", "100m", false), false, false, "pod flavor 0.1 CPU"},
		{"enforce, hostPath", pod("enforce", "250m", true), false, false, "spec.volumes[0].hostPath"},
		{"auto, no flavor", pod("auto", "100m", false), true, false, "kept on this cluster's own nodes"},
		{"prefer, hostPath", pod("prefer", "250m", true), true, false, "hostPath"},
		{"quota is not a refusal", pod("enforce", "500m", false), true, true, ""},
		{"unknown mode", pod("sometimes", "250m", false), false, false, "choose enforce, prefer or auto"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := review(t, c, tc.pod)
			said := strings.Join(r.Warnings, " ")
			if r.Result != nil {
				said += r.Result.Message
			}
			if r.Allowed != tc.allowed || (len(r.Patch) > 0) != tc.patched || !strings.Contains(said, tc.says) {
				t.Errorf("allowed %v, patched %v, said %q; want %v, %v, %q", r.Allowed, len(r.Patch) > 0, said, tc.allowed, tc.patched, tc.says)
			}
		})
	}
}

type flavorError struct{ msg string }

func (e *flavorError) Error() string { return e.msg }
