package e2e

import (
	"context"
	"fmt"
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
// Named into the general pool (whose host has the fake GPUs), it runs
// and is billed one GPU-second per second.
func TestGPUPoolsAndBilling(t *testing.T) {
	tenant, ns := billingTenant(t)
	pod := sizedPod("gpu-bill", "250m", "512Mi", "sleep 4")
	pod.Spec.Containers[0].Resources.Limits[device.NVIDIAGPU] = resource.MustParse("1")
	_, err := client(t).CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `pool "gpu" is not allowed`) || !strings.Contains(err.Error(), "allowed pools: general") {
		t.Fatalf("GPU pod of a tenant without pool gpu: %v, want a refusal naming the allowed pools", err)
	}
	pod.Annotations = map[string]string{"cci.io/pool": "general"}
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
	check := func(pod, want string) {
		t.Helper()
		if got := strings.TrimSpace(execOut(t, "default", pod, "sh", "-c", visibleGPUs)); got != want {
			t.Fatalf("pod %s sees %q, want %q", pod, got, want)
		}
	}
	check("gpu-two", "nvidia0 nvidia1 visible=GPU-fake-0000,GPU-fake-0001")
	check("gpu-one", "nvidia2 visible=GPU-fake-0002")
	// Its device node is the harmless one the agent made (1:3, /dev/null's).
	if got := strings.TrimSpace(execOut(t, "default", "gpu-two", "sh", "-c", "echo x > /dev/nvidia1 && stat -c %t:%T /dev/nvidia1")); got != "1:3" {
		t.Fatalf("/dev/nvidia1 of gpu-two is %q, want char device 1:3", got)
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
	check("gpu-two", "nvidia0 nvidia1 visible=GPU-fake-0000,GPU-fake-0001")
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
	check("gpu-over", "nvidia2 visible=GPU-fake-0002")
}
