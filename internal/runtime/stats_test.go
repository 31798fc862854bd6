package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/ptr"
)

var t0 = time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)

func TestCgroupFSRead(t *testing.T) {
	clock := func() time.Time { return t0 }
	tests := []struct {
		name    string
		fs      CgroupFS
		path    string
		want    Usage
		missing bool
	}{
		{
			name: "v1 container",
			fs:   CgroupFS{Root: "testdata/cgroup/v1"},
			path: "/cci/c1",
			want: Usage{CPUNanos: 1500000, MemoryUsage: 10485760, WorkingSet: 10485760 - 2097152, RSS: 6291456, PageFaults: 120, MajorPageFaults: 1},
		},
		{
			name: "v1 with cpu and cpuacct co-mounted",
			fs:   CgroupFS{Root: "testdata/cgroup/v1-combined"},
			path: "cci/c1",
			want: Usage{CPUNanos: 1500000, MemoryUsage: 10485760, WorkingSet: 10485760 - 2097152, RSS: 6291456, PageFaults: 120, MajorPageFaults: 1},
		},
		{
			name: "v1 host",
			fs:   CgroupFS{Root: "testdata/cgroup/v1"},
			path: "/",
			want: Usage{CPUNanos: 5000000000, MemoryUsage: 8000000000, WorkingSet: 7000000000, RSS: 2000000000, PageFaults: 900, MajorPageFaults: 9},
		},
		{
			name:    "v1 container gone",
			fs:      CgroupFS{Root: "testdata/cgroup/v1"},
			path:    "/cci/gone",
			missing: true,
		},
		{
			name: "v2 container",
			fs:   CgroupFS{Root: "testdata/cgroup/v2"},
			path: "/cci/c1",
			want: Usage{CPUNanos: 2500000, MemoryUsage: 20971520, WorkingSet: 20971520 - 4194304, RSS: 8388608, PageFaults: 300, MajorPageFaults: 3},
		},
		{
			name: "v2 host from meminfo",
			fs:   CgroupFS{Root: "testdata/cgroup/v2", ProcRoot: "testdata/cgroup/v2proc"},
			path: "/",
			want: Usage{CPUNanos: 7000000000, MemoryUsage: 12000000 * 1024, WorkingSet: 9000000 * 1024, RSS: 2000000 * 1024},
		},
		{
			name:    "v2 container gone",
			fs:      CgroupFS{Root: "testdata/cgroup/v2"},
			path:    "/cci/gone",
			missing: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fs.now = clock
			got, err := tt.fs.Read(tt.path)
			if tt.missing {
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("Read(%q) = %+v, %v; want an error wrapping os.ErrNotExist", tt.path, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Time = t0
			if got != tt.want {
				t.Errorf("Read(%q) =\n %+v\nwant\n %+v", tt.path, got, tt.want)
			}
		})
	}
}

func TestUsageTrackerRate(t *testing.T) {
	tr := newUsageTracker()
	steps := []struct {
		at    time.Duration
		nanos uint64
		want  *uint64
	}{
		{0, 1e9, nil}, // first reading: no rate yet
		{2 * time.Second, 2e9, ptr.To[uint64](5e8)},         // 1 s of CPU in 2 s: half a core
		{2500 * time.Millisecond, 3e9, ptr.To[uint64](5e8)}, // too soon: the last rate stays
		{4 * time.Second, 4e9, ptr.To[uint64](1e9)},         // 2 s in 2 s: one core
		{5 * time.Second, 1e6, nil},                         // counter went back: a new cgroup
	}
	for i, s := range steps {
		got := tr.rate("c", t0.Add(s.at), s.nanos)
		if (got == nil) != (s.want == nil) || got != nil && *got != *s.want {
			t.Errorf("step %d: rate = %v, want %v", i, deref(got), deref(s.want))
		}
	}
	tr.forget(t0.Add(10 * time.Second))
	if len(tr.last) != 0 {
		t.Errorf("forget left %d samples", len(tr.last))
	}
}

func deref(p *uint64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// fakeCgroups is a CgroupReader over fixed figures; a path it lacks is gone.
type fakeCgroups struct {
	mu     sync.Mutex
	usages map[string]Usage
}

func (f *fakeCgroups) Read(path string) (Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.usages[path]
	if !ok {
		return Usage{}, fmt.Errorf("read cgroup %q: %w", path, os.ErrNotExist)
	}
	return u, nil
}

func TestUsageOf(t *testing.T) {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1"}}
	started := metav1.NewTime(t0.Add(-time.Minute))
	u := func(cpu, ws uint64) Usage { return Usage{Time: t0, CPUNanos: cpu, MemoryUsage: ws, WorkingSet: ws} }
	type ctr struct {
		name     string
		cpu, mem uint64
	}
	tests := []struct {
		name   string
		cg     podCgroups
		usages map[string]Usage
		want   []ctr // containers, then the pod as the last entry (name "")
	}{
		{
			name:   "a cgroup per container: the pod is their sum",
			cg:     podCgroups{containers: []ctrCgroup{{name: "a", cgroup: "/cci/a"}, {name: "b", cgroup: "/cci/b"}}},
			usages: map[string]Usage{"/cci/a": u(100, 10), "/cci/b": u(300, 30)},
			want:   []ctr{{"a", 100, 10}, {"b", 300, 30}, {"", 400, 40}},
		},
		{
			name:   "a container that just exited is left out",
			cg:     podCgroups{containers: []ctrCgroup{{name: "a", cgroup: "/cci/a"}, {name: "b", cgroup: "/cci/b"}}},
			usages: map[string]Usage{"/cci/a": u(100, 10)},
			want:   []ctr{{"a", 100, 10}, {"", 100, 10}},
		},
		{
			name:   "one sandbox cgroup: the pod is the sandbox, split between its containers",
			cg:     podCgroups{sandbox: "/cci/sandbox-u1", containers: []ctrCgroup{{name: "a"}, {name: "b"}}},
			usages: map[string]Usage{"/cci/sandbox-u1": u(1000, 100)},
			want:   []ctr{{"a", 500, 50}, {"b", 500, 50}, {"", 1000, 100}},
		},
		{
			name:   "a sandbox holding a container with its own cgroup: the others share the rest",
			cg:     podCgroups{sandbox: "/cci/sandbox-u1", containers: []ctrCgroup{{name: "a", cgroup: "/cci/a"}, {name: "b"}, {name: "c"}}},
			usages: map[string]Usage{"/cci/sandbox-u1": u(1000, 100), "/cci/a": u(200, 20)},
			want:   []ctr{{"a", 200, 20}, {"b", 400, 40}, {"c", 400, 40}, {"", 1000, 100}},
		},
		{
			name:   "nothing readable: no stats",
			cg:     podCgroups{containers: []ctrCgroup{{name: "a", cgroup: "/cci/a"}}},
			usages: map[string]Usage{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runtime{
				cfg:   Config{Cgroups: &fakeCgroups{usages: tt.usages}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))},
				usage: newUsageTracker(),
			}
			for i := range tt.cg.containers {
				tt.cg.containers[i].started = started
			}
			ps := r.usageOf(pod, &started, tt.cg)
			if tt.want == nil {
				if ps != nil {
					t.Fatalf("usageOf = %+v, want nil", ps)
				}
				return
			}
			if ps == nil {
				t.Fatal("usageOf = nil")
			}
			var got []ctr
			for _, c := range ps.Containers {
				if !c.StartTime.Equal(&started) {
					t.Errorf("container %s start %v, want %v", c.Name, c.StartTime, started)
				}
				got = append(got, ctr{c.Name, *c.CPU.UsageCoreNanoSeconds, *c.Memory.WorkingSetBytes})
			}
			got = append(got, ctr{"", *ps.CPU.UsageCoreNanoSeconds, *ps.Memory.WorkingSetBytes})
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("usage = %v, want %v", got, tt.want)
			}
			if ps.PodRef != (statsv1alpha1.PodReference{Namespace: "ns", Name: "p", UID: "u1"}) {
				t.Errorf("pod ref %+v", ps.PodRef)
			}
		})
	}
}

func TestResourceMetrics(t *testing.T) {
	at := metav1.NewTime(t0)
	cpu := func(n uint64) *statsv1alpha1.CPUStats {
		return &statsv1alpha1.CPUStats{Time: at, UsageCoreNanoSeconds: ptr.To(n)}
	}
	mem := func(n uint64) *statsv1alpha1.MemoryStats {
		return &statsv1alpha1.MemoryStats{Time: at, WorkingSetBytes: ptr.To(n)}
	}
	s := &statsv1alpha1.Summary{
		Node: statsv1alpha1.NodeStats{NodeName: "n1", CPU: cpu(5e9), Memory: mem(1 << 30)},
		Pods: []statsv1alpha1.PodStats{{
			PodRef: statsv1alpha1.PodReference{Namespace: "ns", Name: "p"},
			CPU:    cpu(15e8), Memory: mem(2 << 20),
			Containers: []statsv1alpha1.ContainerStats{{
				Name: "c", StartTime: metav1.NewTime(t0.Add(-time.Minute)), CPU: cpu(15e8), Memory: mem(2 << 20),
			}},
		}},
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range resourceMetrics(s, 0) {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	ms := fmt.Sprint(t0.UnixMilli())
	for _, want := range []string{
		"# TYPE node_cpu_usage_seconds_total counter",
		"node_cpu_usage_seconds_total 5 " + ms,
		"node_memory_working_set_bytes 1.073741824e+09 " + ms,
		`container_cpu_usage_seconds_total{container="c",namespace="ns",pod="p"} 1.5 ` + ms,
		`container_memory_working_set_bytes{container="c",namespace="ns",pod="p"} 2.097152e+06 ` + ms,
		`container_start_time_seconds{container="c",namespace="ns",pod="p"} 1.79557554e+09 `,
		`pod_cpu_usage_seconds_total{namespace="ns",pod="p"} 1.5 ` + ms,
		`pod_memory_working_set_bytes{namespace="ns",pod="p"} 2.097152e+06 ` + ms,
		"scrape_error 0\n",
		"resource_scrape_error 0\n",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, buf.String())
		}
	}
}
