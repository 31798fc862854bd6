package runtime

import (
	"testing"

	v1 "k8s.io/api/core/v1"
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
