package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cci-project/cci/internal/testimage"
)

// Gaps the upstream conformance suite found where the agent did not behave
// as a kubelet with containerd does.

// A container name of 63 characters, the most Kubernetes allows, runs:
// its logs and exec work, beside a short one in the same pod, and alone in
// its pod (where under gVisor it is the sandbox's first container).
func TestLongContainerName(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		long := strings.Repeat("a", 30) + "-" + strings.Repeat("b", 32)
		solo := shellPod("solo", rc, "sleep 3600")
		solo.Spec.Containers[0].Name = long
		createPod(t, ns, solo)
		p := shellPod("long", rc, "echo started; sleep 3600")
		p.Spec.Containers[0].Name = long
		p.Spec.Containers = append(p.Spec.Containers, v1.Container{Name: "short", Image: image(testimage.Shell), Command: []string{"sleep", "3600"}})
		createPod(t, ns, p)
		waitRunning(t, ns, "app=long", 1, 90*time.Second)
		waitFor(t, 30*time.Second, "log of the long-named container", func() (bool, string) {
			out, err := kubectl(t, "-n", ns, "logs", "long", "-c", long)
			return err == nil && out == "started\n", fmt.Sprint(out, err)
		})
		if out, err := kubectl(t, "-n", ns, "exec", "long", "-c", long, "--", "echo", "hi"); err != nil || out != "hi\n" {
			t.Errorf("exec in the long-named container: %q, %v", out, err)
		}
		waitRunning(t, ns, "app=solo", 1, 60*time.Second)
		if out, err := kubectl(t, "-n", ns, "exec", "solo", "--", "echo", "hi"); err != nil || out != "hi\n" {
			t.Errorf("exec in the long-named container alone in its pod: %q, %v", out, err)
		}
	})
}

// An emptyDir on the default medium is mode 0777, so that a container
// running as any user writes it (conformance: EmptyDir (non-root,0644,default)).
func TestEmptyDirModeNonRoot(t *testing.T) {
	ns := testNamespace(t)
	uid := int64(1001)
	p := shellPod("scratch", "", "stat -c %a /scratch; echo x > /scratch/f && ls -ln /scratch/f")
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	p.Spec.SecurityContext = &v1.PodSecurityContext{RunAsUser: &uid}
	p.Spec.Volumes = []v1.Volume{{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	createPod(t, ns, p)
	waitPodIn(t, ns, "scratch", 90*time.Second, "Succeeded", phaseIs(v1.PodSucceeded))
	out, _ := kubectl(t, "-n", ns, "logs", "scratch")
	if lines := strings.Split(out, "\n"); len(lines) < 2 || lines[0] != "777" || !strings.Contains(lines[1], " 1001 ") {
		t.Errorf("emptyDir as uid 1001: %q, want mode 777 and a file of uid 1001", out)
	}
}

// The downward API reads limits.cpu and limits.memory of a container without
// limits as the node's allocatable, in env and in volume files.
func TestDownwardAPIDefaultLimits(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("limits", "", "echo cpu=$CPU_LIMIT mem=$MEMORY_LIMIT; cat /info/cpu; echo; cat /info/mem; echo")
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	milli := resource.MustParse("1m")
	p.Spec.Containers[0].Env = []v1.EnvVar{
		{Name: "CPU_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: milli}}},
		{Name: "MEMORY_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory"}}},
	}
	p.Spec.Volumes = []v1.Volume{{Name: "info", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
		{Path: "cpu", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.cpu"}},
		{Path: "mem", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "main", Resource: "limits.memory"}},
	}}}}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "info", MountPath: "/info"}}
	createPod(t, ns, p)
	done := waitPodIn(t, ns, "limits", 90*time.Second, "Succeeded", phaseIs(v1.PodSucceeded))
	node, err := client(t).CoreV1().Nodes().Get(context.Background(), done.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cpu, mem := node.Status.Allocatable.Cpu(), node.Status.Allocatable.Memory()
	want := fmt.Sprintf("cpu=%d mem=%d\n%d\n%d\n", cpu.MilliValue(), mem.Value(), (cpu.MilliValue()+999)/1000, mem.Value())
	if out, _ := kubectl(t, "-n", ns, "logs", "limits"); out != want {
		t.Errorf("downward API limits without limits set: %q, want the node's allocatable %q", out, want)
	}
}

// subPathExpr expands with the container's environment; an expansion that
// is absolute, climbs out with `..` or misses a variable fails the container
// with CreateContainerConfigError and the kubelet's message, the pod stays
// Pending, and a pod whose missing annotation is then set starts.
func TestSubPathExpr(t *testing.T) {
	ns := testNamespace(t)
	podName := func(extra ...v1.EnvVar) []v1.EnvVar {
		return append([]v1.EnvVar{{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}, extra...)
	}
	mk := func(name, expr string, env []v1.EnvVar) *v1.Pod {
		p := shellPod(name, "", "echo hi > /sub/file; sleep 3600")
		p.Spec.Volumes = []v1.Volume{{Name: "work", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
		p.Spec.Containers[0].Env = env
		p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{
			{Name: "work", MountPath: "/sub", SubPathExpr: expr},
			{Name: "work", MountPath: "/whole"},
		}
		return p
	}
	createPod(t, ns, mk("good", "logs/$(POD_NAME)", podName()))
	createPod(t, ns, mk("up", "$(POD_NAME)", []v1.EnvVar{{Name: "POD_NAME", Value: ".."}}))
	createPod(t, ns, mk("abs", "$(POD_NAME)", []v1.EnvVar{{Name: "POD_NAME", Value: "/tmp"}}))
	later := mk("later", "$(ANNOTATION)/$(POD_NAME)", podName(v1.EnvVar{Name: "ANNOTATION", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.annotations['mysubpath']"}}}))
	later.Annotations = map[string]string{"notmysubpath": "mypath"}
	createPod(t, ns, later)

	waitRunning(t, ns, "app=good", 1, 90*time.Second)
	waitFor(t, 30*time.Second, "file written through the subPathExpr", func() (bool, string) {
		out, err := kubectl(t, "-n", ns, "exec", "good", "--", "cat", "/whole/logs/good/file")
		return err == nil && out == "hi\n", fmt.Sprint(out, err)
	})
	for name, msg := range map[string]string{
		"up":    "unable to provision SubPath `..`: must not contain '..'",
		"abs":   "error SubPath `/tmp` must not be an absolute path",
		"later": "missing value for ANNOTATION",
	} {
		waitPodIn(t, ns, name, 60*time.Second, "CreateContainerConfigError", func(p *v1.Pod) (bool, string) {
			if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
				return false, statesOf(p.Status.ContainerStatuses)
			}
			w := p.Status.ContainerStatuses[0].State.Waiting
			return w.Reason == "CreateContainerConfigError" && w.Message == msg && p.Status.Phase == v1.PodPending,
				fmt.Sprintf("%s %s: %s", p.Status.Phase, w.Reason, w.Message)
		})
	}
	patch := []byte(`{"metadata":{"annotations":{"mysubpath":"mypath"}}}`)
	if _, err := client(t).CoreV1().Pods(ns).Patch(context.Background(), "later", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "app=later", 1, 60*time.Second)
	if out, err := kubectl(t, "-n", ns, "exec", "later", "--", "cat", "/whole/mypath/later/file"); err != nil || out != "hi\n" {
		t.Errorf("subPathExpr after the annotation was set: %q, %v", out, err)
	}
}

// A container whose main process survives the OOM kill of a child, and
// exits 0, is OOMKilled, as containerd's CRI reports it (runc).
func TestOOMKilledChild(t *testing.T) {
	ns := testNamespace(t)
	p := shellPod("oom-child", "", "tail /dev/zero; exit 0")
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	p.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceMemory: resource.MustParse("32Mi")}
	createPod(t, ns, p)
	got := waitPodIn(t, ns, "oom-child", 90*time.Second, "terminated", func(p *v1.Pod) (bool, string) {
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Terminated != nil, statesOf(p.Status.ContainerStatuses)
	})
	term := got.Status.ContainerStatuses[0].State.Terminated
	if term.Reason != "OOMKilled" || term.ExitCode != 0 {
		t.Errorf("container whose child was OOM-killed: reason %q exit code %d, want OOMKilled and 0", term.Reason, term.ExitCode)
	}
}

// Safe sysctls of the pod reach its containers, names with '/' too; an
// unsafe one is refused by the agent's admission: the pod fails with
// SysctlForbidden and nothing of it runs.
func TestSysctls(t *testing.T) {
	forEachRuntime(t, testSysctls)
}

func testSysctls(t *testing.T, rc string) {
	ns := testNamespace(t)
	p := shellPod("sysctls", rc, "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_local_port_range")
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	p.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: []v1.Sysctl{
		{Name: "kernel.shm_rmid_forced", Value: "1"},
		{Name: "net/ipv4/ip_local_port_range", Value: "20000 30000"},
	}}
	createPod(t, ns, p)
	if rc == "" {
		waitPodIn(t, ns, "sysctls", 90*time.Second, "Succeeded", phaseIs(v1.PodSucceeded))
		if out, _ := kubectl(t, "-n", ns, "logs", "sysctls"); strings.Join(strings.Fields(out), " ") != "1 20000 30000" {
			t.Errorf("sysctls in the container: %q, want 1 and 20000 30000", out)
		}
	} else {
		// runsc takes the spec's sysctls, but its kernel has no
		// kernel.shm_rmid_forced
		// (gVisor implements few sysctls), nor does it apply the net ones
		// (runsc 2022-12): the pod runs, nothing more.
		waitPodIn(t, ns, "sysctls", 90*time.Second, "run to its end", func(p *v1.Pod) (bool, string) {
			return p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed && len(p.Status.ContainerStatuses) == 1 &&
				p.Status.ContainerStatuses[0].State.Terminated != nil && p.Status.ContainerStatuses[0].State.Terminated.Reason == "Error", statesOf(p.Status.ContainerStatuses)
		})
		out, _ := kubectl(t, "-n", ns, "logs", "sysctls")
		t.Logf("under gVisor: %q", out)
	}

	bad := shellPod("unsafe", rc, "sleep 3600")
	bad.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: []v1.Sysctl{{Name: "kernel.msgmax", Value: "10000000000"}}}
	createPod(t, ns, bad)
	got := waitPodIn(t, ns, "unsafe", 60*time.Second, "Failed", phaseIs(v1.PodFailed))
	if want := `Pod was rejected: forbidden sysctl: "kernel.msgmax" not allowlisted`; got.Status.Reason != "SysctlForbidden" || got.Status.Message != want {
		t.Errorf("unsafe sysctl: reason %q message %q, want SysctlForbidden and %q", got.Status.Reason, got.Status.Message, want)
	}
	// As a kubelet leaves it: no container statuses, no condition but the
	// scheduler's, a start time.
	if len(got.Status.ContainerStatuses) != 0 || got.Status.StartTime == nil {
		t.Errorf("rejected pod has container statuses %s, start time %v; want none and one", statesOf(got.Status.ContainerStatuses), got.Status.StartTime)
	}
	for _, c := range got.Status.Conditions {
		if c.Type != v1.PodScheduled {
			t.Errorf("rejected pod has condition %s=%s (%s), want only PodScheduled", c.Type, c.Status, c.Reason)
		}
	}
}

// A pod given a nodeName whose host port another pod of the node holds is
// rejected by the agent as the kubelet rejects it; a StatefulSet's pod
// rejected so is recreated until the port is free, then runs (conformance:
// StatefulSet "Should recreate evicted statefulset").
func TestHostPortConflictRejected(t *testing.T) {
	ns := testNamespace(t)
	nodes, err := client(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("nodes: %v", err)
	}
	node := nodes.Items[0].Name
	port := v1.ContainerPort{HostPort: 21017, ContainerPort: 21017, Name: "conflict"}
	holder := shellPod("holder", "", "sleep 3600")
	holder.Spec.NodeName = node
	holder.Spec.Containers[0].Ports = []v1.ContainerPort{port}
	createPod(t, ns, holder)
	waitRunning(t, ns, "app=holder", 1, 90*time.Second)

	clash := shellPod("clash", "", "sleep 3600")
	clash.Spec.NodeName = node
	clash.Spec.Containers[0].Ports = []v1.ContainerPort{port}
	createPod(t, ns, clash)
	got := waitPodIn(t, ns, "clash", 60*time.Second, "Failed", phaseIs(v1.PodFailed))
	if want := "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"; got.Status.Reason != "NodePorts" || got.Status.Message != want {
		t.Errorf("host port clash: reason %q message %q, want NodePorts and %q", got.Status.Reason, got.Status.Message, want)
	}

	one := int32(1)
	grace := int64(1)
	labels := map[string]string{"app": "ss"}
	ss := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ss"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &one, ServiceName: "ss", Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					NodeName: node, TerminationGracePeriodSeconds: &grace,
					Containers: []v1.Container{{Name: "main", Image: image(testimage.Shell), Command: []string{"sleep", "3600"}, Ports: []v1.ContainerPort{port}}},
				},
			},
		},
	}
	if _, err := client(t).AppsV1().StatefulSets(ns).Create(context.Background(), ss, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The controller deletes each rejected pod and makes a new one.
	seen := map[types.UID]bool{}
	waitFor(t, 90*time.Second, "ss-0 rejected and recreated", func() (bool, string) {
		p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "ss-0", metav1.GetOptions{})
		if err == nil {
			seen[p.UID] = true
			if p.Status.Phase == v1.PodRunning {
				t.Fatalf("ss-0 runs while the port is taken")
			}
		}
		return len(seen) >= 2, strconv.Itoa(len(seen)) + " pods seen"
	})
	if err := client(t).CoreV1().Pods(ns).Delete(context.Background(), "holder", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, ns, "app=ss", 1, 120*time.Second)
}
