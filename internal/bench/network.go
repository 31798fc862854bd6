package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/hostns"
	"github.com/cci-project/cci/internal/netperf"
	"github.com/cci-project/cci/internal/testimage"
)

// netperfPort is where the server pods listen.
const netperfPort = 5201

// The round-trip message sizes: one byte (latency alone) and a payload
// that fills one segment of the overlay's MTU (1450) without splitting.
var netSizes = []int{1, 1400}

// netPath is one measured path and what it measured.
type netPath struct {
	name string
	res  *netperf.Result
}

// network is `cci bench network`: pod-to-pod TCP throughput and round-trip
// time on one host and across two hosts (through the VXLAN overlay),
// against the floors of the same run, measured by the same program in the
// hosts' own network namespaces: loopback inside one host, and host to
// host over the hosts' veths and the machine's bridge, without the overlay.
func (b *bench) network(ctx context.Context) error {
	if b.c.DataDir == "" {
		return errors.New("the network bench needs the cluster's data folder for its hosts' namespaces: pass --data-dir of a `cci up --hosts 2`, or leave out --kubeconfig so that the bench starts one")
	}
	hosts, err := hostns.LoadHosts(b.c.DataDir)
	if err != nil {
		return fmt.Errorf("the network bench needs a cluster of two hosts or more (`cci up --hosts 2`): %w", err)
	}
	if len(hosts) < 2 {
		return fmt.Errorf("the network bench needs two hosts or more; %s has %d", b.c.DataDir, len(hosts))
	}
	h1, h2 := hosts[0], hosts[1]
	if err := b.checkRuntimeClass(ctx); err != nil {
		return err
	}
	prog, img, cleanup, err := b.netperfImage(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	args := b.netperfArgs()

	// Servers first, so that starting pods does not overlap a measurement.
	b.logf("network: server pods on %s and %s", h1.Name, h2.Name)
	ip1, err := b.netPod(ctx, "server-1", h1.Name, img, "exec netperf serve -addr :"+strconv.Itoa(netperfPort), v1.RestartPolicyAlways)
	if err != nil {
		return err
	}
	ip2, err := b.netPod(ctx, "server-2", h2.Name, img, "exec netperf serve -addr :"+strconv.Itoa(netperfPort), v1.RestartPolicyAlways)
	if err != nil {
		return err
	}

	sampler := startCPUSampler(b.c.processGroups, time.Second)
	var paths []netPath
	measure := func(name string, f func() (*netperf.Result, error)) error {
		b.logf("network: %s", name)
		res, err := f()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		paths = append(paths, netPath{name, res})
		return nil
	}
	steps := []struct {
		name string
		f    func() (*netperf.Result, error)
	}{
		{"loopback in " + h1.Name, func() (*netperf.Result, error) {
			return hostPath(ctx, prog, h1, h1, "127.0.0.1", args)
		}},
		{"pod → pod on " + h1.Name, func() (*netperf.Result, error) {
			return b.podPath(ctx, "client-same", h1.Name, img, ip1, args)
		}},
		{h1.Name + " → " + h2.Name + " (host veths)", func() (*netperf.Result, error) {
			return hostPath(ctx, prog, h1, h2, h2.IP.String(), args)
		}},
		{"pod → pod, " + h1.Name + " → " + h2.Name, func() (*netperf.Result, error) {
			return b.podPath(ctx, "client-cross", h1.Name, img, ip2, args)
		}},
	}
	for _, s := range steps {
		if err := measure(s.name, s.f); err != nil {
			b.reportNetwork(paths, h1.Name, h2.Name)
			return err
		}
	}
	use := sampler.Stop()
	b.reportNetwork(paths, h1.Name, h2.Name)
	if len(b.rep.Results) > 0 {
		b.rep.Results[len(b.rep.Results)-1].setCPU(use)
	}
	return nil
}

// netperfArgs are the client's flags.
func (b *bench) netperfArgs() []string {
	sizes := make([]string, len(netSizes))
	for i, s := range netSizes {
		sizes[i] = strconv.Itoa(s)
	}
	return []string{
		"-stream-for", b.cfg.NetStreamFor.String(),
		"-streams", strconv.Itoa(b.cfg.NetStreams),
		"-pings", strconv.Itoa(b.cfg.NetPings),
		"-sizes", strings.Join(sizes, ","),
	}
}

// netperfImage builds the netperf program from the CCI source tree and
// pushes the Netperf image; it returns the program (for the hosts' side)
// and the image.
func (b *bench) netperfImage(ctx context.Context) (prog, img string, cleanup func(), err error) {
	root, err := sourceTree(b.cfg.Source)
	if err != nil {
		return "", "", nil, err
	}
	dir, err := os.MkdirTemp("", "cci-bench-netperf-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	prog = filepath.Join(dir, "netperf")
	b.logf("network: building the netperf program from %s", root)
	if err := testimage.BuildNetperfProgram(ctx, root, prog); err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("the network bench builds its measuring program with the Go toolchain: %w", err)
	}
	if img, err = testimage.PushNetperf(ctx, b.c.Registry, "", prog); err != nil {
		cleanup()
		return "", "", nil, err
	}
	return prog, img, cleanup, nil
}

// sourceTree finds the CCI source tree: dir when given, else the working
// folder or the executable's folder or one above them.
func sourceTree(dir string) (string, error) {
	isCCI := func(d string) bool {
		raw, err := os.ReadFile(filepath.Join(d, "go.mod"))
		return err == nil && bytes.HasPrefix(raw, []byte("module github.com/cci-project/cci\n"))
	}
	if dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", err
		}
		if !isCCI(abs) {
			return "", fmt.Errorf("--source %q is not the CCI source tree (no go.mod of github.com/cci-project/cci there)", dir)
		}
		return abs, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, d := range starts {
		for {
			if isCCI(d) {
				return d, nil
			}
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return "", errors.New("the network and storage benches build their measuring programs (internal/testimage/netperf, internal/testimage/diskperf) from the CCI source tree: run them from the repository, or pass --source DIR")
}

// netPod runs a netperf pod on node and waits until it runs; it returns
// the pod's IP.
func (b *bench) netPod(ctx context.Context, name, node, img, script string, restart v1.RestartPolicy) (string, error) {
	pod := b.pod(name, podOpts{Image: img, Script: script, RuntimeClass: b.cfg.RuntimeClass, Restart: restart})
	pod.Spec.NodeName = node
	if _, err := b.kube.CoreV1().Pods(b.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create pod %s on %s: %w", name, node, err)
	}
	var last *v1.Pod
	deadline := time.Now().Add(b.cfg.PodTimeout)
	for time.Now().Before(deadline) {
		p, err := b.kube.CoreV1().Pods(b.ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			switch p.Status.Phase {
			case v1.PodRunning, v1.PodSucceeded:
				if p.Status.PodIP != "" {
					if err := b.verifyRuntime(ctx, p.UID); err != nil {
						return "", err
					}
					return p.Status.PodIP, nil
				}
			case v1.PodFailed:
				return "", fmt.Errorf("pod %s on %s failed: %s", name, node, podProblem(p))
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("pod %s did not run on %s in %s: %s", name, node, b.cfg.PodTimeout, podProblem(last))
}

// podPath runs a client pod on node against the server at ip and reads
// its result from the pod's log.
func (b *bench) podPath(ctx context.Context, name, node, img, ip string, args []string) (*netperf.Result, error) {
	// The client waits a moment after it starts, so that the agent's own
	// work for the new pod (status updates) is done before it measures.
	script := "sleep 2; exec netperf run -addr " + net.JoinHostPort(ip, strconv.Itoa(netperfPort)) + " " + strings.Join(args, " ")
	if _, err := b.netPod(ctx, name, node, img, script, v1.RestartPolicyNever); err != nil {
		return nil, err
	}
	timeout := b.cfg.PodTimeout + time.Duration(b.cfg.NetStreams)*b.cfg.NetStreamFor + time.Minute
	deadline := time.Now().Add(timeout)
	for {
		p, err := b.kube.CoreV1().Pods(b.ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed) {
			raw, lerr := b.kube.CoreV1().Pods(b.ns).GetLogs(name, &v1.PodLogOptions{Container: "c"}).DoRaw(ctx)
			if lerr != nil {
				return nil, fmt.Errorf("logs of pod %s: %w", name, lerr)
			}
			if p.Status.Phase == v1.PodFailed {
				return nil, fmt.Errorf("client pod %s failed: %s", name, truncate(strings.TrimSpace(string(raw)), 500))
			}
			return netperf.Parse(string(raw))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("client pod %s did not finish in %s: %s", name, timeout, podProblem(p))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hostPath measures from host from's namespace to a server in host to's,
// listening on addr there: the same program as in the pods, with no pod
// network in the way.
func hostPath(ctx context.Context, prog string, from, to hostns.Host, addr string, args []string) (*netperf.Result, error) {
	srv := exec.CommandContext(ctx, "nsenter", "--net="+to.Netns, "--", prog, "serve", "-addr", net.JoinHostPort(addr, "0"))
	out, err := srv.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var errBuf bytes.Buffer
	srv.Stderr = &errBuf
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start netperf in %s (nsenter from util-linux): %w", to.Netns, err)
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	}()
	first, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("netperf server in %s: %w: %s", to.Netns, err, bytes.TrimSpace(errBuf.Bytes()))
	}
	listen, ok := strings.CutPrefix(strings.TrimSpace(first), "listening ")
	if !ok {
		return nil, fmt.Errorf("netperf server in %s said %q", to.Netns, first)
	}
	cli := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + from.Netns, "--", prog, "run", "-addr", listen}, args...)...)
	raw, err := cli.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("netperf client in %s: %w: %s", from.Netns, err, bytes.TrimSpace(raw))
	}
	return netperf.Parse(string(raw))
}

// reportNetwork turns the measured paths (floor, pods, floor, pods) into
// results with their ratios.
func (b *bench) reportNetwork(paths []netPath, h1, h2 string) {
	titles := []string{
		"floor: loopback inside " + h1 + "'s network namespace",
		"pod → pod, same host (" + h1 + ")",
		"floor: " + h1 + " → " + h2 + " over the hosts' veths and bridge, no overlay",
		"pod → pod, across hosts (" + h1 + " → " + h2 + ", VXLAN overlay)",
	}
	var results []*Result
	for i, p := range paths {
		r := &Result{Name: "network/" + titles[i]}
		var floor *netperf.Result
		if i%2 == 1 {
			// Pods against the floor measured just before them.
			floor = paths[i-1].res
		}
		netFigures(r, p.res, floor)
		results = append(results, r)
	}
	b.rep.Results = append(b.rep.Results, results...)
	if len(paths) < 4 {
		return
	}
	same, cross, veth := paths[1].res, paths[3].res, paths[2].res
	sum := &Result{Name: "network/ratios (" + runtimeName(b.cfg.RuntimeClass) + ")"}
	var verdict []string
	for _, size := range netSizes {
		s, c := summarize(usToMs(same.PingsOf(size))), summarize(usToMs(cross.PingsOf(size)))
		v := summarize(usToMs(veth.PingsOf(size)))
		r := ratio(c.P50, s.P50)
		sum.figure(fmt.Sprintf("RTT p50 %d B: across hosts ÷ same host", size), r, "×", "")
		sum.figure(fmt.Sprintf("RTT p50 %d B: across hosts ÷ host veths", size), ratio(c.P50, v.P50), "×", "")
		verdict = append(verdict, fmt.Sprintf("RTT %d B %.2f× %s", size, r, metMissed(r <= 1.5)))
	}
	tr := ratio(same.MedianGbps(), cross.MedianGbps())
	sum.figure("throughput: same host ÷ across hosts", tr, "×", "")
	sum.figure("throughput: host veths ÷ across hosts", ratio(veth.MedianGbps(), cross.MedianGbps()), "×", "")
	verdict = append(verdict, fmt.Sprintf("throughput %.2f× %s", tr, metMissed(tr <= 1.5)))
	sum.note("target, across hosts within 1.5× of same host: %s", strings.Join(verdict, "; "))
	b.rep.Results = append(b.rep.Results, sum)
}

// netFigures records one path: its round trips (with the ratio to the
// floor's) and its throughput.
func netFigures(r *Result, res, floor *netperf.Result) {
	for _, size := range netSizes {
		var fs *Summary
		if floor != nil {
			s := summarize(usToMs(floor.PingsOf(size)))
			fs = &s
		}
		r.latency(fmt.Sprintf("RTT %d B", size), usToMs(res.PingsOf(size)), fs)
	}
	gbps := res.MedianGbps()
	note := ""
	if floor != nil {
		note = fmt.Sprintf("%.2f× the floor's %.2f Gbit/s", ratio(gbps, floor.MedianGbps()), floor.MedianGbps())
	}
	r.figure(fmt.Sprintf("TCP throughput, one stream (median of %d)", len(res.Streams)), gbps, "Gbit/s", note)
	var each []string
	for _, s := range res.Streams {
		each = append(each, fmt.Sprintf("%.2f", s.Gbps()))
	}
	if len(each) > 1 {
		r.note("each stream: %s Gbit/s", strings.Join(each, ", "))
	}
}

func usToMs(us []float64) []float64 {
	out := make([]float64, len(us))
	for i, v := range us {
		out[i] = v / 1000
	}
	return out
}

func metMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}
