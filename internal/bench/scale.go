package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cci-project/cci/internal/simulate"
)

// scale is `cci bench scale`: the control plane alone against simulated
// hosts (`cci agent simulate`, a child process): N nodes register, M pods
// are created as fast as the API takes them; pods bound per second, time
// until all run, and what the control plane process spent meanwhile.
func (b *bench) scale(ctx context.Context) error {
	n, m := b.cfg.Nodes, b.cfg.Pods
	run := &Result{Name: fmt.Sprintf("scale (%d simulated nodes, %d pods)", n, m)}
	b.rep.Results = append(b.rep.Results, run)

	sim, err := b.startSimulator(ctx, n)
	if err != nil {
		return err
	}
	defer sim.stop(b)
	t0 := time.Now()
	b.logf("scale: waiting for %d simulated nodes", n)
	if err := b.waitNodes(ctx, sim.prefix, n, 2*time.Minute+time.Duration(n)*200*time.Millisecond, sim); err != nil {
		return err
	}
	run.figure("nodes registered and Ready after", ms(time.Since(t0)), "ms", fmt.Sprintf("%d nodes, each with its pod subnet where the cluster assigns them", n))
	// The controller manager goes on writing new nodes (taints, subnets)
	// after they report Ready; those writes belong to registering, not to
	// the pods measured next.
	if settled, err := b.waitNodeWritesSettle(ctx, 2*time.Minute); err != nil {
		run.note("node writes still going on when the pods were created: %v", err)
	} else {
		run.figure("node writes settled after", ms(time.Since(t0)), "ms", fmt.Sprintf("%.0f writes to nodes after the last one reported Ready", settled))
	}

	t, err := track(ctx, b.kube, b.ns, labelRun+"="+b.runID)
	if err != nil {
		return err
	}
	defer t.Stop()

	groups := func() map[string][]int {
		g := map[string][]int{"simulated agents": {sim.pid}}
		if b.c.PID != 0 {
			name := "control plane (cci process)"
			if b.c.EtcdPID != 0 {
				name = "control plane (cci server: apiserver, scheduler, controllers)"
			} else if b.own {
				name = "control plane (cci process, etcd inside)"
			}
			g[name] = []int{b.c.PID}
		}
		if b.c.EtcdPID != 0 {
			g["etcd (cci etcd)"] = []int{b.c.EtcdPID}
		}
		return g
	}
	before, err := scrapeAPI(ctx, b.kube)
	if err != nil {
		run.note("%v", err)
	}
	var profDone <-chan profileResult
	if prof := b.profiler(); prof != nil {
		profDone = prof.cpu(ctx, "scale", b.cfg.ProfileSeconds)
	}
	sampler := startCPUSampler(groups, 500*time.Millisecond)

	o := podOpts{Image: b.image, Script: "true", Simulated: true}
	b.logf("scale: creating %d pods with %d workers", m, b.cfg.Workers)
	start := time.Now()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
		failed   int
	)
	for w := 0; w < b.cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= m || ctx.Err() != nil {
					return
				}
				name := fmt.Sprintf("scale-%05d", i)
				pod := b.pod(name, o)
				pod.Spec.Containers[0].Resources.Requests = v1.ResourceList{
					v1.ResourceCPU:    resource.MustParse("10m"),
					v1.ResourceMemory: resource.MustParse("16Mi"),
				}
				t.created(name, time.Now())
				if _, err := b.kube.CoreV1().Pods(b.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					t.forget(name)
					errMu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	created := time.Since(start)
	if failed > 0 {
		run.note("%d pod creates failed; first: %v", failed, firstErr)
	}
	want := m - failed
	run.figure("pods created per second", float64(want)/created.Seconds(), "pods/s", fmt.Sprintf("%d workers, client QPS 1000", b.cfg.Workers))

	timeout := 3*time.Minute + time.Duration(m)*20*time.Millisecond
	countOf := func(f func(*podTimes) bool) func(map[string]*podTimes) bool {
		return func(pods map[string]*podTimes) bool {
			c := 0
			for _, p := range pods {
				if strings.HasPrefix(p.Name, "scale-") && f(p) {
					c++
				}
			}
			return c >= want
		}
	}
	waitErr := t.wait(ctx, timeout, countOf(func(p *podTimes) bool { return !p.Bound.IsZero() }))
	allBound := time.Since(start)
	if waitErr == nil {
		waitErr = t.wait(ctx, timeout, countOf(func(p *podTimes) bool { return !p.Running.IsZero() }))
	}
	allRunning := time.Since(start)
	run.setCPU(sampler.Stop())
	if after, err := scrapeAPI(ctx, b.kube); err == nil && before.latency != nil {
		apiFigures(run, before, after)
	}

	pods := t.snapshot()
	var toBound, toRunning []float64
	var boundAt, runningAt []time.Time
	for _, p := range pods {
		if !strings.HasPrefix(p.Name, "scale-") {
			continue
		}
		if !p.Bound.IsZero() {
			toBound = append(toBound, ms(p.Bound.Sub(p.Created)))
			boundAt = append(boundAt, p.Bound)
		}
		if !p.Running.IsZero() {
			toRunning = append(toRunning, ms(p.Running.Sub(p.Created)))
			runningAt = append(runningAt, p.Running)
		}
	}
	if waitErr != nil {
		run.note("only %d bound and %d Running of %d pods within %s: %v", len(boundAt), len(runningAt), want, timeout, waitErr)
	}
	run.latency("create→bound", toBound, nil)
	run.latency("create→Running", toRunning, nil)
	if waitErr == nil {
		run.figure("pods bound per second", float64(want)/allBound.Seconds(), "pods/s", "first create → last bind; target ≥ 500")
		if r := steadyRate(boundAt); r > 0 {
			run.figure("pods bound per second, steady", r, "pods/s", "between 10% and 90% of the binds")
		}
		run.figure("all bound after", ms(allBound), "ms", "")
		run.figure("all Running after", ms(allRunning), "ms", "")
	}
	if b.c.EtcdDir != "" {
		if st, err := os.Stat(filepath.Join(b.c.EtcdDir, "member", "snap", "db")); err == nil {
			run.figure("etcd database size", float64(st.Size()), "bytes", "")
		}
	}
	run.Series = append(run.Series,
		&Series{Name: "pods bound over time", Step: true, X: "seconds after the first create", Y: "pods", Points: curve(start, boundAt)},
		&Series{Name: "pods Running over time", Step: true, X: "seconds after the first create", Y: "pods", Points: curve(start, runningAt)})

	b.saveCPU(run, profDone)

	// Pods of simulated nodes must go while the nodes still answer. A
	// cluster of the bench's own is thrown away whole instead.
	if !b.own {
		b.logf("scale: deleting %d pods", want)
		if err := b.deletePods(ctx, 10*time.Minute); err != nil {
			return err
		}
	} else {
		b.skipNamespaceDelete = true
	}
	return waitErr
}

// steadyRate is events per second between the 10th and 90th percentile of
// their times: the rate once started and before the tail.
func steadyRate(times []time.Time) float64 {
	if len(times) < 20 {
		return 0
	}
	ts := append([]time.Time(nil), times...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	lo, hi := len(ts)/10, len(ts)*9/10
	d := ts[hi].Sub(ts[lo]).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(hi-lo) / d
}

// simulator is the `cci agent simulate` child.
type simulator struct {
	cmd    *exec.Cmd
	pid    int
	prefix string
	log    string
	exited chan struct{}
	err    error
}

func (b *bench) startSimulator(ctx context.Context, nodes int) (*simulator, error) {
	bin := b.cfg.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		bin = exe
	}
	if out, err := exec.CommandContext(ctx, bin, "agent", "simulate", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--nodes") {
		return nil, fmt.Errorf("%s has no `agent simulate` command (%v): build the current cci", bin, err)
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	dir := b.c.DataDir
	if dir == "" {
		dir = os.TempDir()
	}
	s := &simulator{prefix: "bench-" + b.runID + "-", log: filepath.Join(dir, "bench-simulate-"+b.runID+".log"), exited: make(chan struct{})}
	args := []string{"agent", "simulate",
		"--kubeconfig", b.c.Kubeconfig,
		"--nodes", strconv.Itoa(nodes),
		"--name-prefix", s.prefix,
		"--start-delay", b.cfg.StartDelay.String(),
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--node-ip", "127.0.0.1",
		// A cluster of the bench's own is thrown away whole; in another
		// one the simulated nodes go when the bench ends.
		"--delete-nodes=" + strconv.FormatBool(!b.own),
	}
	logFile, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	b.logf("scale: starting %s %s (log %s)", filepath.Base(bin), strings.Join(args, " "), s.log)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start simulated nodes: %w", err)
	}
	s.cmd, s.pid = cmd, cmd.Process.Pid
	go func() {
		s.err = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	return s, nil
}

func (s *simulator) stop(b *bench) {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(2 * time.Minute):
		b.logf("simulated nodes did not stop in 2 minutes; killing them")
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func (b *bench) waitNodes(ctx context.Context, prefix string, n int, timeout time.Duration, sim *simulator) error {
	ready, cidrs := 0, 0
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		select {
		case <-sim.exited:
			raw, _ := os.ReadFile(sim.log)
			return false, fmt.Errorf("simulated nodes exited: %v\n%s", sim.err, truncateTail(string(raw), 2000))
		default:
		}
		nodes, err := b.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: simulate.LabelSimulated + "=true"})
		if err != nil {
			return false, nil
		}
		ready, cidrs = 0, 0
		for _, nd := range nodes.Items {
			if strings.HasPrefix(nd.Name, prefix) && nodeReady(&nd) {
				ready++
				if nd.Spec.PodCIDR != "" {
					cidrs++
				}
			}
		}
		// Where the controller manager gives nodes pod subnets, registering
		// ends with the last one: its node writes would otherwise fall into
		// the measurement (800 of them in a 1,000-node run).
		return ready >= n && (cidrs == 0 || cidrs >= n), nil
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("only %d of %d simulated nodes Ready (%d with a pod subnet) after %s (log %s)", ready, n, cidrs, timeout, sim.log)
		}
		return err
	}
	return nil
}

// waitNodeWritesSettle waits until the apiserver has seen no write to
// node objects for three seconds, and returns how many it saw meanwhile.
func (b *bench) waitNodeWritesSettle(ctx context.Context, timeout time.Duration) (float64, error) {
	count := func() (float64, error) {
		h, err := scrapeAPI(ctx, b.kube)
		if err != nil {
			return 0, err
		}
		var n float64
		for kind, c := range h.writes {
			// Node objects themselves; not nodes/status, which every node
			// patches now and then for as long as it lives.
			if strings.HasSuffix(kind, " nodes") {
				n += c
			}
		}
		return n, nil
	}
	first, err := count()
	if err != nil {
		return 0, err
	}
	last, stable := first, 0
	err = wait.PollUntilContextTimeout(ctx, time.Second, timeout, false, func(ctx context.Context) (bool, error) {
		n, err := count()
		if err != nil {
			return false, err
		}
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		return stable >= 3, nil
	})
	return last - first, err
}

func truncateTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
