package bench

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// podTimes is what the bench saw of one pod, in its own clock.
type podTimes struct {
	Name    string
	UID     types.UID
	Node    string
	Created time.Time // the bench's create call began (zero for pods a controller made)
	Bound   time.Time // first seen with spec.nodeName
	Running time.Time // first seen Running (or already finished)
	Done    time.Time // first seen Succeeded or Failed
	Deleted time.Time // the watch said it is gone
	Phase   v1.PodPhase
}

// tracker watches the bench's pods and notes when each reached each state.
// Times are those at which the watch event arrived: what any API client
// would see.
type tracker struct {
	mu      sync.Mutex
	pods    map[string]*podTimes // by name
	changed chan struct{}        // closed and replaced at every change
	stop    context.CancelFunc
}

// track starts watching pods in ns with the label selector and returns once
// the watch runs.
func track(ctx context.Context, kube kubernetes.Interface, ns, selector string) (*tracker, error) {
	ctx, cancel := context.WithCancel(ctx)
	t := &tracker{pods: map[string]*podTimes{}, changed: make(chan struct{}), stop: cancel}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return kube.CoreV1().Pods(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return kube.CoreV1().Pods(ns).Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &v1.Pod{}, 0, cache.Indexers{})
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { t.observe(obj, false) },
		UpdateFunc: func(_, obj any) { t.observe(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			t.observe(obj, true)
		},
	})
	if err != nil {
		cancel()
		return nil, err
	}
	go inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		cancel()
		return nil, fmt.Errorf("watch pods in %q: %w", ns, context.Cause(ctx))
	}
	return t, nil
}

func (t *tracker) Stop() { t.stop() }

func (t *tracker) observe(obj any, deleted bool) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.get(pod.Name)
	if p.UID != "" && p.UID != pod.UID {
		return // an older pod of the same name
	}
	p.UID = pod.UID
	if pod.Spec.NodeName != "" && p.Bound.IsZero() {
		p.Bound, p.Node = now, pod.Spec.NodeName
	}
	p.Phase = pod.Status.Phase
	switch pod.Status.Phase {
	case v1.PodRunning:
		if p.Running.IsZero() {
			p.Running = now
		}
	case v1.PodSucceeded, v1.PodFailed:
		if p.Running.IsZero() {
			p.Running = now
		}
		if p.Done.IsZero() {
			p.Done = now
		}
	}
	if deleted && p.Deleted.IsZero() {
		p.Deleted = now
	}
	close(t.changed)
	t.changed = make(chan struct{})
}

// get returns the record of name, creating it; the caller holds mu.
func (t *tracker) get(name string) *podTimes {
	p, ok := t.pods[name]
	if !ok {
		p = &podTimes{Name: name}
		t.pods[name] = p
	}
	return p
}

// created notes that the bench is about to create the pod name.
func (t *tracker) created(name string, at time.Time) {
	t.mu.Lock()
	t.get(name).Created = at
	t.mu.Unlock()
}

// forget drops a pod's record (after a failed create).
func (t *tracker) forget(name string) {
	t.mu.Lock()
	delete(t.pods, name)
	t.mu.Unlock()
}

// snapshot returns a copy of every record, sorted by name.
func (t *tracker) snapshot() []podTimes {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]podTimes, 0, len(t.pods))
	for _, p := range t.pods {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// pod returns a copy of one record.
func (t *tracker) pod(name string) (podTimes, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.pods[name]
	if !ok {
		return podTimes{}, false
	}
	return *p, true
}

// wait blocks until cond holds over the records, ctx ends or timeout passes.
func (t *tracker) wait(ctx context.Context, timeout time.Duration, cond func(pods map[string]*podTimes) bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		ok := cond(t.pods)
		ch := t.changed
		t.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("timed out after %s", timeout)
		}
	}
}

// count returns how many records satisfy f; the caller must not hold mu.
func (t *tracker) count(f func(p *podTimes) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, p := range t.pods {
		if f(p) {
			n++
		}
	}
	return n
}

// curve turns event times into a step curve: how many events had happened
// at each time, in seconds after t0.
func curve(t0 time.Time, times []time.Time) [][2]float64 {
	var ts []float64
	for _, t := range times {
		if !t.IsZero() {
			ts = append(ts, t.Sub(t0).Seconds())
		}
	}
	sort.Float64s(ts)
	pts := [][2]float64{{0, 0}}
	for i, v := range ts {
		pts = append(pts, [2]float64{v, float64(i + 1)})
	}
	return pts
}
