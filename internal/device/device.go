// Package device gives pods the host's accelerators, as the kubelet's
// device manager and the vendors' device plugins do on a kubelet: it
// discovers the devices of one vendor (a Backend: NVIDIA through NVML,
// Ascend by its device files, or fake devices for tests), writes a
// Container Device Interface (CDI) spec for them, hands whole devices to
// pods, takes devices that fail out of the allocatable ones and reads
// their utilisation.
//
// The Manager decides which devices a pod gets; the pod's record (kept by
// the runtime) remembers them, and an agent that restarts hands them back
// with Adopt. The scheduler sees the classic extended resource
// (nvidia.com/gpu: N) on the node: Capacity and Allocatable.
package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// Resource names the node advertises.
const (
	NVIDIAGPU v1.ResourceName = "nvidia.com/gpu"
	// Labels of a node with NVIDIA GPUs, as NVIDIA's GPU feature discovery
	// names them: the model and its memory in MiB.
	ProductLabel = "nvidia.com/gpu.product"
	MemoryLabel  = "nvidia.com/gpu.memory"
	// CountLabel is the number of GPUs the host has.
	CountLabel = "nvidia.com/gpu.count"
)

// Device is one accelerator of the host.
type Device struct {
	// ID is the device's stable identity, what the visible-devices
	// variable lists: a GPU's UUID ("GPU-…"), an NPU's index.
	ID string `json:"id"`
	// Index is the driver's number of the device (nvidia<N>, davinci<N>).
	Index int `json:"index"`
	// CDIName is the fully qualified CDI name the container asks for,
	// e.g. "nvidia.com/gpu=0".
	CDIName string `json:"cdi"`
	// Product and MemoryBytes describe the model.
	Product     string `json:"product,omitempty"`
	MemoryBytes uint64 `json:"memoryBytes,omitempty"`
}

// Usage is what a device is doing now.
type Usage struct {
	// UtilPercent is the share of the last sample period in which a kernel
	// ran, 0-100.
	UtilPercent uint32
	// MemoryUsedBytes and MemoryTotalBytes are the device's memory.
	MemoryUsedBytes  uint64
	MemoryTotalBytes uint64
	// Fake says the numbers are made up (fake devices): never bill or
	// alert on them.
	Fake bool
}

// Backend is one vendor's devices on this host. Discover is called once,
// first; the other methods may be called concurrently after it.
type Backend interface {
	// Name is the backend's name for messages: "nvidia", "ascend", "fake".
	Name() string
	// Resource is the extended resource the node advertises.
	Resource() v1.ResourceName
	// VisibleEnv is the variable that lists a container's device IDs,
	// e.g. NVIDIA_VISIBLE_DEVICES.
	VisibleEnv() string
	// Discover lists the host's devices. An error means the vendor's
	// driver is missing or broken: the host then has none.
	Discover(ctx context.Context) ([]Device, error)
	// Spec is the CDI spec of the devices Discover returned.
	Spec(devs []Device) (*cdispec.Spec, error)
	// Labels are the node labels the devices give (model, memory).
	Labels(devs []Device) map[string]string
	// WatchHealth blocks until ctx ends, calling unhealthy for every
	// device that fails (an NVIDIA XID error, for example). A backend
	// that cannot watch returns at once.
	WatchHealth(ctx context.Context, devs []Device, unhealthy func(id, reason string))
	// Usage reads the devices' utilisation; devices it cannot read are
	// left out.
	Usage(devs []Device) map[string]Usage
	// Close lets go of the driver.
	Close()
}

// Config is what a Manager needs.
type Config struct {
	// Backend is the vendor. Nil: the host has no accelerators.
	Backend Backend
	// SpecDir is the folder the CDI spec is written to, e.g.
	// <data>/agent/cdi; containers are injected from it.
	SpecDir string
	// Log receives the manager's messages.
	Log *slog.Logger
}

// Manager hands a host's devices to pods. Safe for concurrent use.
type Manager struct {
	backend Backend
	specDir string
	log     *slog.Logger

	mu        sync.Mutex
	devices   []Device             // as discovered, by index
	owner     map[string]types.UID // device ID -> pod holding it
	unhealthy map[string]string    // device ID -> why
	watchers  []func()
}

// ErrNoDriver is returned (wrapped) by Discover on a host without the
// vendor's driver: an ordinary host, which simply has none.
var ErrNoDriver = errors.New("driver not installed")

// ErrUnavailable is returned by Allocate when too few healthy devices are
// free.
var ErrUnavailable = errors.New("not enough free healthy devices")

// New discovers the devices and writes their CDI spec. A backend whose
// driver is missing or broken gives a manager with no devices, and the
// reason is logged: the agent starts anyway. An error is returned only
// when the spec cannot be written.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := &Manager{backend: cfg.Backend, specDir: cfg.SpecDir, log: cfg.Log, owner: map[string]types.UID{}, unhealthy: map[string]string{}}
	if cfg.Backend == nil {
		return m, nil
	}
	devs, err := cfg.Backend.Discover(ctx)
	if errors.Is(err, ErrNoDriver) {
		cfg.Log.Info("no accelerators on this host", "backend", cfg.Backend.Name(), "why", err)
		return m, nil
	}
	if err != nil {
		cfg.Log.Warn("no accelerators on this host: their driver did not answer", "backend", cfg.Backend.Name(), "err", err)
		return m, nil
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Index < devs[j].Index })
	m.devices = devs
	if len(devs) == 0 {
		cfg.Log.Info("no accelerators found", "backend", cfg.Backend.Name())
		return m, nil
	}
	if err := m.writeSpec(); err != nil {
		return nil, err
	}
	cfg.Log.Info("accelerators found", "backend", cfg.Backend.Name(), "resource", cfg.Backend.Resource(), "count", len(devs), "labels", cfg.Backend.Labels(devs))
	return m, nil
}

// SpecFileName is the name of the CDI spec file a backend's devices are
// written to, in SpecDir.
func SpecFileName(backend string) string { return "cci-" + backend + ".json" }

// writeSpec writes the CDI spec of the devices into SpecDir, checked by
// the CDI library (a spec it would refuse at injection is refused here).
func (m *Manager) writeSpec() error {
	spec, err := m.backend.Spec(m.devices)
	if err != nil {
		return fmt.Errorf("CDI spec of the %s devices: %w", m.backend.Name(), err)
	}
	if err := os.MkdirAll(m.specDir, 0o755); err != nil {
		return fmt.Errorf("create CDI spec folder: %w", err)
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(m.specDir), cdi.WithAutoRefresh(false))
	if err != nil {
		return fmt.Errorf("CDI cache of %q: %w", m.specDir, err)
	}
	name := SpecFileName(m.backend.Name())
	// WriteSpec refuses to overwrite a spec of another name that declares
	// the same devices; the agent's own earlier spec is simply replaced.
	if err := cache.WriteSpec(spec, name); err != nil {
		return fmt.Errorf("write CDI spec %q: %w", filepath.Join(m.specDir, name), err)
	}
	return nil
}

// SpecDir is the folder of the CDI spec.
func (m *Manager) SpecDir() string { return m.specDir }

// Resource is the extended resource of the devices, "" without a backend.
func (m *Manager) Resource() v1.ResourceName {
	if m.backend == nil {
		return ""
	}
	return m.backend.Resource()
}

// VisibleEnv is the variable listing a container's devices.
func (m *Manager) VisibleEnv() string {
	if m.backend == nil {
		return ""
	}
	return m.backend.VisibleEnv()
}

// Capacity is the number of devices found.
func (m *Manager) Capacity() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.devices))
}

// Allocatable is the number of healthy devices: those pods may be given.
func (m *Manager) Allocatable() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.devices) - len(m.unhealthy))
}

// Labels are the node labels of the devices (none without devices).
func (m *Manager) Labels() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.devices) == 0 {
		return nil
	}
	return m.backend.Labels(m.devices)
}

// Allocate gives the pod n free healthy devices, lowest index first; a pod
// that already holds devices gets the same ones again. It fails with
// ErrUnavailable, taking nothing, when too few are free.
func (m *Manager) Allocate(uid types.UID, n int) ([]Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if held := m.heldBy(uid); len(held) > 0 {
		if len(held) != n {
			return nil, fmt.Errorf("pod %s holds %d devices and asks for %d", uid, len(held), n)
		}
		return held, nil
	}
	var free []Device
	for _, d := range m.devices {
		if _, taken := m.owner[d.ID]; taken {
			continue
		}
		if _, bad := m.unhealthy[d.ID]; bad {
			continue
		}
		free = append(free, d)
	}
	if len(free) < n {
		return nil, fmt.Errorf("%w: %d %s requested, %d of %d free and healthy", ErrUnavailable, n, m.backend.Resource(), len(free), len(m.devices))
	}
	for _, d := range free[:n] {
		m.owner[d.ID] = uid
	}
	return slices.Clone(free[:n]), nil
}

// Adopt gives back to a pod the devices its record names, after an agent
// restart. A device that is gone from the host, or held by another pod,
// is left out and reported in the error; the others are the pod's.
func (m *Manager) Adopt(uid types.UID, ids []string) ([]Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var got []Device
	var missing []string
	for _, id := range ids {
		i := slices.IndexFunc(m.devices, func(d Device) bool { return d.ID == id })
		if i < 0 {
			missing = append(missing, id+" (not on this host)")
			continue
		}
		if o, ok := m.owner[id]; ok && o != uid {
			missing = append(missing, fmt.Sprintf("%s (held by pod %s)", id, o))
			continue
		}
		m.owner[id] = uid
		got = append(got, m.devices[i])
	}
	if len(missing) > 0 {
		return got, fmt.Errorf("pod %s: devices %s", uid, strings.Join(missing, ", "))
	}
	return got, nil
}

// Release frees the pod's devices; releasing a pod without any is a no-op.
func (m *Manager) Release(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, o := range m.owner {
		if o == uid {
			delete(m.owner, id)
		}
	}
}

// heldBy are the pod's devices by index; m.mu must be held.
func (m *Manager) heldBy(uid types.UID) []Device {
	var out []Device
	for _, d := range m.devices {
		if m.owner[d.ID] == uid {
			out = append(out, d)
		}
	}
	return out
}

// Held are the devices the pod holds.
func (m *Manager) Held(uid types.UID) []Device {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heldBy(uid)
}

// MarkUnhealthy takes a device out of the allocatable ones: a pod that
// holds it keeps running and keeps it, no new pod gets it. It reports
// whether the device was healthy until now.
func (m *Manager) MarkUnhealthy(id, reason string) bool {
	m.mu.Lock()
	if _, ok := m.unhealthy[id]; ok || !slices.ContainsFunc(m.devices, func(d Device) bool { return d.ID == id }) {
		m.mu.Unlock()
		return false
	}
	m.unhealthy[id] = reason
	watchers := slices.Clone(m.watchers)
	m.mu.Unlock()
	m.log.Warn("device unhealthy: it leaves the node's allocatable", "device", id, "reason", reason)
	for _, f := range watchers {
		f()
	}
	return true
}

// OnHealthChange registers f to be called (without locks held) whenever a
// device turns unhealthy, so that the node's allocatable can follow.
func (m *Manager) OnHealthChange(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watchers = append(m.watchers, f)
}

// Run watches the devices' health until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	m.mu.Lock()
	devs := slices.Clone(m.devices)
	m.mu.Unlock()
	if m.backend == nil || len(devs) == 0 {
		<-ctx.Done()
		return
	}
	m.backend.WatchHealth(ctx, devs, func(id, reason string) { m.MarkUnhealthy(id, reason) })
	<-ctx.Done()
	m.backend.Close()
}

// Status is one device as `cci pool list` and the metrics show it.
type Status struct {
	Device
	// Pod is the UID of the pod holding it, "" when free.
	Pod types.UID
	// Unhealthy says why the device left the allocatable ones, "" when healthy.
	Unhealthy string
	Usage     *Usage
}

// Statuses lists every device with its holder, health and usage.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	devs := slices.Clone(m.devices)
	out := make([]Status, len(devs))
	for i, d := range devs {
		out[i] = Status{Device: d, Pod: m.owner[d.ID], Unhealthy: m.unhealthy[d.ID]}
	}
	m.mu.Unlock()
	if len(devs) == 0 {
		return nil
	}
	usage := m.backend.Usage(devs)
	for i := range out {
		if u, ok := usage[out[i].ID]; ok {
			out[i].Usage = &u
		}
	}
	return out
}

// IDs are the devices' IDs, comma-separated, as the visible-devices
// variable lists them (the NVIDIA device plugin's form).
func IDs(devs []Device) string {
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.ID
	}
	return strings.Join(ids, ",")
}

// CDINames are the devices' fully qualified CDI names.
func CDINames(devs []Device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.CDIName
	}
	return out
}

// Request is the number of the resource the pod needs at once, as the
// scheduler counts it: its app containers (and sidecars) together, or its
// largest init container if that is more.
func Request(spec *v1.PodSpec, res v1.ResourceName) int64 {
	var apps, peak int64
	for _, c := range spec.InitContainers {
		n := containerRequest(c, res)
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			apps += n
			continue
		}
		peak = max(peak, n)
	}
	for _, c := range spec.Containers {
		apps += containerRequest(c, res)
	}
	return max(apps, peak)
}

// containerRequest is the container's count of res: its limit (extended
// resources must have requests equal to limits), else its request.
func containerRequest(c v1.Container, res v1.ResourceName) int64 {
	if q, ok := c.Resources.Limits[res]; ok {
		return q.Value()
	}
	if q, ok := c.Resources.Requests[res]; ok {
		return q.Value()
	}
	return 0
}

// Split hands the pod's devices to its containers: app containers and
// sidecars each get their own, in order; an init container that runs to
// completion borrows the first ones (it runs before the app containers),
// as the kubelet's device manager reuses init containers' devices.
func Split(spec *v1.PodSpec, res v1.ResourceName, devs []Device) map[string][]Device {
	out := map[string][]Device{}
	next := 0
	take := func(name string, n int64) {
		end := min(next+int(n), len(devs))
		out[name] = devs[next:end]
		next = end
	}
	for _, c := range spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			if n := containerRequest(c, res); n > 0 {
				take(c.Name, n)
			}
		}
	}
	for _, c := range spec.Containers {
		if n := containerRequest(c, res); n > 0 {
			take(c.Name, n)
		}
	}
	for _, c := range spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			continue
		}
		if n := containerRequest(c, res); n > 0 {
			out[c.Name] = devs[:min(int(n), len(devs))]
		}
	}
	return out
}

// cutCDIName splits "vendor/class=name" into kind and name.
func cutCDIName(s string) (kind, name string, ok bool) {
	return strings.Cut(s, "=")
}
