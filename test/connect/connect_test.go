package connect

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

const ns = "burst"

// podYAML is a pod of A bound for the virtual node: it tolerates its taint
// and selects it.
func podYAML(name, img, extra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: %s}}
spec:
  nodeSelector: {type: virtual-kubelet}
  # Upstream's default toleration of an unreachable node (A, a CCI, gives
  # pods 30 s): the link-loss test keeps the node away longer than that.
  tolerations:
  - {key: virtual-kubelet.io/provider, operator: Exists, effect: NoSchedule}
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 300}
  - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 300}
  terminationGracePeriodSeconds: 5
%s`, name, ns, name, strings.ReplaceAll(extra, "IMAGE", img))
}

func ensureNamespace(t *testing.T) {
	t.Helper()
	if _, err := clientA(t).CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		mustKubectl(t, "create", "namespace", ns)
	}
}

// Step 2 of the issue: the node is registered in A with the taint, the
// labels and the free part of the tenant's quota as its capacity.
func TestNodeRegistered(t *testing.T) {
	var node *v1.Node
	waitFor(t, time.Minute, "node "+nodeName+" Ready in A", func() (bool, string) {
		n, err := clientA(t).CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		node = n
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady {
				return c.Status == v1.ConditionTrue, c.Message
			}
		}
		return false, "no Ready condition"
	})
	if node.Labels["type"] != "virtual-kubelet" || node.Labels["cci.io/pool"] == "" {
		t.Errorf("labels %v", node.Labels)
	}
	tainted := false
	for _, tn := range node.Spec.Taints {
		tainted = tainted || tn.Key == "virtual-kubelet.io/provider" && tn.Value == "cci" && tn.Effect == v1.TaintEffectNoSchedule
	}
	if !tainted {
		t.Errorf("taints %v lack virtual-kubelet.io/provider=cci:NoSchedule", node.Spec.Taints)
	}
	// The tenant has nothing running yet: its whole quota is free.
	for r, want := range map[v1.ResourceName]string{v1.ResourceCPU: "4", v1.ResourceMemory: "8Gi", v1.ResourcePods: "10"} {
		got := node.Status.Allocatable[r]
		if got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("allocatable %s = %s, want the tenant's free quota %s", r, got.String(), want)
		}
	}
}

// Bad input: a second connect for the same node name refuses.
func TestSecondConnectRefuses(t *testing.T) {
	args := []string{"connect", "--kubeconfig", a.Kubeconfig, "--to", tenantKC, "--name", nodeName, "--kubelet-port", fmt.Sprint(cluster.FreePorts(1)[0])}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a second cci connect for node %s: err %v (want a refusal)\n%s", nodeName, err, out)
	}
	if !strings.Contains(string(out), "served by another `cci connect`") {
		t.Errorf("the refusal does not say why:\n%s", out)
	}
}

// Bad input: B unreachable at start. connect says so and retries with
// back-off, without crashing and without registering a node it cannot
// serve.
func TestUnreachableAtStart(t *testing.T) {
	raw, err := os.ReadFile(tenantKC)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on.
	closed := fmt.Sprintf("https://127.0.0.1:%d", cluster.FreePorts(1)[0])
	for _, c := range cfg.Clusters {
		c.Server = closed
	}
	kc := filepath.Join(t.TempDir(), "nowhere.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	const node = "cci-nowhere"
	var out safeBuffer
	cmd := exec.Command(bin, "connect", "--kubeconfig", a.Kubeconfig, "--to", kc, "--name", node, "--kubelet-port", fmt.Sprint(cluster.FreePorts(1)[0]))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("connect did not stop on SIGTERM:\n%s", out.String())
		}
	}()
	// Back-off of 1 s, 2 s, 4 s: three tries in about 8 s.
	waitFor(t, time.Minute, "three retries, each saying why", func() (bool, string) {
		select {
		case err := <-exited:
			t.Fatalf("connect exited while B was unreachable: %v\n%s", err, out.String())
		default:
		}
		return strings.Count(out.String(), "does not answer; retrying") >= 3 && strings.Contains(out.String(), closed), out.String()
	})
	if _, err := clientA(t).CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("node %s registered while B was unreachable (err %v)", node, err)
	}
}

// safeBuffer is a bytes.Buffer for a process's output read while it runs.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Steps 3-4: a pod that tolerates the node runs in B and is Running in A
// with B's pod IP; logs, exec, attach, port-forward, top and events pass
// through A's kubectl; a ConfigMap update reaches the copy.
func TestBurstPod(t *testing.T) {
	ensureNamespace(t)
	mustKubectl(t, "create", "configmap", "conf", "-n", ns, "--from-literal=msg=one")
	apply(t, podYAML("shell", image(testimage.Shell), `  containers:
  - name: shell
    image: IMAGE
    command: [sh, -c, 'echo hello-from-$POD_NAME; while true; do echo tick; sleep 1; done']
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    resources: {requests: {cpu: 250m, memory: 512Mi}}
    volumeMounts: [{name: conf, mountPath: /conf}]
  volumes: [{name: conf, configMap: {name: conf}}]
`))
	apply(t, podYAML("web", image(testimage.HTTPD), `  containers:
  - name: web
    image: IMAGE
    resources: {requests: {cpu: 250m, memory: 512Mi}}
`))
	shell := waitPod(t, ns, "shell", 3*time.Minute)
	web := waitPod(t, ns, "web", 3*time.Minute)

	node, err := clientA(t).CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*v1.Pod{shell, web} {
		cp, ok := copyInB(t, string(p.UID))
		if !ok {
			t.Fatalf("pod %s has no copy in B", p.Name)
		}
		if cp.Status.Phase != v1.PodRunning || cp.Status.PodIP == "" || cp.Status.PodIP != p.Status.PodIP {
			t.Errorf("pod %s: IP %q in A, copy %s in B %s with IP %q", p.Name, p.Status.PodIP, cp.Name, cp.Status.Phase, cp.Status.PodIP)
		}
		if p.Spec.NodeName != nodeName || p.Status.HostIP != node.Status.Addresses[0].Address {
			t.Errorf("pod %s: node %s hostIP %s, want %s and the node's address %s", p.Name, p.Spec.NodeName, p.Status.HostIP, nodeName, node.Status.Addresses[0].Address)
		}
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].ContainerID != cp.Status.ContainerStatuses[0].ContainerID {
			t.Errorf("pod %s: container statuses in A %+v differ from B's %+v", p.Name, p.Status.ContainerStatuses, cp.Status.ContainerStatuses)
		}
	}

	t.Run("logs", func(t *testing.T) {
		waitFor(t, 30*time.Second, "the pod's output in kubectl logs", func() (bool, string) {
			out, err := kubectl(t, "logs", "-n", ns, "shell", "--tail=200")
			return err == nil && strings.Contains(out, "hello-from-shell"), out
		})
	})

	t.Run("logs -f", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", a.Kubeconfig, "logs", "-f", "-n", ns, "shell", "--tail=1")
		pipe, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		buf := make([]byte, 4096)
		var got string
		for strings.Count(got, "tick") < 3 {
			n, err := pipe.Read(buf)
			if err != nil {
				t.Fatalf("logs -f ended after %q: %v", got, err)
			}
			got += string(buf[:n])
		}
	})

	t.Run("exec", func(t *testing.T) {
		out := mustKubectl(t, "exec", "-n", ns, "shell", "--", "cat", "/conf/msg")
		if strings.TrimSpace(out) != "one" {
			t.Errorf("exec cat /conf/msg = %q, want the ConfigMap's one", out)
		}
		out, err := kubectl(t, "exec", "-n", ns, "shell", "--", "sh", "-c", "exit 7")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
			t.Errorf("exec exit 7: err %v, output %q", err, out)
		}
		cmd := exec.Command("kubectl", "--kubeconfig", a.Kubeconfig, "exec", "-i", "-n", ns, "shell", "--", "sh")
		cmd.Stdin = strings.NewReader("echo from-stdin-$((6*7))\nexit\n")
		raw, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(raw), "from-stdin-42") {
			t.Errorf("exec -i: %v %q", err, raw)
		}
	})

	t.Run("attach", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, "kubectl", "--kubeconfig", a.Kubeconfig, "attach", "-n", ns, "shell").CombinedOutput()
		if !strings.Contains(string(out), "tick") {
			t.Errorf("kubectl attach showed none of the container's output:\n%s", out)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		port := cluster.FreePorts(1)[0]
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", a.Kubeconfig, "port-forward", "-n", ns, "pod/web", fmt.Sprintf("%d:8080", port))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		waitFor(t, 30*time.Second, "port-forward to serve", func() (bool, string) {
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return string(body) == testimage.IndexHTML, string(body)
		})
	})

	t.Run("events", func(t *testing.T) {
		waitFor(t, 30*time.Second, "B's Started event mirrored on the pod in A", func() (bool, string) {
			out, err := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=shell", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
			return err == nil && strings.Contains(out, "Started"), out
		})
	})

	t.Run("configmap update", func(t *testing.T) {
		mustKubectl(t, "patch", "configmap", "conf", "-n", ns, "--type=merge", "-p", `{"data":{"msg":"two"}}`)
		waitFor(t, 3*time.Minute, "the ConfigMap's update in the copy's volume", func() (bool, string) {
			out, err := kubectl(t, "exec", "-n", ns, "shell", "--", "cat", "/conf/msg")
			return err == nil && strings.TrimSpace(out) == "two", out
		})
	})

	t.Run("top", func(t *testing.T) {
		waitFor(t, 4*time.Minute, "kubectl top pod shell", func() (bool, string) {
			out, err := kubectl(t, "top", "pod", "-n", ns, "shell", "--no-headers")
			return err == nil && strings.HasPrefix(out, "shell"), out
		})
	})

	t.Run("capacity follows the quota", func(t *testing.T) {
		// The copies use the tenant's quota, and the scheduler in A counts
		// them on the node itself: allocatable stays the whole quota.
		waitFor(t, time.Minute, "allocatable cpu of the node", func() (bool, string) {
			n, err := clientA(t).CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			got := n.Status.Allocatable[v1.ResourceCPU]
			return got.Cmp(resource.MustParse("4")) == 0, got.String()
		})
	})
}

// Step 3: the label cci.io/burst on a pod template, through the webhook
// connect --install placed in A: enforce sends every pod to the virtual
// node, which gives them the lowest deletion cost; auto keeps them on A's
// own node while it has room.
func TestBurstLabel(t *testing.T) {
	ensureNamespace(t)
	deployment := func(name, mode string, replicas int) string {
		return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s, cci.io/burst: %s}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - {name: c, image: %s, command: [sleep, "3600"], resources: {requests: {cpu: 250m, memory: 512Mi}}}
`, name, ns, replicas, name, name, mode, image(testimage.Shell))
	}
	apply(t, deployment("enforced", "enforce", 2))
	apply(t, deployment("auto", "auto", 1))
	defer mustKubectl(t, "delete", "deployment", "-n", ns, "enforced", "auto", "--wait=false")
	waitFor(t, 3*time.Minute, "the enforce pods Running on the virtual node", func() (bool, string) {
		list, err := clientA(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=enforced"})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		running := 0
		for _, p := range list.Items {
			states = append(states, fmt.Sprintf("%s@%s=%s cost=%q", p.Name, p.Spec.NodeName, p.Status.Phase, p.Annotations["controller.kubernetes.io/pod-deletion-cost"]))
			if p.Spec.NodeName == nodeName && p.Status.Phase == v1.PodRunning && p.Annotations["controller.kubernetes.io/pod-deletion-cost"] == "-100" {
				running++
			}
		}
		return running == 2 && len(list.Items) == 2, strings.Join(states, " ")
	})
	waitFor(t, 3*time.Minute, "the auto pod Running on A's own node", func() (bool, string) {
		list, err := clientA(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=auto"})
		if err != nil || len(list.Items) != 1 {
			return false, fmt.Sprint(err, list)
		}
		p := list.Items[0]
		return p.Spec.NodeName != nodeName && p.Spec.NodeName != "" && p.Status.Phase == v1.PodRunning, p.Spec.NodeName + " " + string(p.Status.Phase)
	})
}

// logs --previous: the output of a container's last run, and the restart
// count, pass through from B.
func TestLogsPrevious(t *testing.T) {
	ensureNamespace(t)
	apply(t, podYAML("crash", image(testimage.Shell), `  containers:
  - name: c
    image: IMAGE
    command: [sh, -c, 'echo run-$(date +%s%N); sleep 1; exit 3']
    resources: {requests: {cpu: 250m, memory: 512Mi}}
`))
	waitFor(t, 3*time.Minute, "a restart of the crashing container, seen in A", func() (bool, string) {
		p, err := clientA(t).CoreV1().Pods(ns).Get(context.Background(), "crash", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err)
		}
		cs := p.Status.ContainerStatuses[0]
		last := cs.LastTerminationState.Terminated
		return cs.RestartCount >= 1 && last != nil && last.ExitCode == 3, fmt.Sprintf("%+v", cs)
	})
	out := mustKubectl(t, "logs", "--previous", "-n", ns, "crash")
	if !strings.Contains(out, "run-") {
		t.Errorf("logs --previous = %q, want the last run's output", out)
	}
	mustKubectl(t, "delete", "pod", "-n", ns, "crash", "--wait=false")
}

// Bad input: a pod that uses what cannot pass (hostPath) is refused in A
// with an event naming the field.
func TestHostPathRefused(t *testing.T) {
	ensureNamespace(t)
	apply(t, podYAML("hostpath", image(testimage.Shell), `  containers:
  - {name: c, image: IMAGE, command: [sleep, "3600"]}
  volumes: [{name: h, hostPath: {path: /etc}}]
`))
	waitFor(t, time.Minute, "the hostPath pod Failed with an event naming the field", func() (bool, string) {
		p, err := clientA(t).CoreV1().Pods(ns).Get(context.Background(), "hostpath", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		out, _ := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=hostpath", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
		return p.Status.Phase == v1.PodFailed && strings.Contains(out, "spec.volumes[0].hostPath"), fmt.Sprintf("phase %s; events %s", p.Status.Phase, out)
	})
	if _, ok := copyInB(t, podUID(t, "hostpath")); ok {
		t.Error("the refused pod has a copy in B")
	}
}

// Bad input: a pod B's admission refuses (it fits no flavor of the
// tenant) is refused in A with B's message as an event, never left pending.
func TestFlavorRefused(t *testing.T) {
	ensureNamespace(t)
	apply(t, podYAML("odd-size", image(testimage.Shell), `  containers:
  - {name: c, image: IMAGE, command: [sleep, "3600"], resources: {requests: {cpu: 100m, memory: 64Mi}}}
`))
	waitFor(t, time.Minute, "the pod that fits no flavor Failed with B's message", func() (bool, string) {
		p, err := clientA(t).CoreV1().Pods(ns).Get(context.Background(), "odd-size", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		out, _ := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=odd-size", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
		return p.Status.Phase == v1.PodFailed && strings.Contains(out, "RefusedByCell") && strings.Contains(out, "flavor"), fmt.Sprintf("phase %s; events %s", p.Status.Phase, out)
	})
}

// The same pod under a Deployment labelled cci.io/burst=enforce is refused
// when it is created: its ReplicaSet reports the flavor message and backs
// off, instead of replacing a pod failed on the node again and again.
func TestFlavorRefusedAtAdmission(t *testing.T) {
	ensureNamespace(t)
	const name = "odd-deploy"
	apply(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: 2
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s, cci.io/burst: enforce}}
    spec:
      containers:
      - {name: c, image: %s, command: [sleep, "3600"], resources: {limits: {cpu: 100m, memory: 64Mi}}}
`, name, ns, name, name, image(testimage.Shell)))
	defer func() { _, _ = kubectl(t, "delete", "deployment", "-n", ns, name, "--wait=true", "--timeout=60s") }()
	waitFor(t, time.Minute, "the ReplicaSet's FailedCreate with the flavor message", func() (bool, string) {
		out, _ := kubectl(t, "get", "events", "-n", ns, "--field-selector", "reason=FailedCreate", "-o", "custom-columns=O:.involvedObject.name,M:.message", "--no-headers")
		return strings.Contains(out, name) && strings.Contains(out, "flavor"), out
	})
	// A while later there is still no pod at all.
	time.Sleep(10 * time.Second)
	list, err := clientA(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("%d pods of the refused Deployment exist, want none", len(list.Items))
	}
}

func podUID(t *testing.T, name string) string {
	t.Helper()
	p, err := clientA(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(p.UID)
}

// Lifecycle: the link drops (connect stopped 30 s); a pod deleted in A
// meanwhile is gone from B once connect is back; the others were never
// restarted (same copies, same containers).
func TestLinkLoss(t *testing.T) {
	ensureNamespace(t)
	sleeper := `  containers:
  - {name: c, image: IMAGE, command: [sleep, "3600"], resources: {requests: {cpu: 250m, memory: 512Mi}}}
`
	for _, n := range []string{"keep-1", "keep-2", "victim"} {
		apply(t, podYAML(n, image(testimage.Shell), sleeper))
	}
	type seen struct{ copyUID, containerID string }
	before := map[string]seen{}
	for _, n := range []string{"keep-1", "keep-2", "victim"} {
		p := waitPod(t, ns, n, 3*time.Minute)
		cp, ok := copyInB(t, string(p.UID))
		if !ok {
			t.Fatalf("pod %s has no copy in B", n)
		}
		before[n] = seen{string(cp.UID), cp.Status.ContainerStatuses[0].ContainerID}
	}
	victimUID := podUID(t, "victim")

	if err := connector.Stop(); err != nil {
		t.Fatalf("stop cci connect: %v", err)
	}
	mustKubectl(t, "delete", "pod", "-n", ns, "victim", "--wait=false")
	// The link stays down a while, as a real outage would.
	time.Sleep(30 * time.Second)
	if _, ok := copyInB(t, victimUID); !ok {
		t.Fatal("the victim's copy went while connect was down: nothing should act on B then")
	}
	if err := connector.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the pod deleted in A while connect was down to be gone from A and B", func() (bool, string) {
		_, err := clientA(t).CoreV1().Pods(ns).Get(context.Background(), "victim", metav1.GetOptions{})
		_, inB := copyInB(t, victimUID)
		return apierrors.IsNotFound(err) && !inB, fmt.Sprintf("in A: %v; copy in B: %v", err, inB)
	})
	for _, n := range []string{"keep-1", "keep-2"} {
		p := waitPod(t, ns, n, time.Minute)
		cp, ok := copyInB(t, string(p.UID))
		if !ok {
			t.Fatalf("pod %s lost its copy in B", n)
		}
		got := seen{string(cp.UID), cp.Status.ContainerStatuses[0].ContainerID}
		if got != before[n] || cp.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("pod %s was restarted: copy/container %v before, %v after (restarts %d)", n, before[n], got, cp.Status.ContainerStatuses[0].RestartCount)
		}
		if p.Status.ContainerStatuses[0].ContainerID != got.containerID {
			t.Errorf("pod %s: A shows container %s, B runs %s", n, p.Status.ContainerStatuses[0].ContainerID, got.containerID)
		}
	}
	// Deleting in A deletes the copy (with its grace period).
	mustKubectl(t, "delete", "pod", "-n", ns, "keep-2", "--wait=false")
	uid := before["keep-2"].copyUID
	waitFor(t, time.Minute, "keep-2's copy to leave B", func() (bool, string) {
		list, err := clientB(t).CoreV1().Pods(tenant).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range list.Items {
			if string(p.UID) == uid {
				return false, p.Name + " " + string(p.Status.Phase)
			}
		}
		return true, ""
	})
}

// Bad input: a tenant with no quota left. The node's capacity drops to
// what its own pods hold, it says why (condition and event), and a new pod
// waits in A until the quota has room again.
func TestQuotaExhausted(t *testing.T) {
	ensureNamespace(t)
	ctx := context.Background()
	// One pod of the node's own in B, so that the quota is used by it.
	apply(t, podYAML("holder", image(testimage.Shell), `  containers:
  - {name: c, image: IMAGE, command: [sleep, "3600"], resources: {requests: {cpu: 250m, memory: 512Mi}}}
`))
	waitPod(t, ns, "holder", 3*time.Minute)
	defer mustKubectl(t, "delete", "pod", "-n", ns, "holder", "--wait=false")
	var used resource.Quantity
	waitFor(t, time.Minute, "the tenant's quota to count the pod", func() (bool, string) {
		rq, err := b.Client(t).CoreV1().ResourceQuotas(tenant).Get(ctx, "cci-tenant", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		used = rq.Status.Used[v1.ResourceRequestsCPU]
		return used.Cmp(resource.MustParse("250m")) >= 0, used.String()
	})
	setCPU := func(q string) {
		t.Helper()
		out, err := exec.Command("kubectl", "--kubeconfig", b.Kubeconfig, "patch", "tenant", tenant, "--type=merge",
			"-p", fmt.Sprintf(`{"spec":{"quota":{"cpu":%q}}}`, q)).CombinedOutput()
		if err != nil {
			t.Fatalf("set the tenant's cpu quota to %s: %v\n%s", q, err, out)
		}
	}
	setCPU(used.String())
	defer setCPU("4")
	waitFor(t, time.Minute, "the node to say the tenant's quota is used up", func() (bool, string) {
		n, err := clientA(t).CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == "TenantQuotaAvailable" {
				return c.Status == v1.ConditionFalse && strings.Contains(c.Message, "requests.cpu"), c.Message
			}
		}
		return false, "no TenantQuotaAvailable condition"
	})
	out := mustKubectl(t, "get", "events", "-A", "--field-selector", "involvedObject.kind=Node,involvedObject.name="+nodeName, "-o", "custom-columns=R:.reason", "--no-headers")
	if !strings.Contains(out, "QuotaExhausted") {
		t.Errorf("no QuotaExhausted event on the node: %s", out)
	}
	apply(t, podYAML("waiting", image(testimage.Shell), `  containers:
  - {name: c, image: IMAGE, command: [sleep, "3600"], resources: {requests: {cpu: 250m, memory: 512Mi}}}
`))
	waitFor(t, time.Minute, "the new pod to wait with the scheduler's reason", func() (bool, string) {
		out, _ := kubectl(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=waiting", "-o", "custom-columns=R:.reason,M:.message", "--no-headers")
		return strings.Contains(out, "FailedScheduling") && strings.Contains(out, "Insufficient cpu"), out
	})
	setCPU("4")
	waitPod(t, ns, "waiting", 3*time.Minute)
	mustKubectl(t, "delete", "pod", "-n", ns, "waiting", "--wait=false")
}
