// Package fleet checks CCI on several hosts: one `cci up --hosts 3`, each
// host a real agent with its own network namespace, containerd and pod
// bridge, joined by the flannel overlay; driven with kubectl and client-go.
package fleet

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/test/cluster"
)

// hosts is the number of general hosts of the shared instance (host-1 …
// host-3); host-4 is alone in pool gpu.
const hosts = 3

var (
	cci *cluster.Instance
	bin string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var work string
	var done func()
	var err error
	if bin, work, done, err = cluster.Setup("fleet", "kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	// A slot of its own, so that the packages run at once.
	slot, err := cluster.ClaimSlots(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cci = cluster.New(bin, work, slot).WithHosts(hosts+1, slot)
	cci.Args = append(cci.Args, "--hosts-pools", "general,general,general,gpu")
	cci.Prepare()
	defer cci.Cleanup()
	return cci.RunSuite(m, bin)
}

func client(t *testing.T) kubernetes.Interface { return cci.Client(t) }

func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return cci.Kubectl(args...)
}

func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	return cci.MustKubectl(t, args...)
}

// apply creates the objects of a YAML manifest.
func apply(t *testing.T, manifest string) {
	t.Helper()
	cci.Apply(t, manifest)
}

func image(name string) string { return cci.Registry + "/" + name }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	cluster.WaitFor(t, timeout, what, cond)
}

// waitRunning waits for n Running and Ready pods matching selector in ns.
func waitRunning(t *testing.T, ns, selector string, n int, timeout time.Duration) []v1.Pod {
	t.Helper()
	var pods []v1.Pod
	waitFor(t, timeout, fmt.Sprintf("%d running pods %q", n, selector), func() (bool, string) {
		list, err := client(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		pods = pods[:0]
		var states []string
		for _, p := range list.Items {
			states = append(states, fmt.Sprintf("%s@%s=%s", p.Name, p.Spec.NodeName, p.Status.Phase))
			if p.Status.Phase == v1.PodRunning && ready(&p) && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		return len(pods) == n, strings.Join(states, " ")
	})
	return pods
}

func ready(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// namespace makes a namespace of the test's own, removed at its end.
func namespace(t *testing.T, name string) string {
	t.Helper()
	mustKubectl(t, "create", "namespace", name)
	t.Cleanup(func() { _, _ = kubectl(t, "delete", "namespace", name, "--wait=false") })
	return name
}

// httpGet asks a pod to fetch http://addr/path with nc and returns the
// body.
func httpGet(t *testing.T, ns, pod, addr, path string) (string, error) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out, err := kubectl(t, "exec", "-n", ns, pod, "--", "sh", "-c",
		fmt.Sprintf("printf 'GET %s HTTP/1.0\\r\\n\\r\\n' | nc -w 5 %s %s", path, host, port))
	if err != nil {
		return out, err
	}
	_, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok {
		return out, fmt.Errorf("no HTTP response: %q", out)
	}
	return body, nil
}
