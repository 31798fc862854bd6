//go:build cgo

package device

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	ocispec "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
)

func TestNVMLDiscoveryDGXH200(t *testing.T) {
	dir := t.TempDir()
	lib := dgxh200.New()
	withUtilisation(lib)
	m, err := New(context.Background(), Config{Backend: &NVIDIA{Lib: lib, DevRoot: filepath.Join(dir, "dev"), HostRoot: dir}, SpecDir: filepath.Join(dir, "cdi")})
	if err != nil {
		t.Fatal(err)
	}
	if m.Capacity() != 8 || m.Resource() != NVIDIAGPU {
		t.Fatalf("capacity %d of %q, want 8 nvidia.com/gpu", m.Capacity(), m.Resource())
	}
	labels := m.Labels()
	if labels[ProductLabel] != "NVIDIA-H200-141GB-HBM3e" || labels[MemoryLabel] != "144384" || labels[CountLabel] != "8" {
		t.Fatalf("labels %v", labels)
	}
	st := m.Statuses()
	for i, s := range st {
		if !strings.HasPrefix(s.ID, "GPU-") || s.Index != i || s.CDIName != "nvidia.com/gpu="+string(rune('0'+i)) {
			t.Errorf("device %d: %+v", i, s.Device)
		}
		if s.Usage == nil || s.Usage.UtilPercent != uint32(10*i) || s.Usage.MemoryTotalBytes != 144384<<20 || s.Usage.Fake {
			t.Errorf("device %d usage %+v, want %d%% of 144384 MiB", i, s.Usage, 10*i)
		}
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(m.SpecDir()), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		nodes []string
	}{
		{"nvidia.com/gpu=0", []string{"/dev/nvidia0"}},
		{"nvidia.com/gpu=" + st[5].ID, []string{"/dev/nvidia5"}},
		{"nvidia.com/gpu=all", []string{"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2", "/dev/nvidia3", "/dev/nvidia4", "/dev/nvidia5", "/dev/nvidia6", "/dev/nvidia7"}},
	} {
		spec := &ocispec.Spec{Linux: &ocispec.Linux{}, Process: &ocispec.Process{}}
		if _, err := cache.InjectDevices(spec, tc.name); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, d := range spec.Linux.Devices {
			if d.Major != nvidiaMajor {
				t.Errorf("%s: %s major %d", tc.name, d.Path, d.Major)
			}
			got = append(got, d.Path)
		}
		if !slices.Equal(got, tc.nodes) {
			t.Errorf("%s injects %v, want %v", tc.name, got, tc.nodes)
		}
	}
}

// A host without the driver starts with no GPUs and no error.
func TestNVMLDriverMissing(t *testing.T) {
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
	m, err := New(context.Background(), Config{Backend: &NVIDIA{Lib: lib}, SpecDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if m.Capacity() != 0 || m.Labels() != nil {
		t.Fatalf("capacity %d labels %v, want none", m.Capacity(), m.Labels())
	}
	if _, err := m.Allocate(h("pod"), 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("allocate on a host without GPUs: %v", err)
	}
}

// A critical XID takes the device out of the allocatable ones; an
// application's XID (13) does not. The pod holding the failed device keeps it.
func TestXIDHealth(t *testing.T) {
	dir := t.TempDir()
	lib := dgxh200.New()
	events := make(chan nvml.EventData, 4)
	set := &mock.EventSet{
		WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
			select {
			case e := <-events:
				return e, nvml.SUCCESS
			default:
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	lib.Interface.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return set, nvml.SUCCESS }
	lib.Interface.ShutdownFunc = func() nvml.Return { return nvml.SUCCESS }
	for _, d := range lib.Devices {
		d.(*server.Device).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	}
	m, err := New(context.Background(), Config{Backend: &NVIDIA{Lib: lib, DevRoot: filepath.Join(dir, "dev"), HostRoot: dir}, SpecDir: filepath.Join(dir, "cdi")})
	if err != nil {
		t.Fatal(err)
	}
	held, err := m.Allocate(h("pod-a"), 4)
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 8)
	m.OnHealthChange(func(HealthChange) { changed <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	events <- nvml.EventData{Device: lib.Devices[1], EventType: nvml.EventTypeXidCriticalError, EventData: 13}
	events <- nvml.EventData{Device: lib.Devices[3], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	<-changed
	cancel()
	<-done
	if m.Allocatable() != 7 {
		t.Fatalf("allocatable %d after an XID 79, want 7", m.Allocatable())
	}
	for _, s := range m.Statuses() {
		switch {
		case s.Index == 3 && s.Unhealthy != "XID 79":
			t.Errorf("device 3 health %q, want XID 79", s.Unhealthy)
		case s.Index != 3 && s.Unhealthy != "":
			t.Errorf("device %d unhealthy (%q): XID 13 is the application's", s.Index, s.Unhealthy)
		}
	}
	if got := m.Held("pod-a"); IDs(got) != IDs(held) {
		t.Errorf("pod-a holds %s after the failure, want %s", IDs(got), IDs(held))
	}
	// Four healthy free devices remain (8 - 4 held), the failed one held.
	if _, err := m.Allocate(h("pod-b"), 4); err != nil {
		t.Fatal(err)
	}
	m.Release("pod-a")
	if _, err := m.Allocate(h("pod-c"), 4); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the failed device was given again: %v", err)
	}
}

// withUtilisation makes each mock GPU report 10 × its index percent busy.
func withUtilisation(lib *server.Server) {
	for i, d := range lib.Devices {
		util := uint32(10 * i)
		d.(*server.Device).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: util}, nvml.SUCCESS
		}
	}
}
