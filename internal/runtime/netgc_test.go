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
