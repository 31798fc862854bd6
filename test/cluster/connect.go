package cluster

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Connect is one `cci connect` process, which tests stop and start again
// (link loss).
type Connect struct {
	bin  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  bytes.Buffer
	outM sync.Mutex
	done chan error
}

// NewConnect describes `bin args...` (args start with "connect"); it
// starts nothing.
func NewConnect(bin string, args ...string) *Connect {
	return &Connect{bin: bin, args: args}
}

// Start runs `cci connect` and waits (3 minutes at most) for its ready line.
func (c *Connect) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd := exec.Command(c.bin, c.args...)
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(lockedWriter{&c.outM, &c.out}, pw)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		pw.Close()
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		closed := false
		for sc.Scan() {
			if !closed && strings.HasPrefix(sc.Text(), "CCI connect is ready") {
				close(ready)
				closed = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case <-ready:
		c.cmd, c.done = cmd, done
		return nil
	case err := <-done:
		return fmt.Errorf("cci connect exited before ready: %v\n%s", err, c.Output())
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("cci connect not ready after 3 minutes\n%s", c.Output())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Stop ends `cci connect` with SIGTERM and waits for it.
func (c *Connect) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.cmd = nil
		return err
	case <-time.After(45 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.cmd = nil
		return fmt.Errorf("cci connect did not stop within 45 s of SIGTERM")
	}
}

// Output is what every run of the process printed so far.
func (c *Connect) Output() string {
	c.outM.Lock()
	defer c.outM.Unlock()
	return c.out.String()
}
