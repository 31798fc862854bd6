package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func runtimeName(rc string) string {
	if rc == "" {
		return "runc"
	}
	return rc
}

// start is `cci bench start`: N pods created one after another through the
// API, each waited for before the next; for each, create → Running (as a
// watch sees it) and create → the container's first instruction.
func (b *bench) start(ctx context.Context) error {
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

	run := &Result{Name: "start/" + runtimeName(b.cfg.RuntimeClass)}
	b.rep.Results = append(b.rep.Results, run)
	n := b.cfg.Pods
	b.logf("start: %d pods one after another (%s)", n, runtimeName(b.cfg.RuntimeClass))
	var profDone <-chan profileResult
	if prof := b.profiler(); prof != nil {
		profDone = prof.cpu(ctx, "start", b.cfg.ProfileSeconds)
	}
	sampler := startCPUSampler(b.c.processGroups, time.Second)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("start-%04d", i)
		if err := b.createAndWait(ctx, t, name, o); err != nil {
			run.setCPU(sampler.Stop())
			return err
		}
		if (i+1)%50 == 0 {
			b.logf("start: %d/%d", i+1, n)
		}
	}
	took := time.Since(t0)
	run.setCPU(sampler.Stop())
	b.saveCPU(run, profDone)

	pods := t.snapshot()
	var mine []podTimes
	for _, p := range pods {
		if strings.HasPrefix(p.Name, "start-") && !p.Running.IsZero() {
			mine = append(mine, p)
		}
	}
	stamps, err := b.stamps(ctx, mine)
	if err != nil {
		run.note("first instruction: %v", err)
	}
	// Where the time goes: the control plane (create→bound), the agent
	// (bound→first instruction: CNI, volumes, containerd, runc) and the
	// way back (first instruction→Running seen: status update and watch).
	var running, first, toBound, agent, back []float64
	var perPod [][2]float64
	for _, p := range mine {
		v := ms(p.Running.Sub(p.Created))
		running = append(running, v)
		perPod = append(perPod, [2]float64{float64(len(running)), v})
		if !p.Bound.IsZero() {
			toBound = append(toBound, ms(p.Bound.Sub(p.Created)))
		}
		if st, ok := stamps[p.Name]; ok {
			first = append(first, ms(st.Sub(p.Created)))
			back = append(back, ms(p.Running.Sub(st)))
			if !p.Bound.IsZero() {
				agent = append(agent, ms(st.Sub(p.Bound)))
			}
		}
	}
	var fs, ff *Summary
	if floor != nil {
		fs, ff = &floor.Start, &floor.FirstInstruction
	}
	l := run.latency("create→Running", running, fs)
	run.latency("create→first instruction", first, ff)
	run.latency("  create→bound (control plane)", toBound, nil)
	run.latency("  bound→first instruction (agent)", agent, fs)
	run.latency("  first instruction→Running seen (status)", back, nil)
	run.figure("pods", float64(len(running)), "", "")
	run.figure("pods per second (one after another)", float64(len(running))/took.Seconds(), "pods/s", "")
	run.Series = append(run.Series, &Series{Name: "create→Running per pod, in creation order", X: "pod", Y: "ms", Points: perPod})
	b.startTargets(run, l, floor)

	b.logf("start: deleting the pods")
	if err := b.deletePods(ctx, 3*time.Minute); err != nil {
		return err
	}
	b.checkLeftovers(ctx, run, pods)
	return nil
}

// createAndWait creates one pod and waits until the watch sees it Running.
func (b *bench) createAndWait(ctx context.Context, t *tracker, name string, o podOpts) error {
	return b.createAndWaitFor(ctx, t, name, o, b.cfg.PodTimeout)
}

func (b *bench) createAndWaitFor(ctx context.Context, t *tracker, name string, o podOpts, timeout time.Duration) error {
	pod := b.pod(name, o)
	t.created(name, time.Now())
	if _, err := b.kube.CoreV1().Pods(b.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.forget(name)
		return fmt.Errorf("create pod %s: %w", name, err)
	}
	err := t.wait(ctx, timeout, func(pods map[string]*podTimes) bool {
		p := pods[name]
		return p != nil && !p.Running.IsZero()
	})
	if err != nil {
		got, _ := b.kube.CoreV1().Pods(b.ns).Get(ctx, name, metav1.GetOptions{})
		return fmt.Errorf("pod %s did not run: %w (%s)", name, err, podProblem(got))
	}
	return nil
}

// startTargets says whether the start targets were met (runc:
// p50 ≤ 2× floor and ≤ 250 ms, p99 ≤ 500 ms; gVisor: p50 ≤ 2× its floor).
func (b *bench) startTargets(run *Result, l *Latency, floor *Floor) {
	if l.Summary.N == 0 {
		return
	}
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	var parts []string
	if floor != nil {
		parts = append(parts, fmt.Sprintf("p50 %s ≤ 2× floor (%s): %s", fmtMs(l.Summary.P50), fmtMs(2*floor.Start.P50), mark(l.Summary.P50 <= 2*floor.Start.P50)))
	}
	if runtimeName(b.cfg.RuntimeClass) == "runc" {
		parts = append(parts,
			fmt.Sprintf("p50 ≤ 250ms: %s", mark(l.Summary.P50 <= 250)),
			fmt.Sprintf("p99 %s ≤ 500ms: %s", fmtMs(l.Summary.P99), mark(l.Summary.P99 <= 500)))
	}
	run.note("targets: %s", strings.Join(parts, "; "))
}

// checkLeftovers waits for the host to release everything the pods held
// and reports what it still holds.
func (b *bench) checkLeftovers(ctx context.Context, run *Result, pods []podTimes) {
	var uids []types.UID
	for _, p := range pods {
		if p.UID != "" {
			uids = append(uids, p.UID)
		}
	}
	if len(uids) == 0 {
		return
	}
	l, took, err := b.waitNoLeftovers(ctx, uids, time.Minute)
	if err != nil {
		run.note("leftovers not checked: %v", err)
		return
	}
	if l.Total() == 0 {
		run.figure("host clean after delete", took.Seconds()*1000, "ms", "no container, shim, netns, IP, mount, iptables rule or pod folder left")
		return
	}
	run.note("LEFTOVERS a minute after the pods left the API: %s", l)
}
