package diskperf

import (
	"strings"
	"testing"
	"time"
)

// A real run on a temporary folder: every test moves what it was asked
// to, and its result line parses back to the same figures.
func TestRunAndParse(t *testing.T) {
	res, err := Run(Options{Dir: t.TempDir(), SeqBytes: 2 << 20, RandOps: 64})
	if err != nil {
		t.Fatal(err)
	}
	if res.SeqWrite.Bytes != 2<<20 || res.SeqWrite.Ops != 2 || res.SeqRead.Bytes != 2<<20 {
		t.Errorf("sequential tests: write %+v, read %+v; want 2 MiB in 2 blocks each", res.SeqWrite, res.SeqRead)
	}
	if res.RandWrite.Ops != 64 || res.RandRead.Ops != 64 || res.RandRead.Bytes != 64*RandBlock {
		t.Errorf("random tests: write %+v, read %+v; want 64 blocks of 4 KiB each", res.RandWrite, res.RandRead)
	}
	if !res.Direct && res.DirectError == "" {
		t.Error("no O_DIRECT and no reason given")
	}
	if !res.Direct && res.SeqRead.CachedBefore == nil {
		t.Error("buffered reads without the cached share")
	}
	line, err := res.Format()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("sleeping\n" + line + "\nbye\n")
	if err != nil {
		t.Fatal(err)
	}
	if back.SeqWrite != res.SeqWrite || back.RandRead.IOPS() != res.RandRead.IOPS() || back.FSType != res.FSType {
		t.Errorf("parsed %+v, want %+v", back, res)
	}
}

func TestDirectOff(t *testing.T) {
	res, err := Run(Options{Dir: t.TempDir(), SeqBytes: 1 << 20, RandOps: 8, Direct: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Direct || res.DirectError != "off" {
		t.Errorf("direct %v (%q) with -direct off", res.Direct, res.DirectError)
	}
	if c := res.RandRead.CachedBefore; c == nil || *c > 1 {
		t.Errorf("cached share before the random reads: %v", c)
	}
}

func TestRunRandForBoundsTheRandomTests(t *testing.T) {
	res, err := Run(Options{Dir: t.TempDir(), SeqBytes: 1 << 20, RandOps: 1 << 30, RandFor: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.RandWrite.Ops >= 1<<30 || res.RandWrite.Seconds > 10 {
		t.Errorf("random writes: %d in %gs despite a 50 ms limit", res.RandWrite.Ops, res.RandWrite.Seconds)
	}
}

func TestRunBadOptions(t *testing.T) {
	dir := t.TempDir()
	for name, o := range map[string]Options{
		"no folder":         {},
		"missing folder":    {Dir: dir + "/nope"},
		"size not in MiB":   {Dir: dir, SeqBytes: 1000},
		"negative ops":      {Dir: dir, RandOps: -1},
		"unknown direct":    {Dir: dir, Direct: "maybe"},
		"negative rand-for": {Dir: dir, RandFor: -time.Second},
	} {
		if _, err := Run(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good := `{"seqWrite":{"bytes":1,"ops":1,"seconds":1},"seqRead":{"bytes":1,"ops":1,"seconds":1},"randWrite":{"bytes":1,"ops":1,"seconds":1},"randRead":{"bytes":1,"ops":1,"seconds":1}}`
	if _, err := Parse(Marker + good); err != nil {
		t.Fatalf("a good line: %v", err)
	}
	// A test other than the sequential write may fail on its own.
	failed := strings.Replace(good, `"randWrite":{"bytes":1,"ops":1,"seconds":1}`, `"randWrite":{"error":"illegal seek"}`, 1)
	if r, err := Parse(Marker + failed); err != nil || r.RandWrite.Error != "illegal seek" {
		t.Errorf("a failed random write: %+v, %v", r, err)
	}
	for name, out := range map[string]string{
		"no line":         "diskperf: open /data: permission denied\n",
		"not JSON":        Marker + "{oops",
		"empty test":      Marker + strings.Replace(good, `"randRead":{"bytes":1,"ops":1,"seconds":1}`, `"randRead":{}`, 1),
		"seqWrite failed": Marker + strings.Replace(good, `"seqWrite":{"bytes":1,"ops":1,"seconds":1}`, `"seqWrite":{"error":"no space left on device"}`, 1),
		"zero length":     Marker + strings.Replace(good, `"seqRead":{"bytes":1,"ops":1,"seconds":1}`, `"seqRead":{"bytes":1,"ops":1,"seconds":0}`, 1),
	} {
		if _, err := Parse(out); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestRates(t *testing.T) {
	tt := Test{Bytes: 64 << 20, Ops: 64, Seconds: 0.5}
	if tt.MiBps() != 128 || tt.IOPS() != 128 {
		t.Errorf("64 MiB in 64 ops in 0.5 s: %g MiB/s, %g IOPS; want 128 and 128", tt.MiBps(), tt.IOPS())
	}
	if (Test{}).MiBps() != 0 || (Test{}).IOPS() != 0 {
		t.Error("a test of no time has a rate")
	}
}
