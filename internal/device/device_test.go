package device

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/runtime-spec/specs-go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fake device nodes are made with mknod, which needs root")
	}
}

func fakeManager(t *testing.T, dir string, n int) *Manager {
	t.Helper()
	needRoot(t)
	m, err := New(context.Background(), Config{Backend: &Fake{Count: n, Dir: filepath.Join(dir, "devices")}, SpecDir: filepath.Join(dir, "cdi")})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAllocateRelease(t *testing.T) {
	m := fakeManager(t, t.TempDir(), 4)
	if m.Capacity() != 4 || m.Allocatable() != 4 {
		t.Fatalf("capacity %d allocatable %d, want 4 and 4", m.Capacity(), m.Allocatable())
	}
	a, err := m.Allocate(h("pod-a"), 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Allocate(h("pod-b"), 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := IDs(a) + "|" + IDs(b); got != "GPU-fake-0000,GPU-fake-0001|GPU-fake-0002,GPU-fake-0003" {
		t.Fatalf("allocations %s", got)
	}
	// Asking again gives the same devices (a worker that retries).
	if again, err := m.Allocate(h("pod-a"), 2); err != nil || IDs(again) != IDs(a) {
		t.Fatalf("second allocation of pod-a: %v %v", again, err)
	}
	if _, err := m.Allocate(h("pod-c"), 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("third pod on a full host: %v, want ErrUnavailable", err)
	}
	m.Release("pod-a")
	c, err := m.Allocate(h("pod-c"), 1)
	if err != nil || IDs(c) != "GPU-fake-0000" {
		t.Fatalf("after release: %v %v", c, err)
	}
	// Two pods never hold one device.
	for _, s := range m.Statuses() {
		if len(s.Pods) > 1 {
			t.Fatalf("device %s held by %v without sharing", s.ID, s.Pods)
		}
		if s.Usage == nil || !s.Usage.Fake {
			t.Errorf("fake device %s usage %+v, want marked fake", s.ID, s.Usage)
		}
	}
}

// An agent that restarts builds a new manager and hands every recorded
// pod its devices back: they are not given to anyone else.
func TestAdoptAfterRestart(t *testing.T) {
	dir := t.TempDir()
	m := fakeManager(t, dir, 3)
	held, err := m.Allocate(h("pod-a"), 2)
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Split(IDs(held), ",")

	m2 := fakeManager(t, dir, 3)
	got, err := m2.Adopt(h("pod-a"), ids)
	if err != nil || IDs(got) != IDs(held) {
		t.Fatalf("adopt: %v %v", got, err)
	}
	if _, err := m2.Allocate(h("pod-b"), 2); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pod-b got adopted devices: %v", err)
	}
	if n, err := m2.Allocate(h("pod-b"), 1); err != nil || IDs(n) != "GPU-fake-0002" {
		t.Fatalf("pod-b: %v %v", n, err)
	}
	// A record naming a device the host no longer has, or one another pod
	// holds, keeps what it can and says what it lost.
	if _, err := m2.Adopt(h("pod-c"), []string{"GPU-fake-0002", "GPU-gone"}); err == nil || !strings.Contains(err.Error(), "GPU-gone (not on this host)") || !strings.Contains(err.Error(), "held by pod pod-b") {
		t.Fatalf("adopt of a lost device: %v", err)
	}
}

// The fake devices' CDI spec resolves, and injecting a device gives the
// container its node at /dev/nvidia<N> backed by the harmless host node.
func TestFakeCDISpec(t *testing.T) {
	dir := t.TempDir()
	m := fakeManager(t, dir, 2)
	cache, err := cdi.NewCache(cdi.WithSpecDirs(m.SpecDir()), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) > 0 {
		t.Fatalf("spec errors: %v", errs)
	}
	spec := &ocispec.Spec{Linux: &ocispec.Linux{}, Process: &ocispec.Process{}}
	if _, err := cache.InjectDevices(spec, FakeCDIKind+"=1"); err != nil {
		t.Fatal(err)
	}
	if len(spec.Linux.Devices) != 1 || spec.Linux.Devices[0].Path != "/dev/nvidia1" || spec.Linux.Devices[0].Major != 1 || spec.Linux.Devices[0].Minor != 3 {
		t.Fatalf("injected devices %+v, want /dev/nvidia1 as 1:3", spec.Linux.Devices)
	}
	if _, err := cache.InjectDevices(&ocispec.Spec{Linux: &ocispec.Linux{}}, FakeCDIKind+"=7"); err == nil {
		t.Fatal("an undeclared device was injected")
	}
}

func TestRequestAndSplit(t *testing.T) {
	gpu := func(n int64) v1.ResourceRequirements {
		return v1.ResourceRequirements{Limits: v1.ResourceList{NVIDIAGPU: *resource.NewQuantity(n, resource.DecimalSI)}}
	}
	always := v1.ContainerRestartPolicyAlways
	spec := &v1.PodSpec{
		InitContainers: []v1.Container{{Name: "init", Resources: gpu(3)}, {Name: "side", Resources: gpu(1), RestartPolicy: &always}},
		Containers:     []v1.Container{{Name: "a", Resources: gpu(1)}, {Name: "b"}, {Name: "c", Resources: gpu(2)}},
	}
	if n := Request(spec, NVIDIAGPU); n != 4 {
		t.Fatalf("request %d, want 4 (1 sidecar + 3 app)", n)
	}
	devs := []Device{{ID: "d0"}, {ID: "d1"}, {ID: "d2"}, {ID: "d3"}}
	got := Split(spec, NVIDIAGPU, devs)
	want := map[string]string{"side": "d0", "a": "d1", "c": "d2,d3", "init": "d0,d1,d2"}
	for name, ids := range want {
		if IDs(got[name]) != ids {
			t.Errorf("%s gets %q, want %q", name, IDs(got[name]), ids)
		}
	}
	if _, ok := got["b"]; ok {
		t.Error("container b asked for no GPU and got some")
	}
}

// h is a pod holding devices, named as its UID.
func h(name string) Holder { return Holder{UID: types.UID(name), Name: name} }

func fakeSharedManager(t *testing.T, dir string, n, replicas int) *Manager {
	t.Helper()
	needRoot(t)
	m, err := New(context.Background(), Config{Backend: &Fake{Count: n, Dir: filepath.Join(dir, "devices")}, SpecDir: filepath.Join(dir, "cdi"), Replicas: replicas})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// With time-slicing each GPU is advertised as its replicas; pods spread
// over the GPUs before they share one, a pod given replicas gets their
// physical devices (each once), and a failed GPU takes all its replicas
// out.
func TestTimeSlicing(t *testing.T) {
	m := fakeSharedManager(t, t.TempDir(), 2, 3)
	if m.Capacity() != 6 || m.Allocatable() != 6 {
		t.Fatalf("capacity %d allocatable %d, want 6 and 6", m.Capacity(), m.Allocatable())
	}
	if l := m.Labels(); l[SharingLabel] != SharingTimeSlicing || l[ReplicasLabel] != "3" || l[CountLabel] != "2" {
		t.Fatalf("labels %v, want time-slicing, 3 replicas, 2 GPUs", l)
	}
	for _, tc := range []struct {
		pod      string
		n        int
		replicas string
		ids      string
	}{
		{"pod-a", 1, "GPU-fake-0000::0", "GPU-fake-0000"},
		{"pod-b", 1, "GPU-fake-0001::0", "GPU-fake-0001"},
		{"pod-c", 2, "GPU-fake-0000::1,GPU-fake-0001::1", "GPU-fake-0000,GPU-fake-0001"},
		{"pod-d", 1, "GPU-fake-0000::2", "GPU-fake-0000"},
	} {
		got, err := m.Allocate(h(tc.pod), tc.n)
		if err != nil {
			t.Fatalf("%s: %v", tc.pod, err)
		}
		if k := strings.Join(Keys(got), ","); k != tc.replicas || IDs(got) != tc.ids {
			t.Errorf("%s got replicas %s (IDs %s), want %s (%s)", tc.pod, k, IDs(got), tc.replicas, tc.ids)
		}
	}
	if _, err := m.Allocate(h("pod-e"), 2); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("two replicas with one free: %v, want ErrUnavailable", err)
	}
	for _, s := range m.Statuses() {
		var names []string
		for _, p := range s.Pods {
			names = append(names, p.Name)
		}
		want := map[int]string{0: "pod-a,pod-c,pod-d", 1: "pod-b,pod-c"}[s.Index]
		if strings.Join(names, ",") != want || s.Replicas != 3 {
			t.Errorf("device %d held by %v (%d replicas), want %s (3)", s.Index, names, s.Replicas, want)
		}
	}
	m.MarkUnhealthy(FakeID(1), "test")
	if m.Allocatable() != 3 {
		t.Fatalf("allocatable %d with one GPU of two failed, want 3", m.Allocatable())
	}
	m.Release("pod-b")
	if _, err := m.Allocate(h("pod-e"), 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a replica of the failed GPU was given: %v", err)
	}
	if !m.MarkHealthy(FakeID(1)) || m.Allocatable() != 6 {
		t.Fatalf("allocatable %d once the GPU is healthy again, want 6", m.Allocatable())
	}
	if got, err := m.Allocate(h("pod-e"), 1); err != nil || Keys(got)[0] != "GPU-fake-0001::0" {
		t.Fatalf("pod-e: %v %v, want GPU-fake-0001::0", got, err)
	}
}

// Two replicas of one GPU inject it once and list it once.
func TestReplicasOfOneDevice(t *testing.T) {
	m := fakeSharedManager(t, t.TempDir(), 1, 4)
	got, err := m.Allocate(h("pod"), 2)
	if err != nil {
		t.Fatal(err)
	}
	if IDs(got) != "GPU-fake-0000" || len(CDINames(got)) != 1 || CDINames(got)[0] != FakeCDIKind+"=0" {
		t.Fatalf("IDs %q CDI names %v, want the one device once", IDs(got), CDINames(got))
	}
}

// A pod recorded under one sharing setting keeps its physical devices
// when the agent restarts with another.
func TestAdoptAcrossSharing(t *testing.T) {
	dir := t.TempDir()
	whole := fakeSharedManager(t, dir, 2, 1)
	held, err := whole.Allocate(h("pod-a"), 1)
	if err != nil {
		t.Fatal(err)
	}
	shared := fakeSharedManager(t, dir, 2, 2)
	got, err := shared.Adopt(h("pod-a"), Keys(held))
	if err != nil || len(got) != 1 || got[0].Key() != "GPU-fake-0000::0" {
		t.Fatalf("whole device adopted with sharing on: %v %v, want replica GPU-fake-0000::0", got, err)
	}
	again := fakeSharedManager(t, dir, 2, 1)
	got, err = again.Adopt(h("pod-a"), Keys(got))
	if err != nil || len(got) != 1 || got[0].Key() != "GPU-fake-0000" {
		t.Fatalf("replica adopted with sharing off: %v %v, want GPU-fake-0000", got, err)
	}
	if _, err := again.Adopt(h("pod-b"), []string{"GPU-fake-0000::1"}); err == nil || !strings.Contains(err.Error(), "held by other pods") {
		t.Fatalf("a second pod's replica of a whole device: %v, want refused", err)
	}
}

// Sharing is refused for devices that are not NVIDIA GPUs, and a negative
// count is refused.
func TestSharingRefused(t *testing.T) {
	if _, err := New(context.Background(), Config{Backend: &Ascend{}, SpecDir: t.TempDir(), Replicas: 2}); err == nil || !strings.Contains(err.Error(), "leave sharing off") {
		t.Fatalf("sharing of Ascend NPUs: %v, want refused", err)
	}
	if _, err := New(context.Background(), Config{SpecDir: t.TempDir(), Replicas: -1}); err == nil {
		t.Fatal("-1 replicas accepted")
	}
}

// A fake device is unhealthy while its file exists, and healthy again
// once it is removed: the node's allocatable follows.
func TestFakeHealthFile(t *testing.T) {
	dir := t.TempDir()
	m := fakeManager(t, dir, 2)
	fake := &Fake{Count: 2, Dir: filepath.Join(dir, "devices")}
	changes := make(chan HealthChange, 4)
	m.OnHealthChange(func(c HealthChange) { changes <- c })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// Written whole, then renamed into place: the watcher never reads
	// half a reason.
	if err := os.WriteFile(filepath.Join(dir, "reason"), []byte("XID 79 (pretend)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "reason"), fake.UnhealthyFile(1)); err != nil {
		t.Fatal(err)
	}
	if c := <-changes; c.ID != FakeID(1) || c.Reason != "XID 79 (pretend)" {
		t.Fatalf("change %+v, want %s unhealthy with the file's reason", c, FakeID(1))
	}
	if m.Allocatable() != 1 || m.Capacity() != 2 {
		t.Fatalf("allocatable %d capacity %d, want 1 and 2", m.Allocatable(), m.Capacity())
	}
	if got, err := m.Allocate(h("pod"), 1); err != nil || IDs(got) != FakeID(0) {
		t.Fatalf("allocation beside an unhealthy device: %v %v", got, err)
	}
	if err := os.Remove(fake.UnhealthyFile(1)); err != nil {
		t.Fatal(err)
	}
	if c := <-changes; c.ID != FakeID(1) || c.Reason != "" {
		t.Fatalf("change %+v, want %s healthy", c, FakeID(1))
	}
	if m.Allocatable() != 2 {
		t.Fatalf("allocatable %d once healthy, want 2", m.Allocatable())
	}
}

// The annotation the agent publishes reads back with holders and health.
func TestPublish(t *testing.T) {
	m := fakeSharedManager(t, t.TempDir(), 2, 2)
	if _, err := m.Allocate(Holder{UID: "u1", Name: "ns/a"}, 1); err != nil {
		t.Fatal(err)
	}
	m.MarkUnhealthy(FakeID(1), "XID 48")
	got, err := ParsePublished(Publish(m.Statuses()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != FakeID(0) || strings.Join(got[0].Pods, ",") != "ns/a" || got[0].Replicas != 2 || got[1].Unhealthy != "XID 48" || got[0].Product != FakeProduct {
		t.Fatalf("published %+v", got)
	}
	if _, err := ParsePublished("{"); err == nil || !strings.Contains(err.Error(), DevicesAnnotation) {
		t.Fatalf("bad annotation: %v", err)
	}
}
