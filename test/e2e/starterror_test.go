package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A container whose command is missing from its image shows as the kubelet
// with containerd shows it: terminated with reason StartError, exit code 128
// and the runtime's message, restarted with a growing restart count and in
// CrashLoopBackOff between tries; under restartPolicy Never the pod fails.
// A Warning event carries the runtime's message.
func TestStartError(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		cs := client(t)
		ctx := context.Background()
		get := func(name string) (*v1.Pod, v1.ContainerStatus, bool) {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) != 1 {
				return p, v1.ContainerStatus{}, false
			}
			return p, p.Status.ContainerStatuses[0], true
		}
		// startError checks a terminated state of the missing command.
		startError := func(term *v1.ContainerStateTerminated) bool {
			return term != nil && term.Reason == "StartError" && term.ExitCode == 128 && strings.Contains(term.Message, `nope`)
		}

		always := shellPod("start-error", rc, "")
		always.Spec.Containers[0].Command = []string{"nope"}
		createPod(t, ns, always)
		var status v1.ContainerStatus
		waitFor(t, 90*time.Second, "a StartError restarted into CrashLoopBackOff", func() (bool, string) {
			_, c, ok := get(always.Name)
			if !ok {
				return false, "no container status"
			}
			status = c
			ok = c.RestartCount >= 1 && c.State.Waiting != nil && c.State.Waiting.Reason == "CrashLoopBackOff" &&
				startError(c.LastTerminationState.Terminated)
			return ok, fmt.Sprintf("restarts %d state %+v last %+v", c.RestartCount, c.State, c.LastTerminationState)
		})
		msg := status.LastTerminationState.Terminated.Message
		if rc == "" && !strings.Contains(msg, `exec: "nope": executable file not found in $PATH`) {
			t.Errorf("runc's message: %q", msg)
		}
		t.Logf("StartError message: %s", msg)
		waitFor(t, 30*time.Second, "a Failed event with the runtime's message", func() (bool, string) {
			evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + always.Name})
			if err != nil {
				return false, err.Error()
			}
			var seen []string
			for _, e := range evs.Items {
				if e.Type == v1.EventTypeWarning && e.Reason == "Failed" && strings.Contains(e.Message, msg) {
					return true, ""
				}
				seen = append(seen, e.Reason+": "+e.Message)
			}
			return false, strings.Join(seen, "\n")
		})

		never := shellPod("start-error-never", rc, "")
		never.Spec.Containers[0].Command = []string{"nope"}
		never.Spec.RestartPolicy = v1.RestartPolicyNever
		createPod(t, ns, never)
		waitFor(t, 90*time.Second, "the pod Failed with a StartError", func() (bool, string) {
			p, c, ok := get(never.Name)
			if !ok {
				return false, "no container status"
			}
			return p.Status.Phase == v1.PodFailed && startError(c.State.Terminated) && c.RestartCount == 0,
				fmt.Sprintf("phase %s restarts %d state %+v", p.Status.Phase, c.RestartCount, c.State)
		})
	})
}
