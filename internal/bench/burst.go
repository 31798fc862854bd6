package bench

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// burst is `cci bench burst`: N pods at once, from a Deployment scaled from
// 0 and from a Job with parallelism N; time until all run (and, for the
// Job, complete), pods started per second per core, API latency meanwhile,
// and CPU profiles of the cluster process.
func (b *bench) burst(ctx context.Context) error {
	if err := b.checkRuntimeClass(ctx); err != nil {
		return err
	}
	n := b.cfg.Pods
	floor := b.floorFor(ctx, b.cfg.FloorPods, n)
	if _, err := b.warmup(ctx, podOpts{Image: b.image, Script: idleScript, RuntimeClass: b.cfg.RuntimeClass}); err != nil {
		return err
	}
	t, err := track(ctx, b.kube, b.ns, labelRun+"="+b.runID)
	if err != nil {
		return err
	}
	defer t.Stop()
	prof := b.profiler()
	for _, mode := range b.cfg.BurstModes {
		if err := b.burstOnce(ctx, t, mode, n, floor, prof); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) burstOnce(ctx context.Context, t *tracker, mode string, n int, floor *Floor, prof *profiler) error {
	run := &Result{Name: fmt.Sprintf("burst/%s (%d pods, %s)", mode, n, runtimeName(b.cfg.RuntimeClass))}
	b.rep.Results = append(b.rep.Results, run)
	name := "burst-" + mode
	prefix := name + "-"
	replicas := int32(0)
	parallel := int32(n)
	mine := func(p *podTimes) bool { return strings.HasPrefix(p.Name, prefix) }

	// The Deployment exists, scaled to 0, before the clock starts.
	if mode == "deployment" {
		tmpl := b.podTemplate(podOpts{Image: b.image, Script: idleScript, RuntimeClass: b.cfg.RuntimeClass})
		tmpl.Labels["cci-bench/burst"] = name
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tmpl.Labels},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"cci-bench/burst": name}},
				Template: tmpl,
			},
		}
		if _, err := b.kube.AppsV1().Deployments(b.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create deployment: %w", err)
		}
	}

	before, err := scrapeAPI(ctx, b.kube)
	if err != nil {
		run.note("%v", err)
	}
	var profDone <-chan profileResult
	if prof != nil {
		profDone = prof.cpu(ctx, "burst-"+mode, b.cfg.ProfileSeconds)
	}
	sampler := startCPUSampler(b.c.processGroups, 500*time.Millisecond)
	// Where the cluster's goroutines wait, at moments of the burst: what a
	// CPU profile cannot show.
	type stacks struct {
		at    time.Duration
		path  string
		sites map[string]int
		err   error
	}
	var (
		stacksDone chan struct{}
		snaps      []stacks
	)
	if prof != nil {
		stacksDone = make(chan struct{})
		go func() {
			defer close(stacksDone)
			start := time.Now()
			for _, at := range []time.Duration{3 * time.Second, 10 * time.Second} {
				select {
				case <-time.After(time.Until(start.Add(at))):
				case <-ctx.Done():
					return
				}
				path, sites, err := prof.goroutines(ctx, fmt.Sprintf("burst-%s-%ds", mode, int(at.Seconds())))
				snaps = append(snaps, stacks{at, path, sites, err})
			}
		}()
	}
	b.logf("burst: %d pods from a %s", n, mode)
	t0 := time.Now()
	switch mode {
	case "deployment":
		patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
		if _, err := b.kube.AppsV1().Deployments(b.ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			sampler.Stop()
			return fmt.Errorf("scale deployment to %d: %w", n, err)
		}
	case "job":
		tmpl := b.podTemplate(podOpts{Image: b.image, Script: exitScript, RuntimeClass: b.cfg.RuntimeClass, Restart: v1.RestartPolicyNever})
		backoff := int32(0)
		j := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tmpl.Labels},
			Spec: batchv1.JobSpec{
				Parallelism:  &parallel,
				Completions:  &parallel,
				BackoffLimit: &backoff,
				Template:     tmpl,
			},
		}
		if _, err := b.kube.BatchV1().Jobs(b.ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
			sampler.Stop()
			return fmt.Errorf("create job: %w", err)
		}
	}

	timeout := b.cfg.PodTimeout + time.Duration(n)*500*time.Millisecond
	waitErr := t.wait(ctx, timeout, func(pods map[string]*podTimes) bool {
		c := 0
		for _, p := range pods {
			if mine(p) && !p.Running.IsZero() {
				c++
			}
		}
		return c >= n
	})
	allRunning := time.Since(t0)
	var allDone time.Duration
	if waitErr == nil && mode == "job" {
		waitErr = t.wait(ctx, timeout, func(pods map[string]*podTimes) bool {
			c := 0
			for _, p := range pods {
				if mine(p) && p.Phase == v1.PodSucceeded {
					c++
				}
			}
			return c >= n
		})
		allDone = time.Since(t0)
	}
	run.setCPU(sampler.Stop())
	after, err := scrapeAPI(ctx, b.kube)
	if err == nil && before.latency != nil {
		apiFigures(run, before, after)
	}

	pods := t.snapshot()
	var started, done, bound []float64
	var startTimes, doneTimes []time.Time
	for _, p := range pods {
		if !mine(&p) {
			continue
		}
		if !p.Bound.IsZero() {
			bound = append(bound, ms(p.Bound.Sub(t0)))
		}
		if !p.Running.IsZero() {
			started = append(started, ms(p.Running.Sub(t0)))
			startTimes = append(startTimes, p.Running)
		}
		if !p.Done.IsZero() {
			done = append(done, ms(p.Done.Sub(t0)))
			doneTimes = append(doneTimes, p.Done)
		}
	}
	if waitErr != nil {
		run.note("only %d of %d pods ran within %s: %v", len(started), n, timeout, waitErr)
		b.explain(ctx, run, mode, name)
	}
	run.latency("→scheduled (bound)", bound, nil)
	run.latency("→Running", started, nil)
	if mode == "job" {
		run.latency("→Succeeded", done, nil)
	}
	cores := float64(runtime.NumCPU())
	if waitErr == nil {
		note := ""
		if floor != nil && floor.ParallelPods == n {
			note = fmt.Sprintf("%.1f× the floor's %s for %d containers at once", ratio(ms(allRunning), floor.ParallelTook), fmtMs(floor.ParallelTook), n)
		}
		run.figure("all Running after", ms(allRunning), "ms", note)
		run.figure("pods started per second", float64(n)/allRunning.Seconds(), "pods/s", "")
		run.figure("pods started per second per core", float64(n)/allRunning.Seconds()/cores, "pods/s/core", "target ≥ 10")
		if mode == "job" {
			run.figure("all Succeeded after", ms(allDone), "ms", "")
		}
	}
	run.Series = append(run.Series, &Series{Name: "pods Running over time", Step: true, X: "seconds after the " + map[string]string{"deployment": "scale call", "job": "job create"}[mode], Y: "pods", Points: curve(t0, startTimes)})
	if mode == "job" {
		run.Series = append(run.Series, &Series{Name: "pods Succeeded over time", Step: true, X: "seconds after the job create", Y: "pods", Points: curve(t0, doneTimes)})
	}

	if stacksDone != nil {
		<-stacksDone
		for _, sn := range snaps {
			if sn.err != nil {
				run.note("goroutine profile: %v", sn.err)
				continue
			}
			b.rep.Files = append(b.rep.Files, sn.path)
			sites := make([]string, 0, len(sn.sites))
			for site := range sn.sites {
				sites = append(sites, site)
			}
			sort.Strings(sites)
			for _, site := range sites {
				run.figure(fmt.Sprintf("goroutines %.0f s in: %s", sn.at.Seconds(), site), float64(sn.sites[site]), "", "")
			}
		}
	}
	if profDone != nil {
		b.logf("burst: waiting for the %ds CPU profile", b.cfg.ProfileSeconds)
		b.saveCPU(run, profDone)
		if path, err := prof.heap(ctx, "burst-"+mode); err != nil {
			run.note("heap profile: %v", err)
		} else {
			b.rep.Files = append(b.rep.Files, path)
		}
	}

	b.logf("burst: removing the %s", mode)
	bg := metav1.DeletePropagationBackground
	switch mode {
	case "deployment":
		err = b.kube.AppsV1().Deployments(b.ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
	case "job":
		err = b.kube.BatchV1().Jobs(b.ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", mode, err)
	}
	if err := b.deletePods(ctx, 5*time.Minute); err != nil {
		return err
	}
	var gone []podTimes
	for _, p := range pods {
		if mine(&p) {
			gone = append(gone, p)
		}
	}
	b.checkLeftovers(ctx, run, gone)
	return waitErr
}

// explain notes why a burst fell short: the first pod that is not fine,
// and the Job's failure condition.
func (b *bench) explain(ctx context.Context, run *Result, mode, name string) {
	pods, err := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: labelRun + "=" + b.runID})
	if err == nil {
		bad := 0
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == v1.PodRunning || p.Status.Phase == v1.PodSucceeded {
				continue
			}
			if bad == 0 {
				run.note("pod %s: %s", p.Name, podProblem(p))
			}
			bad++
		}
		if bad > 1 {
			run.note("%d pods in all were neither Running nor Succeeded", bad)
		}
	}
	if mode == "job" {
		if j, err := b.kube.BatchV1().Jobs(b.ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			for _, c := range j.Status.Conditions {
				if c.Status == v1.ConditionTrue {
					run.note("job condition %s: %s %s", c.Type, c.Reason, c.Message)
				}
			}
		}
	}
}
