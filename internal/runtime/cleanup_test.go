package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	cciContainerd "github.com/cci-project/cci/internal/containerd"
	"github.com/cci-project/cci/internal/network"
)

// teardownNetwork is a Network whose Teardown fails with err, and which
// records whether the context it was given was already cancelled.
type teardownNetwork struct {
	err         error
	calls       int
	ctxCanceled bool
}

func (n *teardownNetwork) Setup(context.Context, string, []network.PortMapping) (*network.Sandbox, error) {
	return nil, errors.New("not used")
}

func (n *teardownNetwork) Teardown(ctx context.Context, _ string) error {
	n.calls++
	n.ctxCanceled = ctx.Err() != nil
	return n.err
}

// release runs while the agent stops (its context cancelled): the network
// teardown must still be given a live context, or the pod's netns and IP
// stay for good; and a teardown that failed leaves the pod not released,
// so that the next agent tries again.
func TestReleaseAfterAgentStop(t *testing.T) {
	for _, tc := range []struct {
		name         string
		teardownErr  error
		wantReleased bool
	}{
		{"teardown succeeds", nil, true},
		{"teardown fails", errors.New("ipam: lease store locked"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // the agent is stopping
			nw := &teardownNetwork{err: tc.teardownErr}
			r := &Runtime{ctx: ctx, cfg: Config{StateDir: t.TempDir(), Network: nw, Log: slog.New(slog.DiscardHandler)}}
			w := &podWorker{r: r, log: r.cfg.Log, rec: newRecord(testPod()), tasks: map[string]*liveTask{}, probes: map[string]*probeSet{}}
			w.release()
			if nw.calls != 1 {
				t.Fatalf("Teardown called %d times, want 1", nw.calls)
			}
			if nw.ctxCanceled {
				t.Error("Teardown got the agent's cancelled context: the clean-up would be cut short")
			}
			if w.rec.Released != tc.wantReleased {
				t.Errorf("Released = %v, want %v", w.rec.Released, tc.wantReleased)
			}
		})
	}
}

const testCtrdNamespace = "cci-runtime-test"

// testContainerd runs a containerd of the test's own and returns a client
// of it; the test is skipped where containerd cannot run.
func testContainerd(t *testing.T) (*containerd.Client, context.Context) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a real containerd and runc")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd not installed")
	}
	// Socket paths must stay short; t.TempDir paths can be long.
	run, err := os.MkdirTemp("/run", "cci-rt-")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx := namespaces.WithNamespace(context.Background(), testCtrdNamespace)
	d, err := cciContainerd.Start(ctx, cciContainerd.Config{
		Root:    filepath.Join(dir, "root"),
		State:   filepath.Join(run, "state"),
		LogPath: filepath.Join(dir, "containerd.log"),
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		_ = os.RemoveAll(run)
		t.Fatal(err)
	}
	cl, err := containerd.New(d.Address(), containerd.WithDefaultNamespace(testCtrdNamespace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cl.Close()
		if err := d.Stop(); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Logf("containerd log:\n%s", data)
		}
		_ = os.RemoveAll(run)
		// containerd leaves the namespace's parent cgroup behind.
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + testCtrdNamespace)
		dirs = append(dirs, "/sys/fs/cgroup/"+testCtrdNamespace)
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	})
	return cl, ctx
}

// sleeper creates a container of a rootfs holding only a static busybox
// that sleeps; the test removes it at the end if it is still there.
func sleeper(t *testing.T, cl *containerd.Client, ctx context.Context, id string) containerd.Container {
	t.Helper()
	const src = "/bin/busybox"
	if _, err := os.Stat(src); err != nil {
		t.Skipf("needs a static busybox at %s (apt-get install busybox-static): %v", src, err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	ctr, err := cl.NewContainer(ctx, id, containerd.WithNewSpec(oci.WithRootFSPath(rootfs), oci.WithProcessArgs("/bin/busybox", "sleep", "1000")))
	if err != nil {
		t.Fatalf("create container %q: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, err := cl.LoadContainer(ctx, id)
		if err != nil {
			return
		}
		if task, err := c.Task(ctx, nil); err == nil {
			_, _ = task.Delete(ctx, containerd.WithProcessKill)
		}
		_ = c.Delete(ctx)
	})
	return ctr
}

// processRuns tells whether pid is a live process (not a zombie).
func processRuns(pid uint32) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z'
}

// A container start cut short by containerd dying leaves a task that the
// restarted containerd re-adopts from its shim, while the cut attempt's
// undo removed the container record. The retried start makes the container
// again and must not fail on that task ("task …: already exists"): newTask
// deletes it and creates a fresh one.
func TestNewTaskReplacesStaleTask(t *testing.T) {
	cl, ctx := testContainerd(t)
	const id = "half-made"
	ctr := sleeper(t, cl, ctx, id)
	stale, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create the task the cut start leaves: %v", err)
	}
	stalePid := stale.Pid()
	// The cut attempt's undo: the container record goes, its task stays.
	if err := cl.ContainerService().Delete(ctx, id); err != nil {
		t.Fatalf("delete the container record: %v", err)
	}
	ctr = sleeper(t, cl, ctx, id)
	// What the retry met before newTask handled it.
	if _, err := ctr.NewTask(ctx, cio.NullIO); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("NewTask over a stale task: err = %v, want AlreadyExists (the test no longer sets up the stale task)", err)
	}

	creators := 0
	task, err := newTask(ctx, ctx, cl, ctr, func() cio.Creator { creators++; return cio.NullIO })
	if err != nil {
		t.Fatalf("newTask over a stale task: %v", err)
	}
	if creators != 2 {
		t.Errorf("IO made %d times, want 2 (one per try)", creators)
	}
	if task.Pid() == stalePid {
		t.Errorf("newTask returned the stale task (pid %d)", stalePid)
	}
	if processRuns(stalePid) {
		t.Errorf("the stale task's process %d still runs", stalePid)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start the new task: %v", err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running {
		t.Errorf("new task status = %v, %v; want running", st.Status, err)
	}

	// Any other failure is returned as it is, with no second try.
	creators = 0
	if _, err := newTask(ctx, ctx, cl, ctr, func() cio.Creator {
		creators++
		return func(string) (cio.IO, error) { return nil, io.ErrClosedPipe }
	}); !errors.Is(err, io.ErrClosedPipe) || creators != 1 {
		t.Errorf("newTask with failing IO: err = %v after %d tries, want %v after 1", err, creators, io.ErrClosedPipe)
	}
}

// A clean-up the agent runs as it stops (its context cancelled) still
// removes the container and its task: cut short, their shim, cgroup and
// mounts would stay with nothing left to say they exist.
func TestRemoveContainerAfterAgentStop(t *testing.T) {
	cl, ctx := testContainerd(t)
	const id = "removed-on-stop"
	ctr := sleeper(t, cl, ctx, id)
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid := task.Pid()

	agentCtx, stop := context.WithCancel(ctx)
	stop()
	r := &Runtime{ctx: agentCtx, cfg: Config{Containerd: cl, Log: slog.New(slog.DiscardHandler)}}
	w := &podWorker{r: r, log: r.cfg.Log}
	w.removeContainer(id, nil)

	if _, err := cl.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
		t.Errorf("container after removeContainer: err = %v, want NotFound", err)
	}
	if processRuns(pid) {
		t.Errorf("the container's process %d still runs", pid)
	}
}

// A container the record says is not running but that containerd still
// holds with its task (the agent that recorded its exit was killed before
// it removed the container) is removed at re-adoption, task and all.
func TestDeleteStaleTask(t *testing.T) {
	cl, ctx := testContainerd(t)
	const id = "exited-not-deleted"
	ctr := sleeper(t, cl, ctx, id)
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	pid := task.Pid()

	r := &Runtime{ctx: ctx, cfg: Config{Containerd: cl, Log: slog.New(slog.DiscardHandler)}}
	w := &podWorker{r: r, log: r.cfg.Log}
	w.deleteStaleTask(&ctrRecord{Name: "main", ID: id})

	if _, err := ctr.Task(ctx, nil); !errdefs.IsNotFound(err) {
		t.Errorf("task after deleteStaleTask: err = %v, want NotFound", err)
	}
	if processRuns(pid) {
		t.Errorf("the task's process %d still runs", pid)
	}
	if _, err := cl.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
		t.Errorf("container after deleteStaleTask: err = %v, want NotFound", err)
	}
}

// A start cut short can leave a task whose container record its undo
// already removed (containerd finishes the create after the agent gave
// up on it). The container's next run has an id of its own, so nothing
// would ever replace that task: re-adoption (deleteStaleTask) and the
// next run's start (removeContainer of the earlier id) delete it, shim,
// process and all, whether it was only created or runs.
func TestRemoveTaskWithoutContainer(t *testing.T) {
	cl, ctx := testContainerd(t)
	tasksOf := func(id string) int {
		t.Helper()
		l, err := cl.TaskService().List(ctx, &tasks.ListTasksRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range l.Tasks {
			if p.ID == id {
				n++
			}
		}
		return n
	}
	orphan := func(id string, start bool) uint32 {
		t.Helper()
		ctr := sleeper(t, cl, ctx, id)
		task, err := ctr.NewTask(ctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		if start {
			if err := task.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.ContainerService().Delete(ctx, id); err != nil {
			t.Fatalf("delete the container record: %v", err)
		}
		t.Cleanup(func() { _, _ = deleteOrphanTask(ctx, cl, id) })
		if n := tasksOf(id); n != 1 {
			t.Fatalf("%d tasks %s without their container, want 1 (the test no longer sets it up)", n, id)
		}
		return task.Pid()
	}
	r := &Runtime{ctx: ctx, cfg: Config{Containerd: cl, Log: slog.New(slog.DiscardHandler)}}
	w := &podWorker{r: r, log: r.cfg.Log}
	gone := func(id string, pid uint32) {
		t.Helper()
		if n := tasksOf(id); n != 0 {
			t.Errorf("%d tasks %s, want none", n, id)
		}
		if _, err := cl.LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("container %s (the stand-in): err = %v, want NotFound", id, err)
		}
		if processRuns(pid) {
			t.Errorf("the process %d of task %s still runs", pid, id)
		}
	}

	created := orphan("cut-created", false)
	w.deleteStaleTask(&ctrRecord{Name: "main", ID: "cut-created"})
	gone("cut-created", created)

	running := orphan("cut-running", true)
	w.removeContainer("cut-running", nil)
	gone("cut-running", running)

	// Nothing there: nothing to do, and no error.
	if found, err := deleteOrphanTask(ctx, cl, "never-made"); found || err != nil {
		t.Errorf("deleteOrphanTask of no task = %v, %v; want false, nil", found, err)
	}
}
