package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

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
	halfGiB = GiB / 2
)

// FlavorAnnotation is set on every admitted tenant pod to its normalised pod
// flavor, e.g. {"cpu":"0.5","memory":"1Gi","gpu":0} (see Flavor.Annotation).
// It is informational: the normalised container resources in the pod spec
// (requests == limits) are the source of truth for metering.
const FlavorAnnotation = "cci.io/flavor"

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

// Annotation is the value of FlavorAnnotation: compact JSON with the CPU in
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

// ParseAnnotation reads a FlavorAnnotation value back.
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
	switch {
	case f.MilliCPU < MinCPU || f.MilliCPU > MaxCPU:
		why = append(why, fmt.Sprintf("CPU %s is outside 0.25..32 cores", f.CPUString()))
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
// has, the largest one within reach. GPUs are kept as they are.
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
	if cpu > MaxCPU {
		cpu = MaxCPU
		mem = min(mem, MaxRatio*GiB*MaxCPU/1000)
		mem = max(mem, MinRatio*GiB*MaxCPU/1000)
	}
	return Flavor{MilliCPU: cpu, Memory: mem, GPU: f.GPU}
}

func ceilTo(v, step int64) int64 {
	return (v + step - 1) / step * step
}

// FlavorTable describes the table in one sentence, for refusal messages.
const FlavorTable = "CPU comes in 0.25-core steps from 0.25 to 32 per pod, memory in whole GiB (0.5 GiB allowed with 0.25 CPU) between 1 and 8 GiB per core"

func flavorRefusal(f Flavor, why []string) string {
	return fmt.Sprintf("pod flavor %s is not offered (%s; %s); nearest flavor: %s",
		f, strings.Join(why, ", "), FlavorTable, Nearest(f))
}
