package runtime

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// An ephemeral container is reported in ephemeralContainerStatuses, never
// ready, and has no part in the pod's readiness or phase; it is never
// restarted, whatever the pod's restart policy.
func TestEphemeralContainerStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	running := v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(now)}}
	exited := v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}
	for _, tc := range []struct {
		name  string
		state v1.ContainerState
	}{
		{"running", running},
		{"exited", exited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod()
			pod.Spec.EphemeralContainers = []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "debugger", Image: "busybox"}}}
			rec := newRecord(pod)
			rec.SandboxReady, rec.Phase, rec.IPs = true, v1.PodRunning, []string{"10.1.0.5"}
			rec.Containers[0].State, rec.Containers[0].Started = running, true
			rec.Containers = append(rec.Containers, &ctrRecord{Name: "debugger", Ephemeral: true, ID: containerID(pod, "debugger"), Started: true, State: tc.state})
			p := buildPod(rec, "192.0.2.2", now)
			if len(p.Status.ContainerStatuses) != 1 || len(p.Status.EphemeralContainerStatuses) != 1 {
				t.Fatalf("statuses: %d app, %d ephemeral; want 1 and 1", len(p.Status.ContainerStatuses), len(p.Status.EphemeralContainerStatuses))
			}
			es := p.Status.EphemeralContainerStatuses[0]
			if es.Name != "debugger" || es.Image != "busybox" || es.Ready || es.ContainerID == "" {
				t.Errorf("ephemeral status %+v", es)
			}
			if got := condition(p, v1.PodReady); got != v1.ConditionTrue {
				t.Errorf("Ready = %s, want True: an ephemeral container has no part in it", got)
			}
			if got := (&podWorker{rec: rec}).appPhase(true); got != v1.PodRunning {
				t.Errorf("phase %s, want Running", got)
			}
			for _, policy := range []v1.RestartPolicy{v1.RestartPolicyAlways, v1.RestartPolicyOnFailure} {
				pod.Spec.RestartPolicy = policy
				if got := restartPolicy(pod, rec.Containers[1]); got != v1.RestartPolicyNever {
					t.Errorf("restart policy under %s = %s, want Never", policy, got)
				}
			}
		})
	}
}
