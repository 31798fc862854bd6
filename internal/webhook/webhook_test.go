package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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

// reviewAs sends a request with an old object and a user through handler.
func reviewAs(t *testing.T, h http.HandlerFunc, req admissionv1.AdmissionRequest, obj, old any) *admissionv1.AdmissionResponse {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	req.UID, req.Object = "u2", runtime.RawExtension{Raw: raw}
	if old != nil {
		if req.OldObject.Raw, err = json.Marshal(old); err != nil {
			t.Fatal(err)
		}
	}
	if req.Namespace == "" {
		req.Namespace = "acme"
	}
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req,
	})
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("answer %d %q: %v", rec.Code, rec.Body.String(), err)
	}
	return out.Response
}

// applyPatch applies an answer's JSON patch to obj.
func applyPatch[T any](t *testing.T, resp *admissionv1.AdmissionResponse, obj *T) *T {
	t.Helper()
	if !resp.Allowed {
		t.Fatalf("refused: %v", resp.Result)
	}
	if resp.Patch == nil {
		return obj
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(obj)
	out, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("apply %s: %v", resp.Patch, err)
	}
	got := new(T)
	if err := json.Unmarshal(out, got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestMutateService(t *testing.T) {
	s := &Server{cfg: Config{Log: slog.New(slog.DiscardHandler), Rules: func(string) policy.Rules { return policy.Rules{} }}}
	svcReq := func(op admissionv1.Operation) admissionv1.AdmissionRequest {
		return admissionv1.AdmissionRequest{Operation: op, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "services"}}
	}
	yes := true
	lb := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, AllocateLoadBalancerNodePorts: &yes, Selector: map[string]string{"app": "web"},
		Ports: []corev1.ServicePort{{Name: "http", Port: 80}},
	}}
	// As the apiserver sends it (allocateLoadBalancerNodePorts defaulted
	// to true), the validating webhook refuses it …
	if resp := reviewAs(t, s.serve(s.validate), svcReq(admissionv1.Create), lb, nil); resp.Allowed || !strings.Contains(resp.Result.Message, "allocateLoadBalancerNodePorts must be false") {
		t.Errorf("unmutated LoadBalancer: %+v", resp.Result)
	}
	// … and the mutating one makes it pass.
	got := applyPatch(t, reviewAs(t, s.serve(s.mutate), svcReq(admissionv1.Create), lb, nil), lb)
	if a := got.Spec.AllocateLoadBalancerNodePorts; a == nil || *a {
		t.Fatalf("allocateLoadBalancerNodePorts %v after mutation, want false", a)
	}
	if resp := reviewAs(t, s.serve(s.validate), svcReq(admissionv1.Create), got, nil); !resp.Allowed {
		t.Errorf("mutated LoadBalancer refused: %v", resp.Result)
	}
	// An update of a LoadBalancer that holds node ports from before
	// releases them.
	old := lb.DeepCopy()
	old.Spec.Ports[0].NodePort = 31000
	upd := old.DeepCopy()
	upd.Labels = map[string]string{"x": "y"}
	got = applyPatch(t, reviewAs(t, s.serve(s.mutate), svcReq(admissionv1.Update), upd, old), upd)
	if got.Spec.Ports[0].NodePort != 0 || *got.Spec.AllocateLoadBalancerNodePorts {
		t.Errorf("after update: nodePort %d, allocateLoadBalancerNodePorts %v", got.Spec.Ports[0].NodePort, *got.Spec.AllocateLoadBalancerNodePorts)
	}
	if resp := reviewAs(t, s.serve(s.validate), svcReq(admissionv1.Update), got, old); !resp.Allowed {
		t.Errorf("updated LoadBalancer refused: %v", resp.Result)
	}
	// A nodePort the tenant picks is refused.
	pick := lb.DeepCopy()
	pick.Spec.Ports[0].NodePort = 31001
	got = applyPatch(t, reviewAs(t, s.serve(s.mutate), svcReq(admissionv1.Create), pick, nil), pick)
	if resp := reviewAs(t, s.serve(s.validate), svcReq(admissionv1.Create), got, nil); resp.Allowed || !strings.Contains(resp.Result.Message, "nodePort 31001 is not allowed") {
		t.Errorf("explicit nodePort: %+v", resp.Result)
	}
	// ClusterIP is not patched; externalIPs are refused.
	cip := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	if resp := reviewAs(t, s.serve(s.mutate), svcReq(admissionv1.Create), cip, nil); !resp.Allowed || resp.Patch != nil {
		t.Errorf("ClusterIP mutated: %s", resp.Patch)
	}
	cip.Spec.ExternalIPs = []string{"192.0.2.1"}
	if resp := reviewAs(t, s.serve(s.validate), svcReq(admissionv1.Create), cip, nil); resp.Allowed || resp.Result.Code != http.StatusForbidden || !strings.Contains(resp.Result.Message, "spec.externalIPs [192.0.2.1] is not allowed") {
		t.Errorf("externalIPs: %+v", resp.Result)
	}
}

// addresses is an Addresses of fixed answers, or failing with err.
type addresses struct {
	nodes []netip.Addr
	pods  map[string][]netip.Addr
	err   error
}

func (a addresses) NodeIPs(context.Context) ([]netip.Addr, error) { return a.nodes, a.err }
func (a addresses) PodIPs(_ context.Context, ns string) ([]netip.Addr, error) {
	return a.pods[ns], a.err
}

func TestValidateEndpoints(t *testing.T) {
	addrs := addresses{
		nodes: []netip.Addr{netip.MustParseAddr("192.168.1.5")},
		pods:  map[string][]netip.Addr{"acme": {netip.MustParseAddr("10.42.0.7")}, "other": {netip.MustParseAddr("10.42.0.9")}},
	}
	s := &Server{cfg: Config{Log: slog.New(slog.DiscardHandler), Rules: func(string) policy.Rules { return policy.Rules{} },
		Network: policy.Network{
			PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.43.0.0/16")},
			NodeIPs:      []netip.Addr{netip.MustParseAddr("192.168.1.1")},
		},
		Addresses: addrs,
	}}
	tenant := authenticationv1.UserInfo{Username: "system:serviceaccount:acme:tenant", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:acme", "system:authenticated"}}
	sliceCtrl := authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:endpointslice-controller", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}}
	kcm := authenticationv1.UserInfo{Username: "system:kube-controller-manager"}
	admin := authenticationv1.UserInfo{Username: "cci-admin", Groups: []string{"system:masters"}}
	endpoints := func(ip string) *corev1.Endpoints {
		return &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: ip}}, Ports: []corev1.EndpointPort{{Port: 5432}},
		}}}
	}
	slice := func(ip string, labels map[string]string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "db-x", Labels: labels}, AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}}}}
	}
	managed := map[string]string{discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io", discoveryv1.LabelServiceName: "db"}
	for _, tc := range []struct {
		name string
		user authenticationv1.UserInfo
		obj  any
		want string // refusal substring; "" when allowed
	}{
		{"tenant Endpoints at another tenant's pod", tenant, endpoints("10.42.0.9"), "endpoint address 10.42.0.9 (subsets[0].addresses[0]) is not allowed: it is in the pod range 10.42.0.0/16 and not the IP of a pod in this namespace"},
		{"tenant Endpoints at its own pod", tenant, endpoints("10.42.0.7"), ""},
		{"tenant Endpoints outside the cluster", tenant, endpoints("203.0.113.10"), ""},
		{"tenant Endpoints at a node", tenant, endpoints("192.168.1.5"), "it is a node's address"},
		{"tenant Endpoints at the control-plane host", tenant, endpoints("192.168.1.1"), "it is a node's address"},
		{"tenant Endpoints at a ClusterIP", tenant, endpoints("10.43.0.10"), "in the Service range 10.43.0.0/16"},
		{"tenant Endpoints at loopback", tenant, endpoints("127.0.0.1"), "loopback"},
		{"tenant slice at another tenant's pod", tenant, slice("10.42.0.9", nil), "endpoint address 10.42.0.9 (endpoints[0].addresses[0]) is not allowed"},
		{"tenant slice labelled as the controller's", tenant, slice("10.42.0.9", managed), "not the IP of a pod in this namespace"},
		{"tenant slice outside the cluster", tenant, slice("203.0.113.10", nil), ""},
		{"service account of another namespace", authenticationv1.UserInfo{Username: "system:serviceaccount:default:x"}, slice("10.42.0.9", nil), "not the IP of a pod"},
		{"anonymous", authenticationv1.UserInfo{Username: "system:anonymous"}, endpoints("10.42.0.9"), "not the IP of a pod"},
		{"endpointslice controller", sliceCtrl, slice("10.42.0.9", managed), ""},
		{"kube-controller-manager", kcm, endpoints("10.42.0.9"), ""},
		{"admin", admin, endpoints("10.42.0.9"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := "endpoints"
			gvr := metav1.GroupVersionResource{Version: "v1", Resource: "endpoints"}
			if _, ok := tc.obj.(*discoveryv1.EndpointSlice); ok {
				res = "endpointslices"
				gvr = metav1.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: res}
			}
			for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
				resp := reviewAs(t, s.serve(s.validate), admissionv1.AdmissionRequest{Operation: op, Resource: gvr, UserInfo: tc.user}, tc.obj, tc.obj)
				if tc.want == "" {
					if !resp.Allowed {
						t.Errorf("%s refused: %v", op, resp.Result.Message)
					}
					continue
				}
				if resp.Allowed || resp.Result.Code != http.StatusForbidden || !strings.Contains(resp.Result.Message, tc.want) {
					t.Errorf("%s: answer %+v, want 403 with %q", op, resp.Result, tc.want)
				}
			}
		})
	}
	// When the addresses cannot be read, a tenant's endpoints are refused.
	s.cfg.Addresses = addresses{err: errors.New("apiserver away")}
	resp := reviewAs(t, s.serve(s.validate), admissionv1.AdmissionRequest{Operation: admissionv1.Create,
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "endpoints"}, UserInfo: tenant}, endpoints("203.0.113.10"), nil)
	if resp.Allowed || !strings.Contains(resp.Result.Message, "apiserver away") {
		t.Errorf("lookup failure: %+v", resp.Result)
	}
}

// TestSystemIdentityCEL checks that the webhook's matchConditions send
// exactly the requests that SystemIdentity does not let through.
func TestSystemIdentityCEL(t *testing.T) {
	env, err := cel.NewEnv(cel.Variable("request", cel.DynType))
	if err != nil {
		t.Fatal(err)
	}
	ast, iss := env.Compile(systemIdentityCEL)
	if iss.Err() != nil {
		t.Fatal(iss.Err())
	}
	prg, err := env.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		u    authenticationv1.UserInfo
		want bool
	}{
		{authenticationv1.UserInfo{Username: "system:serviceaccount:acme:tenant", Groups: []string{"system:serviceaccounts"}}, false},
		{authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:endpointslice-controller"}, true},
		{authenticationv1.UserInfo{Username: "system:serviceaccount:kube-systemx:y"}, false},
		{authenticationv1.UserInfo{Username: "system:kube-controller-manager"}, true},
		{authenticationv1.UserInfo{Username: "system:apiserver", Groups: []string{"system:masters"}}, true},
		{authenticationv1.UserInfo{Username: "system:anonymous", Groups: []string{"system:unauthenticated"}}, false},
		{authenticationv1.UserInfo{Username: "alice"}, false},
		{authenticationv1.UserInfo{Username: "cci-admin", Groups: []string{"system:masters"}}, true},
	} {
		if got := SystemIdentity(tc.u); got != tc.want {
			t.Errorf("SystemIdentity(%v) = %v, want %v", tc.u, got, tc.want)
		}
		ui := map[string]any{"username": tc.u.Username}
		if tc.u.Groups != nil {
			ui["groups"] = tc.u.Groups
		}
		out, _, err := prg.Eval(map[string]any{"request": map[string]any{"userInfo": ui}})
		if err != nil {
			t.Fatalf("%v: %v", tc.u, err)
		}
		if out.Value() != tc.want {
			t.Errorf("CEL for %v = %v, want %v", tc.u, out.Value(), tc.want)
		}
	}
}

func resourceMust(s string) resource.Quantity { return resource.MustParse(s) }

// TestMutatePool: the patch binds a pod to its pool (nodeSelector and
// toleration, kept beside the tolerations it had), the result passes the
// validating webhook, and a Deployment whose pods name a pool without
// hosts is refused with the pools that have them.
func TestMutatePool(t *testing.T) {
	s := &Server{cfg: Config{Log: slog.New(slog.DiscardHandler),
		Rules: func(string) policy.Rules {
			return policy.Rules{Tenant: "acme", Pools: []string{"general", "gpu", "ascend"}}
		},
		ExistingPools: func() []string { return []string{"general", "gpu"} },
	}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{
			Containers:  []corev1.Container{{Name: "main", Image: "i", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resourceMust("1")}}}},
			Tolerations: []corev1.Toleration{{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}},
		},
	}
	resp := review(t, s.serve(s.mutate), admissionv1.Create, "pods", pod)
	if !resp.Allowed {
		t.Fatalf("refused: %v", resp.Result)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(pod)
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.NodeSelector["cci.io/pool"] != "gpu" || got.Annotations["cci.io/pool"] != "gpu" {
		t.Errorf("nodeSelector %v, annotations %v", got.Spec.NodeSelector, got.Annotations)
	}
	if len(got.Spec.Tolerations) != 2 || got.Spec.Tolerations[1].Key != "cci.io/pool" || got.Spec.Tolerations[1].Value != "gpu" {
		t.Errorf("tolerations %+v", got.Spec.Tolerations)
	}
	if resp := review(t, s.serve(s.validate), admissionv1.Create, "pods", &got); !resp.Allowed {
		t.Errorf("validating webhook refuses the mutated pod: %v", resp.Result)
	}
	d := map[string]any{"spec": map[string]any{"template": map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{"cci.io/pool": "ascend"}},
		"spec":     map[string]any{"containers": []any{map[string]any{"name": "c", "image": "i"}}},
	}}}
	resp = review(t, s.serve(s.validate), admissionv1.Create, "deployments", d)
	if resp.Allowed || !strings.Contains(resp.Result.Message, `pool "ascend" does not exist: no host is in it; pools with hosts: general, gpu`) {
		t.Errorf("deployment of a pool without hosts: %+v", resp.Result)
	}
}
