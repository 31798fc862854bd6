package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cci-project/cci/internal/netperf"
)

func netResult(gbps []float64, rtt1, rtt1400 []float64) *netperf.Result {
	r := &netperf.Result{Pings: []netperf.Pings{{Size: 1, RTT: rtt1}, {Size: 1400, RTT: rtt1400}}}
	for _, g := range gbps {
		// g Gbit/s for one second.
		r.Streams = append(r.Streams, netperf.Stream{Bytes: int64(g * 1e9 / 8), Seconds: 1})
	}
	return r
}

// The four paths become four results and the ratios between them; the
// target verdict follows the numbers.
func TestReportNetwork(t *testing.T) {
	b := &bench{rep: &Report{}}
	loop := netResult([]float64{40, 40, 40}, []float64{10, 10, 10}, []float64{12, 12, 12})
	same := netResult([]float64{20, 21, 19}, []float64{20, 20, 30}, []float64{24, 24, 24})
	veth := netResult([]float64{30, 30, 30}, []float64{25, 25, 25}, []float64{30, 30, 30})
	cross := netResult([]float64{10, 10, 10}, []float64{25, 25, 40}, []float64{48, 48, 48})
	b.reportNetwork([]netPath{{"l", loop}, {"s", same}, {"v", veth}, {"c", cross}}, "host-1", "host-2")

	if len(b.rep.Results) != 5 {
		t.Fatalf("got %d results, want 4 paths and the ratios", len(b.rep.Results))
	}
	// Same-host pods against the loopback floor: p50 20 µs ÷ 10 µs.
	l := b.rep.Results[1].Latencies[0]
	if l.Name != "RTT 1 B" || l.Summary.P50 != 0.020 || l.FloorP50 != 2 {
		t.Errorf("same host RTT 1 B: %+v, want p50 0.020 ms and 2× the floor", l)
	}
	if b.rep.Results[0].Latencies[0].FloorP50 != 0 {
		t.Errorf("a floor has no ratio to itself")
	}
	fig := map[string]float64{}
	for _, f := range b.rep.Results[4].Figures {
		fig[f.Name] = f.Value
	}
	want := map[string]float64{
		"RTT p50 1 B: across hosts ÷ same host":    1.25, // 25 ÷ 20
		"RTT p50 1 B: across hosts ÷ host veths":   1,
		"RTT p50 1400 B: across hosts ÷ same host": 2,
		"throughput: same host ÷ across hosts":     2, // medians 20 ÷ 10
		"throughput: host veths ÷ across hosts":    3,
	}
	for name, w := range want {
		if got, ok := fig[name]; !ok || got < w-1e-9 || got > w+1e-9 {
			t.Errorf("%s: got %v (present %v), want %v", name, got, ok, w)
		}
	}
	notes := strings.Join(b.rep.Results[4].Notes, "\n")
	for _, w := range []string{"RTT 1 B 1.25× met", "RTT 1400 B 2.00× missed", "throughput 2.00× missed"} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes %q lack %q", notes, w)
		}
	}
	var table strings.Builder
	b.rep.WriteTable(&table)
	if !strings.Contains(table.String(), "20µs") {
		t.Errorf("round trips are printed in microseconds:\n%s", table.String())
	}
}

// A run cut short reports the paths it measured and no ratios.
func TestReportNetworkPartial(t *testing.T) {
	b := &bench{rep: &Report{}}
	loop := netResult([]float64{40}, []float64{10}, []float64{12})
	b.reportNetwork([]netPath{{"l", loop}}, "host-1", "host-2")
	if len(b.rep.Results) != 1 || !strings.Contains(b.rep.Results[0].Name, "loopback") {
		t.Fatalf("got %+v, want the loopback floor alone", b.rep.Results)
	}
}

func TestSourceTree(t *testing.T) {
	root, err := sourceTree("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testimage", "netperf", "main.go")); err != nil {
		t.Errorf("found %s, which lacks the netperf program: %v", root, err)
	}
	if _, err := sourceTree(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not the CCI source tree") {
		t.Errorf("an empty folder: got %v, want a refusal", err)
	}
}
