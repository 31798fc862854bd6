package runtime

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
)

// An httpGet hook with scheme HTTPS reaches a server whose certificate
// the host cannot verify, as the kubelet's hooks do (the conformance
// specs "should execute poststart/prestop https hook properly").
func TestHTTPSHook(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" && r.URL.Query().Get("msg") == "poststart" {
			hits.Add(1)
		}
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"}}
	c := &v1.Container{Name: "c"}
	h := &v1.LifecycleHandler{HTTPGet: &v1.HTTPGetAction{
		Host: host, Port: intstr.FromInt(p), Path: "/echo?msg=poststart", Scheme: v1.URISchemeHTTPS,
	}}
	runner := lifecycle.NewHandlerRunner(ctxDoer{t.Context(), hookHTTPClient}, nil, nil, nil)
	if msg, err := runner.Run(t.Context(), kubecontainer.ContainerID{Type: "containerd", ID: "x"}, pod, c, h); err != nil {
		t.Fatalf("https hook: %v (%s)", err, msg)
	}
	if hits.Load() != 1 {
		t.Fatalf("the server saw %d hook requests, want 1", hits.Load())
	}
}

// A sidecar stops after the app and ephemeral containers and after the
// sidecars declared after it; plain init and app containers wait for none.
func TestStopsBefore(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	pod := &v1.Pod{Spec: v1.PodSpec{
		InitContainers: []v1.Container{
			{Name: "init"},
			{Name: "proxy", RestartPolicy: &always},
			{Name: "logs", RestartPolicy: &always},
		},
		Containers:          []v1.Container{{Name: "app"}, {Name: "worker"}},
		EphemeralContainers: []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "debug"}}},
	}}
	for name, want := range map[string]string{
		"proxy":  "[app worker debug logs]",
		"logs":   "[app worker debug]",
		"init":   "[]",
		"app":    "[]",
		"debug":  "[]",
		"absent": "[]",
	} {
		if got := fmt.Sprint(stopsBefore(pod, name)); got != want {
			t.Errorf("stopsBefore(%s) = %s, want %s", name, got, want)
		}
	}
}
