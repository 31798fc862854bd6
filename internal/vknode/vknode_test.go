package vknode

import (
	"fmt"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// TestPodQueueLimiter: 500 pods arriving at once are each handled after
// the 5 ms first delay, where virtual-kubelet's default makes the ones past
// the 100th wait for a shared bucket of 10 a second; a failing pod still
// backs off.
func TestPodQueueLimiter(t *testing.T) {
	worst := func(rl workqueue.TypedRateLimiter[any]) time.Duration {
		var max time.Duration
		for i := range 500 {
			if d := rl.When(fmt.Sprintf("ns/pod-%d", i)); d > max {
				max = d
			}
		}
		return max
	}
	if d := worst(PodQueueLimiter()); d > 5*time.Millisecond {
		t.Errorf("the 500th new pod waits %s, want at most 5ms", d)
	}
	if d := worst(workqueue.DefaultTypedControllerRateLimiter[any]()); d < 10*time.Second {
		t.Errorf("client-go's default limiter let 500 pods through within %s; this test no longer shows what PodQueueLimiter avoids", d)
	}
	rl := PodQueueLimiter()
	var last time.Duration
	for range 5 {
		last = rl.When("ns/failing")
	}
	if last != 80*time.Millisecond {
		t.Errorf("fifth retry of a failing pod after %s, want 80ms", last)
	}
	rl.Forget("ns/failing")
	if d := rl.When("ns/failing"); d != 5*time.Millisecond {
		t.Errorf("after Forget the delay is %s, want 5ms", d)
	}
}

// TestKubeletEvents: virtual-kubelet's success events are dropped, its
// failures and everything else pass.
func TestKubeletEvents(t *testing.T) {
	fake := record.NewFakeRecorder(10)
	r := KubeletEvents(fake)
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	r.Event(pod, v1.EventTypeNormal, "ProviderCreateSuccess", "Create pod in provider successfully")
	r.Eventf(pod, v1.EventTypeNormal, "ProviderDeleteSuccess", "%s", "Delete pod in provider successfully")
	r.AnnotatedEventf(pod, nil, v1.EventTypeNormal, "ProviderUpdateSuccess", "%s", "Update pod in provider successfully")
	r.Event(pod, v1.EventTypeWarning, "ProviderCreateFailed", "no room")
	r.Eventf(pod, v1.EventTypeNormal, "Started", "Started container %s", "c")
	close(fake.Events)
	var got []string
	for e := range fake.Events {
		got = append(got, e)
	}
	want := []string{"Warning ProviderCreateFailed no room", "Normal Started Started container c"}
	if !slices.Equal(got, want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
}
