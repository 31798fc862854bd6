package flavor

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestGPUFlavors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       Flavor
		why     string // a part of the refusal; "" when offered
		nearest Flavor
	}{
		{"one GPU, 8 CPU / 64 GiB", Flavor{MilliCPU: 8000, Memory: 64 * GiB, GPU: 1}, "", Flavor{MilliCPU: 8000, Memory: 64 * GiB, GPU: 1}},
		{"eight GPUs, 64 CPU", Flavor{MilliCPU: 64000, Memory: 256 * GiB, GPU: 8}, "", Flavor{MilliCPU: 64000, Memory: 256 * GiB, GPU: 8}},
		{"three GPUs", Flavor{MilliCPU: 8000, Memory: 16 * GiB, GPU: 3}, "3 GPUs are not offered", Flavor{MilliCPU: 8000, Memory: 16 * GiB, GPU: 4}},
		{"more cores than one GPU's", Flavor{MilliCPU: 40000, Memory: 80 * GiB, GPU: 1}, "CPU 40 is outside 0.25..32 cores", Flavor{MilliCPU: 32000, Memory: 80 * GiB, GPU: 1}},
		{"16 GPUs", Flavor{MilliCPU: 8000, Memory: 8 * GiB, GPU: 16}, "16 GPUs are not offered", Flavor{MilliCPU: 8000, Memory: 8 * GiB, GPU: 8}},
		{"no GPU, past 32 cores", Flavor{MilliCPU: 40000, Memory: 80 * GiB}, "CPU 40 is outside 0.25..32 cores", Flavor{MilliCPU: 32000, Memory: 80 * GiB}},
	} {
		why := strings.Join(tc.f.Check(), "; ")
		switch {
		case tc.why == "" && why != "":
			t.Errorf("%s: refused: %s", tc.name, why)
		case tc.why != "" && !strings.Contains(why, tc.why):
			t.Errorf("%s: refusal %q, want it to say %q", tc.name, why, tc.why)
		}
		if tc.nearest != (Flavor{}) {
			if got := Nearest(tc.f); got != tc.nearest {
				t.Errorf("%s: nearest %s, want %s", tc.name, got, tc.nearest)
			}
			if why := Nearest(tc.f).Check(); len(why) > 0 {
				t.Errorf("%s: nearest flavor %s is refused: %v", tc.name, Nearest(tc.f), why)
			}
		}
	}
}

// Admission and metering count a pod alike; they differ only in how they
// read a container (requests, or limits with the default flavor).
func TestOf(t *testing.T) {
	res := func(cpu, mem, gpu string) v1.ResourceRequirements {
		l := v1.ResourceList{}
		if cpu != "" {
			l[v1.ResourceCPU] = resource.MustParse(cpu)
			l[v1.ResourceMemory] = resource.MustParse(mem)
		}
		if gpu != "" {
			l[GPUResource] = resource.MustParse(gpu)
		}
		return v1.ResourceRequirements{Limits: l, Requests: l}
	}
	always := v1.ContainerRestartPolicyAlways
	spec := &v1.PodSpec{
		InitContainers: []v1.Container{{Name: "side", Resources: res("250m", "512Mi", ""), RestartPolicy: &always}, {Name: "init", Resources: res("4", "8Gi", "2")}},
		Containers:     []v1.Container{{Name: "a", Resources: res("1", "2Gi", "1")}, {Name: "b"}},
	}
	if got, want := Of(spec, Requested), (Flavor{MilliCPU: 4250, Memory: 8*GiB + GiB/2, GPU: 2}); got != want {
		t.Errorf("requested %s, want %s", got, want)
	}
	// b has no resources: billed at the default 0.25 CPU / 0.5 GiB.
	if got, want := Of(spec, Billed), (Flavor{MilliCPU: 4250, Memory: 8*GiB + GiB/2, GPU: 2}); got != want {
		t.Errorf("billed %s, want %s", got, want)
	}
	spec.InitContainers = spec.InitContainers[:1]
	if got, want := Of(spec, Billed), (Flavor{MilliCPU: 1500, Memory: 3 * GiB, GPU: 1}); got != want {
		t.Errorf("billed without the init container %s, want %s", got, want)
	}
}
