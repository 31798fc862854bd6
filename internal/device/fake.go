package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// Fake devices stand for NVIDIA GPUs on a host without any, for tests and
// demos: the node advertises nvidia.com/gpu, pods are given whole devices,
// and each is a real CDI device whose device node is a character device
// the agent creates with the numbers of /dev/null (harmless to open, read
// and write). A container sees it as /dev/nvidia<N>, as it would a real
// GPU's, and NVIDIA_VISIBLE_DEVICES lists its ID.
type Fake struct {
	// Count is the number of devices.
	Count int
	// Dir holds the device nodes, e.g. <data>/agent/devices.
	Dir string
}

// Fake device model, as its labels show it.
const (
	FakeProduct     = "CCI-Fake-GPU"
	FakeMemoryBytes = 16 << 30
	// FakeCDIKind is the CDI kind of fake devices: apart from nvidia.com/gpu
	// so that no spec of a real GPU is ever mistaken for them.
	FakeCDIKind = "fake.cci.dev/gpu"
)

func (f *Fake) Name() string              { return "fake" }
func (f *Fake) Resource() v1.ResourceName { return NVIDIAGPU }
func (f *Fake) VisibleEnv() string        { return "NVIDIA_VISIBLE_DEVICES" }
func (f *Fake) Close()                    {}

// FakeID is the ID of fake device i, shaped like a GPU UUID and saying
// what it is.
func FakeID(i int) string { return fmt.Sprintf("GPU-fake-%04d", i) }

// Discover creates the device nodes (again, if an earlier agent left them).
func (f *Fake) Discover(context.Context) ([]Device, error) {
	if f.Count < 0 {
		return nil, fmt.Errorf("fake GPU count %d: want 0 or more", f.Count)
	}
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create the folder of fake device nodes: %w", err)
	}
	null := unix.Mkdev(1, 3)
	devs := make([]Device, f.Count)
	for i := range devs {
		path := f.nodePath(i)
		var st unix.Stat_t
		err := unix.Stat(path, &st)
		if err == nil && (st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != null) {
			// Something else under that name: replace it.
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("replace %q: %w", path, err)
			}
			err = unix.ENOENT
		}
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(null)); err != nil {
				return nil, fmt.Errorf("create fake device node %q (mknod needs root): %w", path, err)
			}
		} else if err != nil {
			return nil, fmt.Errorf("fake device node %q: %w", path, err)
		}
		devs[i] = Device{ID: FakeID(i), Index: i, CDIName: FakeCDIKind + "=" + strconv.Itoa(i), Product: FakeProduct, MemoryBytes: FakeMemoryBytes}
	}
	return devs, nil
}

func (f *Fake) nodePath(i int) string { return filepath.Join(f.Dir, "fake-nvidia"+strconv.Itoa(i)) }

// Spec names each device by its index, with its node at /dev/nvidia<N>.
func (f *Fake) Spec(devs []Device) (*cdispec.Spec, error) {
	spec := &cdispec.Spec{
		Version:     cdispec.CurrentVersion,
		Kind:        FakeCDIKind,
		Annotations: map[string]string{"cci.io/fake": "true"},
	}
	for _, d := range devs {
		spec.Devices = append(spec.Devices, cdispec.Device{
			Name: strconv.Itoa(d.Index),
			ContainerEdits: cdispec.ContainerEdits{
				DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/nvidia" + strconv.Itoa(d.Index), HostPath: f.nodePath(d.Index), Type: "c", Major: 1, Minor: 3, Permissions: "rw"}},
			},
		})
	}
	return spec, nil
}

func (f *Fake) Labels(devs []Device) map[string]string {
	return gpuLabels(devs)
}

// UnhealthyFile is the file that, while it exists, makes fake device i
// unhealthy, as an XID error makes a real GPU; what it holds is the
// reason. Removing it makes the device healthy again (which a real GPU
// only becomes after a reset and an agent restart).
func (f *Fake) UnhealthyFile(i int) string {
	return f.nodePath(i) + ".unhealthy"
}

// fakeHealthPoll is how often the unhealthy files are looked at.
const fakeHealthPoll = time.Second

// WatchHealth reports a fake device unhealthy while its UnhealthyFile
// exists, and healthy again once it is gone: a way for tests and demos to
// take the path a failing GPU takes.
func (f *Fake) WatchHealth(ctx context.Context, devs []Device, report func(id, reason string)) {
	bad := map[string]string{}
	tick := time.NewTicker(fakeHealthPoll)
	defer tick.Stop()
	for {
		for _, d := range devs {
			reason := ""
			if b, err := os.ReadFile(f.UnhealthyFile(d.Index)); err == nil {
				reason = strings.TrimSpace(string(b))
				if reason == "" {
					reason = "marked unhealthy by " + f.UnhealthyFile(d.Index)
				}
			}
			if was, ok := bad[d.ID]; ok == (reason != "") && was == reason {
				continue
			}
			if reason == "" {
				delete(bad, d.ID)
			} else {
				bad[d.ID] = reason
			}
			report(d.ID, reason)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Usage is zero for every device, marked fake.
func (f *Fake) Usage(devs []Device) map[string]Usage {
	out := map[string]Usage{}
	for _, d := range devs {
		out[d.ID] = Usage{MemoryTotalBytes: d.MemoryBytes, Fake: true}
	}
	return out
}

// gpuLabels are NVIDIA's feature-discovery labels of the first device's
// model: product (spaces as dashes, as GFD writes it), memory in MiB, count.
func gpuLabels(devs []Device) map[string]string {
	if len(devs) == 0 {
		return nil
	}
	return map[string]string{
		ProductLabel: labelValue(devs[0].Product),
		MemoryLabel:  strconv.FormatUint(devs[0].MemoryBytes>>20, 10),
		CountLabel:   strconv.Itoa(len(devs)),
	}
}

// labelValue makes a product name a valid label value: spaces become
// dashes, other characters a label may not hold are dropped, at most 63.
func labelValue(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
			b = append(b, c)
		case c == ' ':
			b = append(b, '-')
		}
	}
	for len(b) > 0 && !isAlnum(b[0]) {
		b = b[1:]
	}
	if len(b) > 63 {
		b = b[:63]
	}
	for len(b) > 0 && !isAlnum(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return string(b)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
