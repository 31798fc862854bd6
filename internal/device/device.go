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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
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
	// SharingLabel and ReplicasLabel say how the GPUs are shared, as GPU
	// feature discovery writes them: "none" and 1 (whole GPUs), or
	// "time-slicing" and the replicas each GPU is advertised as.
	SharingLabel  = "nvidia.com/gpu.sharing-strategy"
	ReplicasLabel = "nvidia.com/gpu.replicas"
)

// Sharing strategies of SharingLabel.
const (
	SharingNone        = "none"
	SharingTimeSlicing = "time-slicing"
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
	// Replica is the time-slicing replica of the device this is, named as
	// NVIDIA's device plugin names them ("<ID>::<n>"); "" for a whole
	// device. A pod given a replica gets the whole physical device
	// injected (CDIName, ID): time-slicing shares it, nothing fences it.
	Replica string `json:"replica,omitempty"`
}

// Key is what a pod holds: the replica, or the whole device.
func (d Device) Key() string {
	if d.Replica != "" {
		return d.Replica
	}
	return d.ID
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
	// WatchHealth blocks until ctx ends, calling report for every device
	// that fails (an NVIDIA XID error, for example) with why, and with
	// reason "" for one that is healthy again. A backend that cannot
	// watch returns at once.
	WatchHealth(ctx context.Context, devs []Device, report func(id, reason string))
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
	// Replicas is how many pods may share each device by time-slicing:
	// the node advertises every device this many times and each pod given
	// a replica gets the whole physical device, as NVIDIA's device plugin
	// does with time-slicing. 0 or 1: whole devices, never shared.
	Replicas int
	// Log receives the manager's messages.
	Log *slog.Logger
}

// Holder is a pod holding devices.
type Holder struct {
	UID types.UID `json:"uid"`
	// Name is "namespace/name", for people.
	Name string `json:"name"`
}

// Manager hands a host's devices to pods. Safe for concurrent use.
type Manager struct {
	backend Backend
	specDir string
	log     *slog.Logger

	replicas int

	mu        sync.Mutex
	devices   []Device          // as discovered, by index
	slots     []Device          // what pods are given: devices, or their replicas
	owner     map[string]Holder // slot key -> pod holding it
	unhealthy map[string]string // device ID -> why
	health    []func(HealthChange)
	alloc     []func()
}

// HealthChange is a device turning unhealthy or healthy again.
type HealthChange struct {
	ID string
	// Reason is why it failed; "" when it is healthy again.
	Reason string
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
	if cfg.Replicas < 0 {
		return nil, fmt.Errorf("GPU sharing %d: want the replicas of each GPU, 1 or more (0 or 1: no sharing)", cfg.Replicas)
	}
	m := &Manager{backend: cfg.Backend, specDir: cfg.SpecDir, log: cfg.Log, replicas: max(cfg.Replicas, 1), owner: map[string]Holder{}, unhealthy: map[string]string{}}
	if cfg.Backend == nil {
		return m, nil
	}
	if m.replicas > 1 && cfg.Backend.Resource() != NVIDIAGPU {
		return nil, fmt.Errorf("GPU sharing (%d replicas) is time-slicing of NVIDIA GPUs; this host's %s devices (%s) are given whole: leave sharing off", m.replicas, cfg.Backend.Name(), cfg.Backend.Resource())
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
	m.slots = replicate(devs, m.replicas)
	if len(devs) == 0 {
		cfg.Log.Info("no accelerators found", "backend", cfg.Backend.Name())
		return m, nil
	}
	if err := m.writeSpec(); err != nil {
		return nil, err
	}
	cfg.Log.Info("accelerators found", "backend", cfg.Backend.Name(), "resource", cfg.Backend.Resource(), "count", len(devs), "replicas", m.replicas, "labels", m.Labels())
	return m, nil
}

// replicate lists what pods may be given: each device itself, or with
// time-slicing each device's replicas "<ID>::0" … "<ID>::<n-1>".
func replicate(devs []Device, n int) []Device {
	if n <= 1 {
		return slices.Clone(devs)
	}
	out := make([]Device, 0, len(devs)*n)
	for _, d := range devs {
		for r := range n {
			c := d
			c.Replica = d.ID + "::" + strconv.Itoa(r)
			out = append(out, c)
		}
	}
	return out
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

// Replicas is how many pods share each device (1: none do).
func (m *Manager) Replicas() int { return m.replicas }

// Capacity is the number of devices found, times their replicas.
func (m *Manager) Capacity() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.devices) * m.replicas)
}

// Allocatable is the number of healthy devices (times their replicas):
// those pods may be given.
func (m *Manager) Allocatable() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64((len(m.devices) - len(m.unhealthy)) * m.replicas)
}

// Labels are the node labels of the devices (none without devices): the
// backend's, and for NVIDIA GPUs how they are shared.
func (m *Manager) Labels() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.devices) == 0 {
		return nil
	}
	l := m.backend.Labels(m.devices)
	if m.backend.Resource() == NVIDIAGPU {
		if l == nil {
			l = map[string]string{}
		}
		l[SharingLabel], l[ReplicasLabel] = SharingNone, "1"
		if m.replicas > 1 {
			l[SharingLabel], l[ReplicasLabel] = SharingTimeSlicing, strconv.Itoa(m.replicas)
		}
	}
	return l
}

// Allocate gives the pod n free healthy devices, lowest index first; a pod
// that already holds devices gets the same ones again. With time-slicing
// it gives replicas, each on the physical device with the fewest replicas
// taken (the pod's own included), so that pods, and the replicas of one
// pod, spread over the GPUs before they share one. It fails with
// ErrUnavailable, taking nothing, when too few are free.
func (m *Manager) Allocate(pod Holder, n int) ([]Device, error) {
	m.mu.Lock()
	if held := m.heldBy(pod.UID); len(held) > 0 {
		m.mu.Unlock()
		if len(held) != n {
			return nil, fmt.Errorf("pod %s holds %d devices and asks for %d", pod.Name, len(held), n)
		}
		return held, nil
	}
	load := map[string]int{}
	var free []Device
	for _, d := range m.slots {
		if _, taken := m.owner[d.Key()]; taken {
			load[d.ID]++
			continue
		}
		if _, bad := m.unhealthy[d.ID]; bad {
			continue
		}
		free = append(free, d)
	}
	if len(free) < n {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %d %s requested, %d of %d free and healthy", ErrUnavailable, n, m.backend.Resource(), len(free), len(m.slots))
	}
	got := make([]Device, 0, n)
	for range n {
		// free is in index order: the first of the least loaded wins.
		best := 0
		for i, d := range free {
			if load[d.ID] < load[free[best].ID] {
				best = i
			}
		}
		d := free[best]
		free = slices.Delete(free, best, best+1)
		load[d.ID]++
		m.owner[d.Key()] = pod
		got = append(got, d)
	}
	m.mu.Unlock()
	m.allocChanged()
	return got, nil
}

// Adopt gives back to a pod the devices its record names (their Keys),
// after an agent restart. A device that is gone from the host, or held by
// another pod, is left out and reported in the error; the others are the
// pod's. A record made with another sharing setting still finds its
// physical devices: a whole device recorded is adopted as a free replica
// of it, a replica recorded as the whole device if that is free.
func (m *Manager) Adopt(pod Holder, keys []string) ([]Device, error) {
	m.mu.Lock()
	var got []Device
	var missing []string
	for _, k := range keys {
		i := slices.IndexFunc(m.slots, func(d Device) bool { return d.Key() == k })
		if i < 0 {
			id, _, _ := strings.Cut(k, "::")
			i = slices.IndexFunc(m.slots, func(d Device) bool {
				o, taken := m.owner[d.Key()]
				return d.ID == id && (!taken || o.UID == pod.UID && !slices.ContainsFunc(got, func(g Device) bool { return g.Key() == d.Key() }))
			})
		}
		if i < 0 {
			if id, _, _ := strings.Cut(k, "::"); slices.ContainsFunc(m.devices, func(d Device) bool { return d.ID == id }) {
				missing = append(missing, k+" (its device is held by other pods)")
			} else {
				missing = append(missing, k+" (not on this host)")
			}
			continue
		}
		d := m.slots[i]
		if o, ok := m.owner[d.Key()]; ok && o.UID != pod.UID {
			missing = append(missing, fmt.Sprintf("%s (held by pod %s)", k, o.Name))
			continue
		}
		m.owner[d.Key()] = pod
		got = append(got, d)
	}
	m.mu.Unlock()
	m.allocChanged()
	if len(missing) > 0 {
		return got, fmt.Errorf("pod %s: devices %s", pod.Name, strings.Join(missing, ", "))
	}
	return got, nil
}

// Release frees the pod's devices; releasing a pod without any is a no-op.
func (m *Manager) Release(uid types.UID) {
	m.mu.Lock()
	changed := false
	for k, o := range m.owner {
		if o.UID == uid {
			delete(m.owner, k)
			changed = true
		}
	}
	m.mu.Unlock()
	if changed {
		m.allocChanged()
	}
}

// OnAllocationChange registers f to be called (without locks held) after
// devices are given to a pod or let go, so that what the node publishes
// about them can follow.
func (m *Manager) OnAllocationChange(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.alloc = append(m.alloc, f)
}

func (m *Manager) allocChanged() {
	m.mu.Lock()
	fs := slices.Clone(m.alloc)
	m.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// heldBy are the pod's devices by index; m.mu must be held.
func (m *Manager) heldBy(uid types.UID) []Device {
	var out []Device
	for _, d := range m.slots {
		if o, ok := m.owner[d.Key()]; ok && o.UID == uid {
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

// MarkUnhealthy takes a device (all its replicas) out of the allocatable
// ones: a pod that holds it keeps running and keeps it, no new pod gets
// it. It reports whether the device was healthy until now.
func (m *Manager) MarkUnhealthy(id, reason string) bool {
	if reason == "" {
		reason = "unhealthy"
	}
	return m.setHealth(id, reason)
}

// MarkHealthy gives a device that was unhealthy back to the allocatable
// ones. It reports whether the device was unhealthy until now.
func (m *Manager) MarkHealthy(id string) bool { return m.setHealth(id, "") }

func (m *Manager) setHealth(id, reason string) bool {
	m.mu.Lock()
	_, bad := m.unhealthy[id]
	if bad == (reason != "") || !slices.ContainsFunc(m.devices, func(d Device) bool { return d.ID == id }) {
		m.mu.Unlock()
		return false
	}
	if reason != "" {
		m.unhealthy[id] = reason
	} else {
		delete(m.unhealthy, id)
	}
	watchers := slices.Clone(m.health)
	m.mu.Unlock()
	if reason != "" {
		m.log.Warn("device unhealthy: it leaves the node's allocatable", "device", id, "reason", reason)
	} else {
		m.log.Info("device healthy again: it is allocatable", "device", id)
	}
	for _, f := range watchers {
		f(HealthChange{ID: id, Reason: reason})
	}
	return true
}

// OnHealthChange registers f to be called (without locks held) whenever a
// device turns unhealthy or healthy again, so that the node's allocatable
// can follow.
func (m *Manager) OnHealthChange(f func(HealthChange)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.health = append(m.health, f)
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
	m.backend.WatchHealth(ctx, devs, func(id, reason string) { m.setHealth(id, reason) })
	<-ctx.Done()
	m.backend.Close()
}

// Status is one device as `cci pool list` and the metrics show it.
type Status struct {
	Device
	// Pods are the pods holding it (several when it is time-sliced), in
	// replica order; none when free.
	Pods []Holder
	// Replicas is how many pods may share it (1: none).
	Replicas int
	// Unhealthy says why the device left the allocatable ones, "" when healthy.
	Unhealthy string
	Usage     *Usage
}

// Statuses lists every physical device with its holders, health and usage.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	devs := slices.Clone(m.devices)
	out := make([]Status, len(devs))
	for i, d := range devs {
		out[i] = Status{Device: d, Replicas: m.replicas, Unhealthy: m.unhealthy[d.ID]}
		for _, s := range m.slots {
			if o, ok := m.owner[s.Key()]; ok && s.ID == d.ID {
				out[i].Pods = append(out[i].Pods, o)
			}
		}
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
// variable lists them (the NVIDIA device plugin's form); two replicas of
// one device list it once.
func IDs(devs []Device) string {
	var ids []string
	for _, d := range devs {
		if !slices.Contains(ids, d.ID) {
			ids = append(ids, d.ID)
		}
	}
	return strings.Join(ids, ",")
}

// Keys are what the pod holds (Device.Key), as its record keeps them.
func Keys(devs []Device) []string {
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.Key()
	}
	return out
}

// CDINames are the devices' fully qualified CDI names, each once.
func CDINames(devs []Device) []string {
	var out []string
	for _, d := range devs {
		if !slices.Contains(out, d.CDIName) {
			out = append(out, d.CDIName)
		}
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

// DevicesAnnotation is the node annotation in which the agent publishes
// its devices (a JSON list of Published), for `cci pool list --gpus`:
// what the operator's kubeconfig reads, with no call to the host.
const DevicesAnnotation = "cci.io/devices"

// Published is one device as the node's annotation shows it.
type Published struct {
	Index       int    `json:"index"`
	ID          string `json:"id"`
	Product     string `json:"product,omitempty"`
	MemoryBytes uint64 `json:"memoryBytes,omitempty"`
	// Replicas is how many pods may share it (1: none).
	Replicas int `json:"replicas"`
	// Pods are "namespace/name" of the pods holding it.
	Pods []string `json:"pods,omitempty"`
	// Unhealthy says why it is out of service; "" when healthy.
	Unhealthy string `json:"unhealthy,omitempty"`
}

// Publish is the annotation's value for the devices: allocation and
// health, not usage (which changes every second; the metrics have it).
func Publish(statuses []Status) string {
	out := make([]Published, len(statuses))
	for i, s := range statuses {
		out[i] = Published{Index: s.Index, ID: s.ID, Product: s.Product, MemoryBytes: s.MemoryBytes, Replicas: s.Replicas, Unhealthy: s.Unhealthy}
		for _, h := range s.Pods {
			out[i].Pods = append(out[i].Pods, h.Name)
		}
	}
	b, _ := json.Marshal(out) // plain data: cannot fail
	return string(b)
}

// ParsePublished reads the annotation's value.
func ParsePublished(s string) ([]Published, error) {
	var out []Published
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("node annotation %s: %w", DevicesAnnotation, err)
	}
	return out, nil
}
