package e2e

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// A gRPC liveness probe as the conformance specs "should *not* be
// restarted with a GRPC liveness probe" and "should be restarted with a
// GRPC liveness probe" set it (their timing, a 5 s timeout, one failure
// enough): against a serving health server the container is never
// restarted; against a port where nothing listens it is.
func TestGRPCLivenessProbe(t *testing.T) {
	grpcImage := grpcHealthImage(t)
	probe := func(port int32) *v1.Probe {
		return &v1.Probe{
			ProbeHandler:        v1.ProbeHandler{GRPC: &v1.GRPCAction{Port: port}},
			InitialDelaySeconds: 5, TimeoutSeconds: 5, PeriodSeconds: 3, FailureThreshold: 1,
		}
	}
	healthy := probePod("grpc-live", "", "")
	healthy.Spec.Containers[0].Image, healthy.Spec.Containers[0].Command = grpcImage, nil
	healthy.Spec.Containers[0].LivenessProbe = probe(9090)
	wrong := healthy.DeepCopy()
	wrong.Name = "grpc-live-wrong-port"
	wrong.Spec.Containers[0].LivenessProbe = probe(2333)
	hp := createProbePod(t, healthy)
	wp := createProbePod(t, wrong)

	waitPod(t, wp.Name, 2*time.Minute, "restarted by its liveness probe", func(p *v1.Pod) (bool, string) {
		return mainStatus(p).RestartCount >= 1, describe(p)
	})
	waitEvent(t, wp, "Unhealthy", "Liveness probe failed:")
	// By now the healthy pod's probe ran many times (every 3 s from 5 s).
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
