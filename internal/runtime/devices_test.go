package runtime

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/cci-project/cci/internal/device"
)

func fakeDevices(t *testing.T, dir string, n int) *device.Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fake device nodes are made with mknod, which needs root")
	}
	m, err := device.New(context.Background(), device.Config{Backend: &device.Fake{Count: n, Dir: filepath.Join(dir, "devices")}, SpecDir: filepath.Join(dir, "cdi"), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func gpuPod(uid types.UID, containers map[string]int64) *v1.Pod {
	p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: string(uid), UID: uid}}
	names := make([]string, 0, len(containers))
	for name := range containers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		c := v1.Container{Name: name}
		if n := containers[name]; n > 0 {
			c.Resources.Limits = v1.ResourceList{device.NVIDIAGPU: *resource.NewQuantity(n, resource.DecimalSI)}
		}
		p.Spec.Containers = append(p.Spec.Containers, c)
	}
	return p
}

// A new agent reads the pod records of the last one and hands each pod
// whose sandbox still stands its recorded devices, before it admits any
// new pod: they are not given to another. A released pod's are free.
func TestDevicesReadoptedFromRecords(t *testing.T) {
	dir := t.TempDir()
	first := fakeDevices(t, dir, 3)
	running := gpuPod("running", map[string]int64{"main": 2})
	done := gpuPod("done", map[string]int64{"main": 1})
	r := &Runtime{pods: map[string]*podWorker{}, cfg: Config{StateDir: filepath.Join(dir, "state"), Devices: first, Log: slog.New(slog.DiscardHandler)}}
	for _, tc := range []struct {
		pod      *v1.Pod
		released bool
	}{{running, false}, {done, true}} {
		devs, ok, reason, msg := r.allocateDevices(tc.pod)
		if !ok {
			t.Fatalf("allocate for %s: %s %s", tc.pod.Name, reason, msg)
		}
		rec := newRecord(tc.pod)
		rec.Devices, rec.Released = devs, tc.released
		newWorker(r, rec, false).persist()
	}
	if got := device.IDs(first.Held("running")); got != "GPU-fake-0000,GPU-fake-0001" {
		t.Fatalf("first agent gave the running pod %q", got)
	}

	// The agent restarts: a new manager, which knows of no allocation.
	second := fakeDevices(t, dir, 3)
	r2 := &Runtime{pods: map[string]*podWorker{}, cfg: Config{StateDir: r.cfg.StateDir, Devices: second, Log: slog.New(slog.DiscardHandler)}}
	if err := r2.recover(); err != nil {
		t.Fatal(err)
	}
	if got := device.IDs(second.Held("running")); got != "GPU-fake-0000,GPU-fake-0001" {
		t.Fatalf("re-adopted running pod holds %q, want its two recorded devices", got)
	}
	if got := second.Held("done"); len(got) != 0 {
		t.Fatalf("a released pod holds %v after the restart", got)
	}
	newcomer := gpuPod("newcomer", map[string]int64{"main": 1})
	devs, ok, _, _ := r2.allocateDevices(newcomer)
	if !ok || device.IDs(devs) != "GPU-fake-0002" {
		t.Fatalf("new pod got %v (ok %v), want GPU-fake-0002", devs, ok)
	}
	// Over capacity: refused as the kubelet's device manager refuses.
	if _, ok, reason, msg := r2.allocateDevices(gpuPod("late", map[string]int64{"main": 1})); ok || reason != "UnexpectedAdmissionError" || !strings.Contains(msg, "0 of 3 free") {
		t.Fatalf("pod over capacity: ok %v, %s: %s", ok, reason, msg)
	}
}

// Each container gets its own devices: their nodes, injected through CDI
// from the spec the manager wrote, and NVIDIA_VISIBLE_DEVICES listing
// their IDs; a container without any sees none.
func TestDeviceSpecOpts(t *testing.T) {
	dir := t.TempDir()
	m := fakeDevices(t, dir, 4)
	if err := cdi.Configure(cdi.WithSpecDirs(m.SpecDir())); err != nil {
		t.Fatal(err)
	}
	pod := gpuPod("p", map[string]int64{"a": 1, "b": 2, "c": 0})
	r := &Runtime{pods: map[string]*podWorker{}, cfg: Config{Devices: m, Log: slog.New(slog.DiscardHandler)}}
	if _, err := m.Allocate(device.Holder{UID: "other", Name: "ns/other"}, 1); err != nil { // the pod's are not the first ones
		t.Fatal(err)
	}
	devs, ok, reason, msg := r.allocateDevices(pod)
	if !ok {
		t.Fatalf("%s: %s", reason, msg)
	}
	rec := newRecord(pod)
	rec.Devices = devs
	w := newWorker(r, rec, false)
	for _, tc := range []struct {
		container string
		env       string
		nodes     []string
	}{
		{"a", "NVIDIA_VISIBLE_DEVICES=GPU-fake-0001", []string{"/dev/nvidia1"}},
		{"b", "NVIDIA_VISIBLE_DEVICES=GPU-fake-0002,GPU-fake-0003", []string{"/dev/nvidia2", "/dev/nvidia3"}},
		{"c", "NVIDIA_VISIBLE_DEVICES=void", nil},
	} {
		c := &pod.Spec.Containers[slices.IndexFunc(pod.Spec.Containers, func(c v1.Container) bool { return c.Name == tc.container })]
		s := &oci.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
		if err := oci.ApplyOpts(context.Background(), nil, &containers.Container{ID: tc.container}, s, w.deviceOpts(pod, c)...); err != nil {
			t.Fatalf("%s: %v", tc.container, err)
		}
		if !slices.Contains(s.Process.Env, tc.env) {
			t.Errorf("%s: env %v, want %s", tc.container, s.Process.Env, tc.env)
		}
		var nodes []string
		for _, d := range s.Linux.Devices {
			nodes = append(nodes, d.Path)
		}
		if !slices.Equal(nodes, tc.nodes) {
			t.Errorf("%s: device nodes %v, want %v", tc.container, nodes, tc.nodes)
		}
		// The device cgroup lets the container use exactly its nodes.
		allowed := 0
		for _, d := range s.Linux.Resources.Devices {
			if d.Allow && d.Major != nil && *d.Major == 1 && d.Minor != nil && *d.Minor == 3 {
				allowed++
			}
		}
		if allowed != len(tc.nodes) {
			t.Errorf("%s: %d device cgroup rules for the nodes, want %d", tc.container, allowed, len(tc.nodes))
		}
	}
	w.releaseDevices()
	if held := m.Held("p"); len(held) != 0 {
		t.Fatalf("released pod holds %v", held)
	}
}

// /metrics/resource reports each pod's devices, fake ones marked fake.
func TestDeviceMetrics(t *testing.T) {
	m := fakeDevices(t, t.TempDir(), 2)
	pod := gpuPod("uid-m", map[string]int64{"main": 1})
	r := &Runtime{pods: map[string]*podWorker{}, cfg: Config{Devices: m, Log: slog.New(slog.DiscardHandler)}}
	devs, ok, _, _ := r.allocateDevices(pod)
	if !ok {
		t.Fatal("allocate")
	}
	rec := newRecord(pod)
	rec.Devices = devs
	r.pods[key(pod.Namespace, pod.Name)] = newWorker(r, rec, false)
	fams := r.deviceMetrics(time.Now())
	if len(fams) != 3 {
		t.Fatalf("%d families, want 3", len(fams))
	}
	for _, f := range fams {
		if len(f.Metric) != 1 {
			t.Fatalf("%s: %d metrics, want 1 (one device held)", f.GetName(), len(f.Metric))
		}
		got := map[string]string{}
		for _, l := range f.Metric[0].Label {
			got[l.GetName()] = l.GetValue()
		}
		if got["pod"] != "uid-m" || got["acc_id"] != "GPU-fake-0000" || got["fake"] != "true" {
			t.Errorf("%s labels %v", f.GetName(), got)
		}
		if f.GetName() == "pod_accelerator_memory_total_bytes" && f.Metric[0].Gauge.GetValue() != device.FakeMemoryBytes {
			t.Errorf("total memory %v", f.Metric[0].Gauge.GetValue())
		}
	}
}

// An admission that failed waits for the deleted pods still stopping, and
// only for them.
func TestWaitTerminating(t *testing.T) {
	r := &Runtime{pods: map[string]*podWorker{}, cfg: Config{Log: slog.New(slog.DiscardHandler)}}
	running := newWorker(r, newRecord(gpuPod("running", nil)), false)
	r.pods["ns/running"] = running
	if r.waitTerminating(context.Background()) {
		t.Fatal("waited with no pod being deleted")
	}
	leaving := newWorker(r, newRecord(gpuPod("leaving", nil)), false)
	leaving.terminating.Store(true)
	r.pods["ns/leaving"] = leaving
	go func() {
		// The worker finishes its removal: forgotten, then done.
		r.mu.Lock()
		delete(r.pods, "ns/leaving")
		r.mu.Unlock()
		close(leaving.done)
	}()
	if !r.waitTerminating(context.Background()) {
		t.Fatal("did not wait for the deleted pod")
	}
	select {
	case <-leaving.done:
	default:
		t.Fatal("returned before the deleted pod was done")
	}
}
