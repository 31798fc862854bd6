package containerd

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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
)

const testNamespace = "cci-test"

func TestConfigDefaults(t *testing.T) {
	long := "/run/" + strings.Repeat("x", 120)
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "no root", cfg: Config{State: "/run/s"}, wantErr: "Root is required"},
		{name: "no state", cfg: Config{Root: "/var/r"}, wantErr: "State is required"},
		{name: "same dirs", cfg: Config{Root: "/x", State: "/x"}, wantErr: "must differ"},
		{name: "long socket", cfg: Config{Root: "/r", State: long}, wantErr: "fewer than 100"},
		{name: "bad binary", cfg: Config{Binary: "/nonexistent/containerd", Root: "/r", State: "/s"}, wantErr: "find containerd binary"},
		{name: "defaults", cfg: Config{Root: "/r", State: "/s"}, check: func(t *testing.T, c Config) {
			if c.Address != "/s/containerd.sock" || c.LogPath != "/s/containerd.log" || !filepath.IsAbs(c.Binary) {
				t.Errorf("defaults not applied: %+v", c)
			}
			toml := c.tomlConfig()
			for _, want := range []string{`version = 2`, `root = "/r"`, `state = "/s"`, `address = "/s/containerd.sock"`, `"io.containerd.grpc.v1.cri"`} {
				if !strings.Contains(toml, want) {
					t.Errorf("config lacks %s:\n%s", want, toml)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath("containerd"); err != nil && tc.wantErr == "" {
				t.Skip("containerd not installed")
			}
			c, err := tc.cfg.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// TestDaemonKeepsContainers runs a container, then stops, restarts and
// kills the daemon under it and checks the container survives each time and
// is re-adopted.
func TestDaemonKeepsContainers(t *testing.T) {
	cfg := testConfig(t)
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)

	d, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cur := d // the daemon that cleanup must stop
	t.Cleanup(func() {
		if err := cur.Stop(); err != nil {
			t.Errorf("stop containerd: %v", err)
		}
	})

	rootfs := busyboxRootfs(t)
	cl := newClient(t, d.Address())
	ctr, err := cl.NewContainer(ctx, "sleeper",
		client.WithNewSpec(oci.WithRootFSPath(rootfs), oci.WithProcessArgs("/bin/busybox", "sleep", "1000")))
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() { removeContainer(t, cur.Address(), "sleeper") })
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}
	pid := int(task.Pid())
	t.Logf("container process pid %d", pid)

	// 1. Stop: the container must keep running without a daemon.
	if err := d.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !processRuns(pid) {
		t.Fatalf("container process %d died with the daemon", pid)
	}

	// 2. Start again on the same dirs: the task is re-adopted.
	d, err = Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	cur = d
	requireRunning(t, d.Address(), "sleeper", pid)

	// 3. kill -9 the daemon: it is restarted, OnRestart fires, task survives.
	restarted := make(chan struct{}, 1)
	d.OnRestart(func() { restarted <- struct{}{} })
	old := d.pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	case <-time.After(30 * time.Second):
		t.Fatal("OnRestart not called within 30 s after kill -9")
	}
	if now := d.pid(); now == old || !processRuns(now) {
		t.Fatalf("daemon pid after restart = %d (was %d), want a new live one", now, old)
	}
	if !processRuns(pid) {
		t.Fatalf("container process %d died when the daemon was killed", pid)
	}
	requireRunning(t, d.Address(), "sleeper", pid)
	select {
	case <-d.Done():
		t.Fatalf("Done closed while running: %v", d.Err())
	default:
	}
}

// TestStartStateInUse: a second Start on a State held by a live Daemon
// fails with ErrStateInUse and leaves the first alone; once the holder is
// gone (agent crash), Start replaces its leftover daemon; a pid file that
// points at an unrelated process does not get that process killed.
func TestStartStateInUse(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()

	d1, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d1.Stop() })

	if d2, err := Start(ctx, cfg); !errors.Is(err, ErrStateInUse) {
		if d2 != nil {
			_ = d2.Stop()
		}
		t.Fatalf("second Start: err = %v, want ErrStateInUse", err)
	} else {
		t.Logf("second Start: %v", err)
	}
	if err := ping(ctx, d1.Address()); err != nil {
		t.Fatalf("first daemon no longer answers: %v", err)
	}

	// The agent "crashes": its lock goes, its containerd stays.
	leftover := d1.pid()
	d1.abandon()
	if !isOurDaemon(leftover, filepath.Join(cfg.State, configName)) {
		t.Fatal("abandoned daemon is gone already")
	}
	d3, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start after crash: %v", err)
	}
	t.Cleanup(func() { _ = d3.Stop() })
	if isOurDaemon(leftover, filepath.Join(cfg.State, configName)) {
		t.Fatalf("leftover daemon %d still runs", leftover)
	}
	if d3.pid() == leftover {
		t.Fatal("new daemon has the leftover's pid")
	}
	if err := d3.Stop(); err != nil {
		t.Fatal(err)
	}

	// A pid file naming some other process: Start must not kill it.
	other := exec.Command("/bin/busybox", "sleep", "100")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if err := os.WriteFile(filepath.Join(cfg.State, pidName), []byte(strconv.Itoa(other.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	d4, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start with foreign pid file: %v", err)
	}
	t.Cleanup(func() { _ = d4.Stop() })
	if !processRuns(other.Process.Pid) {
		t.Fatal("Start killed an unrelated process named by the pid file")
	}
}

// abandon simulates the agent dying: supervision and the State lock go, the
// daemon process stays.
func (d *Daemon) abandon() {
	d.stopOnce.Do(func() {
		close(d.stop)
		<-d.supDone
		d.release()
		d.finish(nil)
	})
}

func testConfig(t *testing.T) Config {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a real containerd and runc")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd not installed")
	}
	// Socket paths must stay short; t.TempDir paths can be long.
	run, err := os.MkdirTemp("/run", "cci-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(run) })
	dir := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CCI_TEST_SHOW_LOG") != "" {
			data, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Logf("containerd log:\n%s", data)
		}
		// containerd leaves the namespace's parent cgroup behind.
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + testNamespace)
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	})
	return Config{
		Root:    filepath.Join(dir, "root"),
		State:   filepath.Join(run, "state"),
		LogPath: filepath.Join(dir, "containerd.log"),
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// busyboxRootfs makes a rootfs folder holding only /bin/busybox.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	src := "/bin/busybox"
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("need a static busybox at %s (apt-get install busybox-static): %v", src, err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(rootfs, "bin", "busybox"), os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return rootfs
}

func newClient(t *testing.T, address string) *client.Client {
	t.Helper()
	cl, err := client.New(address, client.WithDefaultNamespace(testNamespace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// requireRunning waits until the daemon reports the container's task
// running with the given pid.
func requireRunning(t *testing.T, address, id string, pid int) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), testNamespace)
	cl := newClient(t, address)
	var last error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		last = func() error {
			ctr, err := cl.LoadContainer(ctx, id)
			if err != nil {
				return err
			}
			task, err := ctr.Task(ctx, nil)
			if err != nil {
				return err
			}
			st, err := task.Status(ctx)
			if err != nil {
				return err
			}
			if st.Status != client.Running || int(task.Pid()) != pid {
				return fmt.Errorf("task status %q pid %d, want running pid %d", st.Status, task.Pid(), pid)
			}
			return nil
		}()
		if last == nil {
			return
		}
	}
	t.Fatalf("container %q not re-adopted: %v", id, last)
}

// removeContainer kills and deletes the test container; if the daemon
// cannot do it, it kills the container's shim (found by our socket address)
// so nothing outlives the test.
func removeContainer(t *testing.T, address, id string) {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), testNamespace), 20*time.Second)
	defer cancel()
	err := func() error {
		cl, err := client.New(address, client.WithDefaultNamespace(testNamespace))
		if err != nil {
			return err
		}
		defer cl.Close()
		ctr, err := cl.LoadContainer(ctx, id)
		if err != nil {
			return err
		}
		if task, err := ctr.Task(ctx, nil); err == nil {
			exit, err := task.Wait(ctx)
			if err != nil {
				return err
			}
			if err := task.Kill(ctx, syscall.SIGKILL); err == nil {
				<-exit
			}
			if _, err := task.Delete(ctx); err != nil {
				return err
			}
		}
		return ctr.Delete(ctx)
	}()
	if err != nil {
		t.Errorf("remove container %q: %v", id, err)
	}
	for _, pid := range shimPids(address) {
		t.Logf("killing leftover shim %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// shimPids lists shims whose command line names our daemon's address.
func shimPids(address string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte("containerd-shim")) && bytes.Contains(cmdline, []byte(address)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func processRuns(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z'
}
