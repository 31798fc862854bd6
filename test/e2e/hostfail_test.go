package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cci-project/cci/internal/containment"
	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// hostAgent is a second host on this machine: `cci agent` with a data
// folder, bridge and kubelet port of its own, joined to the suite's control
// plane.
type hostAgent struct {
	t    *testing.T
	name string
	data string
	args []string

	mu   sync.Mutex
	out  strings.Builder
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (a *hostAgent) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.Write(p)
}

func (a *hostAgent) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// joinArgs are the flags of `cci agent` joining the suite's control plane.
func joinArgs(t *testing.T, data, node, bridgeSuffix string) []string {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(cci.DataDir, "pki", "token"))
	if err != nil {
		t.Fatal(err)
	}
	server := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(grepLines(cci.Output(), "apiserver:")), "apiserver:"))
	return []string{"agent", "--data-dir", data, "--server", server, "--token", strings.TrimSpace(string(token)),
		"--node-name", node, "--kubelet-port", strconv.Itoa(cluster.FreePorts(1)[0]), "--cni-bridge", cci.Bridge + bridgeSuffix,
		"--insecure-registry", cci.Registry, "--service-proxy", "off"}
}

// newHostAgent starts a second host named node and waits for it to be
// Ready; cleanup deletes what the test left on it, stops it and deletes its
// node.
func newHostAgent(t *testing.T, node, bridgeSuffix string) *hostAgent {
	t.Helper()
	data := filepath.Join(t.TempDir(), node)
	a := &hostAgent{t: t, name: node, data: data, args: joinArgs(t, data, node, bridgeSuffix)}
	a.start()
	t.Cleanup(func() {
		if a.running() {
			kubectl(t, "delete", "pods", "--all-namespaces", "--field-selector", "spec.nodeName="+node, "--wait=true", "--timeout=60s")
			a.signal(syscall.SIGTERM)
			<-a.done
		}
		kubectl(t, "delete", "node", node, "--ignore-not-found")
		// Its bridge holds its pod range's route: left behind, it would
		// hide the pods of the next node given that range.
		cluster.RemoveBridges(cci.Bridge + bridgeSuffix)
		if err := containment.Remove(context.Background(), cci.Bridge+bridgeSuffix); err != nil {
			t.Logf("remove the tenant containment rules of %s: %v", node, err)
		}
		if t.Failed() {
			t.Logf("agent %s output:\n%s", node, a.output())
		}
	})
	a.waitReady()
	return a
}

func (a *hostAgent) start() {
	a.t.Helper()
	a.cmd = exec.Command(cci.Bin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = a, a
	if err := a.cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	done := make(chan struct{})
	a.done = done
	go func(cmd *exec.Cmd) {
		err := cmd.Wait()
		a.mu.Lock()
		a.err = err
		a.mu.Unlock()
		close(done)
	}(a.cmd)
}

func (a *hostAgent) running() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

func (a *hostAgent) signal(sig syscall.Signal) { _ = a.cmd.Process.Signal(sig) }

func (a *hostAgent) waitReady() {
	a.t.Helper()
	waitFor(a.t, 90*time.Second, "node "+a.name+" Ready", func() (bool, string) {
		if !a.running() {
			a.t.Fatalf("agent %s exited: %v\n%s", a.name, a.err, a.output())
		}
		s, _ := kubectl(a.t, "get", "node", a.name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
		return s == "True", s
	})
}

// containerd is a client of the agent's own containerd.
func (a *hostAgent) containerd() *containerd.Client {
	a.t.Helper()
	c, err := containerd.New(filepath.Join(a.data, "containerd", "state", "containerd.sock"))
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { c.Close() })
	return c
}

// leftovers lists what of a pod is still on the host: containers, network
// namespace, IP lease, pod folder, mounts, shim processes.
func (a *hostAgent) leftovers(c *containerd.Client, p v1.Pod) []string {
	uid := string(p.UID)
	var left []string
	ctx := namespaces.WithNamespace(context.Background(), "cci")
	if c != nil {
		ctrs, err := c.Containers(ctx)
		if err != nil {
			a.t.Fatal(err)
		}
		for _, ctr := range ctrs {
			if strings.HasPrefix(ctr.ID(), uid) {
				left = append(left, "container "+ctr.ID())
			}
		}
	}
	if _, err := os.Stat(filepath.Join("/var/run/netns", "cci-"+uid)); err == nil {
		left = append(left, "network namespace")
	}
	if p.Status.PodIP != "" {
		_ = filepath.Walk(filepath.Join(a.data, "cni", "ipam"), func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Name() == p.Status.PodIP {
				left = append(left, "IP lease "+path)
			}
			return nil
		})
	}
	if _, err := os.Stat(filepath.Join(a.data, "agent", "pods", uid)); err == nil {
		left = append(left, "pod folder")
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), uid) {
		left = append(left, "mounts:\n"+grepLines(string(mounts), uid))
	}
	if procs := processesNaming(uid); len(procs) > 0 {
		left = append(left, "processes: "+strings.Join(procs, "; "))
	}
	return left
}

// processesNaming lists the processes whose command line names s (a
// container's shim is started with its id).
func processesNaming(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(raw), s) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(raw), "\x00", " "))
		}
	}
	return out
}

func nodeReady(t *testing.T, name string) string {
	s, _ := kubectl(t, "get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
	return s
}

// mainNode is the suite's own host: cci up names its node after the host.
func mainNode(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(h)
}

func labelNode(t *testing.T, node, label string) {
	t.Helper()
	mustKubectl(t, "label", "node", node, label+"=yes", "--overwrite")
	t.Cleanup(func() { kubectl(t, "label", "node", node, label+"-") })
}

// A host dies (agent and containerd killed): its node goes NotReady; a pod
// deleted meanwhile is replaced on another host; when the host comes back
// the deleted pod's container, network namespace, IP lease and folder go,
// and the pod that is still its own keeps its container.
func TestHostDiesAndReturns(t *testing.T) {
	a := newHostAgent(t, "hf-die", "h")
	mustKubectl(t, "label", "node", "hf-die", "hostfail-test=yes")
	labelNode(t, "hf-die", "hostfail-die")
	mustKubectl(t, "run", "hf-keep", "--image="+image(testimage.HTTPD), "--overrides", `{"spec":{"nodeName":"hf-die"}}`)
	t.Cleanup(func() { kubectl(t, "delete", "pod", "hf-keep", "--ignore-not-found") })
	mustKubectl(t, "create", "deployment", "hf-moved", "--image="+image(testimage.HTTPD))
	t.Cleanup(func() { kubectl(t, "delete", "deployment", "hf-moved", "--ignore-not-found") })
	mustKubectl(t, "patch", "deployment", "hf-moved", "-p", `{"spec":{"template":{"spec":{"nodeSelector":{"hostfail-die":"yes"}}}}}`)
	keep := waitRunning(t, "default", "run=hf-keep", 1, 90*time.Second)[0]
	moved := waitRunning(t, "default", "app=hf-moved", 1, 90*time.Second)[0]
	if moved.Spec.NodeName != "hf-die" {
		t.Fatalf("deployment pod on %q", moved.Spec.NodeName)
	}

	// The host dies: agent and containerd killed, containers left running.
	pidRaw, err := os.ReadFile(filepath.Join(a.data, "containerd", "state", "cci-containerd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	ctrdPid, err := strconv.Atoi(strings.TrimSpace(string(pidRaw)))
	if err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGKILL)
	<-a.done
	killed := time.Now()
	if err := syscall.Kill(ctrdPid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the agent's containerd (pid %d): %v", ctrdPid, err)
	}
	waitFor(t, 3*time.Minute, "node hf-die NotReady", func() (bool, string) {
		s := nodeReady(t, "hf-die")
		return s != "True", s
	})
	t.Logf("node NotReady %.1fs after its agent and containerd were killed", time.Since(killed).Seconds())

	// While it is down, one of its pods is deleted and replaced elsewhere.
	mustKubectl(t, "delete", "pod", moved.Name, "--force", "--grace-period=0")
	labelNode(t, mainNode(t), "hostfail-die")
	var replacement v1.Pod
	waitFor(t, 90*time.Second, "replacement pod running on another host", func() (bool, string) {
		for _, p := range listPods(t, "default", "app=hf-moved") {
			if p.UID != moved.UID && p.Status.Phase == v1.PodRunning && p.Spec.NodeName != "hf-die" {
				replacement = p
				return true, ""
			}
		}
		return false, fmt.Sprint(len(listPods(t, "default", "app=hf-moved")))
	})
	// The dead host's copy dies too, as in a power cut: its shim and its
	// processes. An agent that re-adopted it would start it again.
	killPod(t, moved.UID)

	// The host comes back.
	a.start()
	a.waitReady()
	c := a.containerd()
	waitFor(t, 30*time.Second, "the deleted pod removed from the host", func() (bool, string) {
		left := a.leftovers(c, moved)
		return len(left) == 0, strings.Join(left, ", ")
	})
	after := waitRunning(t, "default", "run=hf-keep", 1, 60*time.Second)[0]
	b, n := keep.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
	if n.ContainerID != b.ContainerID || n.RestartCount != b.RestartCount || after.Status.PodIP != keep.Status.PodIP {
		t.Errorf("the pod that stayed: container %s restarts %d IP %s; before %s %d %s",
			n.ContainerID, n.RestartCount, after.Status.PodIP, b.ContainerID, b.RestartCount, keep.Status.PodIP)
	}
	if got, err := client(t).CoreV1().Pods("default").Get(context.Background(), replacement.Name, metav1.GetOptions{}); err != nil || got.Status.Phase != v1.PodRunning || got.UID != replacement.UID {
		t.Errorf("replacement pod after the host's return: %v %v", got.Status.Phase, err)
	}
	if !strings.Contains(a.output(), "removing pod that is no longer this node's") {
		t.Errorf("agent did not say it removed the deleted pod")
	}
	// The deleted pod never ran again: no container of its UID was started
	// after the host came back.
	evs, err := client(t).CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(moved.UID)})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if (e.Reason == "Started" || e.Reason == "Created") && e.LastTimestamp.After(killed) {
			t.Errorf("the deleted pod's container was started again on the host's return: %s %s", e.Reason, e.Message)
		}
	}
}

// killPod kills what runs of a pod on this machine: the shims that name
// it and the processes in its cgroups.
func killPod(t *testing.T, uid types.UID) {
	t.Helper()
	n := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cgroup, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if strings.Contains(string(cmdline), string(uid)) || strings.Contains(string(cgroup), string(uid)) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	if n == 0 {
		t.Fatalf("no process of pod %s found to kill", uid)
	}
}

// `kubectl drain` of a host honours a PodDisruptionBudget: it refuses
// while evicting would break the budget and empties the host once the
// budget allows; the agent stops the evicted pods.
func TestDrainHonoursPDB(t *testing.T) {
	a := newHostAgent(t, "hf-drain", "d")
	mustKubectl(t, "label", "node", "hf-drain", "hostfail-test=yes")
	labelNode(t, "hf-drain", "hostfail-drain")
	mustKubectl(t, "create", "deployment", "hf-pdb", "--replicas=2", "--image="+image(testimage.HTTPD))
	t.Cleanup(func() { kubectl(t, "delete", "deployment", "hf-pdb", "--ignore-not-found") })
	mustKubectl(t, "patch", "deployment", "hf-pdb", "-p", `{"spec":{"template":{"spec":{"nodeSelector":{"hostfail-drain":"yes"}}}}}`)
	mustKubectl(t, "create", "poddisruptionbudget", "hf-pdb", "--selector=app=hf-pdb", "--min-available=2")
	t.Cleanup(func() { kubectl(t, "delete", "poddisruptionbudget", "hf-pdb", "--ignore-not-found") })
	before := waitRunning(t, "default", "app=hf-pdb", 2, 90*time.Second)
	waitFor(t, 30*time.Second, "PDB hf-pdb sees 2 healthy pods", func() (bool, string) {
		s, _ := kubectl(t, "get", "pdb", "hf-pdb", "-o", "jsonpath={.status.currentHealthy}")
		return s == "2", s
	})

	// No pod may go: drain cordons the host and gives up.
	out, err := kubectl(t, "drain", "hf-drain", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=15s")
	if err == nil || !strings.Contains(out, "disruption budget") {
		t.Fatalf("drain against a PDB that allows no disruption: %v\n%s", err, out)
	}
	if s, _ := kubectl(t, "get", "node", "hf-drain", "-o", "jsonpath={.spec.unschedulable}"); s != "true" {
		t.Errorf("node not cordoned: %q", s)
	}
	for _, p := range listPods(t, "default", "app=hf-pdb") {
		if p.DeletionTimestamp != nil || p.Spec.NodeName != "hf-drain" || p.Status.Phase != v1.PodRunning {
			t.Errorf("pod %s disturbed by the refused drain: node %s phase %s deleting %v", p.Name, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil)
		}
	}

	// Another host and a budget that lets one go at a time: drain empties
	// the host, one pod after the other.
	labelNode(t, mainNode(t), "hostfail-drain")
	mustKubectl(t, "patch", "pdb", "hf-pdb", "--type=merge", "-p", `{"spec":{"minAvailable":1}}`)
	begin := time.Now()
	out, err = kubectl(t, "drain", "hf-drain", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s")
	if err != nil {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	t.Logf("drain of 2 pods took %.1fs", time.Since(begin).Seconds())
	if !strings.Contains(out, "evicted") {
		t.Errorf("drain output names no eviction:\n%s", out)
	}
	pods := waitRunning(t, "default", "app=hf-pdb", 2, 90*time.Second)
	for _, p := range pods {
		if p.Spec.NodeName == "hf-drain" {
			t.Errorf("pod %s still on the drained host", p.Name)
		}
	}
	c := a.containerd()
	for _, p := range before {
		if left := a.leftovers(c, p); len(left) > 0 {
			t.Errorf("evicted pod %s left on the host: %s", p.Name, strings.Join(left, ", "))
		}
	}
	mustKubectl(t, "uncordon", "hf-drain")
}

// `kubectl delete node` while its agent runs: the agent stops the host's
// pods, does not register the node again and exits saying why.
func TestNodeDeletedStopsAgent(t *testing.T) {
	a := newHostAgent(t, "hf-gone", "x")
	mustKubectl(t, "label", "node", "hf-gone", "hostfail-test=yes")
	mustKubectl(t, "run", "hf-gone-pod", "--image="+image(testimage.HTTPD), "--overrides", `{"spec":{"nodeName":"hf-gone","terminationGracePeriodSeconds":2}}`)
	t.Cleanup(func() {
		kubectl(t, "delete", "pod", "hf-gone-pod", "--ignore-not-found", "--force", "--grace-period=0")
	})
	pod := waitRunning(t, "default", "run=hf-gone-pod", 1, 90*time.Second)[0]
	c := a.containerd()

	mustKubectl(t, "delete", "node", "hf-gone")
	kube := client(t)
	waitFor(t, 2*time.Minute, "agent hf-gone exits", func() (bool, string) {
		if _, err := kube.CoreV1().Nodes().Get(context.Background(), "hf-gone", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("node hf-gone registered again after its deletion (err %v)", err)
		}
		return !a.running(), ""
	})
	if a.err == nil {
		t.Errorf("agent exited with status 0 after its node was deleted")
	}
	if want := `node "hf-gone" was deleted from the cluster; its pods were stopped; restart the agent to register it again`; !strings.Contains(a.output(), want) {
		t.Errorf("agent output lacks %q:\n%s", want, a.output())
	}
	if _, err := kube.CoreV1().Nodes().Get(context.Background(), "hf-gone", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("node hf-gone exists after its agent exited: %v", err)
	}
	// The agent's containerd is gone with it: what is left is looked at on disk.
	_ = c
	if left := a.leftovers(nil, pod); len(left) > 0 {
		t.Errorf("pod of the deleted node left on the host: %s", strings.Join(left, ", "))
	}
}

// Bad input to `cci agent` gets a message naming what to fix, and
// disturbs nothing: a token of another cluster, a token the apiserver
// refuses, and a node name another live host holds.
func TestAgentJoinRefusals(t *testing.T) {
	run := func(args []string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, cci.Bin, args...).CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("cci %s did not exit: %s", strings.Join(args, " "), out)
		}
		return string(out), err
	}
	withToken := func(args []string, token string) []string {
		out := append([]string(nil), args...)
		for i := range out {
			if out[i] == "--token" {
				out[i+1] = token
			}
		}
		return out
	}
	base := joinArgs(t, filepath.Join(t.TempDir(), "refused"), "hf-refused", "r")
	var good string
	for i := range base {
		if base[i] == "--token" {
			good = base[i+1]
		}
	}
	parts := strings.Split(good, ".")

	otherCA := parts[0] + "." + strings.Repeat("0", 64) + "." + parts[2]
	out, err := run(withToken(base, otherCA))
	if err == nil || !strings.Contains(out, "does not present the CA named in the join token") || !strings.Contains(out, "pki/token") {
		t.Errorf("token of another cluster: %v\n%s", err, out)
	}
	badSecret := parts[0] + "." + parts[1] + ".not-the-secret"
	out, err = run(withToken(base, badSecret))
	if err == nil || !strings.Contains(out, "refused the join token (401 Unauthorized): the token is wrong or was revoked") || !strings.Contains(out, "pki/token") {
		t.Errorf("refused token: %v\n%s", err, out)
	}
	if _, err := client(t).CoreV1().Nodes().Get(context.Background(), "hf-refused", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a refused agent registered its node: %v", err)
	}

	// A second host with the name of a live one.
	newHostAgent(t, "hf-dup", "u")
	mustKubectl(t, "label", "node", "hf-dup", "hostfail-test=yes")
	n, err := client(t).CoreV1().Nodes().Get(context.Background(), "hf-dup", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owner := n.Annotations["node.cci.io/host-id"]
	if owner == "" {
		t.Fatalf("node hf-dup carries no host id: %v", n.Annotations)
	}
	out, err = run(joinArgs(t, filepath.Join(t.TempDir(), "dup"), "hf-dup", "v"))
	if err == nil || !strings.Contains(out, `node name "hf-dup" is in use by another host (id `+owner) || !strings.Contains(out, "pass --node-name") {
		t.Errorf("second host with a name in use: %v\n%s", err, out)
	}
	if s := nodeReady(t, "hf-dup"); s != "True" {
		t.Errorf("the live host's node is %q after the refused one", s)
	}
	if n2, err := client(t).CoreV1().Nodes().Get(context.Background(), "hf-dup", metav1.GetOptions{}); err != nil || n2.Annotations["node.cci.io/host-id"] != owner {
		t.Errorf("the refused host changed the node: %v %v", n2.Annotations, err)
	}
}
