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
	// StoragePerGiBHour is the price of one GiB of provisioned volume size
	// for one hour, per StorageClass. A table's entries are added to (or
	// replace) the defaults: cci-evs 0.00010959 ($0.08 per GB-month, AWS
	// EBS gp3, over 730 hours), cci-sfs 0.00041096 ($0.30, EFS Standard),
	// cci-obs 0.000031507 ($0.023, S3 Standard).
	StoragePerGiBHour map[string]float64 `json:"storagePerGiBHour"`
	// StorageDefaultPerGiBHour prices classes StoragePerGiBHour does not
	// name (an operator's own). Default 0.00010959, as cci-evs.
	StorageDefaultPerGiBHour float64 `json:"storageDefaultPerGiBHour"`
}

// StoragePrice is the price of one GiB-hour of class.
func (p Prices) StoragePrice(class string) float64 {
	if v, ok := p.StoragePerGiBHour[class]; ok {
		return v
	}
	return p.StorageDefaultPerGiBHour
}

// DefaultPrices are the prices used when no price table is given.
func DefaultPrices() Prices {
	return Prices{
		Currency: "USD", PerCoreSecond: 0.000011244, PerGiBSecond: 0.0000012347, PerGPUSecond: 0.000694,
		StoragePerGiBHour:        map[string]float64{"cci-evs": 0.00010959, "cci-sfs": 0.00041096, "cci-obs": 0.000031507},
		StorageDefaultPerGiBHour: 0.00010959,
	}
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
		return p, fmt.Errorf("price table %q (keys: currency, perCoreSecond, perGiBSecond, perGPUSecond, storagePerGiBHour (a map of StorageClass to price), storageDefaultPerGiBHour): %w", path, err)
	}
	if err := p.validate(); err != nil {
		return p, fmt.Errorf("price table %q: %w", path, err)
	}
	return p, nil
}

func (p Prices) validate() error {
	prices := map[string]float64{"perCoreSecond": p.PerCoreSecond, "perGiBSecond": p.PerGiBSecond, "perGPUSecond": p.PerGPUSecond,
		"storageDefaultPerGiBHour": p.StorageDefaultPerGiBHour}
	for class, v := range p.StoragePerGiBHour {
		prices["storagePerGiBHour."+class] = v
	}
	for name, v := range prices {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s is %v; a price must be a finite number >= 0", name, v)
		}
	}
	if p.Currency == "" {
		return fmt.Errorf("currency is empty")
	}
	return nil
}

// Cost prices usage, pods' and volumes', rounded to a billionth of the
// currency unit.
func (p Prices) Cost(u Usage) float64 {
	c := u.CoreSeconds*p.PerCoreSecond + u.GiBSeconds*p.PerGiBSecond + float64(u.GPUSeconds)*p.PerGPUSecond
	for _, s := range u.Storage {
		c += p.storageCost(s.StorageClass, s.MiBSeconds)
	}
	return math.Round(c*1e9) / 1e9
}

// storageCost prices MiB-seconds of class, unrounded.
func (p Prices) storageCost(class string, mibSeconds int64) float64 {
	return float64(mibSeconds) / (1024 * 3600) * p.StoragePrice(class)
}
