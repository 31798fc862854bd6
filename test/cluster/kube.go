package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/registry"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Client is a client-go clientset with the instance's admin kubeconfig.
func (c *Instance) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Kubectl runs the real kubectl against the instance as its admin, with
// kubectl's stream noise left out of the output.
func (c *Instance) Kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).CombinedOutput()
	return DropStreamNoise(string(out)), err
}

// MustKubectl runs kubectl as Kubectl does and fails the test on error.
func (c *Instance) MustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Apply creates or updates the objects of a YAML manifest with kubectl
// apply as the instance's admin, and fails the test on error.
func (c *Instance) Apply(t testing.TB, manifest string) {
	t.Helper()
	cmd := exec.Command("kubectl", "--kubeconfig", c.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

// DropStreamNoise removes the line kubectl 1.32's websocket client logs now
// and then on stderr when a stream ends ("Unknown stream id 1, discarding
// message"): it is about kubectl's own stream bookkeeping, not the output
// of the command the test ran.
func DropStreamNoise(out string) string {
	if !strings.Contains(out, "Unknown stream id") {
		return out
	}
	var kept []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if strings.Contains(l, "websocket.go") && strings.Contains(l, "Unknown stream id") {
			continue
		}
		kept = append(kept, l)
	}
	return strings.Join(kept, "")
}

// WaitFor polls cond until it holds, and fails the test with cond's last
// detail after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	detail := ""
	for time.Now().Before(deadline) {
		var ok bool
		if ok, detail = cond(); ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, detail)
}

// RunSuite starts the instance, pushes the project's test images (built by
// bin) to its registry, runs the package's tests and stops it; it returns
// the exit code for TestMain. It prints the instance's output when a test
// failed or CCI_E2E_KEEP is set.
func (c *Instance) RunSuite(m *testing.M, bin string) int {
	if _, err := c.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start cci up:", err)
		return 1
	}
	// Test images are pushed as the operator, by `cci image` and by tests
	// that build more images in this process (DOCKER_CONFIG reaches both).
	if err := os.Setenv("DOCKER_CONFIG", registry.AuthDir(c.DataDir)); err != nil {
		fmt.Fprintln(os.Stderr, "point DOCKER_CONFIG at the operator's credentials:", err)
		return 1
	}
	if out, err := exec.Command(bin, "image", "build-test-images", "--registry", c.Registry).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build test images: %v\n%s", err, out)
		_ = c.Stop(syscall.SIGTERM)
		return 1
	}
	code := m.Run()
	if err := c.Stop(syscall.SIGTERM); err != nil {
		fmt.Fprintln(os.Stderr, "stop cci up:", err)
	}
	if code != 0 || Keep() {
		fmt.Fprintf(os.Stderr, "cci output:\n%s\nlogs in %s\n", c.Output(), filepath.Join(c.DataDir, "logs"))
	}
	return code
}
