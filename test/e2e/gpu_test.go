package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/device"
	"github.com/cci-project/cci/internal/metering"
)

// fakeGPUs is the number of fake GPUs of the instance's host (main_test.go).
const fakeGPUs = 3

// gpuPod runs script with n nvidia.com/gpu under runc (runc shows a
// container the device nodes it is given; see docs/accelerators.md).
func gpuPod(name string, n int64, script string) *v1.Pod {
	p := shellPod(name, "runc", script)
	p.Spec.Containers[0].Resources.Limits = v1.ResourceList{device.NVIDIAGPU: *resource.NewQuantity(n, resource.DecimalSI)}
	return p
}

// visibleGPUs is what a GPU pod's script prints: its device nodes and
// NVIDIA_VISIBLE_DEVICES.
const visibleGPUs = `ls -1 /dev | grep '^nvidia' | tr '\n' ' '; echo "visible=$NVIDIA_VISIBLE_DEVICES"`

// A tenant's GPU pod goes to pool gpu unless it names another: a tenant
// allowed only the general pool is refused, told which pools it may use.
// Named into the general pool (whose host has the fake GPUs) under the
// tenant's default runtime, gVisor, it is refused by the agent: fake GPUs
// cannot pass into gVisor's sandbox, and a pod is never started without
// its devices. Under runc (a tenant allowed it) it runs and is billed one
// GPU-second per second.
func TestGPUPoolsAndBilling(t *testing.T) {
	_, ns := billingTenant(t)
	pod := sizedPod("gpu-bill", "250m", "512Mi", "sleep 4")
	pod.Spec.Containers[0].Resources.Limits[device.NVIDIAGPU] = resource.MustParse("1")
	_, err := client(t).CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `pool "gpu" is not allowed`) || !strings.Contains(err.Error(), "allowed pools: general") {
		t.Fatalf("GPU pod of a tenant without pool gpu: %v, want a refusal naming the allowed pools", err)
	}
	pod.Annotations = map[string]string{"cci.io/pool": "general"}
	ensureRuntimeClasses(t)
	createPod(t, ns, pod)
	refused := waitPodIn(t, ns, "gpu-bill", 90*time.Second, "refused under gVisor", func(p *v1.Pod) (bool, string) {
		return p.Status.Phase == v1.PodFailed, fmt.Sprintf("%s %s: %s", p.Status.Phase, p.Status.Reason, p.Status.Message)
	})
	if rc := refused.Spec.RuntimeClassName; rc == nil || *rc != "gvisor" || refused.Status.Reason != "UnsupportedDevicesForRuntime" || !strings.Contains(refused.Status.Message, "fake GPUs cannot pass into gVisor's sandbox") || !strings.Contains(refused.Status.Message, "runtimeClassName: runc") {
		t.Fatalf("fake-GPU pod under gVisor: class %v, %s: %s; want refused, saying to use runc", refused.Spec.RuntimeClassName, refused.Status.Reason, refused.Status.Message)
	}

	tenant, _ := createTenant(t, "gpubill", "--allow-runc", "--quota", "cpu=8,memory=32Gi,pods=50,nvidia.com/gpu=1")
	ns = tenant
	pod = sizedPod("gpu-bill", "250m", "512Mi", "sleep 4")
	pod.Spec.Containers[0].Resources.Limits[device.NVIDIAGPU] = resource.MustParse("1")
	pod.Annotations = map[string]string{"cci.io/pool": "general"}
	pod.Spec.RuntimeClassName = runtimeClassPtr("runc")
	createPod(t, ns, pod)
	done := waitPodDone(t, ns, "gpu-bill", 90*time.Second)
	life := int64(lastFinished(done).Sub(done.Status.StartTime.Time) / time.Second)
	var u metering.PodUsage
	waitFor(t, 30*time.Second, "the GPU pod billed as finished", func() (bool, string) {
		var ok bool
		u, ok = podUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "gpu-bill")
		return ok && !u.Running, fmt.Sprintf("%+v", u)
	})
	t.Logf("GPU pod lived %d s, billed %d s, %d GPU-s", life, u.Seconds, u.GPUSeconds)
	if u.Seconds < 4 || u.GPUSeconds != u.Seconds {
		t.Fatalf("billed %d s and %d GPU-seconds for one GPU over %d s", u.Seconds, u.GPUSeconds, life)
	}
}

// A fake GPU that fails takes the path a real one takes on an XID error:
// the node's allocatable loses it, the node gets a DeviceUnhealthy event,
// `cci pool list --gpus` shows it unhealthy and a new pod is given the
// other GPUs. Healthy again, it is allocatable and given to the next pod.
func TestFakeGPUHealth(t *testing.T) {
	ctx := context.Background()
	cs := client(t)
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v (%d)", err, len(nodes.Items))
	}
	nodeName := nodes.Items[0].Name
	fake := &device.Fake{Count: fakeGPUs, Dir: filepath.Join(cci.DataDir, "agent", "devices")}
	bad := fake.UnhealthyFile(1)
	gpus := func(want int64) func() (bool, string) {
		return func() (bool, string) {
			n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			c, a := n.Status.Capacity[device.NVIDIAGPU], n.Status.Allocatable[device.NVIDIAGPU]
			return c.Value() == fakeGPUs && a.Value() == want, fmt.Sprintf("capacity %s allocatable %s", c.String(), a.String())
		}
	}
	nodeEvent := func(reason, substr string) func() (bool, string) {
		return func() (bool, string) {
			evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + nodeName + ",reason=" + reason})
			if err != nil {
				return false, err.Error()
			}
			var msgs []string
			for _, e := range evs.Items {
				if strings.Contains(e.Message, substr) {
					return true, e.Message
				}
				msgs = append(msgs, e.Message)
			}
			return false, fmt.Sprintf("%d %s events: %q", len(evs.Items), reason, msgs)
		}
	}
	t.Cleanup(func() {
		os.Remove(bad)
		waitFor(t, 30*time.Second, "every fake GPU allocatable again", gpus(fakeGPUs))
	})

	// Written whole, then renamed into place: the agent never reads half a reason.
	tmp := filepath.Join(fake.Dir, "reason.tmp")
	if err := os.WriteFile(tmp, []byte("XID 79 (e2e)"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "allocatable nvidia.com/gpu down by one", gpus(fakeGPUs-1))
	waitFor(t, 30*time.Second, "a DeviceUnhealthy event on the node", nodeEvent("DeviceUnhealthy", device.FakeID(1)+" is unhealthy (XID 79 (e2e))"))

	idle := visibleGPUs + "; sleep 3600"
	createPod(t, "default", gpuPod("gpu-beside", 2, idle))
	t.Cleanup(func() { kubectl(t, "delete", "pod", "gpu-beside", "--wait=true") })
	waitRunning(t, "default", "app=gpu-beside", 1, 90*time.Second)
	if got := strings.TrimSpace(execOut(t, "default", "gpu-beside", "sh", "-c", visibleGPUs)); got != "nvidia0 nvidia2 visible=GPU-fake-0000,GPU-fake-0002" {
		t.Fatalf("gpu-beside sees %q, want the two healthy GPUs 0 and 2", got)
	}
	waitFor(t, 30*time.Second, "cci pool list --gpus showing the holder and the failed GPU", func() (bool, string) {
		out, err := exec.Command(cci.Bin, "pool", "list", "--gpus", "--kubeconfig", cci.Kubeconfig).CombinedOutput()
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		lines := strings.Split(string(out), "\n")
		has := func(fields ...string) bool {
			for _, l := range lines {
				if f := strings.Fields(l); len(f) > 6 && f[1] == nodeName && slices.Equal(f[2:4], fields[:2]) && strings.Contains(l, fields[2]) {
					return true
				}
			}
			return false
		}
		return has("0", device.FakeID(0), "default/gpu-beside") && has("1", device.FakeID(1), "unhealthy: XID 79 (e2e)") && has("2", device.FakeID(2), "default/gpu-beside"), string(out)
	})

	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "allocatable nvidia.com/gpu back to all", gpus(fakeGPUs))
	waitFor(t, 30*time.Second, "a DeviceHealthy event on the node", nodeEvent("DeviceHealthy", device.FakeID(1)+" is healthy again"))
	createPod(t, "default", gpuPod("gpu-healed", 1, idle))
	t.Cleanup(func() { kubectl(t, "delete", "pod", "gpu-healed", "--wait=true") })
	waitRunning(t, "default", "app=gpu-healed", 1, 90*time.Second)
	if got := strings.TrimSpace(execOut(t, "default", "gpu-healed", "sh", "-c", visibleGPUs)); got != "nvidia1 visible=GPU-fake-0001" {
		t.Fatalf("gpu-healed sees %q, want GPU 1, healthy again and the only free one", got)
	}
}

// The host of `cci up --fake-gpus 3` advertises three nvidia.com/gpu; a pod
// asking for two sees exactly its two device nodes and their IDs, a
// second one gets the third GPU, a third one waits with the scheduler's
// reason; an agent restart keeps every pod's GPUs (the waiting pod then
// gets the freed one, never one of the pod that kept running). Last in
// this file: it restarts the instance.
func TestFakeGPUs(t *testing.T) {
	ctx := context.Background()
	cs := client(t)
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v (%d)", err, len(nodes.Items))
	}
	n := nodes.Items[0]
	if c, a := n.Status.Capacity[device.NVIDIAGPU], n.Status.Allocatable[device.NVIDIAGPU]; c.Value() != fakeGPUs || a.Value() != fakeGPUs {
		t.Fatalf("node %s: nvidia.com/gpu capacity %s allocatable %s, want %d", n.Name, c.String(), a.String(), fakeGPUs)
	}
	if n.Labels[device.ProductLabel] != device.FakeProduct || n.Labels[device.MemoryLabel] != "16384" {
		t.Fatalf("node labels %v", n.Labels)
	}

	idle := visibleGPUs + "; sleep 3600"
	for _, p := range []*v1.Pod{gpuPod("gpu-two", 2, idle), gpuPod("gpu-one", 1, idle)} {
		createPod(t, "default", p)
		t.Cleanup(func() { kubectl(t, "delete", "pod", p.Name, "--wait=false") })
	}
	waitRunning(t, "default", "app=gpu-two", 1, 90*time.Second)
	waitRunning(t, "default", "app=gpu-one", 1, 90*time.Second)
	// Which GPUs each pod gets depends on the order the two are admitted
	// in and on when the earlier tests' pods let theirs go: each pod must
	// see as many as it asked for, none of the other's, and for each the
	// device node and the ID of the same GPU.
	sees := func(pod string, n int) []string {
		t.Helper()
		got := strings.TrimSpace(execOut(t, "default", pod, "sh", "-c", visibleGPUs))
		gpus, err := gpusSeen(got)
		if err != nil || len(gpus) != n {
			t.Fatalf("pod %s sees %q (%v), want %d GPUs, each its device node and its ID", pod, got, err, n)
		}
		return gpus
	}
	two, one := sees("gpu-two", 2), sees("gpu-one", 1)
	if slices.Contains(two, one[0]) {
		t.Fatalf("gpu-one's GPU %s is also gpu-two's %v", one[0], two)
	}
	// Its device node is the harmless one the agent made (1:3, /dev/null's).
	dev := "/dev/nvidia" + two[1]
	if got := strings.TrimSpace(execOut(t, "default", "gpu-two", "sh", "-c", "echo x > "+dev+" && stat -c %t:%T "+dev)); got != "1:3" {
		t.Fatalf("%s of gpu-two is %q, want char device 1:3", dev, got)
	}

	over := gpuPod("gpu-over", 1, idle)
	createPod(t, "default", over)
	t.Cleanup(func() { kubectl(t, "delete", "pod", "gpu-over", "--wait=false") })
	waitPod(t, "gpu-over", 60*time.Second, "unschedulable for lack of GPUs", func(p *v1.Pod) (bool, string) {
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodScheduled && c.Status == v1.ConditionFalse && c.Reason == v1.PodReasonUnschedulable {
				return strings.Contains(c.Message, "Insufficient nvidia.com/gpu"), c.Message
			}
		}
		return false, fmt.Sprintf("%s %v", p.Status.Phase, p.Status.Conditions)
	})

	before, err := cs.CoreV1().Pods("default").Get(ctx, "gpu-two", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	after := waitRunning(t, "default", "app=gpu-two", 1, 90*time.Second)[0]
	if after.Status.ContainerStatuses[0].ContainerID != before.Status.ContainerStatuses[0].ContainerID {
		t.Fatalf("gpu-two was not re-adopted: container %s, was %s", after.Status.ContainerStatuses[0].ContainerID, before.Status.ContainerStatuses[0].ContainerID)
	}
	if again := sees("gpu-two", 2); !slices.Equal(again, two) {
		t.Fatalf("gpu-two sees GPUs %v after the restart, had %v", again, two)
	}
	if p, err := cs.CoreV1().Pods("default").Get(ctx, "gpu-over", metav1.GetOptions{}); err != nil || p.Spec.NodeName != "" {
		t.Fatalf("gpu-over bound while every GPU is held: %v %s %s %s", err, p.Spec.NodeName, p.Status.Phase, p.Status.Message)
	}
	// The waiting pod gets the GPU gpu-one frees, and only that one: the
	// new agent knows gpu-two's from its record. (The node controller
	// removes gpu-one's API object when its grace period ends, before the
	// agent has let go of its GPU: the agent's admission waits for it.)
	mustKubectl(t, "delete", "pod", "gpu-one", "--wait=true")
	waitPod(t, "gpu-over", 90*time.Second, "running on the freed GPU", func(p *v1.Pod) (bool, string) {
		if p.Status.Phase == v1.PodFailed {
			t.Fatalf("gpu-over failed: %s: %s", p.Status.Reason, p.Status.Message)
		}
		return p.Status.Phase == v1.PodRunning, string(p.Status.Phase)
	})
	if got := sees("gpu-over", 1); !slices.Equal(got, one) {
		t.Fatalf("gpu-over got GPU %v, want the one gpu-one freed, %v", got, one)
	}
}

// gpusSeen reads what visibleGPUs prints ("nvidia0 nvidia2
// visible=GPU-fake-0000,GPU-fake-0002"): the indexes of the GPUs, when the
// device nodes and the IDs name the same ones.
func gpusSeen(out string) ([]string, error) {
	devs, ids, ok := strings.Cut(out, "visible=")
	if !ok {
		return nil, fmt.Errorf("no NVIDIA_VISIBLE_DEVICES")
	}
	var gpus []string
	for _, d := range strings.Fields(devs) {
		gpus = append(gpus, strings.TrimPrefix(d, "nvidia"))
	}
	var want []string
	for _, id := range strings.Split(strings.TrimSpace(ids), ",") {
		n, err := strconv.Atoi(strings.TrimPrefix(id, "GPU-fake-"))
		if err != nil {
			return nil, fmt.Errorf("ID %q is not a fake GPU's", id)
		}
		want = append(want, strconv.Itoa(n))
	}
	if !slices.Equal(gpus, want) {
		return nil, fmt.Errorf("device nodes %v, IDs %v", gpus, want)
	}
	return gpus, nil
}
