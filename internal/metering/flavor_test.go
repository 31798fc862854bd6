package metering

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func res(kv ...string) v1.ResourceList {
	l := v1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[v1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func ctr(limits, requests v1.ResourceList) v1.Container {
	return v1.Container{Name: "c", Resources: v1.ResourceRequirements{Limits: limits, Requests: requests}}
}

func TestFlavorOf(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	sidecar := ctr(res("cpu", "250m", "memory", "256Mi"), nil)
	sidecar.RestartPolicy = &always
	for _, tc := range []struct {
		name string
		spec v1.PodSpec
		want Flavor
	}{
		{"limits", v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "500m", "memory", "1Gi"), nil)}}, Flavor{500, 1024, 0}},
		{"requests only", v1.PodSpec{Containers: []v1.Container{ctr(nil, res("cpu", "2", "memory", "4Gi"))}}, Flavor{2000, 4096, 0}},
		{"limits win over requests", v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "1", "memory", "2Gi"), res("cpu", "500m", "memory", "1Gi"))}}, Flavor{1000, 2048, 0}},
		{"nothing: the default flavor", v1.PodSpec{Containers: []v1.Container{ctr(nil, nil)}}, Flavor{250, 512, 0}},
		{"default per container", v1.PodSpec{Containers: []v1.Container{ctr(nil, nil), ctr(nil, nil)}}, Flavor{500, 1024, 0}},
		{"only cpu set: memory defaults", v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "1"), nil)}}, Flavor{1000, 512, 0}},
		{"containers add up", v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "1", "memory", "2Gi"), nil), ctr(res("cpu", "250m", "memory", "512Mi"), nil)}}, Flavor{1250, 2560, 0}},
		{"gpu", v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "8", "memory", "32Gi", "nvidia.com/gpu", "1"), nil)}}, Flavor{8000, 32768, 1}},
		{"memory rounded up to MiB", v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "1", "memory", "1000000"), nil)}}, Flavor{1000, 1, 0}},
		{"bigger init container wins", v1.PodSpec{
			InitContainers: []v1.Container{ctr(res("cpu", "4", "memory", "1Gi"), nil)},
			Containers:     []v1.Container{ctr(res("cpu", "1", "memory", "2Gi"), nil)},
		}, Flavor{4000, 2048, 0}},
		{"sidecars run with the app", v1.PodSpec{
			InitContainers: []v1.Container{sidecar},
			Containers:     []v1.Container{ctr(res("cpu", "1", "memory", "1Gi"), nil)},
		}, Flavor{1250, 1280, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FlavorOf(&tc.spec); got != tc.want {
				t.Errorf("FlavorOf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func terminated(finished time.Time) v1.ContainerStatus {
	return v1.ContainerStatus{Name: "c", State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{FinishedAt: metav1.NewTime(finished)}}}
}

func running() v1.ContainerStatus {
	return v1.ContainerStatus{Name: "c", State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}}
}

func podWith(start *time.Time, phase v1.PodPhase, statuses ...v1.ContainerStatus) *v1.Pod {
	p := &v1.Pod{Status: v1.PodStatus{Phase: phase, ContainerStatuses: statuses}}
	if start != nil {
		st := metav1.NewTime(*start)
		p.Status.StartTime = &st
	}
	return p
}

func TestPodInterval(t *testing.T) {
	start := at("10s")
	now := at("100s")
	for _, tc := range []struct {
		name     string
		pod      *v1.Pod
		gone     bool
		want     Interval
		wantOpen bool
		wantOK   bool
	}{
		{"never started (unschedulable, refused)", podWith(nil, v1.PodPending), false, Interval{}, false, false},
		{"pulling the image: billed from startTime", podWith(&start, v1.PodPending), false, Interval{start, now}, true, true},
		{"running: open up to now", podWith(&start, v1.PodRunning, running()), false, Interval{start, now}, true, true},
		{"succeeded: closed at the last finish", podWith(&start, v1.PodSucceeded, terminated(at("30s")), terminated(at("40s"))), false, iv("10s", "40s"), false, true},
		{"failed: closed at the last finish", podWith(&start, v1.PodFailed, terminated(at("12s"))), false, iv("10s", "12s"), false, true},
		{"running with a crashed container stays open", podWith(&start, v1.PodRunning, terminated(at("20s")), running()), false, Interval{start, now}, true, true},
		{"vanished while running: closed when seen gone", podWith(&start, v1.PodRunning, running()), true, Interval{start, now}, false, true},
		{"vanished after all containers stopped", podWith(&start, v1.PodRunning, terminated(at("50s"))), true, iv("10s", "50s"), false, true},
		{"vanished never started", podWith(nil, v1.PodPending), true, Interval{}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got Interval
			var open, ok bool
			if tc.gone {
				got, ok = vanishedInterval(tc.pod, now)
			} else {
				got, open, ok = podInterval(tc.pod, now)
			}
			if ok != tc.wantOK || open != tc.wantOpen || (ok && (!got.Start.Equal(tc.want.Start) || !got.End.Equal(tc.want.End))) {
				t.Errorf("got %v open=%v ok=%v, want %v open=%v ok=%v", got, open, ok, tc.want, tc.wantOpen, tc.wantOK)
			}
		})
	}
}
