package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// ephemeralStatus is the status of the pod's ephemeral container name.
func ephemeralStatus(p *v1.Pod, name string) *v1.ContainerStatus {
	for i := range p.Status.EphemeralContainerStatuses {
		if p.Status.EphemeralContainerStatuses[i].Name == name {
			return &p.Status.EphemeralContainerStatuses[i]
		}
	}
	return nil
}

// addEphemeral adds an ephemeral container to a running pod through the
// ephemeralcontainers subresource, as kubectl debug does.
func addEphemeral(t *testing.T, name string, ec v1.EphemeralContainer) {
	t.Helper()
	cs := client(t)
	ctx := context.Background()
	p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, ec)
	if _, err := cs.CoreV1().Pods("default").UpdateEphemeralContainers(ctx, name, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("add ephemeral container %s: %v", ec.Name, err)
	}
}

// An ephemeral container starts in the running pod (as the conformance
// spec "will start an ephemeral container in an existing pod" checks):
// exec and logs reach it, its status is in ephemeralContainerStatuses, and
// once it exited it is not started again. Under runc, targetContainerName
// puts it in the target's process namespace.
func TestEphemeralContainers(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("ephemeral", rc), rc, "sleep 10000")
		if rc == "gvisor" {
			// A gvisor pod of one container has no pod sandbox for an
			// ephemeral container to join: it is refused with a clear
			// status (below); this pod has two, and a pause container.
			pod.Spec.Containers = append(pod.Spec.Containers, v1.Container{Name: "side", Image: image(testimage.Shell), Command: []string{"sh", "-c", idle}})
		}
		p := createProbePod(t, pod)
		waitPod(t, p.Name, 90*time.Second, "running", func(p *v1.Pod) (bool, string) {
			return mainStatus(p).State.Running != nil, describe(p)
		})

		debugger := v1.EphemeralContainer{
			EphemeralContainerCommon: v1.EphemeralContainerCommon{
				Name: "debugger", Image: image(testimage.Shell),
				Command: []string{"sh", "-c", "while true; do echo polo; sleep 1; done"},
				Stdin:   true, TTY: true,
			},
			TargetContainerName: "main",
		}
		if rc == "gvisor" {
			debugger.Stdin, debugger.TTY = false, false
		}
		addEphemeral(t, p.Name, debugger)
		got := waitPod(t, p.Name, 60*time.Second, "debugger running", func(p *v1.Pod) (bool, string) {
			s := ephemeralStatus(p, "debugger")
			return s != nil && s.State.Running != nil, fmt.Sprintf("%s; ephemeral: %+v", describe(p), p.Status.EphemeralContainerStatuses)
		})
		if s := ephemeralStatus(got, "debugger"); s.ContainerID == "" || s.Ready {
			t.Errorf("ephemeral status %+v", s)
		}
		if out := mustKubectl(t, "exec", p.Name, "-c", "debugger", "--", "echo", "marco"); !strings.Contains(out, "marco") {
			t.Errorf("exec in the ephemeral container: %q", out)
		}
		waitFor(t, 30*time.Second, "ephemeral logs", func() (bool, string) {
			out, _ := kubectl(t, "logs", p.Name, "-c", "debugger")
			return strings.Contains(out, "polo"), out
		})
		if rc == "" {
			// kubectl attach: the output from now on.
			expectLine(t, streamLines(t, "attach", p.Name, "-c", "debugger"), "polo", 30*time.Second)
			// kubectl debug -i: a shell reading the attached client's input.
			addEphemeral(t, p.Name, v1.EphemeralContainer{EphemeralContainerCommon: v1.EphemeralContainerCommon{
				Name: "shell", Image: image(testimage.Shell), Command: []string{"sh"}, Stdin: true,
			}})
			waitPod(t, p.Name, 60*time.Second, "shell running", func(p *v1.Pod) (bool, string) {
				s := ephemeralStatus(p, "shell")
				return s != nil && s.State.Running != nil, fmt.Sprintf("%+v", p.Status.EphemeralContainerStatuses)
			})
			attach := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "attach", "-i", p.Name, "-c", "shell")
			attach.Stdin = strings.NewReader("echo from-$((40+2))\nexit 0\n")
			out, err := attach.CombinedOutput()
			if !strings.Contains(string(out), "from-42") {
				t.Errorf("kubectl attach -i: %v\n%s", err, out)
			}
			// The target's process namespace: the debugger sees main's sleep.
			if out := mustKubectl(t, "exec", p.Name, "-c", "debugger", "--", "ps"); !strings.Contains(out, "sleep 10000") {
				t.Errorf("ps in the ephemeral container does not show its target's process:\n%s", out)
			}
		}

		// A second one that exits at once is never restarted.
		addEphemeral(t, p.Name, v1.EphemeralContainer{EphemeralContainerCommon: v1.EphemeralContainerCommon{
			Name: "once", Image: image(testimage.Shell), Command: []string{"sh", "-c", "echo bye; exit 3"},
		}})
		got = waitPod(t, p.Name, 60*time.Second, "once exited", func(p *v1.Pod) (bool, string) {
			s := ephemeralStatus(p, "once")
			return s != nil && s.State.Terminated != nil, fmt.Sprintf("%s; ephemeral: %+v", describe(p), p.Status.EphemeralContainerStatuses)
		})
		if s := ephemeralStatus(got, "once"); s.State.Terminated.ExitCode != 3 {
			t.Errorf("once: %+v", s.State.Terminated)
		}
		time.Sleep(3 * time.Second)
		got = waitPod(t, p.Name, 5*time.Second, "still running", func(p *v1.Pod) (bool, string) {
			return p.Status.Phase == v1.PodRunning, describe(p)
		})
		if s := ephemeralStatus(got, "once"); s.RestartCount != 0 || s.State.Terminated == nil {
			t.Errorf("an ephemeral container was restarted: %+v", s)
		}
		if n := mainStatus(got).RestartCount; n != 0 || condition(got, v1.PodReady) != v1.ConditionTrue {
			t.Errorf("the pod's own container was disturbed: %s", describe(got))
		}
	})
}

// An ephemeral container joins a gvisor pod of one container (whose
// container is its sandbox's first process); one with a terminal gets a
// clear waiting status instead of hanging, and the pod runs on.
func TestEphemeralContainerSoloGVisor(t *testing.T) {
	p := createProbePod(t, probePod("ephemeral-solo", "gvisor", "sleep 10000"))
	waitPod(t, p.Name, 90*time.Second, "running", func(p *v1.Pod) (bool, string) {
		return mainStatus(p).State.Running != nil, describe(p)
	})
	addEphemeral(t, p.Name, v1.EphemeralContainer{EphemeralContainerCommon: v1.EphemeralContainerCommon{
		Name: "tty", Image: image(testimage.Shell), Command: []string{"sh", "-c", "sleep 100"}, Stdin: true, TTY: true,
	}})
	got := waitPod(t, p.Name, 60*time.Second, "tty refused", func(p *v1.Pod) (bool, string) {
		s := ephemeralStatus(p, "tty")
		return s != nil && s.State.Waiting != nil && s.State.Waiting.Reason == "CreateContainerError", fmt.Sprintf("%+v", p.Status.EphemeralContainerStatuses)
	})
	if msg := ephemeralStatus(got, "tty").State.Waiting.Message; !strings.Contains(msg, "with a terminal") {
		t.Errorf("message %q", msg)
	}
	addEphemeral(t, p.Name, v1.EphemeralContainer{EphemeralContainerCommon: v1.EphemeralContainerCommon{
		Name: "debugger", Image: image(testimage.Shell), Command: []string{"sh", "-c", "echo polo; sleep 100"},
	}})
	got = waitPod(t, p.Name, 60*time.Second, "debugger running", func(p *v1.Pod) (bool, string) {
		s := ephemeralStatus(p, "debugger")
		return s != nil && s.State.Running != nil, fmt.Sprintf("%+v", p.Status.EphemeralContainerStatuses)
	})
	if out := mustKubectl(t, "exec", p.Name, "-c", "debugger", "--", "echo", "marco"); !strings.Contains(out, "marco") {
		t.Errorf("exec in the ephemeral container: %q", out)
	}
	if mainStatus(got).State.Running == nil || condition(got, v1.PodReady) != v1.ConditionTrue {
		t.Errorf("the pod was disturbed: %s", describe(got))
	}
}
