// Package e2e checks CCI end to end as a user meets it: one `cci up` on a
// temporary data folder with real etcd, kube-apiserver, containerd, runc and
// CNI, driven with the real kubectl binary and client-go.
//
// The tests run as root, in file order, against one shared instance; the
// restart tests stop and start it again.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cci-project/cci/test/cluster"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// cci is the one `cci up` every test talks to.
var cci *cluster.Instance

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin, work, done, err := cluster.Setup("e2e", "kubectl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	// Bridge, pod and Service ranges of their own, so that the other test
	// packages (and suites in other checkouts) can run on the same host at once.
	slot, err := cluster.ClaimSlots(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cci = cluster.New(bin, work, slot)
	// Fake GPUs (harmless device nodes) for gpu_test.go: no other test
	// asks for nvidia.com/gpu.
	cci.Args = append(cci.Args, "--fake-gpus", fmt.Sprint(fakeGPUs))
	cci.Prepare()
	defer cci.Cleanup()
	return cci.RunSuite(m, bin)
}

func repoRoot() string { return cluster.RepoRoot() }

// client returns a client-go clientset for the admin kubeconfig.
func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", cci.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// kubectl runs the real kubectl against the instance.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", cci.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return dropStreamNoise(string(out)), err
}

func dropStreamNoise(out string) string { return cluster.DropStreamNoise(out) }

// mustKubectl runs kubectl and fails the test on error.
func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// image is the full reference of a test image in the instance's registry.
func image(name string) string { return cci.Registry + "/" + name }
