package connect

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/cci-project/cci/internal/runtime"
)

// The kubelet API of the virtual node: each call is the same call on B's
// API for the pod's copy (pods/log, pods/exec, pods/attach,
// pods/portforward, the metrics API).

// copyFor is the namespace and name in B of the copy of A's running pod
// ns/name.
func (p *provider) copyFor(ns, name string) (string, string, error) {
	b, ok := p.copyOf(ns, name)
	if !ok {
		return "", "", errdefs.NotFoundf("pod %s/%s has no copy in %s (not started yet, or refused)", ns, name, p.nsFor(ns))
	}
	return b.Namespace, b.Name, nil
}

// GetContainerLogs implements nodeutil.Provider.
func (p *provider) GetContainerLogs(ctx context.Context, ns, name, container string, o api.ContainerLogOpts) (io.ReadCloser, error) {
	bNS, copyName, err := p.copyFor(ns, name)
	if err != nil {
		return nil, err
	}
	opts := &v1.PodLogOptions{Container: container, Follow: o.Follow, Previous: o.Previous, Timestamps: o.Timestamps}
	if o.Tail > 0 {
		t := int64(o.Tail)
		opts.TailLines = &t
	}
	if o.LimitBytes > 0 {
		l := int64(o.LimitBytes)
		opts.LimitBytes = &l
	}
	if o.SinceSeconds > 0 {
		s := int64(o.SinceSeconds)
		opts.SinceSeconds = &s
	}
	if !o.SinceTime.IsZero() {
		t := metav1.NewTime(o.SinceTime)
		opts.SinceTime = &t
	}
	return p.c.b.CoreV1().Pods(bNS).GetLogs(copyName, opts).Stream(ctx)
}

// RunInContainer implements nodeutil.Provider.
func (p *provider) RunInContainer(ctx context.Context, ns, name, container string, cmd []string, attach api.AttachIO) error {
	bNS, copyName, err := p.copyFor(ns, name)
	if err != nil {
		return err
	}
	req := p.c.b.CoreV1().RESTClient().Post().Resource("pods").Namespace(bNS).Name(copyName).SubResource("exec").
		VersionedParams(&v1.PodExecOptions{
			Container: container, Command: cmd,
			Stdin: attach.Stdin() != nil, Stdout: attach.Stdout() != nil, Stderr: attach.Stderr() != nil && !attach.TTY(), TTY: attach.TTY(),
		}, scheme.ParameterCodec)
	return p.stream(ctx, req.URL(), attach)
}

// AttachToContainer implements nodeutil.Provider.
func (p *provider) AttachToContainer(ctx context.Context, ns, name, container string, attach api.AttachIO) error {
	bNS, copyName, err := p.copyFor(ns, name)
	if err != nil {
		return err
	}
	req := p.c.b.CoreV1().RESTClient().Post().Resource("pods").Namespace(bNS).Name(copyName).SubResource("attach").
		VersionedParams(&v1.PodAttachOptions{
			Container: container,
			Stdin:     attach.Stdin() != nil, Stdout: attach.Stdout() != nil, Stderr: attach.Stderr() != nil && !attach.TTY(), TTY: attach.TTY(),
		}, scheme.ParameterCodec)
	return p.stream(ctx, req.URL(), attach)
}

// stream runs an exec or attach on B, its streams joined to the client's.
func (p *provider) stream(ctx context.Context, url *url.URL, attach api.AttachIO) error {
	exec, err := remotecommand.NewSPDYExecutor(p.c.bREST, "POST", url)
	if err != nil {
		return err
	}
	opts := remotecommand.StreamOptions{Tty: attach.TTY()}
	if in := attach.Stdin(); in != nil {
		opts.Stdin = in
	}
	if out := attach.Stdout(); out != nil {
		opts.Stdout = out
	}
	if e := attach.Stderr(); e != nil && !attach.TTY() {
		opts.Stderr = e
	}
	if attach.TTY() {
		opts.TerminalSizeQueue = sizeQueue{ctx: ctx, c: attach.Resize()}
	}
	return exec.StreamWithContext(ctx, opts)
}

type sizeQueue struct {
	ctx context.Context
	c   <-chan api.TermSize
}

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	select {
	case <-q.ctx.Done():
		return nil
	case s, ok := <-q.c:
		if !ok {
			return nil
		}
		return &remotecommand.TerminalSize{Width: s.Width, Height: s.Height}
	}
}

// PortForward implements nodeutil.Provider: one connection of the client
// is one stream pair of a port-forward session on B.
func (p *provider) PortForward(ctx context.Context, ns, name string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	bNS, copyName, err := p.copyFor(ns, name)
	if err != nil {
		return err
	}
	pfURL := p.c.b.CoreV1().RESTClient().Post().Resource("pods").Namespace(bNS).Name(copyName).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(p.c.bREST)
	if err != nil {
		return err
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", pfURL)
	conn, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		return fmt.Errorf("port-forward to %s/%s in %s: %w", bNS, copyName, p.c.cfg.NodeName, err)
	}
	defer conn.Close()
	headers := http.Header{}
	headers.Set(v1.StreamType, v1.StreamTypeError)
	headers.Set(v1.PortHeader, strconv.Itoa(int(port)))
	headers.Set(v1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(headers)
	if err != nil {
		return err
	}
	_ = errStream.Close() // nothing is sent on it
	headers.Set(v1.StreamType, v1.StreamTypeData)
	data, err := conn.CreateStream(headers)
	if err != nil {
		return err
	}
	remoteErr := make(chan error, 1)
	go func() {
		msg, err := io.ReadAll(errStream)
		switch {
		case err != nil:
			remoteErr <- err
		case len(msg) > 0:
			remoteErr <- fmt.Errorf("port-forward to port %d of %s/%s: %s", port, ns, name, msg)
		default:
			remoteErr <- nil
		}
	}()
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(stream, data)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(data, stream)
		_ = data.Close() // half-close: the pod sees the end of input
		done <- struct{}{}
	}()
	select {
	case <-ctx.Done():
	case <-done:
	case err := <-remoteErr:
		if err != nil {
			return err
		}
		<-done
	}
	conn.RemoveStreams(data, errStream)
	return nil
}

// usage integrates the CPU rates of B's metrics API into the cumulative
// counters a kubelet reports (metrics-server takes rates back out of them).
type usage struct {
	mu  sync.Mutex
	cpu map[string]float64   // container key → core-seconds
	at  map[string]time.Time // when cpu was last advanced
}

func (u *usage) advance(key string, cores float64, now time.Time, window time.Duration) float64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	last, ok := u.at[key]
	if !ok {
		// The first sample counts the metric's own window.
		last = now.Add(-window)
	}
	u.cpu[key] += cores * now.Sub(last).Seconds()
	u.at[key] = now
	// Containers not seen for a while are gone (or restarted: their key
	// names the run's start).
	for k, at := range u.at {
		if now.Sub(at) > 10*time.Minute {
			delete(u.at, k)
			delete(u.cpu, k)
		}
	}
	return u.cpu[key]
}

// GetStatsSummary implements nodeutil.Provider from B's metrics API.
func (p *provider) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	list, err := p.c.metrics.MetricsV1beta1().PodMetricses(p.c.bNS).List(ctx, metav1.ListOptions{LabelSelector: p.c.copySelector().String()})
	if err != nil {
		return nil, fmt.Errorf("read the usage of the pods' copies from the metrics API of %s: %w", p.c.cfg.NodeName, err)
	}
	now := time.Now()
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.c.cfg.NodeName}}
	var nodeCPU float64
	var nodeMem uint64
	for _, m := range list.Items {
		b, ok := p.bPodByName(m.Namespace, m.Name)
		if !ok {
			continue
		}
		a := p.asA(b)
		ps := statsv1alpha1.PodStats{PodRef: statsv1alpha1.PodReference{Name: a.Name, Namespace: a.Namespace, UID: string(a.UID)}}
		if a.Status.StartTime != nil {
			ps.StartTime = *a.Status.StartTime
		}
		started := map[string]metav1.Time{}
		for _, cs := range b.Status.ContainerStatuses {
			if cs.State.Running != nil {
				started[cs.Name] = cs.State.Running.StartedAt
			}
		}
		var podCPU float64
		var podMem uint64
		for _, c := range m.Containers {
			cores := float64(c.Usage.Cpu().MilliValue()) / 1000
			cum := p.c.usage.advance(a.Namespace+"/"+a.Name+"/"+c.Name+"/"+started[c.Name].String(), cores, now, m.Window.Duration)
			nanos := uint64(cum * 1e9)
			rate := uint64(cores * 1e9)
			mem := uint64(c.Usage.Memory().Value())
			t := metav1.NewTime(now)
			ps.Containers = append(ps.Containers, statsv1alpha1.ContainerStats{
				Name: c.Name, StartTime: started[c.Name],
				CPU:    &statsv1alpha1.CPUStats{Time: t, UsageNanoCores: &rate, UsageCoreNanoSeconds: &nanos},
				Memory: &statsv1alpha1.MemoryStats{Time: t, WorkingSetBytes: &mem, UsageBytes: &mem},
			})
			podCPU += cum
			podMem += mem
		}
		t := metav1.NewTime(now)
		pn := uint64(podCPU * 1e9)
		ps.CPU = &statsv1alpha1.CPUStats{Time: t, UsageCoreNanoSeconds: &pn}
		ps.Memory = &statsv1alpha1.MemoryStats{Time: t, WorkingSetBytes: &podMem}
		s.Pods = append(s.Pods, ps)
		nodeCPU += podCPU
		nodeMem += podMem
	}
	t := metav1.NewTime(now)
	nn := uint64(nodeCPU * 1e9)
	s.Node.CPU = &statsv1alpha1.CPUStats{Time: t, UsageCoreNanoSeconds: &nn}
	s.Node.Memory = &statsv1alpha1.MemoryStats{Time: t, WorkingSetBytes: &nodeMem}
	s.Node.StartTime = metav1.NewTime(p.c.started)
	return s, nil
}

// GetMetricsResource implements nodeutil.Provider: the summary as the
// kubelet's /metrics/resource, which metrics-server scrapes.
func (p *provider) GetMetricsResource(ctx context.Context) ([]*dto.MetricFamily, error) {
	s, err := p.GetStatsSummary(ctx)
	scrapeErr := 0.0
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		p.c.log.Warn("read the pods' resource usage", "err", err)
		s, scrapeErr = &statsv1alpha1.Summary{}, 1
	}
	return runtime.ResourceMetrics(s, scrapeErr), nil
}

func (p *provider) bPodByName(ns, name string) (*v1.Pod, bool) {
	b, err := p.bPods.Pods(ns).Get(name)
	return b, err == nil
}
