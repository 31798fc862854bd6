package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testPod(init ...string) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid"}}
	for _, n := range init {
		p.Spec.InitContainers = append(p.Spec.InitContainers, v1.Container{Name: n, Image: "img"})
	}
	p.Spec.Containers = []v1.Container{{Name: "main", Image: "img"}}
	return p
}

func condition(p *v1.Pod, t v1.PodConditionType) v1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func TestBuildPodConditions(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	running := v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(now)}}
	done := v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	for _, tc := range []struct {
		name               string
		init, main         v1.ContainerState
		phase              v1.PodPhase
		initialized, ready v1.ConditionStatus
	}{
		{"init running", running, v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "PodInitializing"}}, v1.PodPending, v1.ConditionFalse, v1.ConditionFalse},
		{"all running", done, running, v1.PodRunning, v1.ConditionTrue, v1.ConditionTrue},
		{"succeeded", done, done, v1.PodSucceeded, v1.ConditionTrue, v1.ConditionFalse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecord(testPod("init"))
			rec.SandboxReady = true
			rec.IPs = []string{"10.1.0.5"}
			rec.Phase = tc.phase
			rec.Containers[0].State = tc.init
			rec.Containers[1].State = tc.main
			p := buildPod(rec, "192.0.2.2", now)
			if got := condition(p, v1.PodInitialized); got != tc.initialized {
				t.Errorf("Initialized = %s, want %s", got, tc.initialized)
			}
			if got := condition(p, v1.PodReady); got != tc.ready {
				t.Errorf("Ready = %s, want %s", got, tc.ready)
			}
			if got := condition(p, v1.ContainersReady); got != tc.ready {
				t.Errorf("ContainersReady = %s, want %s", got, tc.ready)
			}
			if condition(p, v1.PodScheduled) != v1.ConditionTrue {
				t.Error("PodScheduled not True")
			}
			if p.Status.PodIP != "10.1.0.5" || p.Status.HostIP != "192.0.2.2" || len(p.Status.InitContainerStatuses) != 1 {
				t.Errorf("status %+v", p.Status)
			}
		})
	}
}

func TestBuildPodBackOffReasons(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := newRecord(testPod())
	cr := rec.Containers[0]
	cr.RestartCount = 2
	cr.Started = true
	cr.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 2, Reason: "Error"}}
	cr.Backoff = 20 * time.Second
	cr.BackoffUntil = now.Add(15 * time.Second)
	cs := buildPod(rec, "", now).Status.ContainerStatuses[0]
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" || !strings.Contains(cs.State.Waiting.Message, "back-off 20s") {
		t.Errorf("in back-off: %+v", cs.State)
	}
	if cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 2 {
		t.Errorf("last state %+v", cs.LastTerminationState)
	}
	// Past the back-off, the terminated state shows until the restart.
	cs = buildPod(rec, "", now.Add(time.Minute)).Status.ContainerStatuses[0]
	if cs.State.Terminated == nil {
		t.Errorf("after back-off: %+v", cs.State)
	}

	// A failed pull reads ErrImagePull, then ImagePullBackOff while waiting.
	pull := newRecord(testPod())
	pc := pull.Containers[0]
	pc.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}}
	pc.Backoff = 20 * time.Second
	pc.BackoffUntil = now.Add(10 * time.Second)
	if got := buildPod(pull, "", now).Status.ContainerStatuses[0].State.Waiting.Reason; got != "ErrImagePull" {
		t.Errorf("just failed: %s", got)
	}
	if got := buildPod(pull, "", now.Add(5*time.Second)).Status.ContainerStatuses[0].State.Waiting.Reason; got != "ImagePullBackOff" {
		t.Errorf("waiting: %s", got)
	}
}

func TestShouldRestart(t *testing.T) {
	for _, tc := range []struct {
		policy v1.RestartPolicy
		code   int32
		want   bool
	}{
		{v1.RestartPolicyAlways, 0, true},
		{v1.RestartPolicyAlways, 1, true},
		{v1.RestartPolicyOnFailure, 0, false},
		{v1.RestartPolicyOnFailure, 1, true},
		{v1.RestartPolicyNever, 1, false},
	} {
		if got := shouldRestart(tc.policy, tc.code); got != tc.want {
			t.Errorf("shouldRestart(%s, %d) = %v", tc.policy, tc.code, got)
		}
	}
}

func TestSeekTail(t *testing.T) {
	for _, tc := range []struct {
		content string
		n       int
		want    string
	}{
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 1, "c"},
		{"a\nb\nc\n", 10, "a\nb\nc\n"},
		{strings.Repeat("x\n", 10000) + "last\n", 1, "last\n"},
	} {
		path := filepath.Join(t.TempDir(), "log")
		os.WriteFile(path, []byte(tc.content), 0o644)
		f, _ := os.Open(path)
		if err := seekTail(f, tc.n); err != nil {
			t.Fatal(err)
		}
		rest := make([]byte, len(tc.content))
		n, _ := f.Read(rest)
		f.Close()
		if got := string(rest[:n]); got != tc.want {
			t.Errorf("tail %d of %q = %q, want %q", tc.n, tc.content[:min(len(tc.content), 20)], got, tc.want)
		}
	}
}

func TestExpandCommand(t *testing.T) {
	env := []v1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "two"}}
	got := expandCommand([]string{"echo", "$(A)-$(B)", "$$(A)", "$(MISSING)"}, env)
	want := []string{"echo", "1-two", "$(A)", "$(MISSING)"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("arg %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// A container that failed to start shows as the kubelet shows it: first
// restarted at once, then in CrashLoopBackOff with its StartError as the
// last state, the back-off doubling with each failure.
func TestStartErrorBackoff(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pod := testPod()
	startError := &v1.ContainerStateTerminated{ExitCode: startExitCode, Reason: "StartError", Message: `exec: "nope": executable file not found in $PATH`}
	cr := &ctrRecord{Name: "main", Started: true, State: v1.ContainerState{Terminated: startError}}
	for i, want := range []struct {
		until   time.Duration // zero: at once
		waiting string
	}{
		{0, ""},
		{10 * time.Second, "CrashLoopBackOff"},
		{20 * time.Second, "CrashLoopBackOff"},
		{40 * time.Second, "CrashLoopBackOff"},
	} {
		// As onStartError: a retry after a failed start waits longer.
		if i > 0 {
			cr.Backoff = nextBackoff(cr.Backoff)
		}
		cr.scheduleRestart(time.Time{}, now)
		var until time.Duration
		if !cr.BackoffUntil.IsZero() {
			until = cr.BackoffUntil.Sub(now)
		}
		if until != want.until {
			t.Errorf("failure %d: next try after %s, want %s", i+1, until, want.until)
		}
		cs := containerStatus(pod, cr, now)
		if want.waiting == "" {
			if cs.State.Terminated == nil || cs.State.Terminated.Reason != "StartError" {
				t.Errorf("failure %d: state %+v, want terminated StartError", i+1, cs.State)
			}
			continue
		}
		if cs.State.Waiting == nil || cs.State.Waiting.Reason != want.waiting ||
			!strings.Contains(cs.State.Waiting.Message, "back-off "+want.until.String()) {
			t.Errorf("failure %d: state %+v, want %s for %s", i+1, cs.State, want.waiting, want.until)
		}
		if lt := cs.LastTerminationState.Terminated; lt == nil || lt.Reason != "StartError" || lt.ExitCode != 128 {
			t.Errorf("failure %d: last state %+v, want the StartError", i+1, cs.LastTerminationState)
		}
	}
}

// The Initialized, Ready and ContainersReady conditions read as the
// kubelet's, reasons and messages included.
func TestBuildPodInitConditions(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	running := v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(now)}}
	done := v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	failed := v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}
	waiting := v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "PodInitializing"}}
	always := v1.ContainerRestartPolicyAlways
	type want struct {
		status          v1.ConditionStatus
		reason, message string
	}
	for _, tc := range []struct {
		name    string
		sidecar string // the name of the init container that is a sidecar
		phase   v1.PodPhase
		states  map[string]v1.ContainerState
		backoff string // a container that waits to restart
		init    want
		ready   want
	}{
		{
			name:  "second init container running",
			phase: v1.PodPending,
			states: map[string]v1.ContainerState{
				"init1": done, "init2": running, "main": waiting,
			},
			init:  want{v1.ConditionFalse, "ContainersNotInitialized", "containers with incomplete status: [init2]"},
			ready: want{v1.ConditionFalse, "ContainersNotReady", "containers with unready status: [main]"},
		},
		{
			name:  "none started yet",
			phase: v1.PodPending,
			states: map[string]v1.ContainerState{
				"init1": waiting, "init2": waiting, "main": waiting,
			},
			init:  want{v1.ConditionFalse, "ContainersNotInitialized", "containers with incomplete status: [init1 init2]"},
			ready: want{v1.ConditionFalse, "ContainersNotReady", "containers with unready status: [main]"},
		},
		{
			name:    "sidecar started, app running",
			sidecar: "init2",
			phase:   v1.PodRunning,
			states: map[string]v1.ContainerState{
				"init1": done, "init2": running, "main": running,
			},
			init:  want{v1.ConditionTrue, "", ""},
			ready: want{v1.ConditionTrue, "", ""},
		},
		{
			name:    "sidecar restarting after the app started",
			sidecar: "init2",
			phase:   v1.PodRunning,
			states: map[string]v1.ContainerState{
				"init1": done, "init2": failed, "main": running,
			},
			backoff: "init2",
			init:    want{v1.ConditionTrue, "", ""},
			ready:   want{v1.ConditionFalse, "ContainersNotReady", "containers with unready status: [init2]"},
		},
		{
			name:    "sidecar not started yet",
			sidecar: "init2",
			phase:   v1.PodPending,
			states: map[string]v1.ContainerState{
				"init1": done, "init2": waiting, "main": waiting,
			},
			init:  want{v1.ConditionFalse, "ContainersNotInitialized", "containers with incomplete status: [init2]"},
			ready: want{v1.ConditionFalse, "ContainersNotReady", "containers with unready status: [init2 main]"},
		},
		{
			name:  "init container failed, pod failed",
			phase: v1.PodFailed,
			states: map[string]v1.ContainerState{
				"init1": failed, "init2": waiting, "main": waiting,
			},
			init:  want{v1.ConditionFalse, "ContainersNotInitialized", "containers with incomplete status: [init1 init2]"},
			ready: want{v1.ConditionFalse, "PodFailed", ""},
		},
		{
			name:  "app failed",
			phase: v1.PodFailed,
			states: map[string]v1.ContainerState{
				"init1": done, "init2": done, "main": failed,
			},
			init:  want{v1.ConditionTrue, "", ""},
			ready: want{v1.ConditionFalse, "PodFailed", ""},
		},
		{
			name:    "succeeded, sidecar stopped",
			sidecar: "init2",
			phase:   v1.PodSucceeded,
			states: map[string]v1.ContainerState{
				"init1": done, "init2": failed, "main": done,
			},
			init:  want{v1.ConditionTrue, "PodCompleted", ""},
			ready: want{v1.ConditionFalse, "PodCompleted", ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod("init1", "init2")
			for i := range pod.Spec.InitContainers {
				if pod.Spec.InitContainers[i].Name == tc.sidecar {
					pod.Spec.InitContainers[i].RestartPolicy = &always
				}
			}
			rec := newRecord(pod)
			rec.SandboxReady = true
			rec.Phase = tc.phase
			for _, cr := range rec.Containers {
				cr.State = tc.states[cr.Name]
				cr.Started = cr.State.Waiting == nil
				if cr.Name == tc.backoff {
					cr.Backoff = 10 * time.Second
					cr.BackoffUntil = now.Add(5 * time.Second)
				}
			}
			p := buildPod(rec, "", now)
			check := func(ct v1.PodConditionType, w want) {
				t.Helper()
				for _, c := range p.Status.Conditions {
					if c.Type == ct {
						if c.Status != w.status || c.Reason != w.reason || c.Message != w.message {
							t.Errorf("%s = %s %q %q, want %s %q %q", ct, c.Status, c.Reason, c.Message, w.status, w.reason, w.message)
						}
						return
					}
				}
				t.Errorf("no %s condition", ct)
			}
			check(v1.PodInitialized, tc.init)
			check(v1.PodReady, tc.ready)
			check(v1.ContainersReady, tc.ready)
		})
	}
}

// A pod's readiness gates are conditions other controllers set: they stay
// in the status the agent writes, and Ready waits for them as on a kubelet.
func TestBuildPodReadinessGates(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const gate = v1.PodConditionType("example.com/lb-ready")
	for _, tc := range []struct {
		name  string
		gate  v1.ConditionStatus // "": not set by its controller yet
		ready v1.ConditionStatus
	}{
		{"gate unset", "", v1.ConditionFalse},
		{"gate false", v1.ConditionFalse, v1.ConditionFalse},
		{"gate true", v1.ConditionTrue, v1.ConditionTrue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod()
			pod.Spec.ReadinessGates = []v1.PodReadinessGate{{ConditionType: gate}}
			if tc.gate != "" {
				pod.Status.Conditions = []v1.PodCondition{{Type: gate, Status: tc.gate}}
			}
			rec := newRecord(pod)
			rec.SandboxReady = true
			rec.Phase = v1.PodRunning
			rec.Containers[0].State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(now)}}
			p := buildPod(rec, "192.0.2.2", now)
			if got := condition(p, v1.PodReady); got != tc.ready {
				t.Errorf("Ready = %s, want %s", got, tc.ready)
			}
			if got := condition(p, v1.ContainersReady); got != v1.ConditionTrue {
				t.Errorf("ContainersReady = %s, want True", got)
			}
			if got := condition(p, gate); got != tc.gate {
				t.Errorf("gate condition = %q, want %q (kept as its controller set it)", got, tc.gate)
			}
		})
	}
}

// TestKubeletConditionsChanged: only the conditions the agent owns count.
func TestKubeletConditionsChanged(t *testing.T) {
	pod := func(conds ...v1.PodCondition) *v1.Pod {
		return &v1.Pod{Status: v1.PodStatus{Conditions: conds}}
	}
	ready := v1.PodCondition{Type: v1.PodReady, Status: v1.ConditionTrue}
	notReady := v1.PodCondition{Type: v1.PodReady, Status: v1.ConditionFalse, Reason: "NodeNotReady"}
	gate := v1.PodCondition{Type: "example.com/gate", Status: v1.ConditionTrue}
	for _, tc := range []struct {
		name     string
		old, cur *v1.Pod
		want     bool
	}{
		{"marked NotReady by the node controller", pod(ready), pod(notReady), true},
		{"same statuses, other times", pod(ready), pod(v1.PodCondition{Type: v1.PodReady, Status: v1.ConditionTrue, LastProbeTime: metav1.Now()}), false},
		{"a foreign condition only", pod(ready), pod(ready, gate), false},
	} {
		if got := KubeletConditionsChanged(tc.old, tc.cur); got != tc.want {
			t.Errorf("%s: KubeletConditionsChanged = %v, want %v", tc.name, got, tc.want)
		}
	}
}
