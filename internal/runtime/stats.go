package runtime

import (
	"context"
	"errors"
	"os"
	"path"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/ptr"
)

// minRateWindow is the shortest interval over which a CPU rate
// (usageNanoCores) is computed; reads closer together keep the last rate.
const minRateWindow = time.Second

// podCgroups says where a pod's usage is accounted.
type podCgroups struct {
	// sandbox is the cgroup that holds the whole pod when its containers
	// share one (a gVisor sandbox); "" when each container has its own.
	sandbox string
	// containers are the pod's running containers; cgroup is "" for one
	// accounted only in sandbox.
	containers []ctrCgroup
}

type ctrCgroup struct {
	name    string
	cgroup  string
	started metav1.Time
}

// containerCgroup is the cgroup containerd's default spec gives a runc
// container (linux.cgroupsPath "/<namespace>/<id>").
func (r *Runtime) containerCgroup(id string) string {
	return path.Join("/", r.cfg.Namespace, id)
}

// cgroups lists where the pod's running containers are accounted. A runtime
// class whose containers share one cgroup sets sandbox and leaves the
// containers' own cgroups empty: the pod's figures are then the sandbox's,
// split evenly between the containers (the pod totals that `kubectl top`
// and the HPA use stay exact).
func (w *podWorker) cgroups() (*v1.Pod, *metav1.Time, podCgroups) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var cg podCgroups
	// A gvisor pod is accounted in its sandbox's cgroup as a whole.
	gvisor := w.rec.Handler == handlerGVisor && w.rec.Sandbox != nil && w.rec.Sandbox.Live
	if gvisor {
		cg.sandbox = w.rec.Sandbox.CgroupsPath
	}
	for _, cr := range w.rec.Containers {
		if cr.State.Running == nil {
			continue
		}
		c := ctrCgroup{name: cr.Name, cgroup: w.r.containerCgroup(cr.ID), started: cr.State.Running.StartedAt}
		if gvisor {
			c.cgroup = ""
		}
		cg.containers = append(cg.containers, c)
	}
	return w.rec.Pod, w.rec.StartTime, cg
}

// usageTracker turns cumulative CPU readings into rates. It is safe for
// concurrent use.
type usageTracker struct {
	mu   sync.Mutex
	last map[string]cpuSample // by cgroup path, or a pod key for summed pods
}

type cpuSample struct {
	at       time.Time
	nanos    uint64
	rate     uint64 // nano-cores over the window that ended at `at`
	hasRate  bool
	lastSeen time.Time
}

func newUsageTracker() *usageTracker {
	return &usageTracker{last: map[string]cpuSample{}}
}

// rate records a cumulative reading under key and returns the CPU rate in
// nano-cores since an earlier reading, if one is known.
func (t *usageTracker) rate(key string, at time.Time, nanos uint64) *uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.last[key]
	switch {
	case !ok || nanos < s.nanos:
		// First reading, or a new cgroup under the same path (a restart).
		s = cpuSample{at: at, nanos: nanos}
	case at.Sub(s.at) >= minRateWindow:
		s.rate = uint64(float64(nanos-s.nanos) / at.Sub(s.at).Seconds())
		s.hasRate = true
		s.at, s.nanos = at, nanos
	}
	s.lastSeen = at
	t.last[key] = s
	if !s.hasRate {
		return nil
	}
	return ptr.To(s.rate)
}

// forget drops the samples not seen since before.
func (t *usageTracker) forget(before time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, s := range t.last {
		if s.lastSeen.Before(before) {
			delete(t.last, k)
		}
	}
}

func (t *usageTracker) cpuStats(key string, u Usage) *statsv1alpha1.CPUStats {
	return &statsv1alpha1.CPUStats{
		Time:                 metav1.NewTime(u.Time),
		UsageCoreNanoSeconds: ptr.To(u.CPUNanos),
		UsageNanoCores:       t.rate(key, u.Time, u.CPUNanos),
	}
}

func memoryStats(u Usage, capacity uint64) *statsv1alpha1.MemoryStats {
	m := &statsv1alpha1.MemoryStats{
		Time:            metav1.NewTime(u.Time),
		UsageBytes:      ptr.To(u.MemoryUsage),
		WorkingSetBytes: ptr.To(u.WorkingSet),
		RSSBytes:        ptr.To(u.RSS),
		PageFaults:      ptr.To(u.PageFaults),
		MajorPageFaults: ptr.To(u.MajorPageFaults),
	}
	if capacity > 0 {
		avail := uint64(0)
		if capacity > u.WorkingSet {
			avail = capacity - u.WorkingSet
		}
		m.AvailableBytes = ptr.To(avail)
	}
	return m
}

// GetStatsSummary reports CPU and memory of the node, of every pod with a
// running container, and of those containers, as the kubelet's
// /stats/summary does.
func (r *Runtime) GetStatsSummary(ctx context.Context) (*statsv1alpha1.Summary, error) {
	begin := timeNow()
	s := &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{
		NodeName:  r.cfg.NodeName,
		StartTime: metav1.NewTime(bootTime()),
	}}
	// Without the host's figures the pods' are still worth reporting.
	if node, err := r.cfg.Cgroups.Read("/"); err == nil {
		s.Node.CPU = r.usage.cpuStats("/", node)
		s.Node.Memory = memoryStats(node, memTotal())
	} else {
		r.cfg.Log.Warn("read host resource usage", "err", err)
	}

	r.mu.Lock()
	ws := make([]*podWorker, 0, len(r.pods))
	for _, w := range r.pods {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	for _, w := range ws {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if ps := r.podStats(w); ps != nil {
			s.Pods = append(s.Pods, *ps)
		}
	}
	sort.Slice(s.Pods, func(i, j int) bool {
		a, b := s.Pods[i].PodRef, s.Pods[j].PodRef
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	// Samples of cgroups gone for a minute are of no more use.
	r.usage.forget(begin.Add(-time.Minute))
	return s, nil
}

// podStats reads one pod's usage; nil when no container of it runs.
func (r *Runtime) podStats(w *podWorker) *statsv1alpha1.PodStats {
	pod, start, cg := w.cgroups()
	return r.usageOf(pod, start, cg)
}

// usageOf reads the usage of a pod whose running containers are accounted
// as cg says; nil when none of them can be read.
func (r *Runtime) usageOf(pod *v1.Pod, start *metav1.Time, cg podCgroups) *statsv1alpha1.PodStats {
	if len(cg.containers) == 0 {
		return nil
	}
	ps := &statsv1alpha1.PodStats{
		PodRef: statsv1alpha1.PodReference{Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID)},
	}
	if start != nil {
		ps.StartTime = *start
	}
	podKey := "pod/" + string(pod.UID)
	var total Usage
	var shared []ctrCgroup
	for _, c := range cg.containers {
		if c.cgroup == "" {
			shared = append(shared, c)
			continue
		}
		u, err := r.cfg.Cgroups.Read(c.cgroup)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				r.cfg.Log.Debug("read container usage", "pod", key(pod.Namespace, pod.Name), "container", c.name, "err", err)
			}
			continue
		}
		addUsage(&total, u)
		ps.Containers = append(ps.Containers, containerStats(r.usage, c, c.cgroup, u))
	}
	if cg.sandbox != "" {
		u, err := r.cfg.Cgroups.Read(cg.sandbox)
		if err == nil {
			// The sandbox holds every container, those with cgroups of
			// their own included; the others share what is left.
			rest := subUsage(u, total)
			total = u
			podKey = cg.sandbox
			if n := uint64(len(shared)); n > 0 {
				part := splitUsage(rest, n)
				for _, c := range shared {
					ps.Containers = append(ps.Containers, containerStats(r.usage, c, cg.sandbox+"#"+c.name, part))
				}
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			r.cfg.Log.Debug("read sandbox usage", "pod", key(pod.Namespace, pod.Name), "err", err)
		}
	}
	if len(ps.Containers) == 0 {
		return nil
	}
	ps.CPU = r.usage.cpuStats(podKey, total)
	ps.Memory = memoryStats(total, 0)
	return ps
}

func containerStats(t *usageTracker, c ctrCgroup, key string, u Usage) statsv1alpha1.ContainerStats {
	return statsv1alpha1.ContainerStats{
		Name:      c.name,
		StartTime: c.started,
		CPU:       t.cpuStats(key, u),
		Memory:    memoryStats(u, 0),
	}
}

func addUsage(total *Usage, u Usage) {
	if u.Time.After(total.Time) {
		total.Time = u.Time
	}
	total.CPUNanos += u.CPUNanos
	total.MemoryUsage += u.MemoryUsage
	total.WorkingSet += u.WorkingSet
	total.RSS += u.RSS
	total.PageFaults += u.PageFaults
	total.MajorPageFaults += u.MajorPageFaults
}

// subUsage is u less what b already counts (never below zero).
func subUsage(u, b Usage) Usage {
	sub := func(x, y uint64) uint64 {
		if x > y {
			return x - y
		}
		return 0
	}
	return Usage{
		Time:            u.Time,
		CPUNanos:        sub(u.CPUNanos, b.CPUNanos),
		MemoryUsage:     sub(u.MemoryUsage, b.MemoryUsage),
		WorkingSet:      sub(u.WorkingSet, b.WorkingSet),
		RSS:             sub(u.RSS, b.RSS),
		PageFaults:      sub(u.PageFaults, b.PageFaults),
		MajorPageFaults: sub(u.MajorPageFaults, b.MajorPageFaults),
	}
}

func splitUsage(u Usage, n uint64) Usage {
	return Usage{
		Time:            u.Time,
		CPUNanos:        u.CPUNanos / n,
		MemoryUsage:     u.MemoryUsage / n,
		WorkingSet:      u.WorkingSet / n,
		RSS:             u.RSS / n,
		PageFaults:      u.PageFaults / n,
		MajorPageFaults: u.MajorPageFaults / n,
	}
}

// GetMetricsResource reports the summary's figures as the kubelet's
// /metrics/resource does (what metrics-server scrapes): node, pod and
// container CPU and working set, container start times, with timestamps.
func (r *Runtime) GetMetricsResource(ctx context.Context) ([]*dto.MetricFamily, error) {
	s, err := r.GetStatsSummary(ctx)
	scrapeErr := 0.0
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		r.cfg.Log.Warn("read resource usage", "err", err)
		s, scrapeErr = &statsv1alpha1.Summary{}, 1
	}
	return append(resourceMetrics(s, scrapeErr), r.deviceMetrics(timeNow())...), nil
}

// ResourceMetrics turns a summary into the kubelet's resource metric
// families (scrapeErr 1: the summary could not be read); `cci connect`
// reports the usage of its pods' copies with it.
func ResourceMetrics(s *statsv1alpha1.Summary, scrapeErr float64) []*dto.MetricFamily {
	return resourceMetrics(s, scrapeErr)
}

// resourceMetrics turns a summary into the kubelet's resource metric families.
func resourceMetrics(s *statsv1alpha1.Summary, scrapeErr float64) []*dto.MetricFamily {
	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	family := func(name, help string, t dto.MetricType) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr.To(name), Help: ptr.To(help), Type: t.Enum()}
	}
	var (
		nodeCPU       = family("node_cpu_usage_seconds_total", "Cumulative cpu time consumed by the node in core-seconds", counter)
		nodeMem       = family("node_memory_working_set_bytes", "Current working set of the node in bytes", gauge)
		ctrCPU        = family("container_cpu_usage_seconds_total", "Cumulative cpu time consumed by the container in core-seconds", counter)
		ctrMem        = family("container_memory_working_set_bytes", "Current working set of the container in bytes", gauge)
		ctrStart      = family("container_start_time_seconds", "Start time of the container since unix epoch in seconds", gauge)
		podCPU        = family("pod_cpu_usage_seconds_total", "Cumulative cpu time consumed by the pod in core-seconds", counter)
		podMem        = family("pod_memory_working_set_bytes", "Current working set of the pod in bytes", gauge)
		scrapeError   = family("scrape_error", "1 if there was an error while getting container metrics, 0 otherwise", gauge)
		resourceError = family("resource_scrape_error", "1 if there was an error while getting container metrics, 0 otherwise", gauge)
	)
	add := func(f *dto.MetricFamily, v float64, at time.Time, labels ...string) {
		m := &dto.Metric{}
		for i := 0; i+1 < len(labels); i += 2 {
			m.Label = append(m.Label, &dto.LabelPair{Name: ptr.To(labels[i]), Value: ptr.To(labels[i+1])})
		}
		if f.GetType() == counter {
			m.Counter = &dto.Counter{Value: ptr.To(v)}
		} else {
			m.Gauge = &dto.Gauge{Value: ptr.To(v)}
		}
		if !at.IsZero() {
			m.TimestampMs = ptr.To(at.UnixMilli())
		}
		f.Metric = append(f.Metric, m)
	}
	seconds := func(nanos uint64) float64 { return float64(nanos) / float64(time.Second) }

	if c := s.Node.CPU; c != nil && c.UsageCoreNanoSeconds != nil {
		add(nodeCPU, seconds(*c.UsageCoreNanoSeconds), c.Time.Time)
	}
	if m := s.Node.Memory; m != nil && m.WorkingSetBytes != nil {
		add(nodeMem, float64(*m.WorkingSetBytes), m.Time.Time)
	}
	for _, p := range s.Pods {
		for _, c := range p.Containers {
			labels := []string{"container", c.Name, "namespace", p.PodRef.Namespace, "pod", p.PodRef.Name}
			if !c.StartTime.IsZero() {
				add(ctrStart, float64(c.StartTime.UnixNano())/float64(time.Second), c.StartTime.Time, labels...)
			}
			if c.CPU != nil && c.CPU.UsageCoreNanoSeconds != nil {
				add(ctrCPU, seconds(*c.CPU.UsageCoreNanoSeconds), c.CPU.Time.Time, labels...)
			}
			if c.Memory != nil && c.Memory.WorkingSetBytes != nil {
				add(ctrMem, float64(*c.Memory.WorkingSetBytes), c.Memory.Time.Time, labels...)
			}
		}
		labels := []string{"namespace", p.PodRef.Namespace, "pod", p.PodRef.Name}
		if p.CPU != nil && p.CPU.UsageCoreNanoSeconds != nil {
			add(podCPU, seconds(*p.CPU.UsageCoreNanoSeconds), p.CPU.Time.Time, labels...)
		}
		if p.Memory != nil && p.Memory.WorkingSetBytes != nil {
			add(podMem, float64(*p.Memory.WorkingSetBytes), p.Memory.Time.Time, labels...)
		}
	}
	add(scrapeError, scrapeErr, time.Time{})
	add(resourceError, scrapeErr, time.Time{})

	var out []*dto.MetricFamily
	for _, f := range []*dto.MetricFamily{ctrCPU, ctrMem, ctrStart, nodeCPU, nodeMem, podCPU, podMem, resourceError, scrapeError} {
		if len(f.Metric) > 0 {
			out = append(out, f)
		}
	}
	return out
}

// bootTime is when the host started (the node's start time, as cadvisor
// reports the root cgroup's).
func bootTime() time.Time {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return time.Time{}
	}
	return timeNow().Add(-time.Duration(si.Uptime) * time.Second).Truncate(time.Second)
}

// memTotal is the host's memory in bytes.
func memTotal() uint64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
