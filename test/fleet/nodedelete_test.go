package fleet

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// `kubectl delete node` takes a host out: its agent stops its pods (they
// end Failed with a DisruptionTarget, as under the kubelet's graceful node
// shutdown) and exits, `cci up` keeps the host down (no re-registration
// behind the operator's back), and `cci host start` brings it back without
// running the stopped pods again.
func TestDeleteNodeTakesHostOut(t *testing.T) {
	ns := namespace(t, "delnode")
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: lone, namespace: %s, labels: {app: lone}}
spec:
  nodeName: host-4
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: %s, command: [sleep, "3600"]}
`, ns, image(testimage.Shell)))
	pod := waitRunning(t, ns, "app=lone", 1, 2*time.Minute)[0]

	mustKubectl(t, "delete", "node", "host-4")
	waitFor(t, time.Minute, "host-4 held down", func() (bool, string) {
		out, _ := cci_(t, "host", "list")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 5 && f[0] == "host-4" {
				return f[4] == "down", l
			}
		}
		return false, out
	})
	waitFor(t, time.Minute, "the pod's processes gone", func() (bool, string) {
		out, _ := exec.Command("pgrep", "-f", string(pod.UID)).Output()
		return len(out) == 0, string(out)
	})
	ended, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "lone", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ended.Status.Phase != v1.PodFailed || ended.Status.Reason != "Terminated" || !hasCondition(ended, v1.DisruptionTarget) {
		t.Errorf("pod stopped with its node: phase %s reason %q conditions %+v; want Failed, Terminated and a DisruptionTarget",
			ended.Status.Phase, ended.Status.Reason, ended.Status.Conditions)
	}
	// Not registered again behind the operator's back.
	time.Sleep(5 * time.Second)
	if _, err := client(t).CoreV1().Nodes().Get(context.Background(), "host-4", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("node host-4 after its deletion: %v, want NotFound", err)
	}

	t.Log(cciHost(t, "start", "host-4"))
	waitFor(t, 2*time.Minute, "host-4 registered and Ready again", func() (bool, string) { return nodeReady(t, "host-4"), "" })
	n, err := client(t).CoreV1().Nodes().Get(context.Background(), "host-4", metav1.GetOptions{})
	if err != nil || n.Labels["cci.io/pool"] != "gpu" {
		t.Fatalf("host-4 back: %v, pool label %q", err, n.Labels["cci.io/pool"])
	}
	// The pod bound to host-4 stays ended: the new agent does not run it
	// again (with another IP, under the same name).
	time.Sleep(10 * time.Second)
	after, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "lone", metav1.GetOptions{})
	if err == nil && after.Status.Phase != v1.PodFailed {
		t.Errorf("pod after host-4 came back: phase %s, IP %s; want it still Failed", after.Status.Phase, after.Status.PodIP)
	}
	if out, _ := exec.Command("pgrep", "-f", string(pod.UID)).Output(); len(out) != 0 {
		t.Errorf("processes of the stopped pod run again: %s", out)
	}
}

func hasCondition(p *v1.Pod, typ v1.PodConditionType) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == typ && c.Status == v1.ConditionTrue {
			return true
		}
	}
	return false
}
