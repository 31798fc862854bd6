// Package flavor is the flavor table: the sizes of pods CCI sells, CPU and
// memory in fixed steps and whole GPUs, and how a pod's size is counted.
// Admission (internal/policy) refuses pods outside the table and metering
// (internal/metering) bills the flavor a pod reserves; both read it here.
package flavor

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// GPUResource is the extended resource of GPUs, as pods ask for them.
const GPUResource v1.ResourceName = "nvidia.com/gpu"

// GPU flavors: whole GPUs in these counts, as the clouds sell GPU
// instances (1 GPU with 8 CPU / 64 GiB, 2 with 16 / 128, …): a GPU pod may
// have GPUCPU millicores per GPU where that is more than MaxCPU, so 8 GPUs
// come with up to 64 cores (and 512 GiB at 8 GiB per core).
var GPUCounts = []int64{1, 2, 4, 8}

const (
	GPUCPU = 8000
	// GPUTable describes the GPU flavors in one sentence.
	GPUTable = "GPUs come whole, 1, 2, 4 or 8 per pod, with up to 32 CPU or 8 CPU per GPU if more"
)

// maxCPU is the most CPU the flavor's GPU count allows: MaxCPU without
// GPUs, GPUCPU per GPU with them.
func (f Flavor) maxCPU() int64 {
	if f.GPU > 0 {
		return max(MaxCPU, GPUCPU*f.GPU)
	}
	return MaxCPU
}

// Flavor table, as the clouds sell them.
const (
	// CPUStep is the granularity of a pod's CPU, in millicores.
	CPUStep = 250
	// MinCPU and MaxCPU bound a pod's CPU, in millicores.
	MinCPU = 250
	MaxCPU = 32000
	// MinRatio and MaxRatio bound memory per core, in GiB.
	MinRatio = 1
	MaxRatio = 8

	GiB     = int64(1) << 30
	MiB     = int64(1) << 20
	halfGiB = GiB / 2
)

// Annotation is set on every admitted tenant pod to its normalised pod
// flavor, e.g. {"cpu":"0.5","memory":"1Gi","gpu":0} (see Flavor.Annotation).
// It is informational: the normalised container resources in the pod spec
// (requests == limits) are the source of truth for metering.
const Annotation = "cci.io/flavor"

// Flavor is the size of a pod: what it may use and what it is billed for.
type Flavor struct {
	// MilliCPU is the pod's CPU in millicores.
	MilliCPU int64
	// Memory is the pod's memory in bytes.
	Memory int64
	// GPU is the number of nvidia.com/gpu devices.
	GPU int64
}

// CPUString writes the CPU in cores, e.g. "0.25", "1", "1.5".
func (f Flavor) CPUString() string {
	return strconv.FormatFloat(float64(f.MilliCPU)/1000, 'f', -1, 64)
}

// MemoryString writes the memory in GiB where that is exact to 3 decimals
// ("0.5 GiB", "2 GiB") and as a Kubernetes quantity otherwise ("1000Mi").
func (f Flavor) MemoryString() string {
	if f.Memory%(GiB/1024) == 0 {
		if g := float64(f.Memory) / float64(GiB); g*1000 == float64(int64(g*1000)) {
			return strconv.FormatFloat(g, 'f', -1, 64) + " GiB"
		}
	}
	return resource.NewQuantity(f.Memory, resource.BinarySI).String()
}

// String is the flavor as people read it: "0.5 CPU / 1 GiB", "+ 1 GPU" when
// it has GPUs.
func (f Flavor) String() string {
	s := f.CPUString() + " CPU / " + f.MemoryString()
	if f.GPU > 0 {
		s += fmt.Sprintf(" / %d GPU", f.GPU)
	}
	return s
}

// flavorJSON is the annotation's wire form.
type flavorJSON struct {
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
	GPU    int64  `json:"gpu"`
}

// Annotation is the value of the flavor annotation: compact JSON with the CPU in
// cores as a decimal string, the memory as a Kubernetes quantity and the GPU
// count, e.g. {"cpu":"0.25","memory":"512Mi","gpu":0}.
func (f Flavor) Annotation() string {
	b, _ := json.Marshal(flavorJSON{
		CPU:    f.CPUString(),
		Memory: resource.NewQuantity(f.Memory, resource.BinarySI).String(),
		GPU:    f.GPU,
	})
	return string(b)
}

// ParseAnnotation reads a flavor annotation's value back.
func ParseAnnotation(s string) (Flavor, error) {
	var j flavorJSON
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		return Flavor{}, fmt.Errorf("flavor annotation %q: %w", s, err)
	}
	cpu, err := resource.ParseQuantity(j.CPU)
	if err != nil {
		return Flavor{}, fmt.Errorf("flavor annotation %q: cpu: %w", s, err)
	}
	mem, err := resource.ParseQuantity(j.Memory)
	if err != nil {
		return Flavor{}, fmt.Errorf("flavor annotation %q: memory: %w", s, err)
	}
	return Flavor{MilliCPU: cpu.MilliValue(), Memory: mem.Value(), GPU: j.GPU}, nil
}

// Check says why f is not in the flavor table, or returns nil.
func (f Flavor) Check() []string {
	var why []string
	if f.GPU > 0 && !slices.Contains(GPUCounts, f.GPU) {
		why = append(why, fmt.Sprintf("%d GPUs are not offered (1, 2, 4 or 8 whole GPUs)", f.GPU))
	}
	switch maxCPU := f.maxCPU(); {
	case f.MilliCPU < MinCPU || f.MilliCPU > maxCPU:
		why = append(why, fmt.Sprintf("CPU %s is outside 0.25..%s cores", f.CPUString(), Flavor{MilliCPU: maxCPU}.CPUString()))
	case f.MilliCPU%CPUStep != 0:
		why = append(why, fmt.Sprintf("CPU %s is not a multiple of 0.25 cores", f.CPUString()))
	}
	if f.Memory%GiB != 0 && !(f.Memory == halfGiB && f.MilliCPU == MinCPU) {
		why = append(why, fmt.Sprintf("memory %s is not a whole number of GiB (0.5 GiB only with 0.25 CPU)", f.MemoryString()))
	}
	if f.MilliCPU > 0 {
		// GiB per core = Memory/GiB / (MilliCPU/1000)
		switch {
		case f.Memory*1000 < MinRatio*f.MilliCPU*GiB:
			why = append(why, fmt.Sprintf("memory %s is below %d GiB per core", f.MemoryString(), MinRatio))
		case f.Memory*1000 > MaxRatio*f.MilliCPU*GiB:
			why = append(why, fmt.Sprintf("memory %s is above %d GiB per core", f.MemoryString(), MaxRatio))
		}
	}
	return why
}

// Nearest is the smallest flavor in the table that gives at least what f
// asks for in CPU and memory; where f asks for more than the largest flavor
// has, the largest one within reach. A GPU count is rounded up to one
// offered (at most 8).
func Nearest(f Flavor) Flavor {
	cpu := ceilTo(max(f.MilliCPU, MinCPU), CPUStep)
	mem := f.Memory
	if cpu == MinCPU && mem <= halfGiB {
		mem = halfGiB
	} else {
		mem = ceilTo(max(mem, 1), GiB)
	}
	// Too little memory for the CPU: raise memory to 1 GiB per core.
	if mem*1000 < MinRatio*cpu*GiB {
		mem = ceilTo(MinRatio*cpu*GiB/1000, GiB)
	}
	// Too much memory for the CPU: raise the CPU to 8 GiB per core.
	if mem*1000 > MaxRatio*cpu*GiB {
		cpu = ceilTo((mem*1000+MaxRatio*GiB-1)/(MaxRatio*GiB), CPUStep)
	}
	gpu := f.GPU
	if gpu > 0 {
		i := slices.IndexFunc(GPUCounts, func(n int64) bool { return n >= gpu })
		if i < 0 {
			i = len(GPUCounts) - 1
		}
		gpu = GPUCounts[i]
	}
	if maxCPU := (Flavor{GPU: gpu}).maxCPU(); cpu > maxCPU {
		cpu = maxCPU
		mem = min(mem, MaxRatio*GiB*maxCPU/1000)
		mem = max(mem, MinRatio*GiB*maxCPU/1000)
	}
	return Flavor{MilliCPU: cpu, Memory: mem, GPU: gpu}
}

func ceilTo(v, step int64) int64 {
	return (v + step - 1) / step * step
}

// Table describes the table in one sentence, for refusal messages.
const Table = "CPU comes in 0.25-core steps from 0.25 to 32 per pod, memory in whole GiB (0.5 GiB allowed with 0.25 CPU) between 1 and 8 GiB per core"

// Refusal is the message of a pod whose flavor is not offered: why, the
// table and the nearest flavor that is.
func Refusal(f Flavor, why []string) string {
	table := Table
	if f.GPU > 0 {
		table += "; " + GPUTable
	}
	return fmt.Sprintf("pod flavor %s is not offered (%s; %s); nearest flavor: %s",
		f, strings.Join(why, ", "), table, Nearest(f))
}

// Default is the flavor of a container that names neither requests nor
// limits: 0.25 CPU / 0.5 GiB. Admission gives it to such containers; the
// meter assumes it for pods admitted before the policy existed.
var (
	DefaultCPU    = resource.MustParse("250m")
	DefaultMemory = resource.MustParse("512Mi")
)

// Requested reads a container's requests (admission normalises them to
// its limits first).
func Requested(r v1.ResourceRequirements) Flavor {
	f := Flavor{MilliCPU: r.Requests.Cpu().MilliValue(), Memory: r.Requests.Memory().Value()}
	if q, ok := r.Requests[GPUResource]; ok {
		f.GPU = q.Value()
	}
	return f
}

// Billed reads a container as the meter bills it: limits, else requests,
// else the default flavor; memory in whole MiB, rounded up.
func Billed(r v1.ResourceRequirements) Flavor {
	get := func(name v1.ResourceName) (resource.Quantity, bool) {
		if q, ok := r.Limits[name]; ok {
			return q, true
		}
		q, ok := r.Requests[name]
		return q, ok
	}
	f := Flavor{MilliCPU: DefaultCPU.MilliValue(), Memory: DefaultMemory.Value()}
	if q, ok := get(v1.ResourceCPU); ok {
		f.MilliCPU = q.MilliValue()
	}
	if q, ok := get(v1.ResourceMemory); ok {
		f.Memory = (q.Value() + MiB - 1) / MiB * MiB
	}
	if q, ok := get(GPUResource); ok {
		f.GPU = q.Value()
	}
	return f
}

// Of is what the pod reserves, counted as the scheduler counts it: the sum
// of its containers and sidecars (restartable init containers), or the
// largest init container with the sidecars started before it, whichever
// is larger. read sizes one container (Requested or Billed).
func Of(spec *v1.PodSpec, read func(v1.ResourceRequirements) Flavor) Flavor {
	var app, sidecars, peak Flavor
	for _, c := range spec.Containers {
		app = app.add(read(c.Resources))
	}
	for _, c := range spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			sidecars = sidecars.add(read(c.Resources))
			continue
		}
		peak = peak.max(sidecars.add(read(c.Resources)))
	}
	return app.add(sidecars).max(peak)
}

func (f Flavor) add(o Flavor) Flavor {
	return Flavor{MilliCPU: f.MilliCPU + o.MilliCPU, Memory: f.Memory + o.Memory, GPU: f.GPU + o.GPU}
}

func (f Flavor) max(o Flavor) Flavor {
	return Flavor{MilliCPU: max(f.MilliCPU, o.MilliCPU), Memory: max(f.Memory, o.Memory), GPU: max(f.GPU, o.GPU)}
}
