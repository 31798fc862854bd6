package e2e

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// A gRPC liveness probe as the conformance specs "should *not* be
// restarted with a GRPC liveness probe" and "should be restarted with a
// GRPC liveness probe" set it (a 5 s timeout, the default period, one
// failure enough) against their target, agnhost's grpc-health-checking
// server: a serving server is never restarted; a probe of a port where
// nothing listens restarts the container.
func TestGRPCLivenessProbe(t *testing.T) {
	grpcImage := grpcHealthImage(t)
	probe := func(port int32) *v1.Probe {
		return &v1.Probe{
			ProbeHandler:        v1.ProbeHandler{GRPC: &v1.GRPCAction{Port: port}},
			InitialDelaySeconds: 5, TimeoutSeconds: 5, FailureThreshold: 1,
		}
	}
	healthy := probePod("grpc-live", "", "")
	c := &healthy.Spec.Containers[0]
	c.Image, c.Command = grpcImage, []string{"/usr/local/bin/grpchealth", "grpc-health-checking"}
	c.Ports = []v1.ContainerPort{{ContainerPort: 5000}, {ContainerPort: 8080}}
	c.LivenessProbe = probe(5000)
	wrong := healthy.DeepCopy()
	wrong.Name = "grpc-live-wrong-port"
	wrong.Spec.Containers[0].LivenessProbe = probe(2333)
	hp := createProbePod(t, healthy)
	wp := createProbePod(t, wrong)

	waitPod(t, wp.Name, 2*time.Minute, "restarted by its liveness probe", func(p *v1.Pod) (bool, string) {
		return mainStatus(p).RestartCount >= 1, describe(p)
	})
	waitEvent(t, wp, "Unhealthy", "Liveness probe failed:")
	// The healthy pod's probe runs every 10 s from 5 s: let it run a few times.
	waitFor(t, 2*time.Minute, "three liveness probes answered", func() (bool, string) {
		out, _ := kubectl(t, "logs", hp.Name)
		return strings.Count(out, "Serving the Check request") >= 3, out
	})
	got := waitPod(t, hp.Name, 10*time.Second, "running", func(p *v1.Pod) (bool, string) {
		return mainStatus(p).State.Running != nil, describe(p)
	})
	if n := mainStatus(got).RestartCount; n != 0 {
		t.Errorf("a healthy gRPC server was restarted %d times: %s", n, describe(got))
	}
	if n := eventCount(t, hp, "Unhealthy", "Liveness"); n != 0 {
		t.Errorf("%d liveness failures against a serving gRPC server", n)
	}
}
