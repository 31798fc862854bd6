package bench

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestRoundOrder(t *testing.T) {
	for rounds, want := range map[int][]string{
		1: {"direct", "via"},
		2: {"direct", "via", "via", "direct"},
		3: {"direct", "via", "via", "direct", "direct", "via"},
	} {
		if got := roundOrder(rounds); !slices.Equal(got, want) {
			t.Errorf("roundOrder(%d) = %v, want %v", rounds, got, want)
		}
	}
}

func TestGatewayCompare(t *testing.T) {
	// 100 requests in 1s straight (p50 2ms, p99 5ms), 100 in 2s through
	// the gateway (p50 3ms, p99 8ms).
	lat := func(base, tail float64) []float64 {
		var s []float64
		for i := range 100 {
			v := base
			if i >= 98 {
				v = tail
			}
			s = append(s, v)
		}
		return s
	}
	var d, v loadRun
	d.add(loadRun{Latencies: lat(2, 5)[:50], Took: 500 * time.Millisecond})
	d.add(loadRun{Latencies: lat(2, 5)[50:], Took: 500 * time.Millisecond, Errors: 1})
	v.add(loadRun{Latencies: lat(3, 8), Took: 2 * time.Second})
	if d.rps() != 100 || v.rps() != 50 || d.Errors != 1 {
		t.Fatalf("rps %v/%v errors %d, want 100/50 and 1", d.rps(), v.rps(), d.Errors)
	}
	c := compare(d, v)
	want := gwComparison{RPSPercent: 50, P50Ratio: 1.5, P99Ratio: 1.6, AddedP50: 1, AddedP99: 3}
	for _, f := range []struct {
		name      string
		got, want float64
	}{
		{"rps %", c.RPSPercent, want.RPSPercent}, {"p50 ×", c.P50Ratio, want.P50Ratio}, {"p99 ×", c.P99Ratio, want.P99Ratio},
		{"added p50", c.AddedP50, want.AddedP50}, {"added p99", c.AddedP99, want.AddedP99},
	} {
		if math.Abs(f.got-f.want) > 1e-9 {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
	if got := compare(loadRun{}, v); got.RPSPercent != 0 || got.P50Ratio != 0 {
		t.Errorf("against nothing measured: %+v, want zero ratios", got)
	}
}

func TestShiftTimes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	answers := []answer{
		{At: at(-100), Body: "blue"},
		{At: at(5), Body: "blue"},   // sent before the patch took
		{At: at(40), Body: "green"}, // the first green
		{At: at(35), Body: "blue"},  // recorded late by a slower client
		{At: at(60), Body: "green"},
		{At: at(70), Err: true},
		{At: at(80), Body: "404 page"},
	}
	first, last, failed, ok := shiftTimes(answers, t0, "blue", "green")
	if !ok || first != 40*time.Millisecond || last != 35*time.Millisecond || failed != 2 {
		t.Errorf("shiftTimes = %v, %v, %d failed, ok %v; want 40ms, 35ms, 2 failed, ok", first, last, failed, ok)
	}
	// A green answer from before the patch (a previous shift's) is not the shift.
	_, _, _, ok = shiftTimes([]answer{{At: at(-1), Body: "green"}, {At: at(3), Body: "blue"}}, t0, "blue", "green")
	if ok {
		t.Error("no green answer after the patch: shiftTimes says the shift reached the clients")
	}
	// No old answer after the patch: last is 0.
	if _, last, _, _ := shiftTimes([]answer{{At: at(-1), Body: "blue"}, {At: at(9), Body: "green"}}, t0, "blue", "green"); last != 0 {
		t.Errorf("last old answer before the patch: last = %v, want 0", last)
	}
}
