package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/simulate"
)

// density is `cci bench density`: idle pods started a batch at a time until
// p99 start of a batch passes the target (1 s), memory runs short, or the
// node is full; then how many pods ran and what each costs in memory.
func (b *bench) density(ctx context.Context) error {
	if err := b.checkRuntimeClass(ctx); err != nil {
		return err
	}
	o := podOpts{Image: b.image, Script: idleScript, RuntimeClass: b.cfg.RuntimeClass}
	floor := b.floorFor(ctx, b.cfg.FloorPods, 0)
	if _, err := b.warmup(ctx, o); err != nil {
		return err
	}
	limit, node, err := b.nodeRoom(ctx)
	if err != nil {
		return err
	}
	if b.cfg.Pods > 0 && b.cfg.Pods < limit {
		limit = b.cfg.Pods
	}
	t, err := track(ctx, b.kube, b.ns, labelRun+"="+b.runID)
	if err != nil {
		return err
	}
	defer t.Stop()

	run := &Result{Name: fmt.Sprintf("density (%s, node %s)", runtimeName(b.cfg.RuntimeClass), node)}
	b.rep.Results = append(b.rep.Results, run)
	groups := b.c.processGroups()
	rss := func(group string) int64 {
		var sum int64
		for _, pid := range groups[group] {
			sum += procStatus(pid)["VmRSS"]
		}
		return sum
	}
	const cciGroup = "cci (control plane + agent)"
	// The host's busy CPU before the first pod, beside which the idle
	// pods' own is read at the end: a sandbox whose platform spins
	// (gVisor's systrap fast path) costs CPU even when its pod is idle.
	cpu0 := busyCores(ctx, idleCPUFor)
	used0, kernel0, shims0 := memUsed(), kernelMem(), shimPSS(b.c.ContainerdSocket)
	cci0, ctrd0 := rss(cciGroup), rss("containerd")

	window := max(20, b.cfg.DensityBatch)
	b.logf("density: up to %d idle pods, %d at a time, until p99 start of the last %d > %s or MemAvailable < %s",
		limit, b.cfg.DensityBatch, window, b.cfg.Target, bytesIEC(b.cfg.DensityMinFree))
	var (
		all     []float64
		p99s    [][2]float64
		memCurv [][2]float64
		stop    string
		count   int
	)
	for count < limit && stop == "" {
		size := min(b.cfg.DensityBatch, limit-count)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		names := make([]string, size)
		for i := range size {
			names[i] = fmt.Sprintf("density-%04d", count+i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := b.createAndWait(ctx, t, names[i], o); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, n := range names {
			if p, ok := t.pod(n); ok && !p.Running.IsZero() {
				all = append(all, ms(p.Running.Sub(p.Created)))
				count++
			}
		}
		recent := summarize(all[max(0, len(all)-window):])
		p99s = append(p99s, [2]float64{float64(count), recent.P99})
		memCurv = append(memCurv, [2]float64{float64(count), float64(kernelMem()-kernel0+shimPSS(b.c.ContainerdSocket)-shims0) / (1 << 20)})
		free := memInfo()["MemAvailable"]
		switch {
		case len(errs) > 0:
			stop = fmt.Sprintf("%d pods did not run: %v", len(errs), errs[0])
		case len(all) >= window && recent.P99 > ms(b.cfg.Target):
			stop = fmt.Sprintf("p99 start of the last %d pods %s > %s", window, fmtMs(recent.P99), b.cfg.Target)
		case free < b.cfg.DensityMinFree:
			stop = fmt.Sprintf("MemAvailable %s < %s", bytesIEC(free), bytesIEC(b.cfg.DensityMinFree))
		}
		if count%50 < size {
			b.logf("density: %d pods running", count)
		}
	}
	if stop == "" {
		stop = fmt.Sprintf("the node's room or --pods (%d pods) reached", limit)
	}
	time.Sleep(time.Second) // settle: the last containers finish starting
	cpuIdle := busyCores(ctx, idleCPUFor)
	pods := t.snapshot()
	var cgroups int64
	for _, p := range pods {
		if strings.HasPrefix(p.Name, "density-") && p.UID != "" {
			cgroups += cgroupMemory(filepath.Join(agentNamespace, string(p.UID)+"-c"))
		}
	}
	shims := shimPSS(b.c.ContainerdSocket) - shims0
	kernel := kernelMem() - kernel0
	cciDelta, ctrdDelta := rss(cciGroup)-cci0, rss("containerd")-ctrd0
	used := memUsed() - used0

	var fs *Summary
	if floor != nil {
		fs = &floor.Start
	}
	run.latency("create→Running", all, fs)
	run.figure("pods reached", float64(count), "", "stopped: "+stop)
	if count > 0 {
		per := func(v int64) float64 { return float64(v) / float64(count) }
		total := shims + cgroups + kernel + cciDelta + ctrdDelta
		note := "the sum of the parts below"
		if floor != nil && floor.MemPerContainer > 0 {
			note += fmt.Sprintf("; %.1f× the floor's %s per container", ratio(per(total), float64(floor.MemPerContainer)), bytesIEC(floor.MemPerContainer))
		}
		run.figure("memory per pod", per(total), "bytes", note)
		run.figure("  shim (PSS)", per(shims), "bytes", "")
		run.figure("  container cgroup", per(cgroups), "bytes", "the pod's processes and their page cache")
		run.figure("  kernel (slab, stacks, page tables)", per(kernel), "bytes", "netns, veth, mounts")
		run.figure("  cci process growth", per(cciDelta), "bytes", "agent + control plane RSS")
		run.figure("  containerd growth", per(ctrdDelta), "bytes", "")
		run.figure("host memory per pod (MemAvailable)", per(used), "bytes", "includes page cache; noisy when other processes run")
		run.figure("host CPU with the pods idle", cpuIdle, "cores", fmt.Sprintf("%.2f before the first pod; %.1f millicores per idle pod; over %s", cpu0, 1000*(cpuIdle-cpu0)/float64(count), idleCPUFor))
	}
	run.Series = append(run.Series,
		&Series{Name: fmt.Sprintf("p99 start of the last %d pods", window), X: "pods running", Y: "ms", Points: p99s},
		&Series{Name: "shim + kernel memory since the start", X: "pods running", Y: "MiB", Points: memCurv})

	b.logf("density: deleting %d pods", count)
	if err := b.deletePods(ctx, 5*time.Minute); err != nil {
		return err
	}
	var mine []podTimes
	for _, p := range pods {
		if strings.HasPrefix(p.Name, "density-") {
			mine = append(mine, p)
		}
	}
	b.checkLeftovers(ctx, run, mine)
	return nil
}

// nodeRoom is how many more pods the host node takes (its pod capacity
// less the pods on it now, one spare), and the node's name.
func (b *bench) nodeRoom(ctx context.Context) (int, string, error) {
	nodes, err := b.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "!" + simulate.LabelSimulated})
	if err != nil {
		return 0, "", err
	}
	for _, n := range nodes.Items {
		if !nodeReady(&n) {
			continue
		}
		capacity := n.Status.Allocatable.Pods().Value()
		pods, err := b.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
		if err != nil {
			return 0, "", err
		}
		used := 0
		for _, p := range pods.Items {
			if p.Status.Phase != v1.PodSucceeded && p.Status.Phase != v1.PodFailed {
				used++
			}
		}
		room := int(capacity) - used - 1
		if room <= 0 {
			return 0, "", fmt.Errorf("node %s is full (%d of %d pods)", n.Name, used, capacity)
		}
		return room, n.Name, nil
	}
	return 0, "", fmt.Errorf("no Ready host node")
}
