package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/kubernetes/pkg/features"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	"k8s.io/kubernetes/pkg/kubelet/util/format"
	"k8s.io/kubernetes/pkg/probe"
	execprobe "k8s.io/kubernetes/pkg/probe/exec"
	grpcprobe "k8s.io/kubernetes/pkg/probe/grpc"
	httpprobe "k8s.io/kubernetes/pkg/probe/http"
	tcpprobe "k8s.io/kubernetes/pkg/probe/tcp"
	utilexec "k8s.io/utils/exec"
)

// Prober runs a container's probe once. Implementations are safe for
// concurrent use: every probe of every container calls it from its own
// goroutine. An error means the probe could not be run at all (the kubelet's
// "probe errored"); a failing check is a Failure result with its output.
type Prober interface {
	Probe(ctx context.Context, target ProbeTarget, p *v1.Probe) (probe.Result, string, error)
}

// ProbeTarget is the container a probe checks. The prober owns none of it.
type ProbeTarget struct {
	Pod       *v1.Pod
	Container *v1.Container
	// ContainerID is the containerd id of the running container.
	ContainerID string
	// PodIP is where httpGet, tcpSocket and grpc probes connect when the
	// probe names no host: the pod's IP, dialled from the host, as the
	// kubelet does.
	PodIP string
}

// maxProbeRetries is how often a probe that errored is run again before its
// error counts, as in the kubelet.
const maxProbeRetries = 3

// kubeProber runs probes with the kubelet's own probers.
type kubeProber struct {
	exec   execprobe.Prober
	http   httpprobe.Prober
	tcp    tcpprobe.Prober
	grpc   grpcprobe.Prober
	runner kubecontainer.CommandRunner
}

// newKubeProber returns the Prober the kubelet would use; exec probes run
// through runner.
func newKubeProber(runner kubecontainer.CommandRunner) *kubeProber {
	return &kubeProber{
		exec:   execprobe.New(),
		http:   httpprobe.New(false), // the kubelet does not follow redirects to other hosts
		tcp:    tcpprobe.New(),
		grpc:   grpcprobe.New(),
		runner: runner,
	}
}

func (p *kubeProber) Probe(ctx context.Context, t ProbeTarget, spec *v1.Probe) (probe.Result, string, error) {
	timeout := time.Duration(spec.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	switch {
	case spec.Exec != nil:
		cmd := kubecontainer.ExpandContainerCommandOnlyStatic(spec.Exec.Command, t.Container.Env)
		id := kubecontainer.ContainerID{Type: "containerd", ID: t.ContainerID}
		return p.exec.Probe(&execCmd{run: func() ([]byte, error) {
			return p.runner.RunInContainer(ctx, id, cmd, timeout)
		}})
	case spec.HTTPGet != nil:
		req, err := httpprobe.NewRequestForHTTPGetAction(spec.HTTPGet, t.Container, t.PodIP, "probe")
		if err != nil {
			return probe.Unknown, "", err
		}
		return p.http.Probe(req.WithContext(ctx), timeout)
	case spec.TCPSocket != nil:
		port, err := probe.ResolveContainerPort(spec.TCPSocket.Port, t.Container)
		if err != nil {
			return probe.Unknown, "", err
		}
		host := spec.TCPSocket.Host
		if host == "" {
			host = t.PodIP
		}
		return p.tcp.Probe(host, port, timeout)
	case spec.GRPC != nil:
		service := ""
		if spec.GRPC.Service != nil {
			service = *spec.GRPC.Service
		}
		// As the kubelet: TLS (unverified) only where the alpha gate
		// GRPCContainerProbeTLS is on and the probe asks for it.
		useTLS := utilfeature.DefaultFeatureGate.Enabled(features.GRPCContainerProbeTLS) &&
			spec.GRPC.Mode != nil && *spec.GRPC.Mode == v1.GRPCProbeModeTLS
		return p.grpc.Probe(t.PodIP, service, int(spec.GRPC.Port), timeout, grpcprobe.ProbeOptions{UseTLS: useTLS})
	default:
		return probe.Unknown, "", fmt.Errorf("missing probe handler for %s:%s", format.Pod(t.Pod), t.Container.Name)
	}
}

// probeKind is which of a container's three probes runs.
type probeKind int

const (
	liveness probeKind = iota
	readiness
	startup
)

// String is the word the kubelet's events use.
func (k probeKind) String() string {
	switch k {
	case liveness:
		return "Liveness"
	case readiness:
		return "Readiness"
	default:
		return "Startup"
	}
}

func (k probeKind) spec(c *v1.Container) *v1.Probe {
	switch k {
	case liveness:
		return c.LivenessProbe
	case readiness:
		return c.ReadinessProbe
	default:
		return c.StartupProbe
	}
}

// outcome is a probe's result as the kubelet's results manager keeps it.
type outcome int

const (
	unknown outcome = iota
	success
	failure
)

// probeCounter settles a probe's outcome the way the kubelet's probe worker
// does: a result counts once it came successThreshold (for success) or
// failureThreshold (for failure) times in a row; until then the settled
// outcome stays what it was.
type probeCounter struct {
	successThreshold, failureThreshold int32

	settled outcome
	last    outcome
	run     int32
}

func newProbeCounter(spec *v1.Probe, initial outcome) *probeCounter {
	return &probeCounter{
		successThreshold: max(spec.SuccessThreshold, 1),
		failureThreshold: max(spec.FailureThreshold, 1),
		settled:          initial,
	}
}

// observe takes one probe result and returns the settled outcome and
// whether it changed.
func (c *probeCounter) observe(o outcome) (outcome, bool) {
	if o == c.last {
		c.run++
	} else {
		c.last, c.run = o, 1
	}
	if (o == failure && c.run < c.failureThreshold) || (o == success && c.run < c.successThreshold) {
		return c.settled, false
	}
	changed := c.settled != o
	c.settled = o
	return o, changed
}

// probeSet is what runs beside one running container: its probe loops and
// its postStart hook. Only the pod's worker goroutine starts and cancels it.
type probeSet struct {
	task   *liveTask
	ctx    context.Context
	cancel context.CancelFunc
	// started is set once the startup probe passed (at once without one);
	// liveness and readiness probes wait for it.
	started atomic.Bool
}

// startProbes starts the probe loops of a container that runs (again, or
// re-adopted: then the readiness and startup results it had carry on).
func (w *podWorker) startProbes(c *v1.Container, cr *ctrRecord, lt *liveTask) {
	w.stopProbes(cr.Name)
	w.mu.Lock()
	var startedAt time.Time
	if cr.State.Running != nil {
		startedAt = cr.State.Running.StartedAt.Time
	}
	wasReady, wasStarted := cr.Ready, cr.StartupPassed
	var podIP string
	if len(w.rec.IPs) > 0 {
		podIP = w.rec.IPs[0]
	}
	w.mu.Unlock()

	ctx, cancel := context.WithCancel(w.ctx())
	ps := &probeSet{task: lt, ctx: ctx, cancel: cancel}
	ps.started.Store(c.StartupProbe == nil || wasStarted)
	w.probes[cr.Name] = ps
	target := ProbeTarget{Pod: w.pod(), Container: c.DeepCopy(), ContainerID: cr.ID, PodIP: podIP}
	for _, kind := range []probeKind{startup, liveness, readiness} {
		spec := kind.spec(c)
		if spec == nil || (kind == startup && ps.started.Load()) {
			continue
		}
		initial := success // liveness: alive until proven otherwise
		switch {
		case kind == readiness && !wasReady:
			initial = failure
		case kind == startup:
			initial = unknown
		}
		go w.probeLoop(ps, kind, *spec.DeepCopy(), target, startedAt, initial)
	}
}

// stopProbes stops what runs beside a container (its exit, or the agent's).
func (w *podWorker) stopProbes(name string) {
	if ps := w.probes[name]; ps != nil {
		ps.cancel()
		delete(w.probes, name)
	}
}

func (w *podWorker) stopAllProbes() {
	for name := range w.probes {
		w.stopProbes(name)
	}
}

// probeLoop runs one probe every period from initialDelaySeconds after the
// container started, and posts its settled outcome to the worker whenever
// that changes. A liveness or startup probe stops once it settled on a
// verdict the worker acts on; the next container gets new loops.
func (w *podWorker) probeLoop(ps *probeSet, kind probeKind, spec v1.Probe, target ProbeTarget, startedAt time.Time, initial outcome) {
	ctx := ps.ctx
	if d := time.Until(startedAt.Add(time.Duration(spec.InitialDelaySeconds) * time.Second)); d > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	period := time.Duration(spec.PeriodSeconds) * time.Second
	if period <= 0 {
		period = 10 * time.Second
	}
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	counter := newProbeCounter(&spec, initial)
	for {
		if kind == startup || ps.started.Load() {
			o, ok := w.probeOnce(ctx, kind, &spec, target)
			if ctx.Err() != nil {
				return
			}
			if ok {
				settled, changed := counter.observe(o)
				if kind == startup && settled == success {
					ps.started.Store(true)
				}
				if changed {
					w.post(event{kind: evProbe, container: target.Container.Name, task: ps.task, probe: kind, outcome: settled})
				}
				if (kind == liveness && settled == failure) || (kind == startup && settled != unknown) {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// probeOnce runs the probe, retrying one that errors, and records the
// kubelet's events. ok is false when the result is to be thrown away (the
// probe errored), as the kubelet does.
func (w *podWorker) probeOnce(ctx context.Context, kind probeKind, spec *v1.Probe, t ProbeTarget) (outcome, bool) {
	var (
		res probe.Result
		out string
		err error
	)
	for range maxProbeRetries {
		res, out, err = w.r.cfg.Prober.Probe(ctx, t, spec)
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return unknown, false
	}
	name := t.Container.Name
	if err != nil {
		w.ctrEvent(name, v1.EventTypeWarning, "Unhealthy", "%s probe errored and resulted in %s state: %s", kind, res, err)
		return unknown, false
	}
	switch res {
	case probe.Success:
		return success, true
	case probe.Warning:
		w.ctrEvent(name, v1.EventTypeWarning, "ProbeWarning", "%s probe warning: %s", kind, out)
		return success, true
	case probe.Failure:
		w.ctrEvent(name, v1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", kind, out)
		return failure, true
	default:
		return failure, true
	}
}

// onProbe takes a probe's new settled outcome: readiness and startup go to
// the record (and so the status), a failed liveness or startup probe kills
// the container, restarted per the pod's restartPolicy.
func (w *podWorker) onProbe(e event) {
	if w.tasks[e.container] != e.task || w.probes[e.container] == nil || w.probes[e.container].task != e.task {
		return // from a container since gone
	}
	cr := w.rec.ctr(e.container)
	c := w.containerSpec(e.container)
	if cr == nil || c == nil {
		return
	}
	switch {
	case e.probe == readiness:
		w.update(func(*podRecord) { cr.Ready = e.outcome == success })
	case e.probe == startup && e.outcome == success:
		w.update(func(*podRecord) { cr.StartupPassed = true })
	case e.outcome == failure: // liveness or startup
		msg := fmt.Sprintf("Container %s failed %s probe", c.Name, map[probeKind]string{liveness: "liveness", startup: "startup"}[e.probe])
		restart := w.pod().Spec.RestartPolicy != v1.RestartPolicyNever
		if restart {
			msg += ", will be restarted"
		}
		grace := w.gracePeriod(nil)
		if p := e.probe.spec(c); p != nil && p.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
		}
		w.killContainer(c, cr, msg, grace, restart)
	}
}

// containerSpec finds a container of the pod's spec, init containers included.
func (w *podWorker) containerSpec(name string) *v1.Container {
	pod := w.pod()
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if pod.Spec.EphemeralContainers[i].Name == name {
			c := v1.Container(pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
			return &c
		}
	}
	return nil
}

// execCmd is a command run in a container, in the shape of k8s.io/utils/exec
// that the kubelet's exec prober takes (the kubelet's execInContainer): it
// runs at Start and hands its combined output to the writer set last.
type execCmd struct {
	run    func() ([]byte, error)
	writer io.Writer
}

var _ utilexec.Cmd = (*execCmd)(nil)

func (e *execCmd) Start() error {
	out, err := e.run()
	if e.writer != nil {
		_, _ = e.writer.Write(out)
	}
	return err
}

func (e *execCmd) Run() error                         { return e.Start() }
func (e *execCmd) CombinedOutput() ([]byte, error)    { return e.run() }
func (e *execCmd) Output() ([]byte, error)            { return nil, errors.New("unimplemented") }
func (e *execCmd) SetDir(string)                      {}
func (e *execCmd) SetStdin(io.Reader)                 {}
func (e *execCmd) SetStdout(out io.Writer)            { e.writer = out }
func (e *execCmd) SetStderr(out io.Writer)            { e.writer = out }
func (e *execCmd) SetEnv([]string)                    {}
func (e *execCmd) StdoutPipe() (io.ReadCloser, error) { return nil, errors.New("unimplemented") }
func (e *execCmd) StderrPipe() (io.ReadCloser, error) { return nil, errors.New("unimplemented") }
func (e *execCmd) Wait() error                        { return nil }
func (e *execCmd) Stop()                              {}
