package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/cci-project/cci/internal/device"
)

// Accelerator backends of Config.Accelerators.
const (
	AcceleratorsAuto   = "auto"
	AcceleratorsNVIDIA = "nvidia"
	AcceleratorsAscend = "ascend"
	AcceleratorsNone   = "none"
)

// DeviceBackend picks the host's accelerators: fake GPUs when asked for,
// else the vendor named, else (auto) Ascend where /dev/davinci* exist and
// NVIDIA through NVML otherwise (a host without the driver has none).
func (c *Config) DeviceBackend() (device.Backend, error) {
	if c.FakeGPUs < 0 {
		return nil, fmt.Errorf("--fake-gpus %d: want 0 or more", c.FakeGPUs)
	}
	if c.FakeGPUs > 0 {
		return &device.Fake{Count: c.FakeGPUs, Dir: filepath.Join(c.DataDir, "agent", "devices")}, nil
	}
	switch c.Accelerators {
	case "", AcceleratorsAuto:
		if m, _ := filepath.Glob("/dev/davinci[0-9]*"); len(m) > 0 {
			return &device.Ascend{}, nil
		}
		return &device.NVIDIA{}, nil
	case AcceleratorsNVIDIA:
		return &device.NVIDIA{}, nil
	case AcceleratorsAscend:
		return &device.Ascend{}, nil
	case AcceleratorsNone:
		return nil, nil
	}
	return nil, fmt.Errorf("--accelerators %q: choose auto, nvidia, ascend or none", c.Accelerators)
}

// runDevices discovers the host's accelerators and writes their CDI spec,
// then watches their health; ready once discovered. The process's CDI
// registry, which containerd's client-side CDI option reads, is pointed
// at the agent's own spec folder: one host's agent per process (`cci up
// --hosts` runs each host's agent as a process of its own).
func (a *hostAgent) runDevices(ctx context.Context, ready func()) error {
	backend, err := a.cfg.DeviceBackend()
	if err != nil {
		return err
	}
	specDir := filepath.Join(a.cfg.DataDir, "agent", "cdi")
	m, err := device.New(ctx, device.Config{Backend: backend, SpecDir: specDir, Replicas: a.cfg.GPUSharing, Log: a.log})
	if err != nil {
		return err
	}
	if err := cdi.Configure(cdi.WithSpecDirs(specDir)); err != nil {
		return fmt.Errorf("CDI registry of %q: %w", specDir, err)
	}
	m.OnHealthChange(a.devicesChanged)
	m.OnAllocationChange(a.allocationChanged)
	a.devices = m
	ready()
	m.Run(ctx)
	return nil
}

// withDevices adds the accelerators to the node: the extended resource in
// capacity (every device, times its replicas when shared) and allocatable
// (the healthy ones), the model's and the sharing's labels, and every
// device with its pods and health in the annotation `cci pool list --gpus`
// reads.
func withDevices(n *v1.Node, m *device.Manager) {
	if !withDeviceResources(n, m) {
		return
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for k, v := range m.Labels() {
		n.Labels[k] = v
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[device.DevicesAnnotation] = device.Publish(m.Statuses())
}

// withDeviceResources sets the devices' capacity and allocatable on the
// node; false for a host without devices.
func withDeviceResources(n *v1.Node, m *device.Manager) bool {
	if m == nil {
		return false
	}
	res := m.Resource()
	if res == "" || m.Capacity() == 0 {
		return false
	}
	if n.Status.Capacity == nil {
		n.Status.Capacity = v1.ResourceList{}
	}
	if n.Status.Allocatable == nil {
		n.Status.Allocatable = v1.ResourceList{}
	}
	n.Status.Capacity[res] = *resource.NewQuantity(m.Capacity(), resource.DecimalSI)
	n.Status.Allocatable[res] = *resource.NewQuantity(m.Allocatable(), resource.DecimalSI)
	return true
}

// devicesChanged follows a device that turned unhealthy, or healthy
// again: the node's allocatable loses (or regains) it and the node gets
// an event, as the kubelet's device manager does. Pods holding the device
// keep running.
func (a *hostAgent) devicesChanged(c device.HealthChange) {
	if a.status != nil {
		a.status.update(func(n *v1.Node) { withDevices(n, a.devices) })
	}
	rec := a.recorder
	if rec == nil {
		return
	}
	ref := &v1.ObjectReference{Kind: "Node", Name: a.cfg.NodeName, UID: types.UID(a.cfg.NodeName), APIVersion: "v1"}
	if c.Reason == "" {
		rec.Eventf(ref, v1.EventTypeNormal, "DeviceHealthy", "%s %s is healthy again: %d of %d allocatable", a.devices.Resource(), c.ID, a.devices.Allocatable(), a.devices.Capacity())
		return
	}
	rec.Eventf(ref, v1.EventTypeWarning, "DeviceUnhealthy", "%s %s is unhealthy (%s): %d of %d allocatable", a.devices.Resource(), c.ID, c.Reason, a.devices.Allocatable(), a.devices.Capacity())
}

// allocationChanged republishes the devices once pods were given some or
// let them go.
func (a *hostAgent) allocationChanged() {
	if a.status != nil {
		a.status.update(func(n *v1.Node) { withDevices(n, a.devices) })
	}
}

// nodeStatus is the node controller's node provider: it publishes the
// node's status as the agent changes it (ready once the node controller
// runs, allocatable as devices fail), on top of virtual-kubelet's own
// updates of heartbeats and lease.
type nodeStatus struct {
	*node.NaiveNodeProviderV2

	mu   sync.Mutex
	node *v1.Node
	// pub makes publications one at a time, each of the latest node, so
	// that an older one never lands after a newer.
	pub sync.Mutex
}

func newNodeStatus(n *v1.Node) *nodeStatus {
	return &nodeStatus{NaiveNodeProviderV2: node.NewNaiveNodeProvider(), node: n.DeepCopy()}
}

// update changes the node and publishes it; it does not wait for the
// node controller (it publishes once the controller runs).
func (s *nodeStatus) update(f func(*v1.Node)) {
	s.mu.Lock()
	f(s.node)
	s.mu.Unlock()
	go func() {
		s.pub.Lock()
		defer s.pub.Unlock()
		s.mu.Lock()
		n := s.node.DeepCopy()
		s.mu.Unlock()
		_ = s.UpdateStatus(context.Background(), n)
	}()
}

// ready marks the node Ready, as virtual-kubelet does for a node without a
// provider of its own, and waits until the node controller has it.
func (s *nodeStatus) ready(ctx context.Context) error {
	s.mu.Lock()
	n := s.node
	n.Status.Phase = v1.NodeRunning
	now := metav1.Now()
	for i, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			n.Status.Conditions[i] = v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "Kubelet is ready", LastHeartbeatTime: now, LastTransitionTime: now}
		}
	}
	copied := n.DeepCopy()
	s.mu.Unlock()
	return s.UpdateStatus(ctx, copied)
}
