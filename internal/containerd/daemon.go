// Package containerd supervises the agent's private containerd daemon.
//
// It writes the daemon's config, starts it as a child process in its own
// process group, waits until its socket answers, restarts it when it dies and
// stops it on request. Container shims are separate processes that the
// daemon starts in process groups of their own; neither the daemon's death
// nor Stop touches them, so containers keep running while the daemon (or the
// whole agent) restarts, and the next daemon on the same State re-adopts
// them.
//
// Lifecycle of a Daemon:
//
//	Start ─► starting ──ready──► running ──died──► restarting ──ready──► running …
//	            │                   │                  │
//	            │ not ready in 20 s │ Stop             │ Stop, or it keeps dying
//	            ▼                   ▼                  ▼
//	     Start returns error     stopped      stopped, or failed: Done closed, Err set
package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
)

// ErrStateInUse says that another live Daemon (in this process or another
// agent) holds the State directory. Start never touches a daemon that a live
// agent supervises; it replaces only a daemon whose agent is gone.
var ErrStateInUse = errors.New("containerd state directory is in use by another running agent")

const (
	readyTimeout = 20 * time.Second // Start's wait for the socket to answer
	stopTimeout  = 10 * time.Second // SIGTERM grace before SIGKILL
	killTimeout  = 5 * time.Second  // wait after SIGKILL
	// A daemon that ran this long before dying starts a fresh back-off.
	stableAfter = time.Minute
	// After this many deaths in a row (each sooner than stableAfter after
	// its start) supervision gives up and Done is closed.
	maxFailures  = 8
	firstBackoff = 500 * time.Millisecond
	maxBackoff   = 15 * time.Second

	configName = "cci-containerd.toml"
	pidName    = "cci-containerd.pid"
	lockName   = "cci-containerd.lock"
)

// Daemon is a running, supervised containerd. Its methods may be called from
// any goroutine.
type Daemon struct {
	cfg        Config
	log        *slog.Logger
	configPath string
	pidPath    string
	lock       *os.File // flock held for the Daemon's lifetime
	logFile    *os.File // the daemon's stdout and stderr

	stop     chan struct{} // closed by Stop
	supDone  chan struct{} // closed when supervise returns
	done     chan struct{} // closed when supervision ends for good
	doneOnce sync.Once
	stopOnce sync.Once
	stopErr  error

	mu        sync.Mutex
	proc      *child // the current (or last) daemon process
	callbacks []func()
	err       error // why supervision gave up
}

// child is one containerd process.
type child struct {
	cmd       *exec.Cmd
	started   time.Time
	logOffset int64         // size of the log when it started, for error tails
	exited    chan struct{} // closed once Wait returned
	waitErr   error         // valid once exited is closed
}

// Start starts containerd as configured and returns once its socket answers
// a Version call. ctx bounds only the start-up; the daemon then runs, and is
// restarted when it dies, until Stop.
//
// State is locked for the Daemon's lifetime. If another live Daemon holds it,
// Start returns an error wrapping ErrStateInUse and touches nothing. If the
// lock is free but a containerd started by an earlier (dead) agent with this
// State's config still runs, Start stops that daemon first; its containers
// keep running and are re-adopted by the new one.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.Root, cfg.State, filepath.Dir(cfg.Address), filepath.Dir(cfg.LogPath)} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("create containerd directory %q: %w", dir, err)
		}
	}
	d := &Daemon{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "containerd"),
		configPath: filepath.Join(cfg.State, configName),
		pidPath:    filepath.Join(cfg.State, pidName),
		stop:       make(chan struct{}),
		supDone:    make(chan struct{}),
		done:       make(chan struct{}),
	}
	if d.lock, err = lockState(filepath.Join(cfg.State, lockName)); err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			d.release()
		}
	}()
	if err := d.killStale(); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(d.configPath, []byte(cfg.tomlConfig())); err != nil {
		return nil, fmt.Errorf("write containerd config %q: %w", d.configPath, err)
	}
	if d.logFile, err = os.OpenFile(cfg.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
		return nil, fmt.Errorf("open containerd log %q: %w", cfg.LogPath, err)
	}
	c, err := d.spawn(ctx)
	if err != nil {
		return nil, err
	}
	started = true
	go d.supervise(c)
	return d, nil
}

// Address returns the daemon's gRPC socket path.
func (d *Daemon) Address() string { return d.cfg.Address }

// OnRestart registers f to be called, in its own goroutine, each time the
// daemon answers again after dying unexpectedly. Clients connected before
// the death reconnect by themselves; f is for work such as re-subscribing to
// events or reconciling tasks that exited meanwhile.
func (d *Daemon) OnRestart(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.callbacks = append(d.callbacks, f)
}

// Done is closed when supervision has ended for good: after Stop, or when
// the daemon kept dying and was given up on (then Err says why). An agent
// selects on it to reach its shutdown path.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err returns why supervision gave up, or nil while it runs or after Stop.
func (d *Daemon) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// Stop stops supervision and the daemon: SIGTERM, then SIGKILL after 10 s.
// Only the daemon's own pid is signalled, never a process group, so the
// shims and their containers keep running. Stop is idempotent.
func (d *Daemon) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.doStop() })
	return d.stopErr
}

func (d *Daemon) doStop() error {
	close(d.stop)
	<-d.supDone
	d.mu.Lock()
	c := d.proc
	d.mu.Unlock()
	var err error
	if c != nil {
		err = d.terminate(c)
		if err == nil {
			_ = os.Remove(d.pidPath)
		}
	}
	d.release()
	d.finish(nil)
	return err
}

// pid returns the current daemon's process id (0 before the first start).
func (d *Daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return 0
	}
	return d.proc.cmd.Process.Pid
}

// finish closes Done once, recording why.
func (d *Daemon) finish(err error) {
	d.doneOnce.Do(func() {
		d.mu.Lock()
		d.err = err
		d.mu.Unlock()
		close(d.done)
	})
}

// release closes the log and gives up the State lock.
func (d *Daemon) release() {
	if d.logFile != nil {
		_ = d.logFile.Close()
	}
	if d.lock != nil {
		_ = d.lock.Close() // closing the last descriptor drops the flock
	}
}

// spawn starts one containerd process and waits until it answers. On
// failure the process is killed and the error carries the log's tail.
func (d *Daemon) spawn(ctx context.Context) (*child, error) {
	// A socket left by a dead daemon refuses connections; containerd would
	// replace it, but removing it first keeps the readiness probe honest.
	if err := os.Remove(d.cfg.Address); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale containerd socket %q: %w", d.cfg.Address, err)
	}
	var offset int64
	if st, err := d.logFile.Stat(); err == nil {
		offset = st.Size()
	}
	cmd := exec.Command(d.cfg.Binary, "--config", d.configPath)
	cmd.Dir = "/"
	cmd.Env = childEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = d.logFile, d.logFile
	// Own process group: a Ctrl-C on the agent's terminal (SIGINT to the
	// foreground group) must not reach the daemon. No Pdeathsig: it fires
	// when the spawning OS thread exits, not the agent, and a daemon
	// orphaned by a crashed agent is cleaned up by the next Start.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd %q: %w", d.cfg.Binary, err)
	}
	c := &child{cmd: cmd, started: time.Now(), logOffset: offset, exited: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	d.mu.Lock()
	d.proc = c
	d.mu.Unlock()
	d.log.Info("containerd started", "pid", cmd.Process.Pid, "address", d.cfg.Address, "log", d.cfg.LogPath)

	err := writeFileAtomic(d.pidPath, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"))
	if err != nil {
		err = fmt.Errorf("write containerd pid file %q: %w", d.pidPath, err)
	} else {
		err = d.waitReady(ctx, c)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		<-c.exited
		_ = os.Remove(d.pidPath)
		return nil, fmt.Errorf("%w\n%s", err, d.logTail(c.logOffset))
	}
	return c, nil
}

// waitReady polls the daemon's Version call until it answers, the process
// exits, readyTimeout passes or ctx ends.
func (d *Daemon) waitReady(ctx context.Context, c *child) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(ctx, d.cfg.Address)
		if err == nil {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("containerd (pid %d) exited during start-up (%v); its log %q ends with:", c.cmd.Process.Pid, c.waitErr, d.cfg.LogPath)
		case <-ctx.Done():
			return fmt.Errorf("containerd (pid %d) did not answer on %q: %w (last probe: %v); its log %q ends with:", c.cmd.Process.Pid, d.cfg.Address, ctx.Err(), err, d.cfg.LogPath)
		case <-tick.C:
		}
	}
}

// ping makes one Version call.
func ping(ctx context.Context, address string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := client.New(address, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err
}

// supervise restarts the daemon whenever it dies until Stop, or until it
// keeps dying (then Done is closed with Err set).
func (d *Daemon) supervise(c *child) {
	defer close(d.supDone)
	failures := 0
	for {
		select {
		case <-d.stop:
			return
		case <-c.exited:
		}
		select {
		case <-d.stop: // Stop raced with the exit; Stop owns it
			return
		default:
		}
		ran := time.Since(c.started)
		d.log.Warn("containerd exited unexpectedly, restarting", "pid", c.cmd.Process.Pid, "err", c.waitErr, "ran", ran.Round(time.Millisecond))
		if ran >= stableAfter {
			failures = 0
		}
		for {
			failures++
			if failures > maxFailures {
				err := fmt.Errorf("containerd kept dying (%d restarts in a row failed or died within %s); see its log %q", maxFailures, stableAfter, d.cfg.LogPath)
				d.log.Error("giving up on containerd", "err", err)
				d.finish(err)
				return
			}
			select {
			case <-d.stop:
				return
			case <-time.After(backoff(failures)):
			}
			nc, err := d.spawnUntilStop()
			if err == nil {
				c = nc
				break
			}
			select {
			case <-d.stop:
				return
			default:
			}
			d.log.Error("restart containerd", "attempt", failures, "err", err)
		}
		d.log.Info("containerd is back", "pid", c.cmd.Process.Pid)
		d.mu.Lock()
		cbs := slices.Clone(d.callbacks)
		d.mu.Unlock()
		for _, f := range cbs {
			go f()
		}
	}
}

// spawnUntilStop is spawn with a context that Stop cancels.
func (d *Daemon) spawnUntilStop() (*child, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return d.spawn(ctx)
}

func backoff(failures int) time.Duration {
	b := firstBackoff << (failures - 1)
	if b > maxBackoff || b <= 0 {
		return maxBackoff
	}
	return b
}

// terminate stops our child: SIGTERM, SIGKILL after stopTimeout.
func (d *Daemon) terminate(c *child) error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	pid := c.cmd.Process.Pid
	if err := c.cmd.Process.Signal(unix.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal containerd (pid %d): %w", pid, err)
	}
	select {
	case <-c.exited:
		d.log.Info("containerd stopped", "pid", pid)
		return nil
	case <-time.After(stopTimeout):
	}
	d.log.Warn("containerd ignored SIGTERM, killing it", "pid", pid, "after", stopTimeout)
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill containerd (pid %d): %w", pid, err)
	}
	select {
	case <-c.exited:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("containerd (pid %d) still runs %s after SIGKILL", pid, killTimeout)
	}
}

// killStale stops a containerd that an earlier, dead agent started on this
// State (found through the pid file). A pid that now belongs to another
// process is left alone.
func (d *Daemon) killStale() error {
	data, err := os.ReadFile(d.pidPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read containerd pid file %q: %w", d.pidPath, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		d.log.Warn("ignoring malformed containerd pid file", "path", d.pidPath)
		return removeIfExists(d.pidPath)
	}
	if !isOurDaemon(pid, d.configPath) {
		return removeIfExists(d.pidPath)
	}
	d.log.Warn("stopping containerd left over from an earlier agent", "pid", pid)
	if err := stopForeign(pid, d.configPath); err != nil {
		return fmt.Errorf("stop leftover containerd (pid %d, config %q): %w", pid, d.configPath, err)
	}
	return removeIfExists(d.pidPath)
}

// isOurDaemon says whether pid is a live process started with
// "--config configPath". A zombie has an empty cmdline and reads as dead.
func isOurDaemon(pid int, configPath string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	for i, a := range args {
		if a == "--config="+configPath || (a == "--config" || a == "-c") && i+1 < len(args) && args[i+1] == configPath {
			return true
		}
	}
	return false
}

// stopForeign stops a daemon that is not our child: SIGTERM, then SIGKILL.
func stopForeign(pid int, configPath string) error {
	gone := func(limit time.Duration) bool {
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			if !isOurDaemon(pid, configPath) {
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return !isOurDaemon(pid, configPath)
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	if gone(stopTimeout) {
		return nil
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	if gone(killTimeout) {
		return nil
	}
	return fmt.Errorf("still runs %s after SIGKILL", killTimeout)
}

// lockState takes an exclusive, non-blocking flock on path. The kernel drops
// it when the holder exits, so a crashed agent never blocks the next one.
// The descriptor is close-on-exec, so the daemon does not inherit it.
func lockState(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open containerd lock file %q: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 32))
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %q (held by pid %s): %w; stop that agent first or use another data folder",
				path, strings.TrimSpace(string(holder)), ErrStateInUse)
		}
		return nil, fmt.Errorf("lock %q: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// childEnv drops variables meant for the agent alone: with NOTIFY_SOCKET
// containerd would tell systemd that the agent's unit is ready, and
// LISTEN_* would make it take the agent's activated sockets.
func childEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		for _, p := range []string{"NOTIFY_SOCKET=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="} {
			if strings.HasPrefix(kv, p) {
				return true
			}
		}
		return false
	})
}

// logTail returns up to the last 2 KiB that the daemon logged since offset.
func (d *Daemon) logTail(offset int64) string {
	f, err := os.Open(d.cfg.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	const max = 2048
	if st.Size()-offset > max {
		offset = st.Size() - max
	}
	data, _ := io.ReadAll(io.NewSectionReader(f, offset, st.Size()-offset))
	if len(data) == 0 {
		return "(log is empty)"
	}
	return strings.TrimRight(string(data), "\n")
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %q: %w", path, err)
	}
	return nil
}
