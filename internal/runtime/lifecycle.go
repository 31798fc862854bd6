package runtime

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	remote "k8s.io/cri-client/pkg"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
	httpprobe "k8s.io/kubernetes/pkg/probe/http"
	utilexec "k8s.io/utils/exec"
)

// Container lifecycle beyond start and exit, as the kubelet runs it:
//
//	started ──postStart hook──► running (probes start) ──liveness/startup fails──┐
//	   │ hook fails: FailedPostStartHook                                          │
//	   └──────────────────────────────► killed ◄──────────── pod deleted ◄────────┘
//	killed = Killing event, preStop hook (within the grace period), stop
//	signal, SIGKILL once the rest of the grace period is over.

// minGraceAfterPreStop is what a container gets between its stop signal and
// SIGKILL when its preStop hook used up the grace period (the kubelet's
// minimumGracePeriodInSeconds).
const minGraceAfterPreStop = 2 * time.Second

// maxExecOutput bounds what a probe or hook command may print that is kept.
const maxExecOutput = 64 << 10

// execRunner runs commands in running containers through containerd's task
// exec, with a timeout: the kubelet's CommandRunner for exec probes and
// hooks. Safe for concurrent use.
type execRunner struct {
	client    *containerd.Client
	namespace string
}

var _ kubecontainer.CommandRunner = execRunner{}

// RunInContainer runs cmd in the container whose containerd id is id.ID and
// returns its combined output. A non-zero exit is a utilexec.ExitError; a
// command still running after timeout (0: none) is killed and reported with
// the CRI's ErrCommandTimedOut, as the kubelet sees it from containerd.
func (x execRunner) RunInContainer(ctx context.Context, id kubecontainer.ContainerID, cmd []string, timeout time.Duration) ([]byte, error) {
	ctx = namespaces.WithNamespace(ctx, x.namespace)
	c, err := x.client.LoadContainer(ctx, id.ID)
	if err != nil {
		return nil, fmt.Errorf("failed to exec in container: load container %q: %w", id.ID, err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to exec in container: container %q is not running: %w", id.ID, err)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to exec in container: read spec of %q: %w", id.ID, err)
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = false

	out := &cappedBuffer{max: maxExecOutput}
	execID := "probe-" + randomHex(6)
	// Clean-up must outlive a cancelled ctx.
	bg := context.WithoutCancel(ctx)
	proc, err := task.Exec(ctx, execID, &pspec, cio.NewCreator(cio.WithStreams(nil, out, out)))
	if err != nil {
		return nil, fmt.Errorf("failed to exec in container: failed to create exec %q: %w", execID, err)
	}
	defer func() { _, _ = proc.Delete(bg, containerd.WithProcessKill) }()
	exitCh, err := proc.Wait(bg)
	if err != nil {
		return nil, fmt.Errorf("failed to exec in container: wait for exec %q: %w", execID, err)
	}
	if err := proc.Start(ctx); err != nil {
		return nil, fmt.Errorf("failed to exec in container: failed to start exec %q: %w", execID, err)
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var code uint32
	var runErr error
	select {
	case st := <-exitCh:
		code = st.ExitCode()
	case <-expired:
		runErr = fmt.Errorf("%w: %q timed out after %s", remote.ErrCommandTimedOut, strings.Join(cmd, " "), timeout)
	case <-ctx.Done():
		runErr = ctx.Err()
	}
	if runErr != nil {
		_ = proc.Kill(bg, syscall.SIGKILL)
		select {
		case <-exitCh:
		case <-time.After(5 * time.Second):
		}
	}
	// The output is complete once the process's streams close; a child it
	// left behind may hold them open, so do not wait for ever.
	if pio := proc.IO(); pio != nil {
		done := make(chan struct{})
		go func() { pio.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		pio.Close()
	}
	if runErr != nil {
		return out.Bytes(), runErr
	}
	if code != 0 {
		return out.Bytes(), utilexec.CodeExitError{
			Err:  fmt.Errorf("command '%s' exited with %d: %s", strings.Join(cmd, " "), code, out.Bytes()),
			Code: int(code),
		}
	}
	return out.Bytes(), nil
}

// cappedBuffer keeps the first max bytes written to it, from any goroutine.
type cappedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

// hookPods tells the kubelet's hook runner the IPs of a pod, for httpGet
// hooks that name no host.
type hookPods struct{ r *Runtime }

func (h hookPods) GetPod(_ context.Context, uid types.UID) (*kubecontainer.Pod, error) {
	if w := h.r.workerByUID(uid); w != nil {
		p := w.pod()
		return &kubecontainer.Pod{ID: p.UID, Name: p.Name, Namespace: p.Namespace}, nil
	}
	return nil, fmt.Errorf("pod %s is not on this node", uid)
}

func (h hookPods) GetPodStatus(_ context.Context, pod *kubecontainer.Pod) (*kubecontainer.PodStatus, error) {
	w := h.r.workerByUID(pod.ID)
	if w == nil {
		return nil, fmt.Errorf("pod %s is not on this node", pod.ID)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return &kubecontainer.PodStatus{ID: pod.ID, Name: pod.Name, Namespace: pod.Namespace, IPs: append([]string(nil), w.rec.IPs...)}, nil
}

func (r *Runtime) workerByUID(uid types.UID) *podWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.pods {
		if w.pod().UID == uid {
			return w
		}
	}
	return nil
}

// ctxDoer sends the hook runner's HTTP requests with a context, so that a
// hook stops when its container does.
type ctxDoer struct {
	ctx    context.Context
	client *http.Client
}

func (d ctxDoer) Do(req *http.Request) (*http.Response, error) {
	return d.client.Do(req.WithContext(d.ctx))
}

// hookHTTPClient sends httpGet hooks, as the kubelet's: no proxy, no
// keep-alive, an https hook's certificate not verified (the pod's server
// has none the host could check), redirects followed to the same host only.
var hookHTTPClient = &http.Client{
	Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's hooks
	},
	CheckRedirect: httpprobe.RedirectChecker(false),
}

// runHook runs a lifecycle handler with the kubelet's hook runner; msg is
// the kubelet's event message when it failed.
func (w *podWorker) runHook(ctx context.Context, pod *v1.Pod, c *v1.Container, id string, h *v1.LifecycleHandler) (string, error) {
	runner := lifecycle.NewHandlerRunner(ctxDoer{ctx, hookHTTPClient}, w.r.execer, hookPods{w.r}, w.r.cfg.Recorder)
	return runner.Run(ctx, kubecontainer.ContainerID{Type: "containerd", ID: id}, pod, c, h)
}

// runPostStart runs the container's postStart hook in the background; its
// end comes back as evPostStart. Probes start only after it succeeded.
func (w *podWorker) runPostStart(c *v1.Container, cr *ctrRecord, lt *liveTask) {
	w.stopProbes(cr.Name)
	ctx, cancel := context.WithCancel(w.ctx())
	w.probes[cr.Name] = &probeSet{task: lt, ctx: ctx, cancel: cancel}
	pod, c, id := w.pod(), c.DeepCopy(), cr.ID
	go func() {
		msg, err := w.runHook(ctx, pod, c, id, c.Lifecycle.PostStart)
		if ctx.Err() != nil {
			return // the container or the agent stopped meanwhile
		}
		w.post(event{kind: evPostStart, container: c.Name, task: lt, message: msg, err: err})
	}()
}

// onPostStart takes the end of a postStart hook: probes start, or the
// container is killed (and restarted per restartPolicy) as the kubelet does.
func (w *podWorker) onPostStart(e event) {
	if w.tasks[e.container] != e.task {
		return
	}
	cr, c := w.rec.ctr(e.container), w.containerSpec(e.container)
	if cr == nil || c == nil {
		return
	}
	if e.err != nil {
		w.log.Warn("postStart hook failed", "container", c.Name, "err", e.err)
		w.ctrEvent(c.Name, v1.EventTypeWarning, "FailedPostStartHook", "%s", e.message)
		w.killContainer(c, cr, "FailedPostStartHook", w.gracePeriod(nil), false)
		return
	}
	w.update(func(*podRecord) { cr.PostStartPending = false })
	w.startProbes(c, cr, e.task)
}

// killing is a container being stopped while the pod goes on.
type killing struct {
	task    *liveTask
	restart bool // restart whatever the exit code (failed liveness or startup probe)
}

// killContainer stops one container in the background (preStop hook, stop
// signal, SIGKILL after grace); its exit arrives as usual and restart
// decides whether it starts again regardless of restartPolicy's view of the
// exit code.
func (w *podWorker) killContainer(c *v1.Container, cr *ctrRecord, message string, grace time.Duration, restart bool) {
	lt := w.tasks[cr.Name]
	if lt == nil || w.killing[cr.Name] != nil {
		return
	}
	w.killing[cr.Name] = &killing{task: lt, restart: restart}
	w.stopProbes(cr.Name)
	w.ctrEvent(c.Name, v1.EventTypeNormal, "Killing", "%s", message)
	go w.stopTask(w.pod(), c.DeepCopy(), cr.ID, lt, grace, true, nil)
}

// stopTask stops a running container as the kubelet's killContainer does:
// the preStop hook first (when asked), within the grace period, then the
// image's stop signal, then SIGKILL when the rest of the grace period is
// over. Between the hook and the signal it waits, within the grace period,
// for the containers that must stop before it (after: a sidecar waits for
// the app containers and for the sidecars declared after it). It returns
// once the task exited (or SIGKILL went unanswered).
func (w *podWorker) stopTask(pod *v1.Pod, c *v1.Container, id string, lt *liveTask, grace time.Duration, preStop bool, after []<-chan struct{}) {
	ctx := w.ctx()
	waited := false
	if preStop && c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil && grace > 0 {
		grace -= w.runPreStop(pod, c, id, lt, grace)
		waited = true
	}
	if len(after) > 0 && grace > 0 {
		waited = true
		start := time.Now()
		timeout := time.NewTimer(grace)
	wait:
		for _, ch := range after {
			select {
			case <-ch:
			case <-lt.done:
				break wait
			case <-timeout.C:
				break wait
			}
		}
		timeout.Stop()
		grace -= time.Since(start)
	}
	if waited {
		// The kubelet's minimum shutdown window, even when the hook or
		// the wait took the whole grace period.
		grace = max(grace, minGraceAfterPreStop)
	}
	select {
	case <-lt.done:
		return
	default:
	}
	name := ""
	if c != nil {
		name = c.Name
	}
	sig := w.stopSignal(name)
	if err := lt.task.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
		w.log.Warn("signal container", "container", name, "err", err)
	}
	select {
	case <-lt.done:
		return
	case <-time.After(grace):
	}
	_ = lt.task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
	select {
	case <-lt.done:
	case <-time.After(10 * time.Second):
		w.log.Warn("container did not exit after SIGKILL", "container", name)
	}
}

// runPreStop runs the preStop hook for at most grace and returns how long
// it took. A hook that fails gives the kubelet's FailedPreStopHook event.
func (w *podWorker) runPreStop(pod *v1.Pod, c *v1.Container, id string, lt *liveTask, grace time.Duration) time.Duration {
	start := time.Now()
	ctx, cancel := context.WithTimeout(w.ctx(), grace)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if msg, err := w.runHook(ctx, pod, c, id, c.Lifecycle.PreStop); err != nil {
			w.log.Warn("preStop hook failed", "container", c.Name, "err", err)
			w.ctrEvent(c.Name, v1.EventTypeWarning, "FailedPreStopHook", "%s", msg)
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	case <-lt.done: // the container ended during its hook
	}
	return time.Since(start)
}

// ctrEvent records an event about one container of the pod, as the
// kubelet's container events are (involvedObject.fieldPath names it).
func (w *podWorker) ctrEvent(container, kind, reason, format string, args ...any) {
	pod := w.pod()
	ref := &v1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
		ResourceVersion: pod.ResourceVersion,
	}
	for _, c := range pod.Spec.InitContainers {
		if c.Name == container {
			ref.FieldPath = "spec.initContainers{" + container + "}"
		}
	}
	if ref.FieldPath == "" {
		ref.FieldPath = "spec.containers{" + container + "}"
	}
	w.r.cfg.Recorder.Eventf(ref, kind, reason, format, args...)
}
