package simulate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// recorder collects a provider's notifications.
type recorder struct {
	mu   sync.Mutex
	seen map[string][]*v1.Pod
	ch   chan struct{}
}

func newRecorder(p *Provider) *recorder {
	r := &recorder{seen: map[string][]*v1.Pod{}, ch: make(chan struct{}, 1000)}
	p.NotifyPods(context.Background(), func(pod *v1.Pod) {
		r.mu.Lock()
		r.seen[pod.Name] = append(r.seen[pod.Name], pod)
		r.mu.Unlock()
		select {
		case r.ch <- struct{}{}:
		default:
		}
	})
	return r
}

func (r *recorder) last(name string) *v1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.seen[name]
	if len(s) == 0 {
		return nil
	}
	return s[len(s)-1]
}

// waitFor waits until the pod's last notification satisfies cond.
func (r *recorder) waitFor(t *testing.T, name string, cond func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if p := r.last(name); p != nil && cond(p) {
			return p
		}
		select {
		case <-r.ch:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("pod %s: condition not reached; last status %+v", name, r.last(name))
		}
	}
}

func testPod(name string, restart v1.RestartPolicy, ann map[string]string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), Annotations: ann},
		Spec: v1.PodSpec{
			RestartPolicy:  restart,
			InitContainers: []v1.Container{{Name: "init", Image: "img"}},
			Containers:     []v1.Container{{Name: "c", Image: "img"}, {Name: "d", Image: "img"}},
		},
	}
}

func phase(want v1.PodPhase) func(*v1.Pod) bool {
	return func(p *v1.Pod) bool { return p.Status.Phase == want }
}

func TestLifecycle(t *testing.T) {
	tests := []struct {
		name      string
		restart   v1.RestartPolicy
		ann       map[string]string
		wantPhase v1.PodPhase
		wantCode  int32
		restarts  int32
	}{
		{name: "runs-until-deleted", restart: v1.RestartPolicyAlways, wantPhase: v1.PodRunning},
		{name: "exits-0-never", restart: v1.RestartPolicyNever, ann: map[string]string{AnnotationRunFor: "20ms"}, wantPhase: v1.PodSucceeded},
		{name: "exits-3-never", restart: v1.RestartPolicyNever, ann: map[string]string{AnnotationRunFor: "20ms", AnnotationExitCode: "3"}, wantPhase: v1.PodFailed, wantCode: 3},
		{name: "exits-0-onfailure", restart: v1.RestartPolicyOnFailure, ann: map[string]string{AnnotationRunFor: "20ms"}, wantPhase: v1.PodSucceeded},
		{name: "exits-1-always-restarts", restart: v1.RestartPolicyAlways, ann: map[string]string{AnnotationRunFor: "30ms", AnnotationExitCode: "1"}, wantPhase: v1.PodRunning, restarts: 1},
		{name: "own-start-delay", restart: v1.RestartPolicyAlways, ann: map[string]string{AnnotationStartDelay: "30ms"}, wantPhase: v1.PodRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFleet(10*time.Millisecond, "10.0.0.9")
			p := f.provider("node-a")
			rec := newRecorder(p)
			ctx := context.Background()
			pod := testPod(tt.name, tt.restart, tt.ann)
			if err := p.CreatePod(ctx, pod); err != nil {
				t.Fatal(err)
			}
			rec.mu.Lock()
			first := rec.seen[tt.name][0]
			rec.mu.Unlock()
			if first.Status.Phase != v1.PodPending || first.Status.HostIP != "10.0.0.9" {
				t.Fatalf("first status: phase %s hostIP %q, want Pending on 10.0.0.9", first.Status.Phase, first.Status.HostIP)
			}
			running := rec.waitFor(t, tt.name, phase(v1.PodRunning))
			if running.Status.PodIP == "" || !running.Status.ContainerStatuses[0].Ready {
				t.Fatalf("running pod has no IP or is not ready: %+v", running.Status)
			}
			if s := running.Status.InitContainerStatuses[0].State.Terminated; s == nil || s.ExitCode != 0 {
				t.Fatalf("init container not completed: %+v", running.Status.InitContainerStatuses[0])
			}
			got := rec.waitFor(t, tt.name, func(p *v1.Pod) bool {
				return p.Status.Phase == tt.wantPhase && p.Status.ContainerStatuses[0].RestartCount >= tt.restarts
			})
			if tt.wantPhase != v1.PodRunning {
				term := got.Status.ContainerStatuses[0].State.Terminated
				if term == nil || term.ExitCode != tt.wantCode {
					t.Fatalf("container state %+v, want exit code %d", got.Status.ContainerStatuses[0].State, tt.wantCode)
				}
			}
			if tt.restarts > 0 {
				last := got.Status.ContainerStatuses[0].LastTerminationState.Terminated
				if last == nil || last.ExitCode != 1 {
					t.Fatalf("lastState %+v, want exit code 1", got.Status.ContainerStatuses[0].LastTerminationState)
				}
			}

			if err := p.DeletePod(ctx, pod); err != nil {
				t.Fatal(err)
			}
			final := rec.last(tt.name)
			if final.Status.Phase != v1.PodSucceeded && final.Status.Phase != v1.PodFailed {
				t.Fatalf("after delete phase %s, want terminal", final.Status.Phase)
			}
			for _, cs := range final.Status.ContainerStatuses {
				if cs.State.Terminated == nil {
					t.Fatalf("after delete container %s not terminated: %+v", cs.Name, cs.State)
				}
			}
			if _, err := p.GetPod(ctx, "ns", tt.name); !errdefs.IsNotFound(err) {
				t.Fatalf("GetPod after delete: %v, want NotFound", err)
			}
			if err := p.DeletePod(ctx, pod); !errdefs.IsNotFound(err) {
				t.Fatalf("second delete: %v, want NotFound", err)
			}
		})
	}
}

func TestBadAnnotations(t *testing.T) {
	for _, ann := range []map[string]string{
		{AnnotationStartDelay: "soon"},
		{AnnotationRunFor: "-1s"},
		{AnnotationExitCode: "300"},
	} {
		p := newFleet(0, "").provider("n")
		err := p.CreatePod(context.Background(), testPod("bad", v1.RestartPolicyNever, ann))
		if !errdefs.IsInvalidInput(err) {
			t.Errorf("annotations %v: error %v, want invalid input", ann, err)
		}
	}
}

// The last notification of every pod is its latest state, however the
// goroutines that notify interleave.
func TestNotificationsEndWithLatestStatus(t *testing.T) {
	f := newFleet(0, "10.0.0.9")
	p := f.provider("n")
	rec := newRecorder(p)
	const n = 300
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.CreatePod(context.Background(), testPod(fmt.Sprintf("p%d", i), v1.RestartPolicyAlways, nil))
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		rec.waitFor(t, fmt.Sprintf("p%d", i), phase(v1.PodRunning))
	}
	time.Sleep(50 * time.Millisecond)
	for i := 0; i < n; i++ {
		if got := rec.last(fmt.Sprintf("p%d", i)).Status.Phase; got != v1.PodRunning {
			t.Fatalf("pod p%d: last notification %s, want Running", i, got)
		}
	}
	pods, _ := p.GetPods(context.Background())
	if len(pods) != n {
		t.Fatalf("GetPods: %d pods, want %d", len(pods), n)
	}
}

func TestNodeAPIAnswersSimulated(t *testing.T) {
	f := newFleet(0, "10.0.0.9")
	p := f.provider("node-a")
	if err := p.CreatePod(context.Background(), testPod("web", v1.RestartPolicyAlways, nil)); err != nil {
		t.Fatal(err)
	}
	h := f.handler()
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	tests := []struct {
		name     string
		path     string
		tls      *tls.ConnectionState
		wantCode int
		wantBody string
	}{
		{"no client certificate", "/containerLogs/ns/web/c", nil, http.StatusUnauthorized, "client certificate"},
		{"logs", "/containerLogs/ns/web/c", verified, http.StatusBadRequest, `simulated node "node-a"`},
		{"unknown pod", "/containerLogs/ns/nope/c", verified, http.StatusInternalServerError, "no simulated node"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			req.TLS = tt.tls
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tt.wantCode || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Fatalf("GET %s: %d %q, want %d containing %q", tt.path, w.Code, w.Body.String(), tt.wantCode, tt.wantBody)
			}
		})
	}
	if err := p.RunInContainer(context.Background(), "ns", "web", "c", []string{"sh"}, nil); !errdefs.IsInvalidInput(err) || !strings.Contains(err.Error(), "simulated") {
		t.Fatalf("exec: %v", err)
	}
}
