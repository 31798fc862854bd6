package runtime

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/network"
)

// flakyNetwork fails the first fails teardowns of each id, then succeeds
// and forgets the id's namespace.
type flakyNetwork struct {
	mu     sync.Mutex
	fails  int
	calls  map[string]int
	netns  []string
	doneCh chan string
}

func (n *flakyNetwork) Setup(context.Context, string, []network.PortMapping) (*network.Sandbox, error) {
	return nil, errors.New("not used")
}

func (n *flakyNetwork) Teardown(_ context.Context, id string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls[id]++
	if n.calls[id] <= n.fails {
		return errors.New("netplugin failed with no error message: signal: killed")
	}
	n.netns = slices.DeleteFunc(n.netns, func(s string) bool { return s == id })
	n.doneCh <- id
	return nil
}

func shortNetGC(t *testing.T) {
	first := teardownRetryFirst
	teardownRetryFirst = 10 * time.Millisecond
	t.Cleanup(func() { teardownRetryFirst = first })
}

// A teardown that fails when the pod is released is tried again until it
// succeeds, though the worker has forgotten the pod.
func TestTeardownRetriedAfterFailure(t *testing.T) {
	shortNetGC(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nw := &flakyNetwork{fails: 3, calls: map[string]int{}, doneCh: make(chan string, 1)}
	r := &Runtime{ctx: ctx, pods: map[string]*podWorker{}, cfg: Config{StateDir: t.TempDir(), Network: nw, Log: slog.New(slog.DiscardHandler)}}
	w := &podWorker{r: r, log: r.cfg.Log, rec: newRecord(testPod()), tasks: map[string]*liveTask{}, probes: map[string]*probeSet{}}
	w.release()
	if w.rec.Released {
		t.Fatal("released though the teardown failed")
	}
	select {
	case id := <-nw.doneCh:
		if id != string(testPod().UID) {
			t.Errorf("tore down %q, want the pod's %q", id, testPod().UID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed teardown was not tried again until it succeeded")
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if got := nw.calls[string(testPod().UID)]; got != 4 {
		t.Errorf("Teardown called %d times, want 4 (3 failures, then success)", got)
	}
}

// ownedNetwork is a flakyNetwork that records the namespaces it made.
type ownedNetwork struct{ *flakyNetwork }

func (n ownedNetwork) Owned() ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.netns), nil
}

// At start, the networks the host made for pods it no longer has are torn
// down; the running pods' networks are left alone.
func TestSweepNetworks(t *testing.T) {
	shortNetGC(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	running := testPod()
	nw := ownedNetwork{&flakyNetwork{calls: map[string]int{}, netns: []string{string(running.UID), "gone-pod-uid"}, doneCh: make(chan string, 2)}}
	r := &Runtime{ctx: ctx, pods: map[string]*podWorker{}, cfg: Config{StateDir: t.TempDir(), Network: nw, Log: slog.New(slog.DiscardHandler)}}
	w := &podWorker{r: r, log: r.cfg.Log, rec: newRecord(running), tasks: map[string]*liveTask{}, probes: map[string]*probeSet{}}
	r.pods[key(running.Namespace, running.Name)] = w
	r.sweepNetworks()
	select {
	case id := <-nw.doneCh:
		if id != "gone-pod-uid" {
			t.Errorf("tore down %q, want the gone pod's", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gone pod's network was not torn down")
	}
	time.Sleep(100 * time.Millisecond)
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.calls[string(running.UID)] != 0 {
		t.Errorf("the running pod's network was torn down")
	}
	if !slices.Equal(nw.netns, []string{string(running.UID)}) {
		t.Errorf("networks left: %v, want the running pod's only", nw.netns)
	}
}
