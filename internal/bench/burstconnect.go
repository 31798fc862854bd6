package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/connect"
)

// connectNode is the virtual node the via-connect burst goes through.
const connectNode = "cci-bench-connect"

// burstViaConnect is `cci bench burst --via-connect`: the same Deployment
// burst, in rounds, created directly in the bench's cluster (B) and in a
// second control plane (A, `cci server` without hosts) whose only node is
// a `cci connect` virtual node with B's namespace behind it. The second's pods/s and create→Running percentiles, as ratios and
// differences to the first's, are what the virtual node adds.
func (b *bench) burstViaConnect(ctx context.Context) error {
	n := b.cfg.Pods
	if _, err := b.warmup(ctx, podOpts{Image: b.image, Script: idleScript, RuntimeClass: b.cfg.RuntimeClass}); err != nil {
		return err
	}
	// A and connect run before either burst, so that both bursts share
	// the machine with them.
	b.logf("burst: starting the control plane the burst comes from")
	a, err := StartCluster(ctx, ClusterOptions{Binary: b.c.binary, ControlPlaneOnly: true, ClusterCIDR: "10.77.0.0/16", Log: b.log})
	if err != nil {
		return fmt.Errorf("start the cluster the burst comes from: %w", err)
	}
	defer func() { _ = a.Close() }()
	if _, err := a.Kube.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %q in the cluster the burst comes from: %w", b.ns, err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := a.Kube.CoreV1().ServiceAccounts(b.ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("namespace %q has no default service account: %w", b.ns, err)
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	stop, err := startConnect(ctx, b.c.binary, b.log, "connect", "--kubeconfig", a.Kubeconfig, "--to", b.c.Kubeconfig, "--namespace", b.ns,
		"--name", connectNode, "--kubelet-port", strconv.Itoa(ports[0]), "--dns", "b")
	if err != nil {
		return err
	}
	defer stop()

	direct := &Result{Name: fmt.Sprintf("burst/direct (%d pods ×%d, %s)", n, viaConnectRounds, runtimeName(b.cfg.RuntimeClass))}
	via := &Result{Name: fmt.Sprintf("burst/via-connect (%d pods ×%d, %s)", n, viaConnectRounds, runtimeName(b.cfg.RuntimeClass))}
	b.rep.Results = append(b.rep.Results, direct, via)
	toVirtual := func(s *v1.PodSpec) {
		s.NodeSelector = map[string]string{"type": "virtual-kubelet"}
		s.Tolerations = []v1.Toleration{{Key: connect.Taint.Key, Operator: v1.TolerationOpExists}}
	}
	// Rounds in the order direct, via, via, direct, …: a machine that
	// gets busier or quieter during the run weighs on both alike.
	var dTook, vTook time.Duration
	var dStarted, vStarted []float64
	for round := range viaConnectRounds {
		for i := range 2 {
			viaFirst := round%2 == 1
			if (i == 0) != viaFirst {
				took, started, err := b.burstDeployment(ctx, b.kube, fmt.Sprintf("burst-direct-%d", round), n, nil)
				if err != nil {
					return err
				}
				dTook, dStarted = dTook+took, append(dStarted, started...)
			} else {
				took, started, err := b.burstDeployment(ctx, a.Kube, fmt.Sprintf("burst-via-connect-%d", round), n, toVirtual)
				if err != nil {
					return err
				}
				vTook, vStarted = vTook+took, append(vStarted, started...)
			}
		}
	}
	total := n * viaConnectRounds
	record(direct, total, dTook, dStarted)
	record(via, total, vTook, vStarted)
	d, v := summarize(dStarted), summarize(vStarted)
	via.figure("pods/s through the virtual node, of direct", 100*ratio(float64(total)/vTook.Seconds(), float64(total)/dTook.Seconds()), "%", "goal ≥ 80 %")
	via.figure("p50 create→Running overhead", v.P50-d.P50, "ms", "goal < 300 ms")
	via.figure("p99 create→Running overhead", v.P99-d.P99, "ms", "")
	via.figure("p50 create→Running, of direct", ratio(v.P50, d.P50), "×", "")
	via.figure("p99 create→Running, of direct", ratio(v.P99, d.P99), "×", "")
	return nil
}

// viaConnectRounds is how many bursts of each kind --via-connect runs.
const viaConnectRounds = 2

// record puts the figures of a kind's bursts in run: n pods in all, took
// the sum of the times until all of a burst's pods ran.
func record(run *Result, n int, took time.Duration, started []float64) {
	run.latency("→Running", started, nil)
	if len(started) == n {
		run.figure("all Running after (sum over the rounds)", ms(took), "ms", "")
		run.figure("pods started per second", float64(n)/took.Seconds(), "pods/s", "")
	}
}

// burstDeployment scales a Deployment of kube in the bench's namespace
// from 0 to n and times, from the scale call, each pod's Running as kube
// reports it; then removes the Deployment and waits for its pods to go.
func (b *bench) burstDeployment(ctx context.Context, kube kubernetes.Interface, name string, n int, shape func(*v1.PodSpec)) (time.Duration, []float64, error) {
	tmpl := b.podTemplate(podOpts{Image: b.image, Script: idleScript, RuntimeClass: b.cfg.RuntimeClass})
	tmpl.Labels["cci-bench/burst"] = name
	if shape != nil {
		shape(&tmpl.Spec)
	}
	zero := int32(0)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tmpl.Labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &zero,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"cci-bench/burst": name}},
			Template: tmpl,
		},
	}
	if _, err := kube.AppsV1().Deployments(b.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return 0, nil, fmt.Errorf("create deployment %s: %w", name, err)
	}
	t, err := track(ctx, kube, b.ns, "cci-bench/burst="+name)
	if err != nil {
		return 0, nil, err
	}
	defer t.Stop()
	b.logf("burst: %d pods from deployment %s", n, name)
	t0 := time.Now()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := kube.AppsV1().Deployments(b.ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return 0, nil, fmt.Errorf("scale deployment %s to %d: %w", name, n, err)
	}
	timeout := b.cfg.PodTimeout + time.Duration(n)*500*time.Millisecond
	waitErr := t.wait(ctx, timeout, func(pods map[string]*podTimes) bool {
		c := 0
		for _, p := range pods {
			if !p.Running.IsZero() {
				c++
			}
		}
		return c >= n
	})
	took := time.Since(t0)
	var started []float64
	for _, p := range t.snapshot() {
		if !p.Running.IsZero() {
			started = append(started, ms(p.Running.Sub(t0)))
		}
	}
	if waitErr != nil {
		waitErr = fmt.Errorf("deployment %s: only %d of %d pods ran within %s: %w", name, len(started), n, timeout, waitErr)
	}
	b.logf("burst: removing deployment %s", name)
	bg := metav1.DeletePropagationBackground
	if err := kube.AppsV1().Deployments(b.ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && waitErr == nil {
		waitErr = fmt.Errorf("delete deployment %s: %w", name, err)
	}
	if err := t.wait(ctx, 5*time.Minute, func(pods map[string]*podTimes) bool {
		for _, p := range pods {
			if p.Deleted.IsZero() {
				return false
			}
		}
		return true
	}); err != nil && waitErr == nil {
		waitErr = fmt.Errorf("the pods of deployment %s did not go: %w", name, err)
	}
	return took, started, waitErr
}

// startConnect runs `cci connect` with args until stop is called, and
// returns once it says it is ready.
func startConnect(ctx context.Context, binary string, log io.Writer, args ...string) (stop func(), err error) {
	cmd := exec.Command(binary, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start cci connect: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		pw.Close()
	}()
	ready := make(chan struct{})
	var tail []string
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(pr)
		var once sync.Once
		for sc.Scan() {
			mu.Lock()
			tail = append(tail, sc.Text())
			if len(tail) > 20 {
				tail = tail[1:]
			}
			mu.Unlock()
			if strings.HasPrefix(sc.Text(), "CCI connect is ready") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(45 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	lines := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(tail, "\n")
	}
	select {
	case <-ready:
		fmt.Fprintf(log, "bench: cci connect ready (node %s)\n", connectNode)
		return stop, nil
	case err := <-done:
		return nil, fmt.Errorf("cci connect exited before it was ready: %v\n%s", err, lines())
	case <-time.After(3 * time.Minute):
		stop()
		return nil, fmt.Errorf("cci connect not ready after 3 minutes\n%s", lines())
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}
