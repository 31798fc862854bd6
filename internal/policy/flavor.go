package policy

import "github.com/cci-project/cci/internal/flavor"

// The flavor table is internal/flavor's, which metering reads too; these
// names keep the admission's words for it.
type Flavor = flavor.Flavor

const (
	CPUStep  = flavor.CPUStep
	MinCPU   = flavor.MinCPU
	MaxCPU   = flavor.MaxCPU
	MinRatio = flavor.MinRatio
	MaxRatio = flavor.MaxRatio
	GiB      = flavor.GiB
	// FlavorAnnotation is set on every admitted tenant pod to its
	// normalised pod flavor (see flavor.Annotation).
	FlavorAnnotation = flavor.Annotation
	// FlavorTable describes the table in one sentence.
	FlavorTable = flavor.Table
)

// ParseAnnotation reads a FlavorAnnotation value back.
func ParseAnnotation(s string) (Flavor, error) { return flavor.ParseAnnotation(s) }

// Nearest is the smallest offered flavor that gives at least what f asks.
func Nearest(f Flavor) Flavor { return flavor.Nearest(f) }

func flavorRefusal(f Flavor, why []string) string { return flavor.Refusal(f, why) }
