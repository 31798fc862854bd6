package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/diskperf"
)

// diskResult is a diskperf result of seqW and seqR MiB/s and rw and rr
// IOPS (each test one second long).
func diskResult(seqW, seqR, rw, rr float64, direct bool) *diskperf.Result {
	sec := func(mibps float64) diskperf.Test {
		return diskperf.Test{Bytes: int64(mibps * (1 << 20)), Ops: int(mibps), Seconds: 1}
	}
	rnd := func(iops float64) diskperf.Test {
		return diskperf.Test{Bytes: int64(iops) * diskperf.RandBlock, Ops: int(iops), Seconds: 1}
	}
	r := &diskperf.Result{Direct: direct, FSType: "ext4", SeqWrite: sec(seqW), SeqRead: sec(seqR), RandWrite: rnd(rw), RandRead: rnd(rr)}
	if !direct {
		r.DirectError = "open: invalid argument"
		zero := 0.0
		r.SeqRead.CachedBefore = &zero
	}
	return r
}

func figureOf(t *testing.T, r *Result, name string) Figure {
	t.Helper()
	for _, f := range r.Figures {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("%s has no figure %q: %+v", r.Name, name, r.Figures)
	return Figure{}
}

// The floor is the mean of the host runs; every place gets its ratio to
// it; claim starts get the emptyDir pods' start as their floor.
func TestReportStorage(t *testing.T) {
	b := &bench{rep: &Report{}, cfg: Config{StorageRandOps: 1000, StorageRandFor: time.Second}}
	hosts := []*diskperf.Result{diskResult(100, 200, 1000, 2000, true), diskResult(300, 200, 3000, 2000, true)}
	runs := []storageRun{
		{"emptyDir", diskResult(200, 200, 2000, 2000, true)},
		{"cci-evs", diskResult(100, 100, 1000, 1000, true)},
		{"cci-obs", diskResult(20, 50, 100, 400, false)},
	}
	starts := map[string][2][]float64{
		"emptyDir": {nil, {100, 200, 300}},
		"cci-evs":  {{400, 500, 600}, {800, 1000, 1200}},
		"cci-obs":  {{10, 10, 10}, {300, 400, 500}},
	}
	b.reportStorage(hosts, runs, starts)
	if len(b.rep.Results) != 5 {
		t.Fatalf("%d results, want the floor, 3 places and the ratios", len(b.rep.Results))
	}
	floor := b.rep.Results[0]
	if f := figureOf(t, floor, "sequential write"); f.Value != 200 || !strings.Contains(f.Note, "100, 300") {
		t.Errorf("floor sequential write %+v, want the mean 200 of 100 and 300", f)
	}
	evs := b.rep.Results[2]
	if !strings.HasPrefix(evs.Name, "storage/cci-evs (ext4, O_DIRECT)") {
		t.Errorf("result name %q", evs.Name)
	}
	if f := figureOf(t, evs, "random 4 KiB write"); f.Value != 1000 || !strings.HasPrefix(f.Note, "0.50× the host floor's 2000 IOPS") {
		t.Errorf("cci-evs random write %+v, want 1000 IOPS, 0.50× the floor", f)
	}
	if len(evs.Latencies) != 2 || evs.Latencies[1].Summary.P50 != 1000 || evs.Latencies[1].FloorP50 != 5 {
		t.Errorf("cci-evs claim starts %+v, want p50 1000 ms, 5× the emptyDir pods' 200 ms", evs.Latencies)
	}
	if evs.Latencies[0].Name != "claim create→Bound" || evs.Latencies[0].Summary.Max != 600 {
		t.Errorf("cci-evs bound %+v", evs.Latencies[0])
	}
	obs := b.rep.Results[3]
	notes := strings.Join(obs.Notes, "\n")
	if !strings.Contains(notes, "no O_DIRECT (open: invalid argument)") || !strings.Contains(notes, "0% still cached") {
		t.Errorf("cci-obs notes %q: want the missing O_DIRECT and the cached share", notes)
	}
	if !strings.Contains(notes, "stopped by the 1s limit: 100 writes, 400 reads") {
		t.Errorf("cci-obs notes %q: want the random tests' time limit", notes)
	}
	sum := b.rep.Results[4]
	if f := figureOf(t, sum, "cci-obs: sequential read"); f.Value != 0.25 || f.Unit != "×" {
		t.Errorf("ratio %+v, want 0.25×", f)
	}
	if f := figureOf(t, sum, "emptyDir: sequential write"); f.Value != 1 {
		t.Errorf("ratio %+v, want 1×", f)
	}
}

// Without a host run the emptyDir pod is the floor, and the report says so.
func TestReportStorageWithoutHost(t *testing.T) {
	b := &bench{rep: &Report{}, cfg: Config{StorageRandOps: 1}}
	runs := []storageRun{
		{"emptyDir", diskResult(200, 200, 2000, 2000, true)},
		{"cci-sfs", diskResult(50, 100, 500, 500, true)},
	}
	runs[1].res.RandWrite = diskperf.Test{Error: "illegal seek"}
	b.reportStorage(nil, runs, nil)
	if len(b.rep.Results) != 3 {
		t.Fatalf("%d results, want 2 places and the ratios", len(b.rep.Results))
	}
	sum := b.rep.Results[2]
	if !strings.Contains(sum.Name, "the emptyDir pod") {
		t.Errorf("ratios %q do not name their floor", sum.Name)
	}
	if f := figureOf(t, sum, "cci-sfs: sequential write"); f.Value != 0.25 {
		t.Errorf("ratio %+v, want 0.25× of the emptyDir pod", f)
	}
	// A test the volume refused is a failure with its reason, not a figure.
	if f := figureOf(t, b.rep.Results[1], "random 4 KiB write"); f.Value != 0 || f.Note != "failed: illegal seek" {
		t.Errorf("refused random writes: %+v", f)
	}
	if f := figureOf(t, sum, "cci-sfs: random 4 KiB write"); f.Value != 0 || f.Note != "failed" {
		t.Errorf("ratio of refused random writes: %+v", f)
	}
	for _, f := range b.rep.Results[1].Figures {
		if strings.HasPrefix(f.Name, "random write latency") {
			t.Errorf("a latency of refused random writes: %+v", f)
		}
	}
}

func TestStorageConfig(t *testing.T) {
	c := Config{Scenario: "storage"}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.StorageSizeMiB != 64 || c.StorageRandOps != 4096 || c.StorageClaims != 3 || c.StorageDirect != "auto" || len(c.StorageClasses) != 3 {
		t.Errorf("defaults %+v", c)
	}
	for name, bad := range map[string]Config{
		"direct":   {Scenario: "storage", StorageDirect: "sometimes"},
		"negative": {Scenario: "storage", StorageClaims: -1},
		"class":    {Scenario: "storage", StorageClasses: []string{"a b"}},
	} {
		if err := bad.defaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	b := &bench{cfg: Config{StorageSizeMiB: 64}}
	if q := b.claimSize(); q.String() != "1Gi" {
		t.Errorf("claim size %s for 64 MiB, want 1Gi", q.String())
	}
	b.cfg.StorageSizeMiB = 1024
	if q := b.claimSize(); q.String() != "2Gi" {
		t.Errorf("claim size %s for 1 GiB, want 2Gi", q.String())
	}
}
