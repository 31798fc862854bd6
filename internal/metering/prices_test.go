package metering

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
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

// with is the default prices changed by f.
func with(f func(*Prices)) Prices {
	p := DefaultPrices()
	f(&p)
	return p
}

// Storage is priced per GiB-hour of its class, from exact MiB-seconds;
// classes the table does not name at the default price.
func TestStorageCost(t *testing.T) {
	p := Prices{Currency: "USD", StoragePerGiBHour: map[string]float64{"cci-evs": 0.1, "cci-obs": 0.01}, StorageDefaultPerGiBHour: 1}
	s := volumeSums("cci-evs", 1024*3600).add(volumeSums("cci-obs", 2*1024*3600)).add(volumeSums("mine", 512*3600)).add(podSums(totalsOf(Flavor{1000, 1024, 0}, 10)))
	u := sumsUsage(s, p)
	if got := []StorageUsage{u.StorageOf("cci-evs"), u.StorageOf("cci-obs"), u.StorageOf("mine")}; got[0].GiBHours != 1 || got[0].Cost != 0.1 ||
		got[1].GiBHours != 2 || got[1].Cost != 0.02 || got[2].GiBHours != 0.5 || got[2].Cost != 0.5 || got[2].PerGiBHour != 1 {
		t.Errorf("storage %+v", got)
	}
	if u.StorageGiBHours() != 3.5 || math.Abs(u.Cost-0.62) > 1e-9 || u.Seconds != 10 {
		t.Errorf("usage %+v: want 3.5 GiB-hours, cost 0.62 (pods cost nothing here), 10 pod-seconds", u)
	}
	// The defaults are the clouds' per-GB-month prices over 730 hours.
	d := DefaultPrices()
	for class, month := range map[string]float64{"cci-evs": 0.08, "cci-sfs": 0.30, "cci-obs": 0.023, "other": 0.08} {
		if got := d.StoragePrice(class) * 730; math.Abs(got-month) > 1e-4 {
			t.Errorf("default %s per GiB-month %v, want %v", class, got, month)
		}
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
		{"yaml, partial", write("p.yaml", "currency: CNY\nperCoreSecond: 0.00005\n"), with(func(p *Prices) { p.Currency, p.PerCoreSecond = "CNY", 0.00005 }), ""},
		{"json", write("p.json", `{"perGiBSecond": 0.000002, "perGPUSecond": 0.0005}`), with(func(p *Prices) { p.PerGiBSecond, p.PerGPUSecond = 0.000002, 0.0005 }), ""},
		{"storage: one class changed, one added, the others kept", write("s.yaml", "storagePerGiBHour:\n  cci-evs: 0.0002\n  fast: 0.001\nstorageDefaultPerGiBHour: 0.0003\n"), with(func(p *Prices) {
			p.StoragePerGiBHour["cci-evs"], p.StoragePerGiBHour["fast"], p.StorageDefaultPerGiBHour = 0.0002, 0.001, 0.0003
		}), ""},
		{"negative storage price", write("sneg.yaml", "storagePerGiBHour:\n  cci-obs: -0.1\n"), Prices{}, "storagePerGiBHour.cci-obs"},
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
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("LoadPrices = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
