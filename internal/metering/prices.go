package metering

import (
	"fmt"
	"math"
	"os"

	"sigs.k8s.io/yaml"
)

// Prices turn usage into cost. A price table file (YAML or JSON) uses the
// same keys; keys it leaves out keep their defaults.
type Prices struct {
	// Currency is the ISO 4217 code costs are given in. Default "USD".
	Currency string `json:"currency"`
	// PerCoreSecond is the price of one CPU core for one second.
	// Default 0.000011244 (AWS Fargate Linux/x86 in us-east-1: $0.04048 per vCPU-hour).
	PerCoreSecond float64 `json:"perCoreSecond"`
	// PerGiBSecond is the price of one GiB of memory for one second.
	// Default 0.0000012347 (Fargate: $0.004445 per GB-hour).
	PerGiBSecond float64 `json:"perGiBSecond"`
	// PerGPUSecond is the price of one GPU for one second.
	// Default 0.000694 ($2.50 per GPU-hour, on-demand data-centre GPU prices of the clouds).
	PerGPUSecond float64 `json:"perGPUSecond"`
}

// DefaultPrices are the prices used when no price table is given.
func DefaultPrices() Prices {
	return Prices{Currency: "USD", PerCoreSecond: 0.000011244, PerGiBSecond: 0.0000012347, PerGPUSecond: 0.000694}
}

// LoadPrices reads a price table over the defaults; an empty path gives the defaults.
func LoadPrices(path string) (Prices, error) {
	p := DefaultPrices()
	if path == "" {
		return p, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return p, fmt.Errorf("read price table: %w", err)
	}
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		return p, fmt.Errorf("price table %q (keys: currency, perCoreSecond, perGiBSecond, perGPUSecond): %w", path, err)
	}
	if err := p.validate(); err != nil {
		return p, fmt.Errorf("price table %q: %w", path, err)
	}
	return p, nil
}

func (p Prices) validate() error {
	for name, v := range map[string]float64{"perCoreSecond": p.PerCoreSecond, "perGiBSecond": p.PerGiBSecond, "perGPUSecond": p.PerGPUSecond} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s is %v; a price must be a finite number >= 0", name, v)
		}
	}
	if p.Currency == "" {
		return fmt.Errorf("currency is empty")
	}
	return nil
}

// Cost prices usage, rounded to a billionth of the currency unit.
func (p Prices) Cost(u Usage) float64 {
	c := u.CoreSeconds*p.PerCoreSecond + u.GiBSeconds*p.PerGiBSecond + float64(u.GPUSeconds)*p.PerGPUSecond
	return math.Round(c*1e9) / 1e9
}
