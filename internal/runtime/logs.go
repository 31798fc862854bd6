package runtime

// Container logs.
//
// Each run of a container writes its output to
// <state>/pods/<uid>/logs/<container>/<restart>.log in the CRI log format,
// as containerd's CRI plugin writes it for the kubelet:
//
//	2016-10-06T00:17:09.669794202Z stdout F a full line
//	2016-10-06T00:17:09.669794203Z stderr P the first part of a long line
//
// The container's stdout and stderr reach the agent through containerd's
// FIFOs and the agent stamps each line with the time it read it; the
// kubelet's own reader (k8s.io/cri-client/pkg/logs) then serves `kubectl
// logs` with --timestamps, --since, --since-time, --tail, --limit-bytes and
// --follow exactly as a kubelet does. A file written by the shim itself
// (cio.LogFile) could not carry timestamps, and a logging binary would be a
// process per container; the price of the FIFOs is that a container's
// output waits in the pipe while the agent restarts, as it waits for
// containerd under the kubelet.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crilogs "k8s.io/cri-client/pkg/logs"
)

// maxLogLineSize is the longest line written as one log entry; a longer one
// is split into partial entries, as containerd's CRI plugin does by default
// (max_container_log_line_size).
const maxLogLineSize = 16 * 1024

// containerLog is the log file of one run of a container: its two streams
// write CRI log entries to it. Writes are safe for concurrent use.
type containerLog struct {
	mu  sync.Mutex
	f   *os.File
	now func() time.Time
	// path is the file's name; at maxSize bytes it is renamed
	// path.<time> and a new one started, and of the renamed ones the
	// newest maxFiles-1 are kept (0: never rotated).
	path     string
	size     int64
	maxSize  int64
	maxFiles int
	stdout   *logStream
	stderr   *logStream
	// attached are the clients of `kubectl attach`: they get the output
	// as the container writes it, from the time they attached.
	attached map[*attachment]struct{}
	// stdin feeds the container's stdin when its spec keeps one open.
	stdin *io.PipeWriter
	// task is the task writing to the log (set before attach can find it).
	task containerd.Task
	// io copies the task's FIFOs into the log; Close waits for it.
	io cio.IO
}

// ioDrainWait is how long Close waits for the copy of a task's output to
// end (task.Delete waits for it; a task lost while containerd restarted
// may not have been deleted through the object that holds the copy).
const ioDrainWait = 2 * time.Second

// attachment is one attached client's output streams (either may be nil).
type attachment struct{ stdout, stderr io.Writer }

// attach adds a client; the returned func removes it.
func (l *containerLog) attachClient(a *attachment) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.attached == nil {
		l.attached = map[*attachment]struct{}{}
	}
	l.attached[a] = struct{}{}
	return func() {
		l.mu.Lock()
		delete(l.attached, a)
		l.mu.Unlock()
	}
}

// openContainerLog opens (appends to) the log file at path, rotated at
// maxSize bytes with maxFiles files kept (see containerLog).
func openContainerLog(path string, maxSize int64, maxFiles int) (*containerLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log: %w", err)
	}
	l := newContainerLog(f, time.Now)
	l.path, l.maxSize, l.maxFiles = path, maxSize, maxFiles
	if st, err := f.Stat(); err == nil {
		l.size = st.Size()
	}
	return l, nil
}

// rotatedSuffix stamps a rotated log file, as the kubelet's log manager
// names them (path.20060102-150405); nanoseconds keep two rotations in one
// second apart, and the names sort by age.
const rotatedSuffix = "20060102-150405.000000000"

// rotate renames the current file aside, opens a new one at path and
// removes the oldest rotated files beyond maxFiles-1. The caller holds mu.
// A reader that follows the log (kubectl logs -f, the kubelet's reader)
// sees the rename and reopens path.
func (l *containerLog) rotate() error {
	aside := l.path + "." + l.now().UTC().Format(rotatedSuffix)
	if err := os.Rename(l.path, aside); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	_ = l.f.Close()
	l.f, l.size = f, 0
	old, _ := filepath.Glob(l.path + ".*")
	sort.Strings(old)
	for len(old) > l.maxFiles-1 {
		_ = os.Remove(old[0])
		old = old[1:]
	}
	return nil
}

// pruneLogs removes the log files, rotated ones included, of the runs of
// a container before keep (a run's file is <restart>.log): as on a
// kubelet, only the current and the previous run's logs are kept.
func pruneLogs(dir string, keep int) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n, _, _ := strings.Cut(e.Name(), ".")
		if restart, err := strconv.Atoi(n); err == nil && restart < keep {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func newContainerLog(f *os.File, now func() time.Time) *containerLog {
	l := &containerLog{f: f, now: now}
	l.stdout = &logStream{log: l, name: runtimeapi.Stdout}
	l.stderr = &logStream{log: l, name: runtimeapi.Stderr}
	return l
}

// creator is the containerd IO of a new task writing to the log; with
// stdin, the container's stdin stays open for attached clients.
func (l *containerLog) creator(stdin, tty bool) cio.Creator {
	var in io.Reader
	if stdin {
		var r *io.PipeReader
		r, l.stdin = io.Pipe()
		in = r
	}
	opts := []cio.Opt{cio.WithStreams(in, l.stdout, l.stderr)}
	if tty {
		opts = append(opts, cio.WithTerminal)
	}
	return cio.NewCreator(opts...)
}

// attach is the containerd IO of a running task re-adopted by the agent.
// A task whose output goes elsewhere than to FIFOs (a log file written by
// the shim, as older agents had it) is attached without IO.
func (l *containerLog) attach() cio.Attach {
	return func(fifos *cio.FIFOSet) (cio.IO, error) {
		if fifos == nil || strings.Contains(fifos.Stdout, "://") {
			return nil, nil
		}
		return cio.NewAttach(cio.WithStreams(nil, l.stdout, l.stderr))(fifos)
	}
}

// Close writes what is left of unfinished lines, as partial entries, and
// closes the file. Call it once the task's IO is done (task.Delete waits
// for it).
func (l *containerLog) Close() error {
	if l == nil {
		return nil
	}
	l.drain()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stdin != nil {
		l.stdin.Close()
	}
	return l.f.Close()
}

// drain waits, at most ioDrainWait, for the copy of the task's output to
// end, and writes what is left of unfinished lines as partial entries: once
// the task exited, the log then holds all it wrote, as the termination
// message read from the log needs (a last line without a newline included).
// It tells whether the copy ended in time.
func (l *containerLog) drain() bool {
	if l == nil {
		return true
	}
	ended := true
	if l.io != nil {
		done := make(chan struct{})
		go func() {
			l.io.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(ioDrainWait):
			ended = false
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range []*logStream{l.stdout, l.stderr} {
		if len(s.pending) > 0 {
			l.entry(s.name, runtimeapi.LogTagPartial, s.pending)
			s.pending = nil
		}
	}
	return ended
}

// entry writes one log entry; the caller holds mu.
func (l *containerLog) entry(stream runtimeapi.LogStreamType, tag runtimeapi.LogTag, content []byte) {
	var b bytes.Buffer
	b.Grow(len(content) + 48)
	b.WriteString(l.now().UTC().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.WriteString(string(stream))
	b.WriteByte(' ')
	b.WriteString(string(tag))
	b.WriteByte(' ')
	b.Write(content)
	b.WriteByte('\n')
	if l.maxSize > 0 && l.maxFiles > 0 && l.size > 0 && l.size+int64(b.Len()) > l.maxSize {
		// A log that cannot rotate (its folder gone) keeps its file.
		_ = l.rotate()
	}
	n, _ := l.f.Write(b.Bytes())
	l.size += int64(n)
}

// logStream turns one of a container's streams into log entries: a line is
// written once its newline came (a full entry), a line longer than
// maxLogLineSize in pieces (partial entries).
type logStream struct {
	log     *containerLog
	name    runtimeapi.LogStreamType
	pending []byte
}

func (s *logStream) Write(p []byte) (int, error) {
	l := s.log
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for a := range l.attached {
		out := a.stdout
		if s.name == runtimeapi.Stderr {
			out = a.stderr
		}
		if out != nil {
			_, _ = out.Write(p)
		}
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.pending = append(s.pending, p...)
			for len(s.pending) > maxLogLineSize {
				l.entry(s.name, runtimeapi.LogTagPartial, s.pending[:maxLogLineSize])
				s.pending = append(s.pending[:0], s.pending[maxLogLineSize:]...)
			}
			break
		}
		line := append(s.pending, p[:i]...)
		for len(line) > maxLogLineSize {
			l.entry(s.name, runtimeapi.LogTagPartial, line[:maxLogLineSize])
			line = line[maxLogLineSize:]
		}
		l.entry(s.name, runtimeapi.LogTagFull, line)
		s.pending = s.pending[:0]
		p = p[i+1:]
	}
	return n, nil
}

// logOptions are the kubelet's options for reading a log, from the kubelet
// API's query (kuberuntime's ReadLogs turns v1.PodLogOptions into these).
func logOptions(o api.ContainerLogOpts, now time.Time) *crilogs.LogOptions {
	opts := &crilogs.LogOptions{Follow: o.Follow && !o.Previous, Timestamp: o.Timestamps}
	if o.Tail > 0 {
		tail := int64(o.Tail)
		opts.TailLines = &tail
	}
	if o.LimitBytes > 0 {
		limit := int64(o.LimitBytes)
		opts.LimitBytes = &limit
	}
	switch {
	case !o.SinceTime.IsZero():
		opts.Since = o.SinceTime
	case o.SinceSeconds > 0:
		opts.Since = now.Add(-time.Duration(o.SinceSeconds) * time.Second)
	}
	return opts
}

// isCRILog tells whether the log file at path is in the CRI format (an empty
// file is); the logs of containers started by older agents are raw output.
func isCRILog(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadSlice('\n')
	if len(line) == 0 && err != nil {
		return true
	}
	fields := bytes.SplitN(line, []byte{' '}, 4)
	if len(fields) < 4 {
		return false
	}
	if _, err := time.Parse(time.RFC3339Nano, string(fields[0])); err != nil {
		return false
	}
	s := runtimeapi.LogStreamType(fields[1])
	return s == runtimeapi.Stdout || s == runtimeapi.Stderr
}

// readCRILog serves a CRI-format log with the kubelet's reader; running
// says, while following, whether the container still writes to it.
func readCRILog(ctx context.Context, path string, opts *crilogs.LogOptions, running func() bool, out io.Writer) error {
	err := crilogs.ReadLogs(ctx, path, "", opts, statusOnly{running: running}, out, out)
	if errors.Is(err, context.Canceled) || (err != nil && ctx.Err() != nil) {
		return nil
	}
	return err
}

// statusOnly is the runtime service the kubelet's log reader asks, while it
// follows a log, whether the container still runs: the only call it makes.
// The other methods of the interface are not implemented (nil).
type statusOnly struct {
	internalapi.RuntimeService
	running func() bool
}

func (s statusOnly) ContainerStatus(context.Context, string, bool) (*runtimeapi.ContainerStatusResponse, error) {
	if s.running == nil {
		return nil, status.Error(codes.NotFound, "container not found")
	}
	state := runtimeapi.ContainerState_CONTAINER_EXITED
	if s.running() {
		state = runtimeapi.ContainerState_CONTAINER_RUNNING
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{State: state}}, nil
}
