package runtime

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestActiveDeadline(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		deadline *int64
		start    *metav1.Time
		now      time.Time
		left     time.Duration
		past     bool
	}{
		{"no deadline", nil, &metav1.Time{Time: start}, start.Add(time.Hour), 0, false},
		{"not started", ptr.To[int64](5), nil, start.Add(time.Hour), 0, false},
		{"before", ptr.To[int64](5), &metav1.Time{Time: start}, start.Add(2 * time.Second), 3 * time.Second, false},
		{"at", ptr.To[int64](5), &metav1.Time{Time: start}, start.Add(5 * time.Second), 0, true},
		// An update that shortens the deadline of a pod running for a
		// while takes effect at once.
		{"shortened below the running time", ptr.To[int64](5), &metav1.Time{Time: start}, start.Add(time.Minute), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPod()
			p.Spec.ActiveDeadlineSeconds = tc.deadline
			left, past := activeDeadline(p, tc.start, tc.now)
			if left != tc.left || past != tc.past {
				t.Errorf("activeDeadline = %v, %v; want %v, %v", left, past, tc.left, tc.past)
			}
		})
	}
}

func TestObservedGeneration(t *testing.T) {
	for _, gen := range []int64{1, 2, 500} {
		rec := newRecord(testPod())
		rec.Pod.Generation = gen
		p := buildPod(rec, "192.0.2.2", time.Now())
		if p.Status.ObservedGeneration != gen {
			t.Errorf("generation %d: status.observedGeneration %d", gen, p.Status.ObservedGeneration)
		}
	}
}

// The DisruptionTarget an eviction sets before it deletes the pod stays
// in the status the agent writes, during and after the deletion.
func TestDeleteKeepsDisruptionTarget(t *testing.T) {
	w := &podWorker{rec: newRecord(testPod())}
	evicted := testPod()
	evicted.Status.Conditions = []v1.PodCondition{
		{Type: v1.DisruptionTarget, Status: v1.ConditionTrue, Reason: "EvictionByEvictionAPI"},
		{Type: v1.PodReady, Status: v1.ConditionFalse},
	}
	w.handle(event{kind: evDelete, pod: evicted})
	p := buildPod(w.rec, "", time.Now())
	if condition(p, v1.DisruptionTarget) != v1.ConditionTrue {
		t.Errorf("conditions %+v: no DisruptionTarget", p.Status.Conditions)
	}

	// The same condition seen on the API while the pod runs.
	w = &podWorker{rec: newRecord(testPod())}
	w.handle(event{kind: evAPIStatus, pod: evicted})
	if p := buildPod(w.rec, "", time.Now()); condition(p, v1.DisruptionTarget) != v1.ConditionTrue {
		t.Errorf("conditions %+v: no DisruptionTarget", p.Status.Conditions)
	}
}
