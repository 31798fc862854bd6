package runtime

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/containerd/containerd/v2/pkg/cdi"
	"github.com/containerd/containerd/v2/pkg/oci"
	dto "github.com/prometheus/client_model/go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/cci-project/cci/internal/device"
)

// Devices hands the host's accelerators to pods, as the kubelet's device
// manager does: the runtime asks for a pod's devices when it admits the
// pod, records them with the pod, gives them back after an agent restart
// (Adopt) and frees them when the pod's sandbox goes. It is satisfied by
// *device.Manager; safe for concurrent use.
type Devices interface {
	// Resource is the extended resource the devices are requested as.
	Resource() v1.ResourceName
	// VisibleEnv is the variable listing a container's device IDs.
	VisibleEnv() string
	Allocate(pod device.Holder, n int) ([]device.Device, error)
	Adopt(pod device.Holder, keys []string) ([]device.Device, error)
	Release(uid types.UID)
	// Statuses lists every device with the pod holding it and its usage.
	Statuses() []device.Status
}

// allocateDevices gives an admitted pod the devices it asks for. ok false
// comes with the kubelet's reason and message for a pod that cannot have
// them (UnexpectedAdmissionError, as its device manager words it).
func (r *Runtime) allocateDevices(pod *v1.Pod) (devs []device.Device, ok bool, reason, message string) {
	if r.cfg.Devices == nil || r.cfg.Devices.Resource() == "" {
		return nil, true, "", ""
	}
	n := device.Request(&pod.Spec, r.cfg.Devices.Resource())
	if n == 0 {
		return nil, true, "", ""
	}
	devs, err := r.cfg.Devices.Allocate(holder(pod), int(n))
	if err != nil {
		return nil, false, "UnexpectedAdmissionError", fmt.Sprintf("Allocate failed due to %v, which is unexpected", err)
	}
	return devs, true, "", ""
}

// DevicesUnsupportedReason is the reason of a pod refused because its
// runtime cannot give it the devices it was allocated (fake GPUs under
// gVisor, GPUs under a runsc without nvproxy).
const DevicesUnsupportedReason = "UnsupportedDevicesForRuntime"

// admitDevicesUnder refuses a pod given devices that its runtime handler
// cannot pass to it, rather than start it without them. A RuntimeClass
// that cannot be read now is left to the sandbox's preparation, which
// checks again.
func (r *Runtime) admitDevicesUnder(ctx context.Context, pod *v1.Pod, devs []device.Device) (ok bool, reason, message string) {
	if len(devs) == 0 || r.gvisor == nil {
		return true, "", ""
	}
	h, err := resolveHandler(ctx, r.cfg.Kube, pod.Spec.RuntimeClassName)
	if err != nil || h != handlerGVisor {
		return true, "", ""
	}
	if err := r.gvisor.gvisorDevices(devs); err != nil {
		return false, DevicesUnsupportedReason, err.Error()
	}
	return true, "", ""
}

// adoptDevices gives re-adopted pods their recorded devices again, before
// any new pod is admitted. A pod whose sandbox is gone holds none.
func (r *Runtime) adoptDevices(ws []*podWorker) {
	if r.cfg.Devices == nil {
		return
	}
	for _, w := range ws {
		if len(w.rec.Devices) == 0 || w.rec.Released {
			continue
		}
		if _, err := r.cfg.Devices.Adopt(holder(w.rec.Pod), device.Keys(w.rec.Devices)); err != nil {
			// The pod keeps running with what its containers were given;
			// only the lost devices may go to another pod.
			r.cfg.Log.Warn("re-adopted pod lost devices", "pod", key(w.rec.Pod.Namespace, w.rec.Pod.Name), "err", err)
		}
	}
}

func holder(pod *v1.Pod) device.Holder {
	return device.Holder{UID: pod.UID, Name: key(pod.Namespace, pod.Name)}
}

// releaseDevices frees the pod's devices once nothing of it runs.
func (w *podWorker) releaseDevices() {
	if w.r.cfg.Devices != nil {
		w.r.cfg.Devices.Release(w.pod().UID)
	}
}

// deviceOpts give a container its share of the pod's devices: their CDI
// devices, injected by containerd's client-side CDI support from the
// specs the agent wrote (device nodes, mounts), and the variable listing
// their IDs, comma-separated, as NVIDIA's device plugin sets it. A
// container that asked for none gets the variable set to "void", as the
// NVIDIA device plugin leaves it, so that an image's default ("all")
// never reaches devices of other pods through a runtime hook.
func (w *podWorker) deviceOpts(pod *v1.Pod, c *v1.Container) []oci.SpecOpts {
	w.mu.Lock()
	devs := w.rec.Devices
	w.mu.Unlock()
	if w.r.cfg.Devices == nil || len(devs) == 0 {
		return nil
	}
	mine := device.Split(&pod.Spec, w.r.cfg.Devices.Resource(), devs)[c.Name]
	env := w.r.cfg.Devices.VisibleEnv()
	if len(mine) == 0 {
		return []oci.SpecOpts{oci.WithEnv([]string{env + "=void"})}
	}
	return []oci.SpecOpts{
		oci.WithEnv([]string{env + "=" + device.IDs(mine)}),
		cdi.WithCDIDevices(device.CDINames(mine)...),
	}
}

// deviceMetrics are the accelerators' figures for /metrics/resource, in
// cadvisor's accelerator metrics' words, per pod holding a device:
// utilisation (duty cycle) and memory. Fake devices report zeros and the
// label fake="true".
func (r *Runtime) deviceMetrics(now time.Time) []*dto.MetricFamily {
	if r.cfg.Devices == nil {
		return nil
	}
	gauge := dto.MetricType_GAUGE
	family := func(name, help string) *dto.MetricFamily {
		return &dto.MetricFamily{Name: ptr.To(name), Help: ptr.To(help), Type: gauge.Enum()}
	}
	duty := family("pod_accelerator_duty_cycle", "Percent of the last sample period during which the pod's accelerator was busy")
	used := family("pod_accelerator_memory_used_bytes", "Memory of the pod's accelerator in use, in bytes")
	total := family("pod_accelerator_memory_total_bytes", "Memory of the pod's accelerator, in bytes")
	for _, s := range r.cfg.Devices.Statuses() {
		if s.Usage == nil {
			continue
		}
		// A time-sliced GPU's figures are the whole device's: every pod
		// sharing it shows them (NVML does not split them by pod).
		var seen []types.UID
		for _, h := range s.Pods {
			if slices.Contains(seen, h.UID) {
				continue
			}
			seen = append(seen, h.UID)
			p, ok := r.PodByUID(h.UID)
			if !ok {
				continue
			}
			labels := []*dto.LabelPair{
				{Name: ptr.To("namespace"), Value: ptr.To(p.Namespace)},
				{Name: ptr.To("pod"), Value: ptr.To(p.Name)},
				{Name: ptr.To("acc_id"), Value: ptr.To(s.ID)},
				{Name: ptr.To("model"), Value: ptr.To(s.Product)},
				{Name: ptr.To("fake"), Value: ptr.To(strconv.FormatBool(s.Usage.Fake))},
			}
			for _, m := range []struct {
				f *dto.MetricFamily
				v float64
			}{{duty, float64(s.Usage.UtilPercent)}, {used, float64(s.Usage.MemoryUsedBytes)}, {total, float64(s.Usage.MemoryTotalBytes)}} {
				m.f.Metric = append(m.f.Metric, &dto.Metric{Label: labels, Gauge: &dto.Gauge{Value: ptr.To(m.v)}, TimestampMs: ptr.To(now.UnixMilli())})
			}
		}
	}
	if len(duty.Metric) == 0 {
		return nil
	}
	return []*dto.MetricFamily{duty, used, total}
}
