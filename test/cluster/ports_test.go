package cluster

import "testing"

// The suites that run at once pick ports from blocks that never overlap,
// all below the ephemeral range.
func TestPortBlocksApart(t *testing.T) {
	for _, low := range []int{32768, 12001} {
		prevTo := 10000
		for _, suite := range append(portSuites, "other") {
			from, to := portBlock(suite, low)
			if from < prevTo || to <= from || to > low {
				t.Errorf("low %d: suite %s has [%d, %d), after a block ending at %d", low, suite, from, to, prevTo)
			}
			prevTo = to
		}
	}
	handedOut.Lock()
	handedOut.suite = "fleet"
	handedOut.Unlock()
	from, to := portBlock("fleet", 32768)
	for range 50 {
		if p := PickPort(func(int) bool { return true }); p < from || p >= to {
			t.Fatalf("fleet picked %d, outside its block [%d, %d)", p, from, to)
		}
	}
}
