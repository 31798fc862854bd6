package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/tools/record"
	certutil "k8s.io/client-go/util/cert"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/kubernetes/pkg/features"
	"k8s.io/kubernetes/pkg/probe"
	grpchealthchecking "k8s.io/kubernetes/test/images/agnhost/grpc-health-checking"
	"k8s.io/utils/ptr"
)

func TestProbeCounter(t *testing.T) {
	S, F, U := success, failure, unknown
	for _, tc := range []struct {
		name             string
		success, failure int32
		initial          outcome
		results          []outcome
		settled          []outcome // after each result
		changedAt        []int     // indexes where the settled outcome changed
	}{
		{
			name:    "readiness passes at once with successThreshold 1",
			success: 1, failure: 3, initial: F,
			results:   []outcome{S, S},
			settled:   []outcome{S, S},
			changedAt: []int{0},
		},
		{
			name:    "failures below the threshold keep the container ready",
			success: 1, failure: 3, initial: S,
			results:   []outcome{F, F, S, F, F, F, F},
			settled:   []outcome{S, S, S, S, S, F, F},
			changedAt: []int{5},
		},
		{
			name:    "successThreshold needs a run of successes",
			success: 3, failure: 1, initial: F,
			results:   []outcome{S, S, F, S, S, S},
			settled:   []outcome{F, F, F, F, F, S},
			changedAt: []int{5},
		},
		{
			name:    "startup probe settles from unknown",
			success: 1, failure: 2, initial: U,
			results:   []outcome{F, F},
			settled:   []outcome{U, F},
			changedAt: []int{1},
		},
		{
			name:    "zero thresholds count as one",
			success: 0, failure: 0, initial: S,
			results:   []outcome{F, S},
			settled:   []outcome{F, S},
			changedAt: []int{0, 1},
		},
		{
			name:    "re-adopted ready container stays ready until failureThreshold",
			success: 1, failure: 2, initial: S,
			results:   []outcome{S, F, S, F, F},
			settled:   []outcome{S, S, S, S, F},
			changedAt: []int{4},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newProbeCounter(&v1.Probe{SuccessThreshold: tc.success, FailureThreshold: tc.failure}, tc.initial)
			changes := map[int]bool{}
			for _, i := range tc.changedAt {
				changes[i] = true
			}
			for i, r := range tc.results {
				got, changed := c.observe(r)
				if got != tc.settled[i] || changed != changes[i] {
					t.Errorf("after result %d (%v): settled %v changed %v, want %v %v", i, r, got, changed, tc.settled[i], changes[i])
				}
			}
		})
	}
}

func TestContainerStatusFollowsProbes(t *testing.T) {
	probe := &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"true"}}}}
	running := v1.ContainerState{Running: &v1.ContainerStateRunning{}}
	for _, tc := range []struct {
		name           string
		ctr            v1.Container
		rec            ctrRecord
		started, ready bool
		waiting        string
	}{
		{name: "no probes: running is started and ready", rec: ctrRecord{State: running}, started: true, ready: true},
		{name: "readiness not yet passed", ctr: v1.Container{ReadinessProbe: probe}, rec: ctrRecord{State: running}, started: true},
		{name: "readiness passed", ctr: v1.Container{ReadinessProbe: probe}, rec: ctrRecord{State: running, Ready: true}, started: true, ready: true},
		{name: "startup gates readiness", ctr: v1.Container{StartupProbe: probe}, rec: ctrRecord{State: running, Ready: true}},
		{name: "startup passed", ctr: v1.Container{StartupProbe: probe, ReadinessProbe: probe}, rec: ctrRecord{State: running, StartupPassed: true, Ready: true}, started: true, ready: true},
		{name: "postStart still running", rec: ctrRecord{State: running, PostStartPending: true}, waiting: "ContainerCreating"},
		{name: "not running", ctr: v1.Container{}, rec: ctrRecord{State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1}}, Ready: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ctr.Name, tc.rec.Name = "c", "c"
			pod := &v1.Pod{Spec: v1.PodSpec{Containers: []v1.Container{tc.ctr}}}
			cs := containerStatus(pod, &tc.rec, timeNow())
			if *cs.Started != tc.started || cs.Ready != tc.ready {
				t.Errorf("started %v ready %v, want %v %v", *cs.Started, cs.Ready, tc.started, tc.ready)
			}
			if got := cs.State.Waiting; (got == nil) != (tc.waiting == "") || (got != nil && got.Reason != tc.waiting) {
				t.Errorf("waiting %+v, want %q", got, tc.waiting)
			}
		})
	}
}

// fakeProber is a Prober whose results the test sets: it returns them in
// order and then the last one for ever, and counts its calls.
type fakeProber struct {
	mu      sync.Mutex
	results []fakeResult
	calls   int
}

type fakeResult struct {
	res probe.Result
	out string
	err error
}

func (f *fakeProber) Probe(context.Context, ProbeTarget, *v1.Probe) (probe.Result, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.results[min(f.calls, len(f.results)-1)]
	f.calls++
	return r.res, r.out, r.err
}

func (f *fakeProber) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// testWorker is a pod worker that is never run: the test reads its events.
func testWorker(p Prober) (*podWorker, *record.FakeRecorder) {
	rec := record.NewFakeRecorder(100)
	r := &Runtime{cfg: Config{Prober: p, Recorder: rec, Log: slog.New(slog.DiscardHandler)}, ctx: context.Background()}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", UID: "uid"}, Spec: v1.PodSpec{Containers: []v1.Container{{Name: "c"}}}}
	return newWorker(r, newRecord(pod), false), rec
}

// probeOnce reports what the kubelet reports: failures and warnings as
// events, an errored probe (retried first) as thrown away.
func TestProbeOnceEvents(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result fakeResult
		want   outcome
		ok     bool
		calls  int
		event  string
	}{
		{"success", fakeResult{res: probe.Success}, success, true, 1, ""},
		{"failure", fakeResult{res: probe.Failure, out: "dial tcp 10.0.0.1:9: connect: connection refused"}, failure, true, 1,
			"Warning Unhealthy Readiness probe failed: dial tcp 10.0.0.1:9: connect: connection refused"},
		{"warning counts as success", fakeResult{res: probe.Warning, out: "redirect"}, success, true, 1, "Warning ProbeWarning Readiness probe warning: redirect"},
		{"unknown counts as failure", fakeResult{res: probe.Unknown}, failure, true, 1, ""},
		{"errored is retried and thrown away", fakeResult{res: probe.Unknown, err: errors.New("exec: \"x\": executable file not found")}, unknown, false, maxProbeRetries,
			"Warning Unhealthy Readiness probe errored and resulted in unknown state: exec: \"x\": executable file not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProber{results: []fakeResult{tc.result}}
			w, rec := testWorker(f)
			got, ok := w.probeOnce(context.Background(), readiness, &v1.Probe{}, ProbeTarget{Pod: w.pod(), Container: &v1.Container{Name: "c"}})
			if got != tc.want || ok != tc.ok || f.count() != tc.calls {
				t.Errorf("outcome %v ok %v after %d calls, want %v %v %d", got, ok, f.count(), tc.want, tc.ok, tc.calls)
			}
			var ev string
			select {
			case ev = <-rec.Events:
			default:
			}
			if !strings.HasPrefix(ev, tc.event) || (tc.event == "" && ev != "") {
				t.Errorf("event %q, want %q", ev, tc.event)
			}
		})
	}
}

// The probe loops post a settled outcome once it changes; liveness waits
// for the startup probe, and stops once it failed.
func TestProbeLoop(t *testing.T) {
	ok, bad := fakeResult{res: probe.Success}, fakeResult{res: probe.Failure}
	spec := v1.Probe{PeriodSeconds: 1, SuccessThreshold: 1, FailureThreshold: 2}
	t.Run("liveness fails after failureThreshold and stops", func(t *testing.T) {
		t.Parallel()
		f := &fakeProber{results: []fakeResult{bad}}
		w, _ := testWorker(f)
		ps := &probeSet{ctx: t.Context(), cancel: func() {}}
		ps.started.Store(true)
		done := make(chan struct{})
		go func() {
			w.probeLoop(ps, liveness, spec, ProbeTarget{Pod: w.pod(), Container: &v1.Container{Name: "c"}}, time.Now(), success)
			close(done)
		}()
		e := <-w.events
		<-done
		if e.kind != evProbe || e.probe != liveness || e.outcome != failure || e.container != "c" {
			t.Errorf("event %+v", e)
		}
		if f.count() != 2 {
			t.Errorf("%d probes, want failureThreshold (2) and no more", f.count())
		}
	})
	t.Run("liveness waits for the startup probe", func(t *testing.T) {
		t.Parallel()
		startupProber := &fakeProber{results: []fakeResult{bad, ok}}
		w, _ := testWorker(startupProber)
		ps := &probeSet{ctx: t.Context(), cancel: func() {}}
		target := ProbeTarget{Pod: w.pod(), Container: &v1.Container{Name: "c"}}
		go w.probeLoop(ps, startup, spec, target, time.Now(), unknown)
		e := <-w.events
		if e.probe != startup || e.outcome != success || !ps.started.Load() {
			t.Errorf("event %+v, started %v", e, ps.started.Load())
		}
		if n := startupProber.count(); n != 2 {
			t.Errorf("%d startup probes, want 2 (one failure below the threshold, one success)", n)
		}
	})
	t.Run("gated liveness does not probe", func(t *testing.T) {
		t.Parallel()
		f := &fakeProber{results: []fakeResult{bad}}
		w, _ := testWorker(f)
		ctx, cancel := context.WithCancel(t.Context())
		ps := &probeSet{ctx: ctx, cancel: cancel}
		done := make(chan struct{})
		go func() {
			w.probeLoop(ps, liveness, spec, ProbeTarget{Pod: w.pod(), Container: &v1.Container{Name: "c"}}, time.Now(), success)
			close(done)
		}()
		time.Sleep(1500 * time.Millisecond) // a period and a half
		cancel()
		<-done
		if n := f.count(); n != 0 {
			t.Errorf("liveness probed %d times before the container started", n)
		}
	})
}

// gRPC probes as the kubelet runs them, against agnhost's
// grpc-health-checking server (the conformance specs' target): plaintext,
// and TLS where the probe asks for it and the GRPCContainerProbeTLS gate is
// on (a TLS-mode probe stays plaintext while the gate is off).
func TestGRPCProbe(t *testing.T) {
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("localhost", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(opts ...grpc.ServerOption) int32 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer(opts...)
		grpc_health_v1.RegisterHealthServer(s, grpchealthchecking.NewHealthChecker(time.Now()))
		go func() { _ = s.Serve(l) }()
		t.Cleanup(s.Stop)
		return int32(l.Addr().(*net.TCPAddr).Port)
	}
	plain := serve()
	secure := serve(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	closed := func() int32 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return int32(l.Addr().(*net.TCPAddr).Port)
	}()
	tlsMode := ptr.To(v1.GRPCProbeModeTLS)
	for _, tc := range []struct {
		name string
		gate bool
		port int32
		mode *v1.GRPCProbeMode
		want probe.Result
	}{
		{"serving", false, plain, nil, probe.Success},
		{"nothing listens", false, closed, nil, probe.Failure},
		{"plaintext against TLS", true, secure, nil, probe.Failure},
		{"TLS mode", true, secure, tlsMode, probe.Success},
		{"TLS mode, gate off", false, secure, tlsMode, probe.Failure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.GRPCContainerProbeTLS, tc.gate)
			spec := &v1.Probe{ProbeHandler: v1.ProbeHandler{GRPC: &v1.GRPCAction{Port: tc.port, Mode: tc.mode}}, TimeoutSeconds: 1}
			target := ProbeTarget{Pod: &v1.Pod{}, Container: &v1.Container{Name: "c"}, PodIP: "127.0.0.1"}
			res, out, err := newKubeProber(nil).Probe(context.Background(), target, spec)
			if err != nil || res != tc.want {
				t.Errorf("probe: %v %q %v, want %v", res, out, err, tc.want)
			}
		})
	}
}
