//go:build cgo

package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	v1 "k8s.io/api/core/v1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// NVIDIA are the host's NVIDIA GPUs, found and watched through NVML.
// go-nvml loads libnvidia-ml.so.1 when Discover runs, so the agent builds
// and starts on hosts without the driver (which then have no GPUs).
type NVIDIA struct {
	// Lib is NVML. Default nvml.New(): the driver's library.
	Lib nvml.Interface
	// DevRoot is where the driver's device nodes are. Default "/dev".
	DevRoot string
	// HostRoot prefixes the paths searched for the driver's files that
	// containers get (nvidia-smi, libnvidia-ml, libcuda). Default "/".
	HostRoot string

	once   sync.Once
	inited bool
}

// NVIDIA's character devices: every GPU is 195:<minor>, the control device
// 195:255.
const (
	nvidiaMajor = 195
	NVIDIACDI   = "nvidia.com/gpu"
)

func (n *NVIDIA) Name() string              { return "nvidia" }
func (n *NVIDIA) Resource() v1.ResourceName { return NVIDIAGPU }
func (n *NVIDIA) VisibleEnv() string        { return "NVIDIA_VISIBLE_DEVICES" }

func (n *NVIDIA) lib() nvml.Interface {
	if n.Lib == nil {
		n.Lib = nvml.New()
	}
	return n.Lib
}

func (n *NVIDIA) devRoot() string {
	if n.DevRoot == "" {
		return "/dev"
	}
	return n.DevRoot
}

// nvmlErr turns an NVML return code into an error naming the call.
func nvmlErr(call string, ret nvml.Return) error {
	if ret == nvml.SUCCESS {
		return nil
	}
	return fmt.Errorf("NVML %s: %s", call, nvml.ErrorString(ret))
}

// Discover initialises NVML and reads every GPU.
func (n *NVIDIA) Discover(context.Context) ([]Device, error) {
	lib := n.lib()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, fmt.Errorf("libnvidia-ml.so.1 not found: %w", ErrNoDriver)
		}
		return nil, fmt.Errorf("%w (is the NVIDIA driver loaded? nvidia-smi tells)", nvmlErr("init", ret))
	}
	n.inited = true
	count, ret := lib.DeviceGetCount()
	if err := nvmlErr("device count", ret); err != nil {
		return nil, err
	}
	devs := make([]Device, 0, count)
	for i := range count {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if err := nvmlErr(fmt.Sprintf("device %d", i), ret); err != nil {
			return nil, err
		}
		uuid, ret := d.GetUUID()
		if err := nvmlErr(fmt.Sprintf("UUID of device %d", i), ret); err != nil {
			return nil, err
		}
		name, ret := d.GetName()
		if err := nvmlErr(fmt.Sprintf("name of device %d", i), ret); err != nil {
			return nil, err
		}
		mem, ret := d.GetMemoryInfo()
		if err := nvmlErr(fmt.Sprintf("memory of device %d", i), ret); err != nil {
			return nil, err
		}
		minor, ret := d.GetMinorNumber()
		if err := nvmlErr(fmt.Sprintf("minor number of device %d", i), ret); err != nil {
			return nil, err
		}
		// The index is NVML's; the device node is the minor number's
		// (they differ on some hosts): the CDI spec maps one to the other.
		devs = append(devs, Device{ID: uuid, Index: minor, CDIName: NVIDIACDI + "=" + strconv.Itoa(i), Product: name, MemoryBytes: mem.Total})
	}
	return devs, nil
}

// Spec is the CDI spec of the GPUs: each by NVML index (its CDIName) and by
// UUID, and "all"; each gets its /dev/nvidia<minor>, every one the control
// and UVM devices present on the host and, read-only, the driver's
// nvidia-smi and libraries found on it. (A fuller spec, with every
// driver library and the ldcache hook, is nvidia-ctk's or nvcdi's.)
func (n *NVIDIA) Spec(devs []Device) (*cdispec.Spec, error) {
	spec := &cdispec.Spec{Version: cdispec.CurrentVersion, Kind: NVIDIACDI}
	var all []*cdispec.DeviceNode
	for _, d := range devs {
		node := &cdispec.DeviceNode{Path: "/dev/nvidia" + strconv.Itoa(d.Index), HostPath: filepath.Join(n.devRoot(), "nvidia"+strconv.Itoa(d.Index)), Type: "c", Major: nvidiaMajor, Minor: int64(d.Index), Permissions: "rw"}
		all = append(all, node)
		_, index, _ := cutCDIName(d.CDIName)
		for _, name := range []string{index, d.ID} {
			spec.Devices = append(spec.Devices, cdispec.Device{Name: name, ContainerEdits: cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{node}}})
		}
	}
	spec.Devices = append(spec.Devices, cdispec.Device{Name: "all", ContainerEdits: cdispec.ContainerEdits{DeviceNodes: all}})
	for _, name := range []string{"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"} {
		host := filepath.Join(n.devRoot(), name)
		if _, err := os.Stat(host); err == nil {
			// Type and numbers are read from the host's node at injection
			// (nvidia-uvm's major is the kernel's choice).
			spec.ContainerEdits.DeviceNodes = append(spec.ContainerEdits.DeviceNodes, &cdispec.DeviceNode{Path: "/dev/" + name, HostPath: host, Permissions: "rw"})
		}
	}
	root := n.HostRoot
	if root == "" {
		root = "/"
	}
	for _, f := range driverFiles(root) {
		spec.ContainerEdits.Mounts = append(spec.ContainerEdits.Mounts, &cdispec.Mount{HostPath: filepath.Join(root, f), ContainerPath: f, Options: []string{"ro", "nosuid", "nodev", "rbind"}})
	}
	return spec, nil
}

// driverFiles are the driver's files a container needs for nvidia-smi and
// CUDA, as found under root: the first place each is found.
func driverFiles(root string) []string {
	var out []string
	for _, name := range []string{"nvidia-smi"} {
		for _, dir := range []string{"/usr/bin", "/usr/local/bin", "/usr/sbin"} {
			if p := filepath.Join(dir, name); exists(filepath.Join(root, p)) {
				out = append(out, p)
				break
			}
		}
	}
	for _, name := range []string{"libnvidia-ml.so.1", "libcuda.so.1", "libnvidia-ptxjitcompiler.so.1"} {
		for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/aarch64-linux-gnu", "/usr/lib"} {
			if p := filepath.Join(dir, name); exists(filepath.Join(root, p)) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func (n *NVIDIA) Labels(devs []Device) map[string]string { return gpuLabels(devs) }

// ignoredXIDs are errors of the application, not of the GPU (the NVIDIA
// device plugin's list): a pod's bad kernel must not take the GPU away.
var ignoredXIDs = map[uint64]bool{13: true, 31: true, 43: true, 45: true, 68: true, 109: true}

// WatchHealth waits on NVML's critical XID and double-bit ECC events.
func (n *NVIDIA) WatchHealth(ctx context.Context, devs []Device, unhealthy func(id, reason string)) {
	lib := n.lib()
	set, ret := lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		unhealthyAll(devs, unhealthy, nvmlErr("event set", ret))
		return
	}
	defer set.Free()
	for _, d := range devs {
		h, ret := lib.DeviceGetHandleByUUID(d.ID)
		if ret != nvml.SUCCESS {
			unhealthy(d.ID, nvmlErr("device handle", ret).Error())
			continue
		}
		if ret := h.RegisterEvents(nvml.EventTypeXidCriticalError|nvml.EventTypeDoubleBitEccError, set); ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED {
			unhealthy(d.ID, nvmlErr("register events", ret).Error())
		}
	}
	for ctx.Err() == nil {
		e, ret := set.Wait(1000)
		if ret == nvml.ERROR_TIMEOUT {
			continue
		}
		if ret != nvml.SUCCESS {
			// The driver went away: every GPU is suspect.
			unhealthyAll(devs, unhealthy, nvmlErr("wait for events", ret))
			return
		}
		if e.EventType == nvml.EventTypeXidCriticalError && ignoredXIDs[e.EventData] {
			continue
		}
		reason := fmt.Sprintf("XID %d", e.EventData)
		if e.EventType == nvml.EventTypeDoubleBitEccError {
			reason = "double-bit ECC error"
		}
		if e.Device == nil {
			unhealthyAll(devs, unhealthy, errors.New(reason+" on an unknown device"))
			continue
		}
		uuid, ret := e.Device.GetUUID()
		if ret != nvml.SUCCESS {
			unhealthyAll(devs, unhealthy, errors.New(reason+" on a device without UUID"))
			continue
		}
		unhealthy(uuid, reason)
	}
}

func unhealthyAll(devs []Device, unhealthy func(id, reason string), err error) {
	for _, d := range devs {
		unhealthy(d.ID, err.Error())
	}
}

// Usage reads each GPU's utilisation and memory in use.
func (n *NVIDIA) Usage(devs []Device) map[string]Usage {
	out := map[string]Usage{}
	if !n.inited {
		return out
	}
	for _, d := range devs {
		h, ret := n.lib().DeviceGetHandleByUUID(d.ID)
		if ret != nvml.SUCCESS {
			continue
		}
		u := Usage{MemoryTotalBytes: d.MemoryBytes}
		if r, ret := h.GetUtilizationRates(); ret == nvml.SUCCESS {
			u.UtilPercent = r.Gpu
		}
		if m, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
			u.MemoryUsedBytes, u.MemoryTotalBytes = m.Used, m.Total
		}
		out[d.ID] = u
	}
	return out
}

// Close shuts NVML down.
func (n *NVIDIA) Close() {
	if n.inited {
		n.lib().Shutdown()
		n.inited = false
	}
}
