package metering

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCost(t *testing.T) {
	p := Prices{Currency: "USD", PerCoreSecond: 0.00001, PerGiBSecond: 0.000001, PerGPUSecond: 0.001}
	for _, tc := range []struct {
		name string
		t    Totals
		want float64
	}{
		{"nothing", Totals{}, 0},
		{"0.5 CPU / 1 GiB for 20 s", totalsOf(Flavor{500, 1024, 0}, 20), 10*0.00001 + 20*0.000001},
		{"default flavor for an hour", totalsOf(Flavor{250, 512, 0}, 3600), 900*0.00001 + 1800*0.000001},
		{"a GPU for a minute", totalsOf(Flavor{8000, 32768, 1}, 60), 480*0.00001 + 1920*0.000001 + 60*0.001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Cost(usageOf(tc.t, p)); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("cost %v, want %v", got, tc.want)
			}
		})
	}
	// The defaults are Fargate's per-hour prices by the second.
	d := DefaultPrices()
	if hour := d.PerCoreSecond * 3600; math.Abs(hour-0.04048) > 1e-5 {
		t.Errorf("default core-hour %v, want about 0.04048", hour)
	}
}

func TestLoadPrices(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, file string
		want       Prices
		err        string
	}{
		{"no file: defaults", "", DefaultPrices(), ""},
		{"yaml, partial", write("p.yaml", "currency: CNY\nperCoreSecond: 0.00005\n"), Prices{"CNY", 0.00005, DefaultPrices().PerGiBSecond, DefaultPrices().PerGPUSecond}, ""},
		{"json", write("p.json", `{"perGiBSecond": 0.000002, "perGPUSecond": 0.0005}`), Prices{"USD", DefaultPrices().PerCoreSecond, 0.000002, 0.0005}, ""},
		{"unknown key", write("bad.yaml", "perCPUSecond: 1\n"), Prices{}, "unknown field"},
		{"negative price", write("neg.yaml", "perGiBSecond: -1\n"), Prices{}, "perGiBSecond"},
		{"missing file", filepath.Join(dir, "nope.yaml"), Prices{}, "read price table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadPrices(tc.file)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("LoadPrices = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
