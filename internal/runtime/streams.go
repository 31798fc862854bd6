package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	goruntime "runtime"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"golang.org/x/sys/unix"
	utilexec "k8s.io/utils/exec"
)

// logFollowPoll is how often a followed log is checked for new output.
const logFollowPoll = 100 * time.Millisecond

// container finds a container of a pod on this node.
func (r *Runtime) container(ns, name, container string) (*podWorker, *ctrRecord, error) {
	w := r.worker(ns, name)
	if w == nil {
		return nil, nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if container == "" && len(w.rec.Pod.Spec.Containers) > 0 {
		container = w.rec.Pod.Spec.Containers[0].Name
	}
	cr := w.rec.ctr(container)
	if cr == nil {
		return nil, nil, errdefs.NotFoundf("container %q is not in pod %s/%s", container, ns, name)
	}
	c := *cr
	return w, &c, nil
}

// GetContainerLogs streams a container's output (stdout and stderr, as the
// container wrote them) with the usual tail, limit, previous and follow options.
func (r *Runtime) GetContainerLogs(ctx context.Context, ns, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	w, cr, err := r.container(ns, podName, containerName)
	if err != nil {
		return nil, err
	}
	restart := cr.RestartCount
	if opts.Previous {
		if restart == 0 {
			return nil, errdefs.InvalidInputf("previous terminated container %q in pod %q not found", cr.Name, podName)
		}
		restart--
	} else if !cr.Started {
		return nil, errdefs.InvalidInputf("container %q in pod %q is waiting to start: %s", cr.Name, podName, waitingReason(cr))
	}
	path := r.logPath(w.pod(), cr.Name, restart)
	if _, err := os.Stat(path); err != nil {
		return nil, errdefs.NotFoundf("no log for container %q: %v", cr.Name, err)
	}
	running := func() bool {
		_, cur, err := r.container(ns, podName, cr.Name)
		return err == nil && cur.State.Running != nil && cur.RestartCount == restart
	}
	if !isCRILog(path) {
		return rawLog(ctx, path, opts, running)
	}
	lopts := logOptions(opts, timeNow())
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(readCRILog(ctx, path, lopts, running, pw))
	}()
	return pr, nil
}

// rawLog serves the log of a container started by an older agent, which
// holds the container's output as it wrote it, without timestamps.
func rawLog(ctx context.Context, path string, opts api.ContainerLogOpts, running func() bool) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errdefs.NotFoundf("no log: %v", err)
	}
	if opts.Tail > 0 {
		if err := seekTail(f, opts.Tail); err != nil {
			f.Close()
			return nil, err
		}
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		var out io.Writer = pw
		if opts.LimitBytes > 0 {
			out = &limitWriter{w: pw, n: int64(opts.LimitBytes)}
		}
		pw.CloseWithError(copyLog(ctx, f, out, opts.Follow && !opts.Previous, running))
	}()
	return pr, nil
}

func waitingReason(cr *ctrRecord) string {
	if cr.State.Waiting != nil {
		return cr.State.Waiting.Reason
	}
	return "not started"
}

// copyLog copies f to out; when follow is set it keeps copying new output
// while running() says the container still runs.
func copyLog(ctx context.Context, f *os.File, out io.Writer, follow bool, running func() bool) error {
	buf := make([]byte, 32*1024)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return nil
			}
			continue
		}
		if err != nil && err != io.EOF {
			return err
		}
		if !follow {
			return nil
		}
		if !running() {
			// Drain what the container wrote last.
			if n, _ := io.Copy(out, f); n == 0 {
				return nil
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(logFollowPoll):
		}
	}
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	const chunk = 8192
	lines := 0
	pos := size
	buf := make([]byte, chunk)
	// A final newline does not start a new line.
	first := true
	for pos > 0 {
		read := int64(chunk)
		if pos < read {
			read = pos
		}
		pos -= read
		if _, err := f.ReadAt(buf[:read], pos); err != nil && err != io.EOF {
			return err
		}
		for i := read - 1; i >= 0; i-- {
			if buf[i] == '\n' {
				if first && pos+i == size-1 {
					first = false
					continue
				}
				lines++
				if lines == n {
					_, err := f.Seek(pos+i+1, io.SeekStart)
					return err
				}
			}
			first = false
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	if err == nil && l.n <= 0 {
		err = io.EOF
	}
	return n, err
}

// RunInContainer runs cmd in the container's namespaces, like `kubectl exec`.
func (r *Runtime) RunInContainer(ctx context.Context, ns, podName, containerName string, cmd []string, attach api.AttachIO) error {
	w, cr, err := r.container(ns, podName, containerName)
	if err != nil {
		return err
	}
	if cr.State.Running == nil {
		return errdefs.InvalidInputf("container %q in pod %q is not running", cr.Name, podName)
	}
	cctx := w.ctx()
	c, err := r.cfg.Containerd.LoadContainer(cctx, cr.ID)
	if err != nil {
		return fmt.Errorf("load container %q: %w", cr.Name, err)
	}
	task, err := c.Task(cctx, nil)
	if err != nil {
		return fmt.Errorf("load task of container %q: %w", cr.Name, err)
	}
	spec, err := c.Spec(cctx)
	if err != nil {
		return fmt.Errorf("read spec of container %q: %w", cr.Name, err)
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = attach.TTY()

	var stdin io.Reader
	if attach.Stdin() != nil {
		stdin = attach.Stdin()
	}
	var stdout, stderr io.Writer = io.Discard, io.Discard
	if attach.Stdout() != nil {
		stdout = attach.Stdout()
	}
	if attach.Stderr() != nil {
		stderr = attach.Stderr()
	}
	ioOpts := []cio.Opt{cio.WithStreams(stdin, stdout, stderr)}
	if attach.TTY() {
		ioOpts = append(ioOpts, cio.WithTerminal)
	}
	id := "exec-" + randomHex(6)
	proc, err := task.Exec(cctx, id, &pspec, cio.NewCreator(ioOpts...))
	if err != nil {
		return fmt.Errorf("exec in container %q: %w", cr.Name, err)
	}
	defer proc.Delete(cctx)
	exitCh, err := proc.Wait(cctx)
	if err != nil {
		return err
	}
	if err := proc.Start(cctx); err != nil {
		return fmt.Errorf("start %q in container %q: %w", cmd, cr.Name, err)
	}
	if attach.TTY() {
		go func() {
			for size := range attach.Resize() {
				_ = proc.Resize(cctx, uint32(size.Width), uint32(size.Height))
			}
		}()
	}
	var st struct {
		code uint32
	}
	select {
	case s := <-exitCh:
		st.code = s.ExitCode()
	case <-ctx.Done():
		_ = proc.Kill(cctx, unix.SIGKILL)
		s := <-exitCh
		st.code = s.ExitCode()
	}
	if pio := proc.IO(); pio != nil {
		pio.Wait()
		pio.Close()
	}
	if st.code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", st.code), Code: int(st.code)}
	}
	return nil
}

// AttachToContainer connects a client to a running container as `kubectl
// attach` does: it gets the container's output from now on, and its input
// goes to the container's stdin when the container's spec keeps one open
// (stdin: true).
func (r *Runtime) AttachToContainer(ctx context.Context, ns, podName, containerName string, attach api.AttachIO) error {
	w, cr, err := r.container(ns, podName, containerName)
	if err != nil {
		return err
	}
	if cr.State.Running == nil {
		return errdefs.InvalidInputf("container %q in pod %q is not running", cr.Name, podName)
	}
	logs := w.attachedLog(cr.Name)
	if logs == nil {
		return errdefs.InvalidInputf("container %q in pod %q cannot be attached to: its output is not followed by this agent", cr.Name, podName)
	}
	detach := logs.attachClient(&attachment{stdout: attach.Stdout(), stderr: attach.Stderr()})
	defer detach()
	if in := attach.Stdin(); in != nil && logs.stdin != nil {
		go func() { _, _ = io.Copy(logs.stdin, in) }()
	}
	if attach.TTY() {
		go func() {
			for size := range attach.Resize() {
				if logs.task != nil {
					_ = logs.task.Resize(w.ctx(), uint32(size.Width), uint32(size.Height))
				}
			}
		}()
	}
	tick := time.NewTicker(logFollowPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if _, cur, err := r.container(ns, podName, cr.Name); err != nil || cur.State.Running == nil || cur.RestartCount != cr.RestartCount {
				return nil
			}
		}
	}
}

// PortForward connects stream to port on the pod's loopback, inside its
// network namespace, as the kubelet does.
func (r *Runtime) PortForward(ctx context.Context, ns, podName string, port int32, stream io.ReadWriteCloser) error {
	w := r.worker(ns, podName)
	if w == nil {
		return errdefs.NotFoundf("pod %s/%s is not on this node", ns, podName)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var conn net.Conn
	var err error
	if pod := w.pod(); pod.Spec.HostNetwork {
		conn, err = net.DialTimeout("tcp", addr, 10*time.Second)
	} else {
		conn, err = dialInNetns(r.netnsPath(pod), addr)
	}
	if err != nil {
		return fmt.Errorf("connect to port %d of pod %s/%s: %w", port, ns, podName, err)
	}
	defer conn.Close()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		errc <- err
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// dialInNetns opens a TCP connection from inside the network namespace at
// path: the socket is created there and stays there.
func dialInNetns(path, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		// The thread's namespace is changed; it must not be reused if it
		// cannot be restored, so it is unlocked only on success.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			goruntime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			goruntime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			goruntime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
