package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

func nodeReady(t *testing.T, name string) bool {
	n, err := client(t).CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func cciHost(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"host"}, append(args, "--data-dir", cci.DataDir)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("cci host %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// A host that loses power (agent, containerd and pods killed at once):
// its node goes NotReady, the Deployment's pods come back on the other
// hosts, the Job still completes exactly; when the host returns, its agent
// removes what belonged to pods that were replaced meanwhile and nothing
// of theirs is left.
func TestHostPowerOffAndReturn(t *testing.T) {
	ns := namespace(t, "hostfail")
	apply(t, webDeployment(ns, "keep", 3, ""))
	apply(t, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: batch, namespace: %s}
spec:
  completions: 6
  parallelism: 3
  backoffLimit: 20
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      tolerations:
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 20}
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 20}
      containers:
      - {name: work, image: %s, command: [sleep, "20"]}
`, ns, image(testimage.Shell)))
	before := waitRunning(t, ns, "app=keep", 3, 3*time.Minute)
	var victims []v1.Pod
	for _, p := range before {
		if p.Spec.NodeName == "host-3" {
			victims = append(victims, p)
		}
	}
	if len(victims) == 0 {
		t.Fatalf("no pod of the hard-spread Deployment on host-3: %v", byHost(before))
	}
	// Job pods on host-3 too, when the power goes.
	jobPods, _ := client(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "job-name=batch"})
	for _, p := range jobPods.Items {
		if p.Spec.NodeName == "host-3" {
			victims = append(victims, p)
		}
	}

	t.Log(cciHost(t, "stop", "host-3"))
	down := time.Now()
	waitFor(t, 90*time.Second, "host-3 NotReady", func() (bool, string) { return !nodeReady(t, "host-3"), "" })
	t.Logf("host-3 NotReady %.1fs after it lost power", time.Since(down).Seconds())

	// The node controller marks the dead host's pods not Ready just after
	// it marks the host NotReady, in writes of their own: until then they
	// still count. Within the time allowed, none on host-3 may count and
	// the Deployment must be whole on the other hosts.
	var after []v1.Pod
	waitFor(t, 3*time.Minute, "3 ready pods of app=keep, none on the dead host-3", func() (bool, string) {
		list, err := client(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=keep"})
		if err != nil {
			return false, err.Error()
		}
		after = after[:0]
		var onDead []string
		for _, p := range list.Items {
			if p.Status.Phase != v1.PodRunning || !ready(&p) || p.DeletionTimestamp != nil {
				continue
			}
			if p.Spec.NodeName == "host-3" {
				onDead = append(onDead, p.Name)
				continue
			}
			after = append(after, p)
		}
		return len(after) == 3 && len(onDead) == 0, fmt.Sprintf("ready elsewhere %d, counted ready on host-3: %v", len(after), onDead)
	})
	t.Logf("Deployment whole again on %v, %.1fs after the power went", keys(byHost(after)), time.Since(down).Seconds())
	waitFor(t, 4*time.Minute, "the Job's 6 completions", func() (bool, string) {
		j, err := client(t).BatchV1().Jobs(ns).Get(context.Background(), "batch", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Succeeded >= 6, fmt.Sprintf("succeeded %d failed %d active %d", j.Status.Succeeded, j.Status.Failed, j.Status.Active)
	})
	j, _ := client(t).BatchV1().Jobs(ns).Get(context.Background(), "batch", metav1.GetOptions{})
	if j.Status.Succeeded != 6 {
		t.Errorf("Job succeeded %d times, want exactly 6", j.Status.Succeeded)
	}

	t.Log(cciHost(t, "start", "host-3"))
	back := time.Now()
	waitFor(t, 2*time.Minute, "host-3 Ready again", func() (bool, string) { return nodeReady(t, "host-3"), "" })
	t.Logf("host-3 Ready %.1fs after power came back", time.Since(back).Seconds())

	hostDir := filepath.Join(cci.DataDir, "hosts", "host-3")
	waitFor(t, 2*time.Minute, "host-3 holding nothing of the replaced pods", func() (bool, string) {
		for _, p := range victims {
			if _, err := os.Stat(filepath.Join(hostDir, "agent", "pods", string(p.UID))); err == nil {
				return false, "pod folder of " + p.Name
			}
			if _, err := os.Stat(filepath.Join("/var/run/netns", "cci-"+string(p.UID))); err == nil {
				return false, "network namespace of " + p.Name
			}
			if out, _ := exec.Command("pgrep", "-f", string(p.UID)).Output(); len(out) > 0 {
				return false, "a process naming " + p.Name
			}
		}
		return true, ""
	})
	// Their API objects (deleted while the host was down, so left
	// Terminating with the status it last wrote) go once the host's agent
	// is back and confirms, which may come a moment after the host has
	// let go of everything.
	waitFor(t, time.Minute, "the replaced pods' API objects gone", func() (bool, string) {
		for _, p := range victims {
			got, err := client(t).CoreV1().Pods(ns).Get(context.Background(), p.Name, metav1.GetOptions{})
			if err == nil && got.UID == p.UID {
				return false, fmt.Sprintf("pod %s still there (%s on %s, deleted %v)", p.Name, got.Status.Phase, got.Spec.NodeName, got.DeletionTimestamp != nil)
			}
		}
		return true, ""
	})
	// The Deployment keeps exactly its replicas: never two copies.
	waitRunning(t, ns, "app=keep", 3, time.Minute)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
