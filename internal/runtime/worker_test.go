package runtime

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	v1 "k8s.io/api/core/v1"
)

// A container that keeps crashing waits as on a kubelet: restarted at once
// after its first exit, then after 10 s, doubling to a 5 min cap; a run
// longer than 10 min starts the back-off over.
func TestCrashLoopBackoff(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		runs  []time.Duration // how long each start ran before it exited
		waits []time.Duration // the wait before each restart
	}{
		{
			name:  "doubling to the cap",
			runs:  []time.Duration{time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second},
			waits: []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute},
		},
		{
			name:  "reset after a long run",
			runs:  []time.Duration{time.Second, time.Second, time.Second, 11 * time.Minute, time.Second, time.Second},
			waits: []time.Duration{0, 10 * time.Second, 20 * time.Second, 0, 10 * time.Second, 20 * time.Second},
		},
		{
			name:  "a run of exactly 10 min does not reset",
			runs:  []time.Duration{time.Second, time.Second, 10 * time.Minute},
			waits: []time.Duration{0, 10 * time.Second, 20 * time.Second},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecord(testPod())
			cr := rec.Containers[0]
			start := t0
			for i, run := range tc.runs {
				exit := start.Add(run)
				cr.Started = true
				cr.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}
				cr.scheduleRestart(start, exit)
				if got := cr.BackoffUntil.Sub(exit); got != tc.waits[i] {
					t.Errorf("exit %d: wait %s, want %s", i+1, got, tc.waits[i])
				}
				// While it waits the status names the wait, as the kubelet's does.
				if w := buildPod(rec, "", exit).Status.ContainerStatuses[0].State.Waiting; tc.waits[i] > 0 &&
					(w == nil || w.Reason != "CrashLoopBackOff" || !strings.HasPrefix(w.Message, "back-off "+tc.waits[i].String()+" ")) {
					t.Errorf("exit %d: waiting %+v, want CrashLoopBackOff with back-off %s", i+1, w, tc.waits[i])
				}
				// The restart, as ensureStarted does it after an exit.
				cr.Backoff = nextBackoff(cr.Backoff)
				start = cr.BackoffUntil
			}
		})
	}
}

// TestStartTurns bounds the set-ups in flight and gives a slot back when
// its holder hangs.
func TestStartTurns(t *testing.T) {
	r := &Runtime{starts: make(chan struct{}, 2)}
	a, b := r.turn(), r.turn()
	third := make(chan func(), 1)
	go func() { third <- r.turn() }()
	select {
	case <-third:
		t.Fatal("a third set-up got a slot while two were in flight")
	case <-time.After(50 * time.Millisecond):
	}
	a()
	a() // twice is harmless
	var c func()
	select {
	case c = <-third:
	case <-time.After(time.Second):
		t.Fatal("the third set-up did not get the slot given back")
	}
	b()
	c()
	if n := len(r.starts); n != 0 {
		t.Fatalf("%d slots still taken", n)
	}
	if (&Runtime{}).turn() == nil {
		t.Fatal("a runtime without slots returned no release")
	}
}

// Every container name Kubernetes allows gives a containerd id that
// containerd takes; the plain form stays where it fits.
func TestContainerID(t *testing.T) {
	pod := &v1.Pod{}
	pod.UID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	long63 := strings.Repeat("a", 30) + "-" + strings.Repeat("b", 32)
	for _, tc := range []struct {
		name  string
		plain bool
	}{
		{"app", true},
		{strings.Repeat("x", 39), true},
		{strings.Repeat("x", 40), false},
		{long63, false},
		{"a--b", false},
		{strings.Repeat("-", 1) + "a", false},
		{strings.Repeat("1-", 31) + "z", false},
	} {
		id := containerID(pod, tc.name)
		if err := identifiers.Validate(id); err != nil {
			t.Errorf("%q: id %q: %v", tc.name, id, err)
		}
		if plain := id == string(pod.UID)+"-"+tc.name; plain != tc.plain {
			t.Errorf("%q: id %q, plain form %v, want %v", tc.name, id, plain, tc.plain)
		}
		if again := containerID(pod, tc.name); again != id {
			t.Errorf("%q: id not stable: %q then %q", tc.name, id, again)
		}
		// Later runs: ids containerd takes, each its own, the first run's
		// unchanged.
		seen := map[string]int32{id: 0}
		for _, run := range []int32{1, 2, 10, 12345} {
			rid := runContainerID(pod, tc.name, run)
			if err := identifiers.Validate(rid); err != nil {
				t.Errorf("%q run %d: id %q: %v", tc.name, run, rid, err)
			}
			if other, ok := seen[rid]; ok {
				t.Errorf("%q: runs %d and %d share id %q", tc.name, other, run, rid)
			}
			seen[rid] = run
		}
		if first := runContainerID(pod, tc.name, 0); first != id {
			t.Errorf("%q: first run's id %q, want containerID's %q", tc.name, first, id)
		}
	}
	// A later run's id is never the first run's id of another name.
	if a, b := runContainerID(pod, "app", 1), containerID(pod, "app-1"); a == b {
		t.Errorf("run 1 of app and container app-1 share id %q", a)
	}
	// Two long names with the same beginning get different ids.
	a, b := containerID(pod, long63), containerID(pod, long63[:62]+"c")
	if a == b {
		t.Errorf("names differing at the end share id %q", a)
	}
}

// A start cut short by containerd dying is retried, not counted as the
// container's failure; a start containerd or runc refused is a failure.
func TestContainerdLost(t *testing.T) {
	for _, tc := range []struct {
		err  string
		lost bool
	}{
		{`start container "c": error reading from server: EOF`, true},
		{`rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial unix /x/containerd.sock: connect: connection refused"`, true},
		{`failed to create shim task: ttrpc: closed`, true},
		{`failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: "nope": executable file not found in $PATH`, false},
		{`failed to create shim task: OCI runtime create failed: permission denied`, false},
	} {
		if got := containerdLost(errors.New(tc.err)); got != tc.lost {
			t.Errorf("containerdLost(%q) = %v, want %v", tc.err, got, tc.lost)
		}
	}
}
