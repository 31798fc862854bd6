package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/device"
)

const (
	recordFile = "record.json"

	// Kubelet's container restart back-off: 10 s doubling to 5 min, reset
	// after a container ran this long without failing.
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute

	// sandboxRetry is how soon a pod whose sandbox could not be prepared is tried again.
	sandboxRetry = 5 * time.Second
	// volumeResync is how often file volumes are brought up to date.
	volumeResync = 5 * time.Second
	// configRetry is how soon a container whose configuration could not
	// be made (CreateContainerConfigError) is tried again: the kubelet's
	// pod worker back-off after a failed sync.
	configRetry = 10 * time.Second
	// reattachRetry is how soon a lost task (containerd went away) is looked up again.
	reattachRetry = time.Second
)

// podRecord is everything the agent must remember about a pod across restarts.
type podRecord struct {
	Pod          *v1.Pod      `json:"pod"`
	IPs          []string     `json:"ips,omitempty"`
	SandboxReady bool         `json:"sandboxReady"`
	Released     bool         `json:"released"`
	StartTime    *metav1.Time `json:"startTime,omitempty"`
	Phase        v1.PodPhase  `json:"phase"`
	Reason       string       `json:"reason,omitempty"`
	Message      string       `json:"message,omitempty"`
	Containers   []*ctrRecord `json:"containers"`
	// Handler is the runtime handler the pod runs under, fixed when its
	// sandbox is first prepared; records of older agents have none (runc).
	Handler string `json:"handler,omitempty"`
	// Sandbox is the pod sandbox (pause container) of a gvisor pod.
	Sandbox *sandboxRecord `json:"sandbox,omitempty"`
	// Rejected says the admission refused the pod (see admit.go): its
	// status is the rejection's alone.
	Rejected bool `json:"rejected,omitempty"`
	// Solo says the gvisor pod has one container and no init containers,
	// so that the container itself is its sandbox's first process, with
	// no pause container (see gvisor.go); fixed with Handler.
	Solo bool `json:"solo,omitempty"`
	// Allocated are the resources each container is admitted with (the
	// kubelet's allocation checkpoint): Pod's spec carries them. Desired
	// are the ones the API asks for while a resize is not admitted (see
	// resize.go). Records of older agents have neither: the spec's.
	Allocated map[string]v1.ResourceRequirements `json:"allocated,omitempty"`
	Desired   map[string]v1.ResourceRequirements `json:"desired,omitempty"`
	// ResizePending and ResizeInProgress are the pod's resize conditions.
	ResizePending    *v1.PodCondition `json:"resizePending,omitempty"`
	ResizeInProgress *v1.PodCondition `json:"resizeInProgress,omitempty"`
	// Devices are the accelerators the pod was given at admission (see
	// devices.go), held until its sandbox is released and given back to
	// it by the next agent.
	Devices []device.Device `json:"devices,omitempty"`
}

// ctrRecord is one container of the pod, init containers first.
type ctrRecord struct {
	Name string `json:"name"`
	Init bool   `json:"init,omitempty"`
	// Ephemeral is a debugging container added to the running pod
	// (kubectl debug): started once, never restarted, no part of the
	// pod's phase or readiness.
	Ephemeral    bool              `json:"ephemeral,omitempty"`
	ID           string            `json:"id"`
	ImageRef     string            `json:"imageRef,omitempty"`
	ImageID      string            `json:"imageID,omitempty"`
	RestartCount int32             `json:"restartCount"`
	Started      bool              `json:"started"`
	State        v1.ContainerState `json:"state"`
	LastState    v1.ContainerState `json:"lastState"`
	// Backoff is the crash-loop back-off the container last restarted with
	// (0: none yet); BackoffUntil is when it may start again. A failed
	// image pull or create doubles Backoff at once instead.
	Backoff      time.Duration `json:"backoff,omitempty"`
	BackoffUntil time.Time     `json:"backoffUntil,omitempty"`
	Live         bool          `json:"live,omitempty"` // a task exists in containerd
	// Runs counts the containerd containers made for it so far: the next
	// one's id is runContainerID(pod, name, Runs). Records of agents
	// before it have none, and go on from their ID.
	Runs int32 `json:"runs,omitempty"`
	// Resources are what the running container's cgroup is set to.
	Resources *v1.ResourceRequirements `json:"resources,omitempty"`

	// Probe and hook state of the running container, kept across agent
	// restarts so that a re-adopted container stays ready and started.
	Ready            bool `json:"ready,omitempty"`            // readiness probe passed
	StartupPassed    bool `json:"startupPassed,omitempty"`    // startup probe passed
	PostStartPending bool `json:"postStartPending,omitempty"` // postStart hook not yet done
}

func newRecord(pod *v1.Pod) *podRecord {
	rec := &podRecord{Pod: pod.DeepCopy(), Phase: v1.PodPending, Allocated: containerResources(pod)}
	waiting := v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "PodInitializing"}}
	for _, c := range pod.Spec.InitContainers {
		rec.Containers = append(rec.Containers, &ctrRecord{Name: c.Name, Init: true, ID: containerID(pod, c.Name), State: waiting})
	}
	if len(pod.Spec.InitContainers) == 0 {
		waiting = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	}
	for _, c := range pod.Spec.Containers {
		rec.Containers = append(rec.Containers, &ctrRecord{Name: c.Name, ID: containerID(pod, c.Name), State: waiting})
	}
	return rec
}

// containerID is the containerd id of a pod's container: <pod-uid>-<name>
// when that is a valid containerd identifier (so that the records of pods
// that already run keep their ids), else a stable short form. containerd
// takes at most 76 characters, one separator between alphanumerics, while a
// Kubernetes container name may have 63 and runs of '-': past 39 characters
// the plain form is refused. The short form keeps the name's first
// characters for people reading `ctr c ls` and a hash of the whole name,
// so that two names with the same beginning never share an id.
func containerID(pod *v1.Pod, name string) string { return runContainerID(pod, name, 0) }

// runContainerID is the containerd id of the run-th run of a pod's
// container (0 the first): containerID's, followed by "." and the run after
// the first. Every run is a containerd container of its own, as every run
// of a kubelet's container is a CRI container of its own: runsc keeps what
// it knew of a container in the pod's sandbox after the container is
// deleted (its cgroup folder in gVisor's kernel, the mark of a start that
// failed), so that a second container of the same id in the same sandbox
// does not start. Container names have no '.', so a later run's id never
// is a first run's.
func runContainerID(pod *v1.Pod, name string, run int32) string {
	suffix := ""
	if run > 0 {
		suffix = "." + strconv.Itoa(int(run))
	}
	id := string(pod.UID) + "-" + name + suffix
	if identifiers.Validate(id) == nil {
		return id
	}
	sum := sha256.Sum256([]byte(name))
	hash := hex.EncodeToString(sum[:])[:12] + suffix
	// What is left of 76 once "<uid>-" and "-<hash>[.run]" are in.
	room := maxIDLength - len(pod.UID) - 2 - len(hash)
	var b strings.Builder
	for _, r := range name {
		if b.Len() >= room {
			break
		}
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (b.Len() == 0 || strings.HasSuffix(b.String(), "-")) {
			continue
		}
		if !alnum {
			r = '-'
		}
		b.WriteRune(r)
	}
	prefix := strings.TrimSuffix(b.String(), "-")
	if prefix == "" {
		return string(pod.UID) + "-" + hash
	}
	return string(pod.UID) + "-" + prefix + "-" + hash
}

// maxIDLength is the longest identifier containerd takes.
const maxIDLength = 76

// app tells whether the container is one of the pod's app containers.
func (cr *ctrRecord) app() bool { return !cr.Init && !cr.Ephemeral }

func (rec *podRecord) ctr(name string) *ctrRecord {
	for _, c := range rec.Containers {
		if c.Name == name {
			return c
		}
	}
	return nil
}

type evKind int

const (
	evWake evKind = iota
	evExit
	evUpdate
	evDelete
	evReattach
	evProbe     // a probe's settled outcome changed
	evPostStart // a postStart hook ended
	evRepublish // publish the status again even if unchanged
	evAPIStatus // the pod's status as the API has it: republish if another writer changed ours
)

type event struct {
	kind      evKind
	pod       *v1.Pod
	container string
	task      *liveTask
	probe     probeKind // evProbe
	outcome   outcome   // evProbe
	message   string    // evPostStart: the kubelet's message for a failed hook; evDelete: why the agent ends the pod
	err       error     // evPostStart
}

// liveTask is a task the worker watches; done closes when it exited.
type liveTask struct {
	task     containerd.Task
	cancel   context.CancelFunc
	done     chan struct{}
	code     uint32
	exitedAt time.Time
	lost     error // set when the exit status could not be read (containerd gone)
	logs     *containerLog
}

// podWorker drives one pod. Only its run goroutine changes rec; readers take mu.
type podWorker struct {
	r   *Runtime
	log *slog.Logger

	mu  sync.Mutex
	rec *podRecord

	events    chan event
	stopCh    chan struct{}
	done      chan struct{}
	once      sync.Once
	recovered bool
	// terminating is set when the API deleted the pod (DeletePod): its
	// containers are stopping and what it holds is about to be free.
	terminating atomic.Bool
	// orphan says the pod is no longer this node's (see reconcile.go): it
	// is removed without a status, since the API object of its name, if
	// any, is another pod.
	orphan bool

	tasks       map[string]*liveTask
	sandboxTask *liveTask                // a gvisor pod's pause container
	probes      map[string]*probeSet     // by container: probe loops and postStart hook
	killing     map[string]*killing      // by container: being stopped while the pod goes on
	logs        map[string]*containerLog // by container, under mu: the running task's log
	// sandboxOOMAt is when a gvisor pod's sandbox last died of an OOM kill.
	sandboxOOMAt time.Time
	deleting     *v1.Pod
	// stopReason is why the agent itself ends the pod (its node was
	// deleted): the pod ends Failed with it, whatever its exit codes.
	stopReason string
	// final is the pod's last status, set when terminate ends.
	final   *v1.Pod
	lastPub *v1.Pod
	// storageCheckedAt is when the pod's local storage use was last
	// measured against its limits (storage.go).
	storageCheckedAt time.Time
	lastRecord       []byte // the record as last written to disk
}

func newWorker(r *Runtime, rec *podRecord, recovered bool) *podWorker {
	return &podWorker{
		r:         r,
		log:       r.cfg.Log.With("pod", key(rec.Pod.Namespace, rec.Pod.Name)),
		rec:       rec,
		events:    make(chan event, 64),
		stopCh:    make(chan struct{}),
		done:      make(chan struct{}),
		recovered: recovered,
		tasks:     map[string]*liveTask{},
		probes:    map[string]*probeSet{},
		killing:   map[string]*killing{},
		logs:      map[string]*containerLog{},
	}
}

func (w *podWorker) start() {
	w.once.Do(func() { go w.run() })
}

func (w *podWorker) stop() {
	select {
	case <-w.stopCh:
	default:
		close(w.stopCh)
	}
	<-w.done
}

func (w *podWorker) post(e event) {
	select {
	case w.events <- e:
	case <-w.done:
	}
}

func (w *podWorker) pod() *v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rec.Pod
}

func (w *podWorker) update(f func(rec *podRecord)) {
	w.mu.Lock()
	f(w.rec)
	w.mu.Unlock()
}

func (w *podWorker) ctx() context.Context { return w.r.ctx }

// cleanupTimeout bounds a clean-up that runs on while the agent stops.
const cleanupTimeout = 30 * time.Second

// cleanupCtx is the context of work that removes what a pod holds on the
// host (tasks, containers, netns, IP, mounts): bounded, but not cancelled
// when the agent stops, since a removal cut in half leaves its shim,
// cgroup, mounts or lease behind with no record that anything is left.
func (w *podWorker) cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(w.ctx()), cleanupTimeout)
}

func (w *podWorker) run() {
	defer close(w.done)
	if w.recovered {
		w.reattachAll()
	}
	var timer *time.Timer
	// configMap, secret, downwardAPI and projected volumes follow their
	// sources while the pod runs, as on a kubelet.
	volumeSync := time.NewTicker(volumeResync)
	defer volumeSync.Stop()
	for {
		next, finished := w.sync()
		w.persistAndPublish()
		if finished {
			return
		}
		var timerC <-chan time.Time
		if next > 0 {
			timer = time.NewTimer(next)
			timerC = timer.C
		}
		select {
		case <-w.stopCh:
			w.detach()
			return
		case e := <-w.events:
			w.handle(e)
			// Take whatever else is queued before syncing again.
			for drained := false; !drained; {
				select {
				case e := <-w.events:
					w.handle(e)
				default:
					drained = true
				}
			}
		case <-timerC:
		case <-volumeSync.C:
			w.refreshVolumes()
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (w *podWorker) handle(e event) {
	switch e.kind {
	case evExit:
		if e.container == podSandboxName {
			w.onSandboxExit(e.task)
			break
		}
		w.onExit(e.container, e.task)
	case evUpdate:
		w.update(func(rec *podRecord) {
			status := rec.Pod.Status
			status.Conditions = mergeConditions(status.Conditions, e.pod.Status.Conditions)
			rec.takeSpec(e.pod)
			rec.Pod.Status = status
		})
	case evDelete:
		if w.deleting == nil {
			w.deleting = w.pod()
		}
		if e.message != "" {
			w.stopReason = e.message
		}
		if e.pod != nil {
			w.deleting = e.pod
			// The conditions others set on the way out stay in the final
			// status, as the kubelet's status manager keeps them: the
			// DisruptionTarget an eviction adds before it deletes the pod
			// is what a Job's pod failure policy matches on.
			w.update(func(rec *podRecord) {
				rec.Pod.Status.Conditions = mergeConditions(rec.Pod.Status.Conditions, e.pod.Status.Conditions)
			})
		}
	case evReattach:
		w.reattachAll()
	case evProbe:
		w.onProbe(e)
	case evPostStart:
		w.onPostStart(e)
	case evRepublish:
		w.lastPub = nil
	case evAPIStatus:
		// Another writer changed conditions the agent owns, as the node
		// controller does when it marks the pods of a node NotReady: the
		// kubelet's status manager writes its own status back, and so
		// does the agent.
		if w.lastPub != nil && KubeletConditionsChanged(w.lastPub, e.pod) {
			w.lastPub = nil
		}
		// Conditions of other owners (DisruptionTarget, readiness gates)
		// are kept in every status the agent writes from now on: a status
		// written without them would drop them from the API.
		w.update(func(rec *podRecord) {
			if ForeignConditionsChanged(rec.Pod, e.pod) {
				rec.Pod.Status.Conditions = mergeConditions(rec.Pod.Status.Conditions, e.pod.Status.Conditions)
			}
		})
	}
}

// detach stops watching tasks without touching them (agent shutdown).
func (w *podWorker) detach() {
	w.stopAllProbes()
	for _, t := range w.tasks {
		t.cancel()
	}
	if w.sandboxTask != nil {
		w.sandboxTask.cancel()
	}
}

// sync moves the pod one step towards what its spec asks. It returns when
// to sync again without an event (0: only on an event) and whether the
// worker is finished.
func (w *podWorker) sync() (time.Duration, bool) {
	if w.deleting != nil {
		w.terminate()
		return 0, true
	}
	w.mu.Lock()
	if w.rec.StartTime == nil {
		now := metav1.Now()
		w.rec.StartTime = &now
	}
	phase := w.rec.Phase
	released := w.rec.Released
	sandbox := w.rec.SandboxReady
	w.mu.Unlock()

	if phase == v1.PodSucceeded || phase == v1.PodFailed {
		if !released {
			w.release()
		}
		return 0, false
	}
	// The kubelet's active deadline handler, at every sync and so after
	// every update of activeDeadlineSeconds too.
	w.mu.Lock()
	left, past := activeDeadline(w.rec.Pod, w.rec.StartTime, timeNow())
	w.mu.Unlock()
	if past {
		return w.deadlineExceeded()
	}
	if !sandbox {
		done := w.r.turn()
		err := w.prepareSandbox()
		done()
		if err != nil {
			w.log.Warn("pod sandbox not ready", "err", err)
			if me := (*mountError)(nil); errors.As(err, &me) {
				w.event(v1.EventTypeWarning, "FailedMount", "%v", me)
			} else {
				w.event(v1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
			}
			w.update(func(rec *podRecord) {
				rec.Reason, rec.Message = "", fmt.Sprintf("pod sandbox: %v", err)
			})
			if left > 0 && left < sandboxRetry {
				return left, false
			}
			return sandboxRetry, false
		}
		w.update(func(rec *podRecord) {
			rec.SandboxReady = true
			rec.Message = ""
		})
	}

	// A resize first: containers that start now start with what it allocates.
	resizeNext := w.resize()
	pod := w.pod()
	spec := pod.Spec
	var next time.Duration
	soonest := func(d time.Duration) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	soonest(left)

	soonest(resizeNext)

	if limitsStorage(pod) {
		if wait := storageCheckInterval - timeNow().Sub(w.storageCheckedAt); wait > 0 {
			soonest(wait)
		} else {
			w.storageCheckedAt = timeNow()
			if w.checkStorage(pod) {
				return 0, false
			}
			soonest(storageCheckInterval)
		}
	}

	// Once an app container has started the pod is initialized for good,
	// as on a kubelet: a sidecar that restarts later holds nothing up.
	initialized := w.appStarted()
	if initialized {
		if p := w.appPhase(true); p == v1.PodSucceeded || p == v1.PodFailed {
			return w.complete(p)
		}
	}
	initDone := true
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		cr := w.rec.ctr(c.Name)
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
		state := w.state(cr)
		if sidecar {
			// The next container starts once a sidecar has started (its
			// postStart hook done and its startup probe passed).
			if state.Running == nil {
				soonest(w.ensureStarted(c, cr, true))
			}
			if !initialized && !w.started(c, cr) {
				initDone = false
				break
			}
			continue
		}
		if initialized {
			continue // it completed before the app containers started
		}
		if state.Terminated != nil && state.Terminated.ExitCode == 0 {
			continue
		}
		initDone = false
		if state.Running != nil {
			break
		}
		if state.Terminated != nil && spec.RestartPolicy == v1.RestartPolicyNever {
			w.finish(v1.PodFailed, "", fmt.Sprintf("init container %q failed with exit code %d", c.Name, state.Terminated.ExitCode))
			w.release()
			return 0, false
		}
		soonest(w.ensureStarted(c, cr, false))
		break
	}

	if initDone {
		for i := range spec.Containers {
			c := &spec.Containers[i]
			cr := w.rec.ctr(c.Name)
			state := w.state(cr)
			if state.Running != nil {
				continue
			}
			if state.Terminated != nil && !shouldRestart(spec.RestartPolicy, state.Terminated.ExitCode) {
				continue
			}
			soonest(w.ensureStarted(c, cr, false))
		}
	}

	if p := w.appPhase(initDone); p == v1.PodSucceeded || p == v1.PodFailed {
		return w.complete(p)
	}
	if initDone {
		soonest(w.syncEphemeral())
	}
	w.update(func(rec *podRecord) {
		if initDone && rec.Phase == v1.PodPending {
			for _, cr := range rec.Containers {
				if cr.app() && cr.Started && !cr.PostStartPending {
					rec.Phase = v1.PodRunning
					break
				}
			}
		}
	})
	return next, false
}

// Reason and message of a pod that ran past its activeDeadlineSeconds, as
// the kubelet gives them (pkg/kubelet/active_deadline.go).
const (
	deadlineReason  = "DeadlineExceeded"
	deadlineMessage = "Pod was active on the node longer than the specified deadline"
)

// activeDeadline says how long the pod may still be active, and whether
// it is past its spec.activeDeadlineSeconds, counted from its start time
// (0, false: no deadline, or not started).
func activeDeadline(pod *v1.Pod, start *metav1.Time, now time.Time) (time.Duration, bool) {
	if pod.Spec.ActiveDeadlineSeconds == nil || start == nil {
		return 0, false
	}
	left := start.Add(time.Duration(*pod.Spec.ActiveDeadlineSeconds) * time.Second).Sub(now)
	if left <= 0 {
		return 0, true
	}
	return left, false
}

// deadlineExceeded fails a pod past its active deadline: its containers
// stop within the pod's grace period and it is Failed with the kubelet's
// reason DeadlineExceeded.
func (w *podWorker) deadlineExceeded() (time.Duration, bool) {
	w.event(v1.EventTypeNormal, deadlineReason, "%s", deadlineMessage)
	w.killAll(w.gracePeriod(nil))
	w.finish(v1.PodFailed, deadlineReason, deadlineMessage)
	w.release()
	return 0, false
}

// complete ends a pod whose app containers are done: its sidecars stop.
func (w *podWorker) complete(phase v1.PodPhase) (time.Duration, bool) {
	w.killAll(w.gracePeriod(nil))
	w.finish(phase, "", "")
	w.release()
	return 0, false
}

// appStarted tells whether an app container of the pod has started.
func (w *podWorker) appStarted() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, cr := range w.rec.Containers {
		if cr.app() && cr.Started {
			return true
		}
	}
	return false
}

// started tells whether a container runs and counts as started: its
// postStart hook done and its startup probe, if any, passed.
func (w *podWorker) started(c *v1.Container, cr *ctrRecord) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return containerStarted(c, cr)
}

func containerStarted(c *v1.Container, cr *ctrRecord) bool {
	return cr.State.Running != nil && !cr.PostStartPending && (c.StartupProbe == nil || cr.StartupPassed)
}

func (w *podWorker) state(cr *ctrRecord) v1.ContainerState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return *cr.State.DeepCopy()
}

func shouldRestart(policy v1.RestartPolicy, code int32) bool {
	switch policy {
	case v1.RestartPolicyNever:
		return false
	case v1.RestartPolicyOnFailure:
		return code != 0
	default:
		return true
	}
}

// appPhase is the phase the app containers put the pod in.
func (w *podWorker) appPhase(initDone bool) v1.PodPhase {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !initDone {
		return v1.PodPending
	}
	policy := w.rec.Pod.Spec.RestartPolicy
	allDone, anyFailed := true, false
	for _, cr := range w.rec.Containers {
		if !cr.app() {
			continue
		}
		t := cr.State.Terminated
		if t == nil || shouldRestart(policy, t.ExitCode) {
			allDone = false
			break
		}
		if t.ExitCode != 0 {
			anyFailed = true
		}
	}
	switch {
	case !allDone:
		return v1.PodRunning
	case anyFailed:
		return v1.PodFailed
	default:
		return v1.PodSucceeded
	}
}

func (w *podWorker) finish(phase v1.PodPhase, reason, message string) {
	w.update(func(rec *podRecord) {
		rec.Phase, rec.Reason, rec.Message = phase, reason, message
		rec.noRestarts()
	})
}

// noRestarts drops the pending restarts of a pod that ends: its containers
// show how they ended, not a back-off.
func (rec *podRecord) noRestarts() {
	for _, cr := range rec.Containers {
		cr.BackoffUntil = time.Time{}
	}
}

// ensureStarted starts a container that is not running, unless it is in
// back-off; it returns how long until it should be tried again (0: wait for
// an event).
func (w *podWorker) ensureStarted(c *v1.Container, cr *ctrRecord, sidecar bool) time.Duration {
	now := timeNow()
	w.mu.Lock()
	until := cr.BackoffUntil
	w.mu.Unlock()
	if now.Before(until) {
		return until.Sub(now)
	}

	// Image volumes first, as the kubelet pulls them before the container's
	// own image: a failed pull fails the container like its own image would.
	pod := w.pod()
	for _, vol := range imageVolumesOf(pod, c) {
		img, d := w.pull(cr, now, vol.Image.Reference, vol.Image.PullPolicy)
		if img == nil {
			return d
		}
		if err := w.r.mountImageVolume(w.ctx(), pod, vol, img); err != nil {
			msg := fmt.Sprintf("failed to mount image volume %q: %v", vol.Name, err)
			w.event(v1.EventTypeWarning, "Failed", "Error: %s", msg)
			d := w.backoff(cr, now)
			w.update(func(*podRecord) {
				cr.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerError", Message: msg}}
			})
			return d
		}
	}
	image, d := w.pull(cr, now, c.Image, c.ImagePullPolicy)
	if image == nil {
		return d
	}

	done := w.r.turn()
	lt, startedAt, err := w.startContainer(c, cr, image)
	done()
	if err != nil && w.ctx().Err() != nil {
		// The agent is stopping, not the container failing: nothing is
		// recorded, so that the next agent re-adopts the pod with this
		// container still to start (a Job's pod under restartPolicy
		// Never would otherwise fail for the engine's own restart).
		w.log.Info("container start interrupted by the agent stopping", "container", cr.Name, "err", err)
		return 0
	}
	if err != nil && containerdLost(err) {
		// containerd died under the call (the agent starts it again): the
		// runtime failed, not the container, so it is tried again rather
		// than counted as a run (a Job's pod under restartPolicy Never would
		// fail for it). The next try removes what this one left.
		w.log.Warn("container start interrupted: containerd is not answering; trying again", "container", cr.Name, "err", err)
		w.update(func(*podRecord) {
			cr.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating", Message: "containerd restarting: " + err.Error()}}
		})
		return reattachRetry
	}
	if se := (*startError)(nil); errors.As(err, &se) {
		return w.onStartError(cr, image, se)
	}
	if err != nil {
		msg := err.Error()
		w.event(v1.EventTypeWarning, "Failed", "Error: %s", msg)
		if ce := (*configError)(nil); errors.As(err, &ce) {
			// The kubelet tries a container whose configuration it cannot
			// make again at each sync of the pod: 10 s later, or at once
			// when the pod changes (an annotation a subPathExpr reads, a
			// configMap created), never in a growing back-off.
			w.update(func(*podRecord) {
				cr.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: msg}}
			})
			return configRetry
		}
		reason := "CreateContainerError"
		d := w.backoff(cr, now)
		w.update(func(*podRecord) {
			cr.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason, Message: msg}}
		})
		return d
	}
	w.tasks[cr.Name] = lt
	w.update(func(*podRecord) {
		cr.countAttempt(image)
		cr.Live = true
		cr.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(startedAt)}}
		cr.Ready, cr.StartupPassed = false, false
		cr.PostStartPending = c.Lifecycle != nil && c.Lifecycle.PostStart != nil
		cr.Resources = c.Resources.DeepCopy()
	})
	w.event(v1.EventTypeNormal, "Started", "Started container %s", c.Name)
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		w.runPostStart(c, cr, lt)
	} else {
		w.startProbes(c, cr, lt)
	}
	return 0
}

// pull ensures an image of container cr (its own or one of a volume it
// mounts) is here, with the kubelet's events. A failed pull leaves the
// container waiting in ErrImagePull, then ImagePullBackOff, and returns a
// nil image and the wait before the next try.
func (w *podWorker) pull(cr *ctrRecord, now time.Time, ref string, policy v1.PullPolicy) (*pulledImage, time.Duration) {
	auth, err := w.r.podPullAuth(w.ctx(), w.pod())
	var image *pulledImage
	if err == nil {
		image, err = w.r.pulls.ensure(w.ctx(), ref, policy, auth, func(string) {
			w.event(v1.EventTypeNormal, "Pulling", "Pulling image %q", ref)
		})
	}
	if err != nil {
		msg := fmt.Sprintf("Failed to pull image %q: %v", ref, err)
		w.event(v1.EventTypeWarning, "Failed", "%s", msg)
		w.event(v1.EventTypeWarning, "Failed", "Error: ErrImagePull")
		d := w.backoff(cr, now)
		w.update(func(*podRecord) {
			cr.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ErrImagePull", Message: msg}}
		})
		// The status reads ErrImagePull now and ImagePullBackOff while waiting.
		go func() {
			select {
			case <-time.After(2 * time.Second):
				w.event(v1.EventTypeNormal, "BackOff", "Back-off pulling image %q", ref)
				w.post(event{kind: evWake})
			case <-w.done:
			}
		}()
		return nil, d
	}
	if image.pulled {
		w.event(v1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s", ref, image.took.Round(time.Millisecond))
	}
	return image, 0
}

// backoff records a failed start and returns the wait before the next try.
func (w *podWorker) backoff(cr *ctrRecord, now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := cr.Backoff
	if d == 0 {
		d = backoffInitial
	}
	cr.BackoffUntil = now.Add(d)
	cr.Backoff = min(2*d, backoffMax)
	return d
}

// onExit records a container's exit and schedules its restart.
func (w *podWorker) onExit(name string, lt *liveTask) {
	if cur := w.tasks[name]; cur != lt {
		return // an older task of a container since restarted
	}
	if lt.lost != nil && w.ctx().Err() != nil {
		return // the agent is stopping; the task runs on
	}
	if lt.lost != nil {
		// containerd went away: the task may still run. Look again soon.
		// Its output still flows through the FIFOs the agent reads: the
		// log stays open and the re-attached task keeps it.
		w.log.Warn("lost track of container, re-attaching", "container", name, "err", lt.lost)
		delete(w.tasks, name)
		go func() {
			select {
			case <-time.After(reattachRetry):
				w.post(event{kind: evReattach})
			case <-w.done:
			}
		}()
		return
	}
	delete(w.tasks, name)
	w.stopProbes(name)
	kill := w.killing[name]
	delete(w.killing, name)
	killedForRestart := kill != nil && kill.task == lt && kill.restart
	cr := w.rec.ctr(name)
	// The OOM verdict lives in the container's cgroup: read it before the
	// container and its cgroup go. Under runc, as containerd's CRI reports
	// it (it marks the container on the TaskOOM event, whatever the exit
	// code), an OOM kill of any process of the container makes it
	// OOMKilled, even when its main process survived and exited 0. Under
	// gVisor the host sees only the sandbox, whose OOM kill ends every
	// container in it with 137.
	oom := (lt.code == 137 || sandboxRoot(w.rec) == "") && w.oomKilled(cr.ID)
	pod := w.pod()
	// The log holds all the container wrote before its message is read
	// from it: its output may still be in flight from the shim, and an
	// unfinished last line waits in the log for a newline.
	if !lt.logs.drain() {
		w.log.Info("container output still open after its exit", "container", name, "waited", ioDrainWait)
	}
	var message string
	if c := w.containerSpec(name); c != nil {
		message = w.r.terminationMessage(pod, c, int32(lt.code), w.r.logPath(pod, name, cr.RestartCount))
	}
	w.update(func(*podRecord) {
		cr.Live = false
		cr.Ready, cr.StartupPassed, cr.PostStartPending = false, false, false
		var startedAt metav1.Time
		if cr.State.Running != nil {
			startedAt = cr.State.Running.StartedAt
		}
		reason := "Completed"
		if lt.code != 0 {
			reason = "Error"
		}
		if oom {
			reason = "OOMKilled"
		}
		cr.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode:    int32(lt.code),
			Reason:      reason,
			Message:     message,
			StartedAt:   startedAt,
			FinishedAt:  metav1.NewTime(lt.exitedAt),
			ContainerID: "containerd://" + cr.ID,
		}}
		if !shouldRestart(restartPolicy(pod, cr), int32(lt.code)) && !killedForRestart {
			return
		}
		cr.scheduleRestart(startedAt.Time, lt.exitedAt)
	})
	// The exit is on disk before the container goes: an agent killed in
	// between finds a finished container whose leftover it removes, not a
	// running one that vanished (ContainerStatusUnknown, which fails a
	// Job's pod). Only written: the status is published once the pod's
	// phase follows from the exit, never a finished container in a pod
	// still Running.
	w.persist()
	w.removeContainer(cr.ID, lt.task)
	w.dropTask(name, lt)
}

// containerdLost tells whether err says containerd itself went away during
// a call (its connection closed or refused), rather than refusing the call.
func containerdLost(err error) bool {
	if errdefs.IsUnavailable(err) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"error reading from server: EOF", "transport is closing", "connection refused", "ttrpc: closed", "code = Unavailable"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// startExitCode is the exit code of a container that failed to start, as
// containerd's CRI reports it.
const startExitCode = 128

// onStartError records a container whose process the runtime could not
// start. As the kubelet with containerd shows it, the attempt counts as a
// run: the container is terminated with reason StartError, exit code 128 and
// the runtime's message, its restart count goes up with every further
// attempt, and it restarts as its restart policy says, in CrashLoopBackOff
// between tries; under restartPolicy Never the pod fails. It returns how
// long until the next try (0: none).
func (w *podWorker) onStartError(cr *ctrRecord, image *pulledImage, se *startError) time.Duration {
	w.log.Warn("container failed to start", "container", cr.Name, "err", se.err)
	w.event(v1.EventTypeWarning, "Failed", "Error: %v", se.err)
	pod := w.pod()
	now := timeNow()
	restart := false
	w.update(func(*podRecord) {
		cr.countAttempt(image)
		cr.Live = false
		cr.Ready, cr.StartupPassed, cr.PostStartPending = false, false, false
		cr.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode:    startExitCode,
			Reason:      "StartError",
			Message:     se.err.Error(),
			FinishedAt:  metav1.NewTime(now),
			ContainerID: "containerd://" + cr.ID,
		}}
		if shouldRestart(restartPolicy(pod, cr), startExitCode) {
			cr.scheduleRestart(time.Time{}, now)
			restart = true
		}
	})
	if !restart {
		return 0
	}
	w.mu.Lock()
	until := cr.BackoffUntil
	w.mu.Unlock()
	if !until.After(now) {
		// The first restart is at once: sync again straight away.
		return time.Millisecond
	}
	w.event(v1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s", cr.Name, key(pod.Namespace, pod.Name))
	return until.Sub(now)
}

// restartPolicy is the policy a container of pod restarts under: the pod's,
// except that an init container restarts only on failure and a sidecar
// always.
func restartPolicy(pod *v1.Pod, cr *ctrRecord) v1.RestartPolicy {
	if cr.Ephemeral {
		return v1.RestartPolicyNever
	}
	policy := pod.Spec.RestartPolicy
	if cr.Init && policy == v1.RestartPolicyAlways {
		policy = v1.RestartPolicyOnFailure
	}
	if isSidecar(pod, cr.Name) {
		policy = v1.RestartPolicyAlways
	}
	return policy
}

// scheduleRestart sets when a container that ran from startedAt to exitedAt
// may start again, as the kubelet's crash-loop back-off decides (kuberuntime
// doBackOff over a flowcontrol.Backoff): at once after its first exit, then
// after the back-off it was last restarted with. A container that ran
// longer than backoffReset starts over at once.
func (cr *ctrRecord) scheduleRestart(startedAt, exitedAt time.Time) {
	if !startedAt.IsZero() && exitedAt.Sub(startedAt) > backoffReset {
		cr.Backoff = 0
	}
	cr.BackoffUntil = exitedAt.Add(cr.Backoff)
}

// countAttempt records an attempt to run the container from image, started
// or failed to start: after an earlier one it is a restart, and after an
// exit or a failed start the next one waits longer. The caller holds mu.
func (cr *ctrRecord) countAttempt(image *pulledImage) {
	if cr.Started {
		cr.RestartCount++
		if cr.State.Terminated != nil {
			cr.LastState = v1.ContainerState{Terminated: cr.State.Terminated}
			cr.Backoff = nextBackoff(cr.Backoff)
		}
	}
	cr.Started = true
	cr.ImageRef, cr.ImageID = image.ref, image.id
}

// nextBackoff is the back-off a container restarts with after it had
// backoff: 10 s first, doubling up to 5 min.
func nextBackoff(backoff time.Duration) time.Duration {
	if backoff == 0 {
		return backoffInitial
	}
	return min(2*backoff, backoffMax)
}

func isSidecar(pod *v1.Pod, name string) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
		}
	}
	return false
}

// watch waits for the task's exit in the background and posts it.
func (w *podWorker) watch(name string, task containerd.Task, exitCh <-chan containerd.ExitStatus, cancel context.CancelFunc) *liveTask {
	lt := &liveTask{task: task, cancel: cancel, done: make(chan struct{})}
	go func() {
		st, ok := <-exitCh
		if !ok {
			lt.lost = fmt.Errorf("wait channel closed")
		} else if err := st.Error(); err != nil {
			lt.lost = err
		} else {
			lt.code, lt.exitedAt = st.ExitCode(), st.ExitTime()
		}
		close(lt.done)
		select {
		case <-w.stopCh:
			return
		default:
		}
		w.post(event{kind: evExit, container: name, task: lt})
	}()
	return lt
}

// deleteStaleTask removes the container (its task first) of a container
// the record says is not running: the agent that recorded its exit was
// stopped or killed before it removed the container, whose shim, cgroups
// and rootfs would otherwise stay for good. Its exit status is in the
// record and its log in the log files.
func (w *podWorker) deleteStaleTask(cr *ctrRecord) {
	ctx, cancel := w.cleanupCtx()
	defer cancel()
	if _, err := w.r.cfg.Containerd.LoadContainer(ctx, cr.ID); err == nil {
		w.log.Info("removing a container that no longer runs, left by an interrupted clean-up", "container", cr.Name, "id", cr.ID)
	} else if !errdefs.IsNotFound(err) {
		return
	}
	// Also where the container is gone: its task may not be (a start cut
	// short, see deleteOrphanTask).
	w.removeContainer(cr.ID, nil)
}

// reattachAll looks up, in containerd, every container the record says is
// live and not yet watched: still running ones are watched again, ones that
// exited meanwhile are reported as exited.
func (w *podWorker) reattachAll() {
	ctx := w.ctx()
	// A gvisor pod's sandbox first: its containers live in it.
	if !w.reattachSandbox() {
		w.retryReattach()
		return
	}
	for _, cr := range w.rec.Containers {
		if !cr.Live && w.tasks[cr.Name] == nil {
			w.deleteStaleTask(cr)
			continue
		}
		if w.tasks[cr.Name] != nil {
			continue
		}
		c, err := w.r.cfg.Containerd.LoadContainer(ctx, cr.ID)
		if errdefs.IsNotFound(err) {
			w.markUnknown(cr)
			continue
		}
		if err != nil {
			w.log.Warn("re-attach: containerd not answering", "container", cr.Name, "err", err)
			go func() {
				select {
				case <-time.After(reattachRetry):
					w.post(event{kind: evReattach})
				case <-w.done:
				}
			}()
			return
		}
		// A container this agent started and lost (containerd restarted)
		// keeps the log whose reader still copies its FIFOs; one started
		// before the agent did gets its FIFOs opened again.
		logs := w.attachedLog(cr.Name)
		var attach cio.Attach
		if logs == nil {
			if lf, err := openContainerLog(w.r.logPath(w.pod(), cr.Name, cr.RestartCount), w.r.cfg.ContainerLogMaxSize, w.r.cfg.ContainerLogMaxFiles); err == nil {
				logs = lf
				attach = logs.attach()
			} else {
				w.log.Warn("re-attach: open log", "container", cr.Name, "err", err)
			}
		}
		task, err := c.Task(ctx, attach)
		if err != nil && attach != nil {
			logs.Close()
		}
		if errdefs.IsNotFound(err) {
			w.closeLog(cr.Name)
			w.markUnknown(cr)
			_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
			continue
		}
		if err != nil {
			w.log.Warn("re-attach: load task", "container", cr.Name, "err", err)
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		exitCh, err := task.Wait(wctx)
		if err != nil {
			cancel()
			if attach != nil {
				logs.Close()
			}
			w.log.Warn("re-attach: wait task", "container", cr.Name, "err", err)
			continue
		}
		lt := w.watch(cr.Name, task, exitCh, cancel)
		if logs != nil {
			w.setLogs(cr.Name, lt, logs)
		}
		w.tasks[cr.Name] = lt
		w.log.Info("re-attached container", "container", cr.Name, "id", cr.ID)
		if spec := w.containerSpec(cr.Name); spec != nil {
			// A postStart hook the previous agent did not see end is taken
			// as done: it ran in the container, which still runs.
			w.update(func(*podRecord) { cr.PostStartPending = false })
			w.startProbes(spec, cr, lt)
		}
	}
}

// markUnknown reports a container that vanished while nobody watched it.
func (w *podWorker) markUnknown(cr *ctrRecord) {
	w.update(func(*podRecord) {
		cr.Live = false
		var started metav1.Time
		if cr.State.Running != nil {
			started = cr.State.Running.StartedAt
		}
		cr.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode: 137, Reason: "ContainerStatusUnknown",
			Message:   "The container could not be located when the agent re-adopted the pod",
			StartedAt: started, FinishedAt: metav1.Now(), ContainerID: "containerd://" + cr.ID,
		}}
	})
}

// gracePeriod is how long containers get between SIGTERM and SIGKILL.
func (w *podWorker) gracePeriod(deleting *v1.Pod) time.Duration {
	if deleting != nil && deleting.DeletionGracePeriodSeconds != nil {
		return time.Duration(*deleting.DeletionGracePeriodSeconds) * time.Second
	}
	p := w.pod()
	if p.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// killAll stops every live task: SIGTERM (or the image's stop signal), then
// SIGKILL after grace. It returns when all exited and records their exits.
// Each container's preStop hook runs first, within grace (not again for one
// already being killed after a failed probe). As on the kubelet, sidecars
// (restartable init containers) get their stop signal only once the app
// containers have stopped, in the reverse of their order: a sidecar that
// proxies the app's traffic serves it to its end.
func (w *podWorker) killAll(grace time.Duration) {
	w.stopAllProbes()
	pod := w.pod()
	stopped := make(map[string]chan struct{}, len(w.tasks))
	for name := range w.tasks {
		stopped[name] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for name, lt := range w.tasks {
		wg.Add(1)
		c := w.containerSpec(name)
		if c == nil {
			c = &v1.Container{Name: name}
		}
		id := ""
		if cr := w.rec.ctr(name); cr != nil {
			id = cr.ID
		}
		preStop := w.killing[name] == nil
		var after []<-chan struct{}
		for _, other := range stopsBefore(pod, name) {
			if ch, ok := stopped[other]; ok {
				after = append(after, ch)
			}
		}
		w.ctrEvent(name, v1.EventTypeNormal, "Killing", "Stopping container %s", name)
		go func() {
			defer wg.Done()
			defer close(stopped[name])
			w.stopTask(pod, c, id, lt, grace, preStop, after)
		}()
	}
	wg.Wait()
	for name, lt := range w.tasks {
		if lt.lost == nil {
			select {
			case <-lt.done:
				w.onExit(name, lt)
				continue
			default:
			}
		}
		w.dropTask(name, lt)
		delete(w.tasks, name)
	}
}

// stopsBefore names the containers of pod that must stop before the
// container name gets its stop signal: for a sidecar, every app and
// ephemeral container and the sidecars declared after it; for the others,
// none (the kubelet's termination ordering).
func stopsBefore(pod *v1.Pod, name string) []string {
	idx := -1
	var sidecars []string
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			if c.Name == name {
				idx = len(sidecars)
			}
			sidecars = append(sidecars, c.Name)
		}
	}
	if idx < 0 {
		return nil
	}
	var out []string
	for _, c := range pod.Spec.Containers {
		out = append(out, c.Name)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		out = append(out, c.Name)
	}
	return append(out, sidecars[idx+1:]...)
}

// terminate stops the pod for deletion and removes everything it holds.
func (w *podWorker) terminate() {
	w.killAll(w.gracePeriod(w.deleting))
	ctx := w.ctx()
	// Containers the record calls live but no task watches (lost while containerd restarted).
	for _, cr := range w.rec.Containers {
		if cr.Live {
			if c, err := w.r.cfg.Containerd.LoadContainer(ctx, cr.ID); err == nil {
				if t, err := c.Task(ctx, nil); err == nil {
					_, _ = t.Delete(ctx, containerd.WithProcessKill)
				}
				_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
			}
		}
	}
	w.release()
	w.update(func(rec *podRecord) {
		rec.noRestarts()
		for _, cr := range rec.Containers {
			cr.Live = false
			if cr.State.Terminated == nil {
				var started metav1.Time
				if cr.State.Running != nil {
					started = cr.State.Running.StartedAt
				}
				cr.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
					ExitCode: 137, Reason: "Error", Message: "stopped because the pod was deleted",
					StartedAt: started, FinishedAt: metav1.Now(), ContainerID: "containerd://" + cr.ID,
				}}
			}
		}
		if rec.Phase != v1.PodSucceeded && rec.Phase != v1.PodFailed && w.stopReason != "" {
			rec.Phase, rec.Reason, rec.Message = v1.PodFailed, "Terminated", w.stopReason
		}
		if rec.Phase != v1.PodSucceeded && rec.Phase != v1.PodFailed {
			rec.Phase = v1.PodFailed
			for _, cr := range rec.Containers {
				if cr.app() && cr.State.Terminated != nil && cr.State.Terminated.ExitCode != 0 {
					goto done
				}
			}
			rec.Phase = v1.PodSucceeded
		done:
		}
	})
	final := w.snapshot()
	w.final = final
	// A subPath bind still mounted would show a hostPath's files to RemoveAll.
	if err := w.r.unmountSubPaths(final); err != nil {
		w.log.Warn("keeping pod folder: subPath binds still mounted", "err", err)
	} else if m := mountsUnder(w.r.podDir(final.UID)); len(m) > 0 {
		// A persistent volume still bound here would lose its files.
		w.log.Warn("keeping pod folder: volumes still mounted", "mounts", m)
	} else if err := os.RemoveAll(w.r.podDir(final.UID)); err != nil {
		w.log.Warn("remove pod folder", "err", err)
	}
	w.r.forget(w)
	if w.orphan {
		w.log.Info("pod removed", "uid", final.UID)
		return
	}
	w.r.publish(final)
	w.log.Info("pod removed")
	// Like the kubelet's status manager: once nothing of the pod runs, its
	// API object goes at once instead of after the whole grace period.
	if w.deleting.DeletionTimestamp != nil {
		grace := int64(0)
		err := w.r.cfg.Kube.CoreV1().Pods(final.Namespace).Delete(context.WithoutCancel(w.ctx()), final.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &grace,
			Preconditions:      metav1.NewUIDPreconditions(string(final.UID)),
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.log.Warn("delete pod object", "err", err)
		}
	}
}

// release frees the sandbox of a pod that will run no more containers:
// network namespace, IP, volume mounts. The record and logs stay until the
// pod is deleted.
func (w *podWorker) release() {
	ctx, cancel := w.cleanupCtx()
	defer cancel()
	w.stopAllProbes()
	for name, lt := range w.tasks {
		_, _ = lt.task.Delete(ctx, containerd.WithProcessKill)
		lt.cancel()
		w.dropTask(name, lt)
		delete(w.tasks, name)
	}
	w.removePodSandbox()
	pod := w.pod()
	released := true
	if !pod.Spec.HostNetwork {
		if w.r.cfg.Addresses != nil {
			w.r.cfg.Addresses.PodReleased(ctx, pod.UID)
		}
		if err := w.r.cfg.Network.Teardown(ctx, string(pod.UID)); err != nil {
			// Not marked released (its devices stay held), and tried again
			// in the background until it goes: the worker may forget the
			// pod before then.
			w.log.Warn("network teardown; trying again in the background", "err", err)
			released = false
			w.r.retryTeardown(pod.UID)
		}
	}
	if err := w.r.unmountVolumes(pod); err != nil {
		w.log.Warn("unmount volumes", "err", err)
		released = false
	}
	if released {
		// Freed only with the sandbox: a pod whose teardown failed may
		// still have a process using them.
		w.releaseDevices()
	}
	w.update(func(rec *podRecord) { rec.Released = released })
}

func (w *podWorker) persistAndPublish() {
	w.persist()
	if w.orphan {
		return
	}
	snap := w.snapshot()
	if w.lastPub != nil && statusEqual(&w.lastPub.Status, &snap.Status) {
		return
	}
	if w.r.publish(snap) {
		w.lastPub = snap
	}
}

// persist writes the record to the pod's folder when it changed. Only the
// run goroutine calls it.
func (w *podWorker) persist() {
	w.mu.Lock()
	raw, err := json.Marshal(w.rec)
	uid := w.rec.Pod.UID
	w.mu.Unlock()
	if err != nil {
		w.log.Error("encode pod record", "err", err)
		return
	}
	dir := w.r.podDir(uid)
	// Most rounds change nothing on disk (a probe, a volume refresh): the
	// record is written again only when it differs from the last one.
	if w.deleting == nil && !bytes.Equal(raw, w.lastRecord) {
		if err := os.MkdirAll(dir, 0o700); err == nil {
			tmp := filepath.Join(dir, recordFile+".tmp")
			if err := os.WriteFile(tmp, raw, 0o600); err == nil {
				if os.Rename(tmp, filepath.Join(dir, recordFile)) == nil {
					w.lastRecord = raw
				}
			}
		}
	}
}

func (w *podWorker) event(kind, reason, format string, args ...any) {
	w.r.cfg.Recorder.Eventf(w.pod(), kind, reason, format, args...)
}
