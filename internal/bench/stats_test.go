package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100 … 1, unsorted on purpose
	}
	tests := []struct {
		name    string
		samples []float64
		want    Summary
	}{
		{"empty", nil, Summary{}},
		{"one", []float64{7}, Summary{N: 1, Min: 7, Mean: 7, P50: 7, P90: 7, P99: 7, Max: 7}},
		{"four", []float64{4, 1, 3, 2}, Summary{N: 4, Min: 1, Mean: 2.5, P50: 2, P90: 4, P99: 4, Max: 4}},
		{"hundred", hundred, Summary{N: 100, Min: 1, Mean: 50.5, P50: 50, P90: 90, P99: 99, Max: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.samples); got != tt.want {
				t.Fatalf("summarize(%v) = %+v, want %+v", tt.samples, got, tt.want)
			}
		})
	}
}

func TestParseT0(t *testing.T) {
	tests := []struct {
		out     string
		want    time.Time
		wantErr bool
	}{
		{"cci-bench-t0 1795572035.839092\n", time.Unix(1795572035, 839092000), false},
		{"noise\ncci-bench-t0 12.000001\nmore", time.Unix(12, 1000), false},
		{"", time.Time{}, true},
		{"cci-bench-t0 garbage\n", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseT0(tt.out)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("parseT0(%q) = %v, %v; want %v (error %v)", tt.out, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestLabel(t *testing.T) {
	labels := `component="apiserver",verb="POST",resource="pods",le="0.05",odd="a\"b"`
	for name, want := range map[string]string{"verb": "POST", "le": "0.05", "resource": "pods", "odd": `a"b`, "missing": ""} {
		if got := label(labels, name); got != want {
			t.Errorf("label(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestAPIHistograms(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "apiserver-metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := parseAPIHistograms(f)
	if err != nil {
		t.Fatal(err)
	}
	mut := h.latency["mutating"]
	if got := mut.count(); got != 765 {
		t.Fatalf("mutating calls = %v, want the 765 POSTs (WATCH must be left out)", got)
	}
	// 757.35th of 765 falls between le=1 (728) and le=1.25 (765).
	if got, want := mut.quantile(0.99), 1+0.25*(0.99*765-728)/(765-728); math.Abs(got-want) > 1e-9 {
		t.Fatalf("p99 = %v, want %v", got, want)
	}
	if got, want := mut.quantile(0.5), 0.2+0.2*(0.5*765-339)/(610-339); math.Abs(got-want) > 1e-9 {
		t.Fatalf("p50 = %v, want %v", got, want)
	}
	if h.latency["read"].count() == 0 {
		t.Fatal("no read (LIST) calls parsed")
	}
	if got := writeCounts(apiMetrics{}, h); got != "POST pods 765" {
		t.Fatalf("writeCounts = %q, want the mutating calls by resource: POST pods 765", got)
	}
	if got := writeCounts(h, h); got != "" {
		t.Fatalf("writeCounts(h, h) = %q, want none", got)
	}
	if d := mut.sub(mut); d.count() != 0 || d.quantile(0.99) != 0 {
		t.Fatalf("h - h = %v, want empty", d)
	}
}

func TestReportOutputs(t *testing.T) {
	rep := &Report{
		Scenario: "start",
		Started:  time.Date(2026, 11, 25, 1, 2, 3, 0, time.UTC),
		Machine:  machine(),
		Floor:    &Floor{Runtime: "runc", Start: summarize([]float64{80, 90}), Samples: []float64{80, 90}, MemPerContainer: 4 << 20},
	}
	run := &Result{Name: "start/runc"}
	run.latency("create→Running", []float64{150, 170, 260}, &rep.Floor.Start)
	run.figure("pods", 3, "", "")
	run.Series = append(run.Series, &Series{Name: "pods Running over time", X: "s", Y: "pods", Step: true, Points: [][2]float64{{0, 0}, {1, 2}, {2, 3}}})
	rep.Results = append(rep.Results, run)

	var table bytes.Buffer
	rep.WriteTable(&table)
	for _, want := range []string{"create→Running", "2.1×", "memory per running container: 4.0 MiB"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	dir := t.TempDir()
	if err := rep.write(dir); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "start.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil || back.Results[0].Latencies[0].Summary.N != 3 {
		t.Fatalf("JSON does not read back: %v %+v", err, back)
	}
	html, err := os.ReadFile(filepath.Join(dir, "start.html"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(html), "<svg"); n != 2 {
		t.Errorf("HTML has %d charts, want 2 (latency CDF, series)", n)
	}
	if strings.Contains(string(html), "http://") && !strings.Contains(string(html), `xmlns="http://www.w3.org/2000/svg"`) {
		t.Error("HTML refers to the network")
	}
	if strings.Contains(string(html), "<script") || strings.Contains(string(html), "src=") {
		t.Error("HTML is not self-contained")
	}
}

func TestWaitSites(t *testing.T) {
	profile := `goroutine profile: total 9
5 @ 0x1 0x2
#	0x1	k8s.io/client-go/util/flowcontrol.(*tokenBucketPassiveRateLimiter).Wait+0x1	x.go:1
#	0x2	k8s.io/client-go/rest.(*Request).tryThrottle+0x1	y.go:2

3 @ 0x3
#	0x3	github.com/containernetworking/cni/pkg/invoke.(*RawExec).ExecPlugin+0x1	z.go:3

1 @ 0x4
#	0x4	main.idle+0x1	w.go:4
`
	got := waitSites(profile)
	if got["other API clients held by their QPS"] != 5 || got["CNI plugin exec"] != 3 || len(got) != 2 {
		t.Fatalf("waitSites = %v", got)
	}
}
