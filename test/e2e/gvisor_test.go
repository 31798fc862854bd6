package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// A fresh cluster has the RuntimeClasses runc and gvisor.
func TestRuntimeClassesExist(t *testing.T) {
	out := mustKubectl(t, "get", "runtimeclass", "-o", "jsonpath={range .items[*]}{.metadata.name}={.handler} {end}")
	for _, want := range []string{"runc=runc", "gvisor=gvisor"} {
		if !slices.Contains(strings.Fields(out), want) {
			t.Errorf("RuntimeClasses %q lack %s", out, want)
		}
	}
}

// sleeper is a pod of the shell image that runs until deleted.
func sleeper(name, runtimeClass string, containers ...string) *v1.Pod {
	if len(containers) == 0 {
		containers = []string{"main"}
	}
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pod": name}},
		Spec: v1.PodSpec{
			RuntimeClassName:              runtimeClassPtr(runtimeClass),
			TerminationGracePeriodSeconds: new(int64),
		},
	}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{
			Name: c, Image: image(testimage.Shell), Command: []string{"sh", "-c", "echo " + c + " up; exec sleep 3600"},
		})
	}
	return p
}

// startPod creates p and returns how long it took to be Running and Ready,
// as a watch on the pod sees it.
func startPod(t *testing.T, p *v1.Pod) time.Duration {
	t.Helper()
	cs := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	w, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + p.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	begin := time.Now()
	if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Pods("default").Delete(context.Background(), p.Name, metav1.DeleteOptions{}) })
	last := ""
	for ev := range w.ResultChan() {
		got, ok := ev.Object.(*v1.Pod)
		if !ok {
			continue
		}
		if got.Status.Phase == v1.PodRunning && podReady(got) {
			return time.Since(begin)
		}
		last = fmt.Sprintf("%s %+v", got.Status.Phase, got.Status.ContainerStatuses)
	}
	t.Fatalf("pod %s not Running and Ready within 90s: %s", p.Name, last)
	return 0
}

func hostKernel(t *testing.T) string {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// sandboxProcesses lists the host's runsc sandbox processes (runsc-sandbox
// boot …) whose command line names id.
func sandboxProcesses(id string) []string {
	var out []string
	for _, pid := range sandboxPids(id) {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, strings.ReplaceAll(strings.TrimRight(string(raw), "\x00"), "\x00", " "))
	}
	return out
}

func sandboxPids(id string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(args) > 1 && args[0] == "runsc-sandbox" && slices.Contains(args, "boot") && strings.Contains(string(raw), id) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// podContainerIDs lists the containerd containers of the pod with this UID.
func podContainerIDs(t *testing.T, uid string) []string {
	t.Helper()
	ctrs, err := ctrdClient(t).Containers(namespaces.WithNamespace(context.Background(), "cci"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range ctrs {
		if strings.HasPrefix(c.ID(), uid) {
			ids = append(ids, c.ID())
		}
	}
	slices.Sort(ids)
	return ids
}

// Inside a gvisor pod the kernel is gVisor's: uname and dmesg show it, not
// the host's; a runc pod shows the host's. Every container of the pod runs
// in one sandbox.
func TestGVisorIsolation(t *testing.T) {
	host := hostKernel(t)
	startPod(t, sleeper("iso-runc", ""))
	startPod(t, sleeper("iso-gvisor", "gvisor", "main", "second"))

	if got := strings.TrimSpace(mustKubectl(t, "exec", "iso-runc", "--", "uname", "-r")); got != host {
		t.Errorf("runc pod: uname -r %q, want the host's %q", got, host)
	}
	for _, c := range []string{"main", "second"} {
		got := strings.TrimSpace(mustKubectl(t, "exec", "iso-gvisor", "-c", c, "--", "uname", "-r"))
		if got == host || got == "" {
			t.Errorf("gvisor pod, container %s: uname -r %q, the host's is %q", c, got, host)
		}
		t.Logf("container %s: uname -r %q (host %q)", c, got, host)
	}
	uname := mustKubectl(t, "exec", "iso-gvisor", "-c", "main", "--", "uname", "-a")
	if strings.Contains(uname, host) {
		t.Errorf("gvisor pod: uname -a %q shows the host's kernel %q", uname, host)
	}
	dmesg := mustKubectl(t, "exec", "iso-gvisor", "-c", "main", "--", "dmesg")
	if !strings.Contains(dmesg, "Starting gVisor") {
		t.Errorf("gvisor pod: dmesg lacks gVisor's boot messages:\n%s", dmesg)
	}
	t.Logf("gvisor pod: uname -a: %s", strings.TrimSpace(uname))
	t.Logf("gvisor pod: dmesg starts %q", strings.SplitN(dmesg, "\n", 2)[0])
	if out, _ := kubectl(t, "exec", "iso-runc", "--", "dmesg"); strings.Contains(out, "gVisor") {
		t.Errorf("runc pod: dmesg shows gVisor:\n%s", out)
	}

	// One sandbox for the pod: one runsc-sandbox process, named after the pod's sandbox.
	p, err := client(t).CoreV1().Pods("default").Get(context.Background(), "iso-gvisor", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if procs := sandboxProcesses(string(p.UID)); len(procs) != 1 {
		t.Errorf("pod with 2 containers has %d runsc sandboxes, want 1:\n%s", len(procs), strings.Join(procs, "\n"))
	}
	// Two containers share the sandbox of a pause container.
	if ids := podContainerIDs(t, string(p.UID)); !slices.Equal(ids, []string{string(p.UID) + "-main", string(p.UID) + "-second", string(p.UID) + "_pod"}) {
		t.Errorf("containers of the 2-container pod: %v, want main, second and the pause container", ids)
	}
	for _, c := range []string{"main", "second"} {
		if out := mustKubectl(t, "logs", "iso-gvisor", "-c", c); !strings.Contains(out, c+" up") {
			t.Errorf("logs of %s: %q", c, out)
		}
	}
	if got := strings.TrimSpace(mustKubectl(t, "exec", "iso-gvisor", "-c", "main", "--", "hostname")); got != "iso-gvisor" {
		t.Errorf("gvisor pod hostname %q", got)
	}
}

// Start time of a pod under each runtime class, measured (not asserted):
// create to Running and Ready, image already pulled.
func TestGVisorStartTime(t *testing.T) {
	const rounds = 5
	for _, rc := range []string{"", "gvisor"} {
		label := rc
		if label == "" {
			label = "runc"
		}
		var took []time.Duration
		for i := range rounds {
			name := fmt.Sprintf("start-%s-%d", label, i)
			took = append(took, startPod(t, sleeper(name, rc)))
			mustKubectl(t, "delete", "pod", name, "--wait=true")
		}
		slices.Sort(took)
		t.Logf("pod start, create to Ready, %s: median %s of %v", label, took[len(took)/2].Round(time.Millisecond), took)
	}
}

// Containers of a gvisor pod end with their own exit codes, init containers
// first, and the sandbox is gone once the pod ended.
func TestGVisorExitAndTeardown(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	p := sleeper("gv-exit", "gvisor")
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	p.Spec.InitContainers = []v1.Container{{Name: "init", Image: image(testimage.Shell), Command: []string{"sh", "-c", "echo init-ran > /work/init"},
		VolumeMounts: []v1.VolumeMount{{Name: "work", MountPath: "/work"}}}}
	p.Spec.Containers[0].Command = []string{"sh", "-c", "cat /work/init; sleep 1; exit 3"}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "work", MountPath: "/work"}}
	p.Spec.Volumes = []v1.Volume{{Name: "work", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
	created, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}) })
	var got *v1.Pod
	waitFor(t, 90*time.Second, "pod to fail", func() (bool, string) {
		got, err = cs.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return got.Status.Phase == v1.PodFailed, fmt.Sprintf("%s %+v", got.Status.Phase, got.Status.ContainerStatuses)
	})
	if ic := got.Status.InitContainerStatuses; len(ic) != 1 || ic[0].State.Terminated == nil || ic[0].State.Terminated.ExitCode != 0 {
		t.Errorf("init container status %+v", ic)
	}
	if mc := got.Status.ContainerStatuses; len(mc) != 1 || mc[0].State.Terminated == nil || mc[0].State.Terminated.ExitCode != 3 || mc[0].State.Terminated.Reason != "Error" {
		t.Errorf("container status %+v", mc)
	}
	if out := mustKubectl(t, "logs", p.Name); !strings.Contains(out, "init-ran") {
		t.Errorf("main container did not see the init container's work: %q", out)
	}
	waitFor(t, 30*time.Second, "the pod's sandbox to go", func() (bool, string) {
		procs := sandboxProcesses(string(created.UID))
		return len(procs) == 0, strings.Join(procs, "\n")
	})
}

// A RuntimeClass whose handler the node does not serve shows in the pod's
// events and status; the node keeps running other pods.
func TestGVisorUnknownHandler(t *testing.T) {
	manifest := filepath.Join(t.TempDir(), "rc.yaml")
	os.WriteFile(manifest, []byte("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: kata\nhandler: kata-qemu\n"), 0o644)
	mustKubectl(t, "apply", "-f", manifest)
	t.Cleanup(func() { kubectl(t, "delete", "runtimeclass", "kata") })
	cs := client(t)
	ctx := context.Background()
	p := sleeper("unknown-handler", "kata")
	if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kubectl(t, "delete", "pod", p.Name, "--grace-period=0", "--force") })
	waitFor(t, 30*time.Second, "a FailedCreatePodSandBox event naming the handler", func() (bool, string) {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			return false, err.Error()
		}
		var all []string
		for _, e := range evs.Items {
			all = append(all, e.Reason+": "+e.Message)
			if e.Reason == "FailedCreatePodSandBox" && strings.Contains(e.Message, `"kata-qemu"`) {
				return true, ""
			}
		}
		return false, strings.Join(all, "\n")
	})
	got, err := cs.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != v1.PodPending || !strings.Contains(got.Status.Message, "kata-qemu") {
		t.Errorf("pod status %s %q, want Pending with a message naming the handler", got.Status.Phase, got.Status.Message)
	}
	// The same node still runs pods of both classes.
	startPod(t, sleeper("after-unknown", "gvisor"))
}

// A gvisor pod whose sandbox dies gets a new one, as the kubelet re-creates
// a dead pod sandbox: its containers restart in it, with the pod's IP.
func TestGVisorSandboxRecreated(t *testing.T) {
	startPod(t, sleeper("gv-crash", "gvisor"))
	cs := client(t)
	ctx := context.Background()
	before, err := cs.CoreV1().Pods("default").Get(ctx, "gv-crash", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pids := sandboxPids(string(before.UID))
	if len(pids) != 1 {
		t.Fatalf("pod has %d runsc sandboxes, want 1", len(pids))
	}
	// A pod of one container has no pause container: the container boots
	// the sandbox itself.
	if ids := podContainerIDs(t, string(before.UID)); !slices.Equal(ids, []string{string(before.UID) + "-main"}) {
		t.Errorf("containers of the 1-container pod: %v, want only main", ids)
	}
	if err := unix.Kill(pids[0], unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the pod running again in a new sandbox", func() (bool, string) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "gv-crash", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err)
		}
		c := p.Status.ContainerStatuses[0]
		now := sandboxPids(string(p.UID))
		return c.RestartCount == 1 && c.State.Running != nil && len(now) == 1 && now[0] != pids[0],
			fmt.Sprintf("restarts %d state %+v sandboxes %v", c.RestartCount, c.State, now)
	})
	after, _ := cs.CoreV1().Pods("default").Get(ctx, "gv-crash", metav1.GetOptions{})
	if after.Status.PodIP != before.Status.PodIP {
		t.Errorf("pod IP %s, was %s", after.Status.PodIP, before.Status.PodIP)
	}
	if out := mustKubectl(t, "exec", "gv-crash", "--", "uname", "-r"); strings.TrimSpace(out) == hostKernel(t) {
		t.Errorf("exec in the new sandbox reached the host kernel: %q", out)
	}
	if out := strings.TrimSpace(mustKubectl(t, "exec", "gv-crash", "--", "hostname")); out != "gv-crash" {
		t.Errorf("hostname in the new sandbox %q, want gv-crash", out)
	}
}

// A gvisor pod over its memory limit is killed as a whole (the limit is its
// sandbox's) and its container shows OOMKilled.
func TestGVisorOOMKilled(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	p := sleeper("gv-oom", "gvisor")
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	p.Spec.Containers[0].Command = []string{"sh", "-c", "tail /dev/zero"}
	p.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceMemory: resource.MustParse("32Mi")}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}) })
	waitFor(t, 90*time.Second, "OOMKilled", func() (bool, string) {
		got, err := cs.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || len(got.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err)
		}
		term := got.Status.ContainerStatuses[0].State.Terminated
		return term != nil && term.Reason == "OOMKilled" && term.ExitCode == 137 && got.Status.Phase == v1.PodFailed,
			fmt.Sprintf("%s %+v", got.Status.Phase, got.Status.ContainerStatuses[0].State)
	})
}
