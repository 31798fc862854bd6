// Package connect checks `cci connect` with two CCI instances on one
// machine: A, the user's cluster (a `cci up` is a real Kubernetes cluster),
// and B, the CCI where a tenant's quota takes A's burst. `cci connect`
// runs as a process between them; everything is checked with A's real
// kubectl and B's API.
package connect

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/test/cluster"
)

const (
	// aMaxPods is the pod capacity of A's one host.
	aMaxPods = 4
	nodeName = "cci-burst"
	tenant   = "acme"
)

var (
	a, b      *cluster.Instance
	bin       string
	tenantKC  string
	connector *cluster.Connect
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var work string
	var done func()
	var err error
	if bin, work, done, err = cluster.Setup("connect", "kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	// Two slots: each cluster's pod, Service and hosts ranges are its own.
	// Each cluster's one host is a network namespace of its own (with its
	// own service proxy), so that the package runs beside others whose
	// cluster is in the machine's namespace (test/e2e's).
	slot, err := cluster.ClaimSlots(2)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b = cluster.New(bin, filepath.Join(work, "b"), slot+1).WithHosts(1, slot+1)
	// A's pods pull the test images from B's registry, at B's hosts'
	// gateway.
	a = cluster.New(bin, filepath.Join(work, "a"), slot).WithHosts(1, slot).PullsFrom(b)
	// A small A: its host takes 4 pods, so that a Deployment labelled
	// cci.io/burst=auto overflows onto the virtual node (TestAutoOverflow).
	a.Args = append(a.Args, "--max-pods", strconv.Itoa(aMaxPods))
	for _, c := range []*cluster.Instance{a, b} {
		c.Prepare()
		defer c.Cleanup()
	}
	for name, c := range map[string]*cluster.Instance{"A": a, "B": b} {
		if took, err := c.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "start cluster %s: %v\n", name, err)
			return 1
		} else {
			fmt.Fprintf(os.Stderr, "cluster %s ready in %s\n", name, took.Round(time.Millisecond))
		}
		defer func() {
			if err := c.Stop(syscall.SIGTERM); err != nil {
				fmt.Fprintf(os.Stderr, "stop cluster %s: %v\n", name, err)
			}
		}()
	}
	// Images come from B's registry, where the pods run.
	if err := os.Setenv("DOCKER_CONFIG", registry.AuthDir(b.DataDir)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if out, err := exec.Command(bin, "image", "build-test-images", "--registry", b.Registry).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build test images: %v\n%s", err, out)
		return 1
	}
	if out, err := exec.Command(bin, "tenant", "create", tenant, "--data-dir", b.DataDir, "--quota", "cpu=4,memory=8Gi,pods=10").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "create tenant: %v\n%s", err, out)
		return 1
	}
	tenantKC = filepath.Join(b.DataDir, "tenants", tenant+".kubeconfig")
	connector = newConnect()
	if err := connector.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	// Pods outlive their clusters: the copies go first, then A's pods.
	_, _ = a.Kubectl("delete", "namespace", "burst", "--wait=false")
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("kubectl", "--kubeconfig", tenantKC, "get", "pods", "-o", "name").CombinedOutput()
		if strings.TrimSpace(string(out)) == "" || strings.Contains(string(out), "No resources") {
			break
		}
		time.Sleep(time.Second)
	}
	_ = connector.Stop()
	if code != 0 || cluster.Keep() {
		fmt.Fprintf(os.Stderr, "cci connect output:\n%s\ncluster A:\n%s\ncluster B:\n%s\n", connector.Output(), a.Output(), b.Output())
	}
	return code
}

func newConnect() *cluster.Connect {
	return cluster.NewConnect(bin, "connect", "--kubeconfig", a.Kubeconfig, "--to", tenantKC, "--name", nodeName,
		"--kubelet-port", strconv.Itoa(cluster.FreePorts(1)[0]), "--install", "--webhook-port", strconv.Itoa(cluster.FreePorts(1)[0]))
}

func clientA(t *testing.T) kubernetes.Interface { return a.Client(t) }

// clientB is the tenant's client in B.
func clientB(t *testing.T) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", tenantKC)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return a.Kubectl(args...)
}

func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	return a.MustKubectl(t, args...)
}

// apply creates the objects of a YAML manifest in A.
func apply(t *testing.T, manifest string) {
	t.Helper()
	a.Apply(t, manifest)
}

func image(name string) string { return b.Registry + "/" + name }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	cluster.WaitFor(t, timeout, what, cond)
}

// waitPod waits for A's pod ns/name to be Running and Ready.
func waitPod(t *testing.T, ns, name string, timeout time.Duration) *v1.Pod {
	t.Helper()
	var pod *v1.Pod
	waitFor(t, timeout, "pod "+ns+"/"+name+" Running and Ready in A", func() (bool, string) {
		p, err := clientA(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pod = p
		if p.Status.Phase == v1.PodFailed {
			t.Fatalf("pod %s/%s Failed: %s %s", ns, name, p.Status.Reason, p.Status.Message)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodReady && c.Status == v1.ConditionTrue && p.Status.Phase == v1.PodRunning {
				return true, ""
			}
		}
		return false, fmt.Sprintf("phase %s, %s %s, conditions %v", p.Status.Phase, p.Status.Reason, p.Status.Message, p.Status.Conditions)
	})
	return pod
}

// copyInB is the copy in B of A's pod, found by the pod's UID label.
func copyInB(t *testing.T, uid string) (*v1.Pod, bool) {
	t.Helper()
	list, err := clientB(t).CoreV1().Pods(tenant).List(context.Background(), metav1.ListOptions{LabelSelector: "connect.cci.io/pod-uid=" + uid})
	if err != nil {
		t.Fatalf("list copies in B: %v", err)
	}
	if len(list.Items) > 1 {
		t.Fatalf("%d copies of pod %s in B", len(list.Items), uid)
	}
	if len(list.Items) == 0 {
		return nil, false
	}
	return &list.Items[0], true
}
