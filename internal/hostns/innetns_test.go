package hostns

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// The test binary's main goroutine keeps the main thread, so that the
// goroutine below, which moves its thread to another namespace, runs on
// another thread: the agent's case, where the first thread stays in the
// host's namespace and another is in a pod's (or the reverse).
func init() { runtime.LockOSThread() }

// A process one of whose threads is in a namespace belongs to it, whatever
// namespace its first thread is in: the check that lets `cci host stop`
// find an agent whose main thread was left in a pod's namespace.
func TestInNetnsLooksAtEveryThread(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: unshares a network namespace")
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	ready, done := make(chan string), make(chan struct{})
	go func() {
		// Locked and never unlocked: the runtime discards the thread.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- "error: " + err.Error()
			return
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			link = "error: " + err.Error()
		}
		ready <- link
		<-done
	}()
	other := <-ready
	defer close(done)
	if other == self || len(other) < 5 || other[:5] != "net:[" {
		t.Fatalf("the thread's namespace %q (the process's %q)", other, self)
	}
	if lead, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getpid())); lead == other {
		t.Fatalf("the first thread is in the other namespace too: the test no longer tells the two checks apart")
	}
	if !inNetns(os.Getpid(), other) {
		t.Errorf("inNetns(self, %s) = false: only the first thread was looked at", other)
	}
	if !inNetns(os.Getpid(), self) {
		t.Errorf("inNetns(self, %s) = false for the process's own namespace", self)
	}
	if inNetns(os.Getpid(), "net:[1]") {
		t.Error("inNetns for a namespace no thread is in = true")
	}
}
