package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// churn is `cci bench churn`: pods created at a steady rate R, each deleted
// as soon as it runs; R steps up until p99 create→Running passes the target
// (1 s). Afterwards the host must hold nothing for any of the pods.
func (b *bench) churn(ctx context.Context) error {
	if err := b.checkRuntimeClass(ctx); err != nil {
		return err
	}
	floor := b.floorFor(ctx, b.cfg.FloorPods, 0)
	o := podOpts{Image: b.image, Script: idleScript, RuntimeClass: b.cfg.RuntimeClass}
	if _, err := b.warmup(ctx, o); err != nil {
		return err
	}
	t, err := track(ctx, b.kube, b.ns, labelRun+"="+b.runID)
	if err != nil {
		return err
	}
	defer t.Stop()

	summary := &Result{Name: "churn"}
	best := 0.0
	var stepErr error
	for i, rate := range b.cfg.ChurnRates {
		run := &Result{Name: fmt.Sprintf("churn at %g pods/s for %s", rate, b.cfg.ChurnStep)}
		b.rep.Results = append(b.rep.Results, run)
		ok, err := b.churnStep(ctx, t, fmt.Sprintf("churn-%d-", i), rate, o, run, floor)
		if err != nil {
			stepErr = err
			break
		}
		if !ok {
			break
		}
		best = rate
	}
	note := fmt.Sprintf("p99 create→Running ≤ %s", b.cfg.Target)
	if best == b.cfg.ChurnRates[len(b.cfg.ChurnRates)-1] {
		note += "; the highest rate tried: try higher --rates"
	}
	summary.figure("highest steady rate", best, "pods/s", note)

	// Everything the host held for any churned pod must be gone.
	pods := t.snapshot()
	var churned []podTimes
	for _, p := range pods {
		if strings.HasPrefix(p.Name, "churn-") {
			churned = append(churned, p)
		}
	}
	summary.figure("pods churned", float64(len(churned)), "", "")
	b.checkLeftovers(ctx, summary, churned)
	b.rep.Results = append(b.rep.Results, summary)
	return stepErr
}

// churnStep runs one rate for the step's length and reports whether p99
// start stayed within the target and every pod ran.
func (b *bench) churnStep(ctx context.Context, t *tracker, prefix string, rate float64, o podOpts, run *Result, floor *Floor) (bool, error) {
	b.logf("churn: %g pods/s for %s", rate, b.cfg.ChurnStep)
	interval := time.Duration(float64(time.Second) / rate)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		failures  []string
		deletedAt = map[string]time.Time{}
	)
	sampler := startCPUSampler(b.c.processGroups, time.Second)
	t0 := time.Now()
	tick := time.NewTicker(interval)
	created := 0
	for time.Since(t0) < b.cfg.ChurnStep {
		name := fmt.Sprintf("%s%05d", prefix, created)
		created++
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A pod that takes 30 s says enough about this rate.
			err := b.createAndWaitFor(ctx, t, name, o, min(b.cfg.PodTimeout, 30*time.Second))
			if err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
			}
			at := time.Now()
			if derr := b.kube.CoreV1().Pods(b.ns).Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{}); derr == nil {
				mu.Lock()
				deletedAt[name] = at
				mu.Unlock()
			}
		}()
		select {
		case <-ctx.Done():
			tick.Stop()
			wg.Wait()
			run.setCPU(sampler.Stop())
			return false, ctx.Err()
		case <-tick.C:
		}
	}
	tick.Stop()
	createdFor := time.Since(t0)
	wg.Wait()
	// The step ends when every pod of it left the API.
	err := t.wait(ctx, 3*time.Minute, func(pods map[string]*podTimes) bool {
		for _, p := range pods {
			if strings.HasPrefix(p.Name, prefix) && p.Deleted.IsZero() {
				return false
			}
		}
		return true
	})
	run.setCPU(sampler.Stop())
	if err != nil {
		run.note("pods still in the API 3 minutes after the step: %v", err)
	}

	var starts, deletes []float64
	var ups, downs []time.Time
	for _, p := range t.snapshot() {
		if !strings.HasPrefix(p.Name, prefix) {
			continue
		}
		if !p.Running.IsZero() {
			starts = append(starts, ms(p.Running.Sub(p.Created)))
			ups = append(ups, p.Running)
		}
		if at, ok := deletedAt[p.Name]; ok && !p.Deleted.IsZero() {
			deletes = append(deletes, ms(p.Deleted.Sub(at)))
			downs = append(downs, p.Deleted)
		}
	}
	var fs *Summary
	if floor != nil {
		fs = &floor.Start
	}
	l := run.latency("create→Running", starts, fs)
	run.latency("delete→gone from the API", deletes, nil)
	run.figure("pods created", float64(created), "", fmt.Sprintf("%.2f/s achieved", float64(created)/createdFor.Seconds()))
	run.Series = append(run.Series, &Series{Name: "pods Running (created and not yet deleted)", Step: true, X: "seconds into the step", Y: "pods", Points: level(t0, ups, downs)})
	if len(failures) > 0 {
		run.note("%d pods did not run; first: %s", len(failures), failures[0])
	}
	ok := len(failures) == 0 && l.Summary.N > 0 && l.Summary.P99 <= ms(b.cfg.Target)
	if ok {
		run.note("p99 %s ≤ %s: held", fmtMs(l.Summary.P99), b.cfg.Target)
	} else {
		run.note("p99 %s > %s (or pods failed): this rate is too high", fmtMs(l.Summary.P99), b.cfg.Target)
	}
	return ok, nil
}

// level is a step curve of a count that each up raises and each down lowers.
func level(t0 time.Time, ups, downs []time.Time) [][2]float64 {
	type ev struct {
		at float64
		d  int
	}
	var evs []ev
	for _, u := range ups {
		evs = append(evs, ev{u.Sub(t0).Seconds(), 1})
	}
	for _, d := range downs {
		evs = append(evs, ev{d.Sub(t0).Seconds(), -1})
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	pts := [][2]float64{{0, 0}}
	n := 0
	for _, e := range evs {
		n += e.d
		pts = append(pts, [2]float64{e.at, float64(n)})
	}
	return pts
}
