package connect

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// The node of the connect that runs inside A; the test's own connect
// process serves nodeName.
const insideNode = "cci-inside"

// TestConnectInsideA runs `cci connect` the way docs/connect.md says a user
// runs it: as the Deployment of deploy/connect.yaml inside A, from the
// image `cci image build-self` pushes to A's registry, with the tenant's
// kubeconfig in a Secret. A pod of A bound to its node must run in B, and
// A's kubectl must reach its logs and exec through the connect pod's
// kubelet API.
func TestConnectInsideA(t *testing.T) {
	// The operator's build: this cci, pushed to A's registry with A's
	// operator credentials (found by --data-dir; TestMain points
	// DOCKER_CONFIG at B's).
	start := time.Now()
	build := exec.Command(bin, "image", "build-self", "--registry", a.Registry, "--data-dir", a.DataDir)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "DOCKER_CONFIG=") {
			build.Env = append(build.Env, e)
		}
	}
	var stderr strings.Builder
	build.Stderr = &stderr
	out, err := build.Output()
	if err != nil {
		t.Fatalf("cci image build-self: %v\n%s", err, stderr.String())
	}
	ref := strings.TrimSpace(string(out))
	t.Logf("build-self took %s: %s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(stderr.String()))
	if !strings.HasPrefix(ref, a.Registry+"/cci/cci:") {
		t.Fatalf("build-self printed %q, want %s/cci/cci:<version>", ref, a.Registry)
	}

	// The tenant's kubeconfig names B's apiserver as B's operator reaches
	// it, 127.0.0.1 here: from a pod of A that is the pod itself. The
	// user gives the address A's pods reach B at, here the host's (in
	// B's serving certificate, as its advertise address).
	kc := tenantKubeconfigForPods(t)

	t.Cleanup(func() { removeInside(t) })
	mustKubectl(t, "create", "namespace", "cci-connect")
	mustKubectl(t, "create", "secret", "generic", "cci-tenant", "-n", "cci-connect", "--from-file=kubeconfig="+kc)
	manifest := insideManifest(t, ref)
	applyStart := time.Now()
	apply(t, manifest)

	waitFor(t, 4*time.Minute, "node "+insideNode+" Ready in A", func() (bool, string) {
		n, err := clientA(t).CoreV1().Nodes().Get(context.Background(), insideNode, metav1.GetOptions{})
		if err != nil {
			state, crashing := connectPodState(t)
			if crashing {
				t.Fatalf("the connect pod keeps failing: %s", state)
			}
			return false, err.Error() + "; " + state
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady {
				return c.Status == v1.ConditionTrue, c.Message
			}
		}
		return false, "no Ready condition"
	})
	t.Logf("connect pod started and node %s Ready %s after apply", insideNode, time.Since(applyStart).Round(100*time.Millisecond))

	const podNS = "inside"
	mustKubectl(t, "create", "namespace", podNS)
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  tolerations: [{key: virtual-kubelet.io/provider, operator: Exists, effect: NoSchedule}]
  terminationGracePeriodSeconds: 5
  containers:
  - name: shell
    image: %s
    command: [sh, -c, 'echo hello-from-inside; while true; do sleep 1; done']
    resources: {requests: {cpu: 250m, memory: 512Mi}}
`, podNS, insideNode, image(testimage.Shell)))
	podStart := time.Now()
	pod := waitPod(t, podNS, "shell", 3*time.Minute)
	t.Logf("pod Running in B through node %s %s after create", insideNode, time.Since(podStart).Round(100*time.Millisecond))
	if pod.Spec.NodeName != insideNode {
		t.Fatalf("pod on node %q, want %q", pod.Spec.NodeName, insideNode)
	}
	cp, ok := copyInB(t, string(pod.UID))
	if !ok || cp.Labels["connect.cci.io/node"] != insideNode || cp.Status.PodIP != pod.Status.PodIP {
		t.Fatalf("copy in B of the pod: %v, %+v; want one of node %s with A's pod IP %s", ok, cp, insideNode, pod.Status.PodIP)
	}

	// A's apiserver reaches the kubelet API of the connect pod.
	waitFor(t, time.Minute, "kubectl logs through the connect pod", func() (bool, string) {
		out, err := kubectl(t, "logs", "-n", podNS, "shell")
		return err == nil && strings.Contains(out, "hello-from-inside"), out
	})
	if out := mustKubectl(t, "exec", "-n", podNS, "shell", "--", "sh", "-c", "echo inside-$((6*7))"); !strings.Contains(out, "inside-42") {
		t.Errorf("kubectl exec printed %q, want inside-42", out)
	}
	if out, err := kubectl(t, "exec", "-n", podNS, "shell", "--", "sh", "-c", "exit 3"); err == nil || !strings.Contains(out, "exit code 3") {
		t.Errorf("kubectl exec of exit 3: %v %q, want exit code 3", err, out)
	}

	// Deleted in A, the copy goes in B.
	mustKubectl(t, "delete", "pod", "-n", podNS, "shell", "--wait=true", "--timeout=2m")
	waitFor(t, time.Minute, "the copy gone in B", func() (bool, string) {
		_, ok := copyInB(t, string(pod.UID))
		return !ok, "copy still there"
	})
}

// tenantKubeconfigForPods writes the tenant's kubeconfig with B's server
// at an address A's pods reach, the host's in place of a loopback one.
func tenantKubeconfigForPods(t *testing.T) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(tenantKC)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range cfg.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatalf("tenant kubeconfig cluster %s: %v", name, err)
		}
		if ip := net.ParseIP(u.Hostname()); u.Hostname() == "localhost" || ip != nil && ip.IsLoopback() {
			u.Host = net.JoinHostPort(cluster.HostIP(), u.Port())
			t.Logf("tenant kubeconfig: server %s → %s for A's pods", c.Server, u)
			c.Server = u.String()
		}
	}
	out := filepath.Join(t.TempDir(), "tenant.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// insideManifest is deploy/connect.yaml with the image and the node name
// of this test.
func insideManifest(t *testing.T, ref string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cluster.RepoRoot(), "deploy", "connect.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := string(b)
	// Connect's in-cluster client reaches A's apiserver through the
	// kubernetes Service, as it would in a user's cluster: A's host runs in
	// a network namespace of its own, with its own service proxy.
	for old, new := range map[string]string{"image: IMAGE": "image: " + ref, "--name=cci-burst": "--name=" + insideNode} {
		if !strings.Contains(m, old) {
			t.Fatalf("deploy/connect.yaml has no %q to replace", old)
		}
		m = strings.ReplaceAll(m, old, new)
	}
	return m
}

// connectPodState says how the connect pods are, for a wait that fails
// (removeInside logs their description and log), and whether one has
// failed 3 times: it will not get better.
func connectPodState(t *testing.T) (string, bool) {
	t.Helper()
	list, err := clientA(t).CoreV1().Pods("cci-connect").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error(), false
	}
	var s []string
	crashing := false
	for _, p := range list.Items {
		st := fmt.Sprintf("pod %s %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName)
		for _, c := range p.Status.ContainerStatuses {
			crashing = crashing || c.RestartCount >= 3
			if w := c.State.Waiting; w != nil {
				st += fmt.Sprintf(", waiting: %s %s", w.Reason, w.Message)
			}
			if x := c.LastTerminationState.Terminated; x != nil {
				st += fmt.Sprintf(", last exit %d %s", x.ExitCode, x.Reason)
			}
		}
		s = append(s, st)
	}
	return "connect pods: " + strings.Join(s, "; "), crashing
}

// removeInside removes what the test made in A: its pods' namespace, the
// manifest's objects (the connect pod gives its node's lease and webhook up
// as it stops) and the node, so that the tests after it see A as before.
func removeInside(t *testing.T) {
	if t.Failed() {
		out, _ := kubectl(t, "describe", "pods", "-n", "cci-connect")
		logs, _ := kubectl(t, "logs", "-n", "cci-connect", "deploy/cci-connect", "--tail=60")
		t.Logf("connect pod:\n%s\nits log:\n%s", out, logs)
	}
	for _, args := range [][]string{
		{"delete", "namespace", "inside", "--ignore-not-found", "--timeout=2m"},
		{"delete", "namespace", "cci-connect", "--ignore-not-found", "--timeout=2m"},
		{"delete", "clusterrolebinding,clusterrole", "cci-connect", "--ignore-not-found"},
		{"delete", "node", insideNode, "--ignore-not-found"},
		{"delete", "mutatingwebhookconfiguration", "cci-connect-" + insideNode, "--ignore-not-found"},
		{"delete", "lease", "-n", "kube-node-lease", insideNode, "cci-connect-" + insideNode, "--ignore-not-found"},
	} {
		if out, err := kubectl(t, args...); err != nil {
			t.Errorf("clean up: kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
