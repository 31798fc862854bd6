package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// Init containers, sidecars and restart policies behave as on a kubelet:
// order, failure under each policy, back-off, sidecars that start first and
// stop last. Each test runs under every runtime class.

// workPod is a pod whose containers (name and shell script each) share an
// emptyDir at /work; the init containers run before the app container
// "main".
func workPod(name, rc string, policy v1.RestartPolicy, main string, inits ...[2]string) *v1.Pod {
	p := shellPod(name, rc, main)
	p.Spec.RestartPolicy = policy
	mount := []v1.VolumeMount{{Name: "work", MountPath: "/work"}}
	p.Spec.Volumes = []v1.Volume{{Name: "work", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
	p.Spec.Containers[0].VolumeMounts = mount
	for _, c := range inits {
		p.Spec.InitContainers = append(p.Spec.InitContainers, v1.Container{
			Name: c[0], Image: image(testimage.Shell), Command: []string{"sh", "-c", c[1]}, VolumeMounts: mount,
		})
	}
	return p
}

// sidecarScript runs until stopped: it marks /work/side once up, ends with
// 0 on SIGTERM and with 1 when /work/stop-side appears (which it removes).
const sidecarScript = `trap "exit 0" TERM
echo up > /work/side
while :; do
  if [ -f /work/stop-side ]; then rm /work/stop-side; exit 1; fi
  sleep 1
done`

// makeSidecar turns the named init container into a sidecar that counts as
// started once /work/side exists.
func makeSidecar(p *v1.Pod, name string) {
	always := v1.ContainerRestartPolicyAlways
	for i := range p.Spec.InitContainers {
		if c := &p.Spec.InitContainers[i]; c.Name == name {
			c.RestartPolicy = &always
			c.StartupProbe = fast(execProbe("test", "-f", "/work/side"))
		}
	}
}

// waitPodIn polls a pod of namespace ns until cond holds and returns it.
func waitPodIn(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(p *v1.Pod) (bool, string)) *v1.Pod {
	t.Helper()
	var p *v1.Pod
	waitFor(t, timeout, name+": "+what, func() (bool, string) {
		var err error
		p, err = client(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return cond(p)
	})
	return p
}

func phaseIs(phase v1.PodPhase) func(p *v1.Pod) (bool, string) {
	return func(p *v1.Pod) (bool, string) {
		return p.Status.Phase == phase, fmt.Sprintf("phase %s, init %s, app %s", p.Status.Phase,
			statesOf(p.Status.InitContainerStatuses), statesOf(p.Status.ContainerStatuses))
	}
}

func statesOf(cs []v1.ContainerStatus) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s: restarts %d state %+v; ", c.Name, c.RestartCount, c.State)
	}
	return b.String()
}

func statusOf(cs []v1.ContainerStatus, name string) v1.ContainerStatus {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return v1.ContainerStatus{}
}

func conditionOf(p *v1.Pod, ct v1.PodConditionType) v1.PodCondition {
	for _, c := range p.Status.Conditions {
		if c.Type == ct {
			return c
		}
	}
	return v1.PodCondition{}
}

// Init containers run one after another, each to completion, before the
// app container.
func TestInitContainersInOrder(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		// The first one dawdles: a container started before it ended would
		// write its name first.
		createPod(t, ns, workPod("order", rc, v1.RestartPolicyNever, "cat /work/order",
			[2]string{"first", "sleep 2; echo first >> /work/order"},
			[2]string{"second", "sleep 1; echo second >> /work/order"},
			[2]string{"third", "echo third >> /work/order"}))
		p := waitPodIn(t, ns, "order", 2*time.Minute, "pod to succeed", phaseIs(v1.PodSucceeded))
		if out := mustKubectl(t, "-n", ns, "logs", "order", "-c", "main"); out != "first\nsecond\nthird\n" {
			t.Errorf("order of init containers: %q", out)
		}
		var prev *v1.ContainerStateTerminated
		for _, c := range p.Status.InitContainerStatuses {
			term := c.State.Terminated
			if term == nil || term.ExitCode != 0 || term.Reason != "Completed" || !c.Ready || c.RestartCount != 0 {
				t.Errorf("init container %s: ready %v restarts %d state %+v", c.Name, c.Ready, c.RestartCount, c.State)
				continue
			}
			if prev != nil && term.StartedAt.Before(&prev.FinishedAt) {
				t.Errorf("init container %s started at %s, before the previous one ended at %s", c.Name, term.StartedAt, prev.FinishedAt)
			}
			prev = term
		}
		if c := conditionOf(p, v1.PodInitialized); c.Status != v1.ConditionTrue || c.Reason != "PodCompleted" {
			t.Errorf("Initialized %+v, want True PodCompleted", c)
		}
	})
}

// Under restartPolicy Never a failed init container fails the pod: the
// later containers never start.
func TestInitFailsUnderNever(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		createPod(t, ns, workPod("initfail", rc, v1.RestartPolicyNever, "echo main-ran",
			[2]string{"broken", "exit 3"}, [2]string{"after", "true"}))
		p := waitPodIn(t, ns, "initfail", 2*time.Minute, "pod to fail", phaseIs(v1.PodFailed))

		broken := statusOf(p.Status.InitContainerStatuses, "broken")
		if term := broken.State.Terminated; term == nil || term.ExitCode != 3 || term.Reason != "Error" || broken.RestartCount != 0 {
			t.Errorf("broken init container: restarts %d state %+v, want terminated 3 Error", broken.RestartCount, broken.State)
		}
		for _, c := range []v1.ContainerStatus{statusOf(p.Status.InitContainerStatuses, "after"), statusOf(p.Status.ContainerStatuses, "main")} {
			if w := c.State.Waiting; w == nil || w.Reason != "PodInitializing" || c.ContainerID != "" || c.RestartCount != 0 {
				t.Errorf("container %q: id %q restarts %d state %+v, want never started, waiting PodInitializing", c.Name, c.ContainerID, c.RestartCount, c.State)
			}
		}
		if c := conditionOf(p, v1.PodInitialized); c.Status != v1.ConditionFalse || c.Reason != "ContainersNotInitialized" ||
			c.Message != "containers with incomplete status: [broken after]" {
			t.Errorf("Initialized %+v", c)
		}
		if c := conditionOf(p, v1.PodReady); c.Status != v1.ConditionFalse || c.Reason != "PodFailed" {
			t.Errorf("Ready %+v, want False PodFailed", c)
		}
	})
}

// Under restartPolicy OnFailure a failing init container is restarted with
// back-off, and the app container waits.
func TestInitFailsUnderOnFailure(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		createPod(t, ns, workPod("initloop", rc, v1.RestartPolicyOnFailure, "echo main-ran", [2]string{"broken", "exit 1"}))
		p := waitPodIn(t, ns, "initloop", 2*time.Minute, "init container in CrashLoopBackOff", func(p *v1.Pod) (bool, string) {
			c := statusOf(p.Status.InitContainerStatuses, "broken")
			ok := c.RestartCount > 0 && c.State.Waiting != nil && c.State.Waiting.Reason == "CrashLoopBackOff" &&
				c.LastTerminationState.Terminated != nil && c.LastTerminationState.Terminated.ExitCode == 1
			return ok, fmt.Sprintf("restarts %d state %+v last %+v", c.RestartCount, c.State, c.LastTerminationState)
		})
		if p.Status.Phase != v1.PodPending {
			t.Errorf("phase %s, want Pending", p.Status.Phase)
		}
		if c := statusOf(p.Status.ContainerStatuses, "main"); c.State.Waiting == nil || c.State.Waiting.Reason != "PodInitializing" || c.RestartCount != 0 {
			t.Errorf("main: restarts %d state %+v, want waiting PodInitializing", c.RestartCount, c.State)
		}
		if c := conditionOf(p, v1.PodInitialized); c.Status != v1.ConditionFalse || c.Message != "containers with incomplete status: [broken]" {
			t.Errorf("Initialized %+v", c)
		}
		// What kubectl shows: the back-off, then the error, in turns.
		waitFor(t, 2*time.Minute, "kubectl to show Init:CrashLoopBackOff", func() (bool, string) {
			out, _ := kubectl(t, "-n", ns, "get", "pod", "initloop", "--no-headers")
			return strings.Contains(out, "Init:CrashLoopBackOff"), out
		})
	})
}

// A sidecar starts before the app container, runs beside it, and restarts
// alone, with back-off: the pod stays initialized and the app container
// runs on.
func TestInitSidecar(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		p := workPod("sidecar", rc, v1.RestartPolicyAlways, "test -f /work/side || exit 7; echo saw-side; exec sleep 3600",
			[2]string{"setup", "echo setup > /work/setup"}, [2]string{"side", sidecarScript})
		makeSidecar(p, "side")
		createPod(t, ns, p)
		p = waitPodIn(t, ns, "sidecar", 2*time.Minute, "pod to be ready", func(p *v1.Pod) (bool, string) {
			return p.Status.Phase == v1.PodRunning && conditionOf(p, v1.PodReady).Status == v1.ConditionTrue,
				fmt.Sprintf("phase %s, init %s, app %s", p.Status.Phase, statesOf(p.Status.InitContainerStatuses), statesOf(p.Status.ContainerStatuses))
		})
		side, main := statusOf(p.Status.InitContainerStatuses, "side"), statusOf(p.Status.ContainerStatuses, "main")
		if side.State.Running == nil || side.Started == nil || !*side.Started || !side.Ready || side.RestartCount != 0 {
			t.Fatalf("sidecar: started %v ready %v restarts %d state %+v, want running, started, ready", side.Started, side.Ready, side.RestartCount, side.State)
		}
		if main.State.Running == nil || main.RestartCount != 0 {
			t.Fatalf("main: restarts %d state %+v", main.RestartCount, main.State)
		}
		if main.State.Running.StartedAt.Before(&side.State.Running.StartedAt) {
			t.Errorf("main started at %s, before the sidecar at %s", main.State.Running.StartedAt, side.State.Running.StartedAt)
		}
		if c := statusOf(p.Status.InitContainerStatuses, "setup"); c.State.Terminated == nil || c.State.Terminated.ExitCode != 0 {
			t.Errorf("setup: %+v", c.State)
		}
		if out := mustKubectl(t, "-n", ns, "logs", "sidecar", "-c", "main"); out != "saw-side\n" {
			t.Errorf("main did not find the sidecar up: %q", out)
		}
		initialized := conditionOf(p, v1.PodInitialized)
		if initialized.Status != v1.ConditionTrue {
			t.Fatalf("Initialized %+v", initialized)
		}

		// The sidecar fails: at once restarted, then, failing again, left in
		// back-off. The pod stays initialized; only readiness follows it.
		mustKubectl(t, "-n", ns, "exec", "sidecar", "-c", "main", "--", "touch", "/work/stop-side")
		waitPodIn(t, ns, "sidecar", 2*time.Minute, "sidecar restarted", func(p *v1.Pod) (bool, string) {
			c := statusOf(p.Status.InitContainerStatuses, "side")
			ok := c.RestartCount == 1 && c.State.Running != nil && c.Started != nil && *c.Started &&
				c.LastTerminationState.Terminated != nil && c.LastTerminationState.Terminated.ExitCode == 1
			return ok, fmt.Sprintf("restarts %d state %+v last %+v", c.RestartCount, c.State, c.LastTerminationState)
		})
		mustKubectl(t, "-n", ns, "exec", "sidecar", "-c", "main", "--", "touch", "/work/stop-side")
		p = waitPodIn(t, ns, "sidecar", 2*time.Minute, "sidecar in back-off", func(p *v1.Pod) (bool, string) {
			c := statusOf(p.Status.InitContainerStatuses, "side")
			ok := c.State.Waiting != nil && c.State.Waiting.Reason == "CrashLoopBackOff"
			return ok, fmt.Sprintf("restarts %d state %+v", c.RestartCount, c.State)
		})
		if c := conditionOf(p, v1.PodInitialized); c.Status != v1.ConditionTrue || !c.LastTransitionTime.Equal(&initialized.LastTransitionTime) {
			t.Errorf("Initialized while the sidecar is in back-off: %+v, before %+v", c, initialized)
		}
		if c := conditionOf(p, v1.ContainersReady); c.Status != v1.ConditionFalse || c.Message != "containers with unready status: [side]" {
			t.Errorf("ContainersReady while the sidecar is in back-off: %+v", c)
		}
		p = waitPodIn(t, ns, "sidecar", 2*time.Minute, "sidecar back", func(p *v1.Pod) (bool, string) {
			c := statusOf(p.Status.InitContainerStatuses, "side")
			ok := c.RestartCount == 2 && c.State.Running != nil && c.Ready && conditionOf(p, v1.PodReady).Status == v1.ConditionTrue
			return ok, fmt.Sprintf("restarts %d state %+v", c.RestartCount, c.State)
		})
		if c := conditionOf(p, v1.PodInitialized); c.Status != v1.ConditionTrue || !c.LastTransitionTime.Equal(&initialized.LastTransitionTime) {
			t.Errorf("Initialized after the sidecar restarted: %+v, before %+v", c, initialized)
		}
		after := statusOf(p.Status.ContainerStatuses, "main")
		if after.State.Running == nil || after.RestartCount != 0 || !after.State.Running.StartedAt.Equal(&main.State.Running.StartedAt) {
			t.Errorf("main after the sidecar restarted: restarts %d state %+v", after.RestartCount, after.State)
		}
		if p.Status.Phase != v1.PodRunning {
			t.Errorf("phase %s, want Running", p.Status.Phase)
		}
	})
}

// A job-like pod with a sidecar completes: the sidecar stops once the app
// container is done.
func TestInitSidecarJobCompletes(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		p := workPod("sidejob", rc, v1.RestartPolicyNever, "test -f /work/side || exit 7; echo done",
			[2]string{"side", sidecarScript})
		makeSidecar(p, "side")
		createPod(t, ns, p)
		p = waitPodIn(t, ns, "sidejob", 2*time.Minute, "pod to succeed", phaseIs(v1.PodSucceeded))
		main, side := statusOf(p.Status.ContainerStatuses, "main"), statusOf(p.Status.InitContainerStatuses, "side")
		if term := main.State.Terminated; term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
			t.Fatalf("main: %+v", main.State)
		}
		term := side.State.Terminated
		if term == nil || side.RestartCount != 0 {
			t.Fatalf("sidecar: restarts %d state %+v, want stopped", side.RestartCount, side.State)
		}
		if term.StartedAt.After(main.State.Terminated.StartedAt.Time) || term.FinishedAt.Before(&main.State.Terminated.FinishedAt) {
			t.Errorf("sidecar ran %s to %s, not around main's %s to %s", term.StartedAt, term.FinishedAt,
				main.State.Terminated.StartedAt, main.State.Terminated.FinishedAt)
		}
		if c := conditionOf(p, v1.PodInitialized); c.Status != v1.ConditionTrue || c.Reason != "PodCompleted" {
			t.Errorf("Initialized %+v, want True PodCompleted", c)
		}
	})
}

// An app container under restartPolicy OnFailure that fails once is
// restarted once; its success ends the pod.
func TestInitAppOnFailure(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		createPod(t, ns, workPod("onfailure", rc, v1.RestartPolicyOnFailure,
			"if [ -f /work/ran ]; then echo second; exit 0; fi; touch /work/ran; echo first; exit 1"))
		p := waitPodIn(t, ns, "onfailure", 2*time.Minute, "pod to succeed", phaseIs(v1.PodSucceeded))
		c := statusOf(p.Status.ContainerStatuses, "main")
		if c.RestartCount != 1 {
			t.Errorf("restarts %d, want 1", c.RestartCount)
		}
		if term := c.State.Terminated; term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
			t.Errorf("state %+v, want terminated 0 Completed", c.State)
		}
		if last := c.LastTerminationState.Terminated; last == nil || last.ExitCode != 1 || last.Reason != "Error" {
			t.Errorf("last state %+v, want terminated 1 Error", c.LastTerminationState)
		}
		if out := mustKubectl(t, "-n", ns, "logs", "onfailure", "-c", "main"); out != "second\n" {
			t.Errorf("logs %q, want the second run's", out)
		}
	})
}
