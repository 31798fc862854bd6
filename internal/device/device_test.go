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
	a, err := m.Allocate("pod-a", 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Allocate("pod-b", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := IDs(a) + "|" + IDs(b); got != "GPU-fake-0000,GPU-fake-0001|GPU-fake-0002,GPU-fake-0003" {
		t.Fatalf("allocations %s", got)
	}
	// Asking again gives the same devices (a worker that retries).
	if again, err := m.Allocate("pod-a", 2); err != nil || IDs(again) != IDs(a) {
		t.Fatalf("second allocation of pod-a: %v %v", again, err)
	}
	if _, err := m.Allocate("pod-c", 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("third pod on a full host: %v, want ErrUnavailable", err)
	}
	m.Release("pod-a")
	c, err := m.Allocate("pod-c", 1)
	if err != nil || IDs(c) != "GPU-fake-0000" {
		t.Fatalf("after release: %v %v", c, err)
	}
	// Two pods never hold one device.
	seen := map[string]types.UID{}
	for _, s := range m.Statuses() {
		if s.Pod == "" {
			continue
		}
		if o, ok := seen[s.ID]; ok {
			t.Fatalf("device %s held by %s and %s", s.ID, o, s.Pod)
		}
		seen[s.ID] = s.Pod
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
	held, err := m.Allocate("pod-a", 2)
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Split(IDs(held), ",")

	m2 := fakeManager(t, dir, 3)
	got, err := m2.Adopt("pod-a", ids)
	if err != nil || IDs(got) != IDs(held) {
		t.Fatalf("adopt: %v %v", got, err)
	}
	if _, err := m2.Allocate("pod-b", 2); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("pod-b got adopted devices: %v", err)
	}
	if n, err := m2.Allocate("pod-b", 1); err != nil || IDs(n) != "GPU-fake-0002" {
		t.Fatalf("pod-b: %v %v", n, err)
	}
	// A record naming a device the host no longer has, or one another pod
	// holds, keeps what it can and says what it lost.
	if _, err := m2.Adopt("pod-c", []string{"GPU-fake-0002", "GPU-gone"}); err == nil || !strings.Contains(err.Error(), "GPU-gone (not on this host)") || !strings.Contains(err.Error(), "held by pod pod-b") {
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
