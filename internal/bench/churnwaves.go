package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cci-project/cci/internal/testimage"
)

// WavesReport is the outcome of churn's waves.
type WavesReport struct {
	Pods   int `json:"pods"`
	Waves  int `json:"waves"`
	Wave   int `json:"wave"`
	GVisor int `json:"gvisorPods"`
	// Failed counts pods that did not become Ready in time.
	Failed int `json:"failed"`
	// WaveReady is a wave's create → all Ready; WaveGone its delete → all
	// gone from the API (ms).
	WaveReady  Summary `json:"waveReadyMs"`
	WaveGone   Summary `json:"waveGoneMs"`
	PodsPerSec float64 `json:"podsPerSecond"`
	// Leftovers is what the hosts still hold for any churned pod.
	Leftovers Leftovers `json:"leftovers"`
	// Trace is the `cci up` process read after each wave, deleted pods
	// gone: whether its memory levels off or keeps growing with the pods
	// churned.
	Trace []ProcStat `json:"trace,omitempty"`
	// Processes are the engine's processes before the first wave and
	// after the last (both after a warm-up wave and a settling pause).
	Processes []ProcDelta `json:"processes"`
}

// ProcStat is one reading of a process.
type ProcStat struct {
	PID int `json:"pid"`
	// Goroutines from its pprof listener; -1 when it has none.
	Goroutines int   `json:"goroutines"`
	FDs        int   `json:"fds"`
	Threads    int   `json:"threads"`
	RSS        int64 `json:"rssBytes"`
	// RSSAnon and RSSFile split RSS: anonymous memory (the Go heap and
	// stacks), and mapped files (etcd's bbolt database in `cci up`).
	RSSAnon int64 `json:"rssAnonBytes"`
	RSSFile int64 `json:"rssFileBytes"`
	// HeapInuse is the Go heap in use right after a forced GC, from the
	// pprof listener (-1 without one): what a leak of Go objects grows,
	// while RSS also holds memory the runtime has not yet given back.
	HeapInuse int64 `json:"heapInuseBytes"`
	// HeapLive is the bytes of Go objects still reachable after that GC
	// (HeapAlloc): what a leak grows. HeapInuse minus HeapLive is room in
	// spans that hold some live objects (fragmentation); -1 without a
	// listener.
	HeapLive int64 `json:"heapLiveBytes"`
	// HeapKept is heap the runtime holds free but has not yet given back
	// to the system (HeapIdle - HeapReleased, after the same GC): part of
	// RSS that the scavenger returns over time; -1 without a listener.
	HeapKept int64 `json:"heapKeptBytes"`
}

// ProcDelta is a process before and after.
type ProcDelta struct {
	Name   string   `json:"name"`
	Before ProcStat `json:"before"`
	After  ProcStat `json:"after"`
}

// churnWaves is `cci bench churn` (without --rates): Pods pods created and
// deleted in waves of Wave, runc and gVisor mixed, each with a configMap
// volume and a readiness probe, behind a Service. Afterwards the hosts must
// hold nothing for any of them, and the engine's goroutines, open files
// and memory must be back where they were.
func (b *bench) churnWaves(ctx context.Context) error {
	wr := &WavesReport{Pods: b.cfg.Pods, Wave: min(b.cfg.Wave, b.cfg.Pods)}
	b.rep.Churn = wr
	run := &Result{Name: fmt.Sprintf("churn: %d pods in waves of %d", b.cfg.Pods, wr.Wave)}
	b.rep.Results = append(b.rep.Results, run)
	gvisor := b.checkRuntimeClassNamed(ctx, "gvisor") == nil
	if !gvisor {
		run.note("no RuntimeClass gvisor: every pod runs under runc")
	}
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "churn", Labels: map[string]string{labelRun: b.runID}},
		Data: map[string]string{"greeting": "hello from a churned pod\n"}}
	if _, err := b.kube.CoreV1().ConfigMaps(b.ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create configmap: %w", err)
	}
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "churn", Labels: map[string]string{labelRun: b.runID}},
		Spec: v1.ServiceSpec{Selector: map[string]string{"churn": "wave"},
			Ports: []v1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(testimage.HTTPDPort)}}},
	}
	if _, err := b.kube.CoreV1().Services(b.ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service: %w", err)
	}
	seen := map[types.UID]string{} // uid → pod IP
	var mu sync.Mutex
	wave := func(prefix string, n int) (ready, gone time.Duration, failed, gv int, err error) {
		return b.churnWave(ctx, prefix, n, gvisor, &mu, seen)
	}
	// A warm-up wave: images unpacked, caches and pools filled, before the
	// baseline is read.
	if _, _, f, _, err := wave("churn-warm-", min(10, wr.Wave)); err != nil || f > 0 {
		return fmt.Errorf("warm-up wave: %d pods failed: %v", f, err)
	}
	b.logf("churn: settling %s before the baseline", b.cfg.Settle)
	sleepCtx(ctx, b.cfg.Settle)
	procs := b.engineProcs()
	before := map[string]ProcStat{}
	for name, pid := range procs {
		before[name] = b.procStat(ctx, name, pid)
	}
	var readies, gones []float64
	t0 := time.Now()
	done := 0
	for i := 0; done < b.cfg.Pods; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if b.cfg.ChurnFor > 0 && time.Since(t0) > b.cfg.ChurnFor {
			run.note("stopped after %d of %d pods: --for %s passed", done, b.cfg.Pods, b.cfg.ChurnFor)
			break
		}
		n := min(wr.Wave, b.cfg.Pods-done)
		ready, gone, failed, gv, err := wave(fmt.Sprintf("churn-%d-", i), n)
		wr.Waves++
		wr.Failed += failed
		wr.GVisor += gv
		done += n
		readies = append(readies, ms(ready))
		gones = append(gones, ms(gone))
		b.logf("churn: wave %d: %d pods (%d gVisor) ready in %s, gone in %s; %d of %d done, %d failed", i, n, gv, ready.Round(time.Millisecond), gone.Round(time.Millisecond), done, b.cfg.Pods, wr.Failed)
		if b.c.PID != 0 {
			st := b.procStat(ctx, "cci up", b.c.PID)
			wr.Trace = append(wr.Trace, st)
			b.logf("churn: wave %d: cci up RSS %d MiB (anonymous %d, mapped files %d), Go heap in use %d MiB, live %d MiB, free not returned %d MiB, goroutines %d",
				i, st.RSS>>20, st.RSSAnon>>20, st.RSSFile>>20, st.HeapInuse>>20, st.HeapLive>>20, st.HeapKept>>20, st.Goroutines)
		}
		if err != nil {
			run.note("wave %d: %v", i, err)
			return err
		}
	}
	wr.Pods = done
	wr.PodsPerSec = float64(done) / time.Since(t0).Seconds()
	wr.WaveReady = run.latency("wave create → all Ready", readies, nil).Summary
	wr.WaveGone = run.latency("wave delete → all gone from the API", gones, nil).Summary

	var uids []types.UID
	var ips []string
	liveIPs := map[string]bool{}
	if all, err := b.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range all.Items {
			liveIPs[p.Status.PodIP] = true
		}
	}
	for u, ip := range seen {
		uids = append(uids, u)
		if ip != "" && !liveIPs[ip] {
			ips = append(ips, ip)
		}
	}
	start := time.Now()
	for {
		l, err := b.leftoversOf(ctx, uids, ips)
		if err != nil {
			return err
		}
		wr.Leftovers = l
		if l.Total() == 0 || time.Since(start) > time.Minute {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	b.logf("churn: settling %s before reading the processes again", b.cfg.Settle)
	sleepCtx(ctx, b.cfg.Settle)
	names := make([]string, 0, len(procs))
	for n := range procs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		pid := procs[name]
		if now := b.engineProcs()[name]; now != pid {
			run.note("%s changed pid %d → %d during the run: it was restarted", name, pid, now)
			pid = now
		}
		wr.Processes = append(wr.Processes, ProcDelta{Name: name, Before: before[name], After: b.procStat(ctx, name, pid)})
	}

	run.figure("pods churned", float64(wr.Pods), "", fmt.Sprintf("%d waves, %d under gVisor", wr.Waves, wr.GVisor))
	run.figure("pods/s (create → Ready → delete → gone)", wr.PodsPerSec, "", "")
	run.figure("pods that did not become Ready", float64(wr.Failed), "", "expected 0")
	run.figure("leftovers", float64(wr.Leftovers.Total()), "", wr.Leftovers.String())
	for _, p := range wr.Processes {
		fig := func(what string, a, z float64, unit string) {
			note := fmt.Sprintf("%s → %s", fmtValue(a, unit), fmtValue(z, unit))
			if a > 0 && z/a > 1.10 {
				note += ": MORE THAN 10% ABOVE THE START"
			}
			run.figure(fmt.Sprintf("%s %s after/before", p.Name, what), ratio(z, a), "×", note)
		}
		if p.Before.Goroutines >= 0 && p.After.Goroutines >= 0 {
			fig("goroutines", float64(p.Before.Goroutines), float64(p.After.Goroutines), "")
		}
		fig("open files", float64(p.Before.FDs), float64(p.After.FDs), "")
		fig("RSS", float64(p.Before.RSS), float64(p.After.RSS), "B")
		fig("  RSS anonymous", float64(p.Before.RSSAnon), float64(p.After.RSSAnon), "B")
		fig("  RSS of mapped files", float64(p.Before.RSSFile), float64(p.After.RSSFile), "B")
		if p.Before.HeapInuse >= 0 && p.After.HeapInuse >= 0 {
			fig("Go heap in use after GC", float64(p.Before.HeapInuse), float64(p.After.HeapInuse), "B")
		}
		if p.Before.HeapLive >= 0 && p.After.HeapLive >= 0 {
			fig("Go objects live after GC", float64(p.Before.HeapLive), float64(p.After.HeapLive), "B")
		}
		if p.Before.HeapKept >= 0 && p.After.HeapKept >= 0 {
			fig("Go heap free, not yet returned", float64(p.Before.HeapKept), float64(p.After.HeapKept), "B")
		}
	}
	traceFigures(run, wr.Trace)
	if wr.Failed > 0 || wr.Leftovers.Total() > 0 {
		return fmt.Errorf("churn: %d pods did not become Ready; leftovers: %s", wr.Failed, wr.Leftovers)
	}
	return nil
}

// churnWave creates n pods, waits until each is Ready (or fails), deletes
// them and waits until they are gone from the API.
func (b *bench) churnWave(ctx context.Context, prefix string, n int, gvisor bool, mu *sync.Mutex, seen map[types.UID]string) (ready, gone time.Duration, failed, gv int, err error) {
	img := b.c.Image(testimage.HTTPD)
	sel := labelRun + "=" + b.runID + ",churn-wave=" + strings.TrimSuffix(prefix, "-")
	t0 := time.Now()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var createErr error
	for i := 0; i < n; i++ {
		rc := ""
		if gvisor && i%b.cfg.GVisorEvery == b.cfg.GVisorEvery-1 {
			rc = "gvisor"
			gv++
		}
		p := b.pod(fmt.Sprintf("%s%05d", prefix, i), podOpts{Image: img, RuntimeClass: rc})
		p.Labels["churn"] = "wave"
		p.Labels["churn-wave"] = strings.TrimSuffix(prefix, "-")
		c := &p.Spec.Containers[0]
		c.Command = nil // the image's own httpd
		c.ReadinessProbe = &v1.Probe{
			ProbeHandler:  v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(testimage.HTTPDPort)}},
			PeriodSeconds: 1,
		}
		c.VolumeMounts = []v1.VolumeMount{{Name: "cfg", MountPath: "/etc/churn", ReadOnly: true}}
		p.Spec.Volumes = []v1.Volume{{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
			LocalObjectReference: v1.LocalObjectReference{Name: "churn"}}}}}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := b.kube.CoreV1().Pods(b.ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				mu.Lock()
				createErr = fmt.Errorf("create pod %s: %w", p.Name, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if createErr != nil {
		return 0, 0, n, gv, createErr
	}
	deadline := time.Now().Add(b.cfg.PodTimeout)
	for {
		l, lerr := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if lerr == nil {
			readyN := 0
			mu.Lock()
			for _, p := range l.Items {
				seen[p.UID] = p.Status.PodIP
				for _, c := range p.Status.Conditions {
					if c.Type == v1.PodReady && c.Status == v1.ConditionTrue {
						readyN++
					}
				}
			}
			mu.Unlock()
			if readyN == n {
				break
			}
			if time.Now().After(deadline) {
				failed = n - readyN
				for _, p := range l.Items {
					b.logf("churn: pod %s: %s", p.Name, podProblem(&p))
					break
				}
				break
			}
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return 0, 0, failed, gv, ctx.Err()
		}
	}
	ready = time.Since(t0)
	t1 := time.Now()
	if err := b.deletePodCollection(ctx, metav1.ListOptions{LabelSelector: sel}); err != nil {
		return ready, 0, failed, gv, fmt.Errorf("wave %s: %w", prefix, err)
	}
	deadline = time.Now().Add(3 * time.Minute)
	for {
		l, lerr := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if lerr == nil && len(l.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return ready, time.Since(t1), failed, gv, fmt.Errorf("wave %s: %d pods still in the API 3 minutes after their deletion", prefix, len(l.Items))
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return ready, 0, failed, gv, ctx.Err()
		}
	}
	return ready, time.Since(t1), failed, gv, nil
}

// engineProcs names the engine's long-running processes on this machine:
// `cci up` (control plane, and the agent unless --hosts), each host's agent
// and each containerd.
func (b *bench) engineProcs() map[string]int {
	out := map[string]int{}
	if b.c.PID != 0 {
		name := "cci up (control plane + agent)"
		if b.cfg.Hosts > 0 {
			name = "cci up (control plane)"
		}
		out[name] = b.c.PID
	}
	for _, st := range b.sites() {
		if b.cfg.Hosts > 0 {
			if pid := readPidFile(filepath.Join(st.DataDir, "agent.pid")); pid != 0 {
				out["agent "+st.Name] = pid
			}
		}
		if pid := readPidFile(filepath.Join(st.DataDir, "containerd", "state", "cci-containerd.pid")); pid != 0 {
			out["containerd "+st.Name] = pid
		}
	}
	return out
}

// procStat reads a process's open files, threads and RSS from /proc and,
// for the `cci up` process, its goroutines from its pprof listener (after
// a garbage collection, which the heap profile's gc=1 asks for).
func (b *bench) procStat(ctx context.Context, name string, pid int) ProcStat {
	s := ProcStat{PID: pid, Goroutines: -1, HeapInuse: -1, HeapLive: -1, HeapKept: -1}
	if pid == b.c.PID && b.c.PprofAddr != "" {
		if raw, err := pprofGet(ctx, b.c.PprofAddr, "/debug/pprof/heap?gc=1&debug=1"); err == nil {
			s.HeapInuse = memStat(raw, "HeapInuse")
			s.HeapLive = memStat(raw, "HeapAlloc")
			if idle, rel := memStat(raw, "HeapIdle"), memStat(raw, "HeapReleased"); idle >= 0 && rel >= 0 {
				s.HeapKept = idle - rel
			}
		}
		if raw, err := pprofGet(ctx, b.c.PprofAddr, "/debug/pprof/goroutine?debug=1"); err == nil {
			s.Goroutines = goroutineTotal(raw)
		}
	}
	if es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.FDs = len(es)
	}
	st := procStatus(pid)
	s.RSS, s.RSSAnon, s.RSSFile = st["VmRSS"], st["RssAnon"], st["RssFile"]
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(raw)))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Threads:"); ok {
				s.Threads, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
	}
	return s
}

func pprofGet(ctx context.Context, addr, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", path, resp.Status)
	}
	return string(raw), err
}

// memStat reads "# name = N" from the runtime.MemStats a debug=1 heap
// profile ends with; -1 when it is not there.
func memStat(profile, name string) int64 {
	for _, l := range strings.Split(profile, "\n") {
		if v, ok := strings.CutPrefix(l, "# "+name+" = "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}

// goroutineTotal reads "goroutine profile: total N" from a debug=1 profile.
func goroutineTotal(profile string) int {
	line, _, _ := strings.Cut(profile, "\n")
	if v, ok := strings.CutPrefix(line, "goroutine profile: total "); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err == nil {
			return n
		}
	}
	return -1
}

// sleepCtx sleeps d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// traceFigures compares `cci up` after the last wave with after the first:
// memory that grows with the pods churned keeps rising from wave to wave,
// while caches and heap sized by one wave's peak level off after it.
func traceFigures(run *Result, trace []ProcStat) {
	if len(trace) < 2 {
		return
	}
	first, last := trace[0], trace[len(trace)-1]
	series := func(v func(ProcStat) int64) string {
		parts := make([]string, len(trace))
		for i, st := range trace {
			parts[i] = strconv.FormatInt(v(st)>>20, 10)
		}
		return strings.Join(parts, " ") + " MiB"
	}
	run.figure("cci up RSS after the last wave / after the first", ratio(float64(last.RSS), float64(first.RSS)), "×",
		series(func(s ProcStat) int64 { return s.RSS }))
	if first.HeapLive > 0 && last.HeapLive >= 0 {
		run.figure("cci up Go objects live after the last wave / after the first", ratio(float64(last.HeapLive), float64(first.HeapLive)), "×",
			series(func(s ProcStat) int64 { return s.HeapLive }))
	}
}
