// Package chaos is the short CI version of `cci bench chaos` and
// `cci bench churn`: a real `cci up` (its own child of the bench, real
// etcd, containerd, runc and runsc) whose agent, containerd, shims and
// control plane are killed at random while a workload runs, then pods
// churned in waves; nothing may be lost and nothing may leak.
//
// The numbers are small so that the package stays within about six minutes
// on a two-core machine; BENCHMARKS.md has the full-size runs.
package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/bench"
	"github.com/cci-project/cci/test/cluster"
)

var bin string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var done func()
	var err error
	if bin, _, done, err = cluster.Setup("chaos", "containerd", "runc"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	return m.Run()
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// config is a bench run on a cluster of its own, on a bridge and pod range
// apart from the other suites' and from a `cci bench` run by hand. Its one
// host is a network namespace of its own (`cci up --hosts 1`), whose
// service proxy owns that namespace's chains: the package runs beside
// test/e2e's cluster, as the other cluster packages with hosts do.
func config(t *testing.T, scenario string) bench.Config {
	return bench.Config{
		Scenario:    scenario,
		Binary:      bin,
		Bridge:      "cci-chaost0",
		ClusterCIDR: "10.76.0.0/16",
		Hosts:       1,
		Log:         testLog{t},
	}
}

// TestChaos kills the host's agent, its containerd, a shim, the whole host
// (powered off and on) and the control plane at random for 3 rounds while
// Deployments (runc and gVisor) and a Job run: every object
// stays, no pod that was not killed restarts, the Job completes exactly,
// finished and deleted pods leave nothing on the host.
func TestChaos(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cfg := config(t, "chaos")
	cfg.Rounds, cfg.Completions, cfg.Seed = 3, 16, uint64(time.Now().UnixNano())
	rep, err := bench.Run(ctx, cfg)
	if rep == nil || rep.Chaos == nil {
		t.Fatalf("no chaos report: %v", err)
	}
	c := rep.Chaos
	t.Logf("seed %d: %d rounds %v, recovery p50 %.0f ms p99 %.0f ms, API after restart max %.0f ms, %d losses",
		c.Seed, c.Rounds, c.Faults, c.Recovery.P50, c.Recovery.P99, c.APIReady.Max, len(c.Losses))
	for _, l := range c.Losses {
		t.Errorf("loss: %s", l)
	}
	if err != nil {
		t.Fatalf("chaos (seed %d): %v", c.Seed, err)
	}
	if c.Rounds != cfg.Rounds {
		t.Fatalf("%d of %d rounds ran", c.Rounds, cfg.Rounds)
	}
}

// TestChurn creates and deletes 500 pods in waves, a fifth of them under gVisor,
// each with a configMap volume and a readiness probe behind a Service:
// every pod becomes Ready and nothing is left on the host afterwards.
func TestChurn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	cfg := config(t, "churn")
	cfg.Pods, cfg.Wave, cfg.Settle = churnPods, 100, 5*time.Second
	cfg.GVisorEvery = churnGVisorEvery
	rep, err := bench.Run(ctx, cfg)
	if rep == nil || rep.Churn == nil {
		t.Fatalf("no churn report: %v", err)
	}
	w := rep.Churn
	t.Logf("%d pods (%d gVisor) in %d waves: %.2f pods/s, leftovers: %s", w.Pods, w.GVisor, w.Waves, w.PodsPerSec, w.Leftovers)
	for _, p := range w.Processes {
		t.Logf("%s: goroutines %d → %d, fds %d → %d, RSS %d → %d MiB", p.Name, p.Before.Goroutines, p.After.Goroutines,
			p.Before.FDs, p.After.FDs, p.Before.RSS>>20, p.After.RSS>>20)
	}
	if err != nil {
		t.Fatal(err)
	}
	if w.Failed > 0 || w.Leftovers.Total() > 0 {
		t.Fatalf("%d pods failed; leftovers: %s", w.Failed, w.Leftovers)
	}
}

// churnPods is the CI churn's size, as issue 18 asks. A gVisor pod costs
// this two-core machine about 1.8 CPU-seconds to start and remove, a runc
// pod about 0.35 (BENCHMARKS.md, "Churn"): with every fifth pod under
// gVisor the 500 pods take about 5 minutes, where half of them under
// gVisor would take about 10.
const (
	churnPods        = 500
	churnGVisorEvery = 5
)
