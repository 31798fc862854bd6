package runtime

// Persistent volumes: the kubelet's volume manager work for
// persistentVolumeClaim (and generic ephemeral) volumes.
//
//	claim bound? ─► stage (host: device, mkfs once, mount; ClaimVolumes)
//	   ─► publish: bind mount of the staged folder on the pod's volume folder
//	   ─► containers bind the pod's folder as any other volume
//	pod released ─► unpublish (unmountVolumes) ─► unstage when no pod of
//	   the host mounts it any more
//
// Everything is a mount on the host, so an agent that restarts finds each
// pod's volume mounted as it left it: preparing a mounted volume is no
// change, and the containers that run keep their mounts.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ClaimVolumes makes the PersistentVolumes of this host ready to mount. Its
// methods are idempotent and may be called concurrently.
type ClaimVolumes interface {
	// Stage makes pv's file system ready on the host and returns the
	// folder it is mounted on; a staged volume is returned as it is.
	Stage(ctx context.Context, pv *v1.PersistentVolume) (string, error)
	// Device attaches pv's disk to the host as a block device (volumeMode
	// Block) and returns the device's path and the reference Unstage
	// takes; an attached disk is returned as it is.
	Device(ctx context.Context, pv *v1.PersistentVolume) (dev, ref string, err error)
	// Unstage undoes Stage (ref is the folder it returned) or Device, once
	// no pod of the host mounts the volume any more (a call while one does
	// is no change).
	Unstage(ref string) error
}

// claimName is the claim behind a volume, or "" for a volume of another
// kind: a persistentVolumeClaim's, or the generic ephemeral volume's
// claim, which the ephemeral volume controller names <pod>-<volume>.
func claimName(pod *v1.Pod, vol v1.Volume) (string, bool) {
	switch {
	case vol.PersistentVolumeClaim != nil:
		return vol.PersistentVolumeClaim.ClaimName, vol.PersistentVolumeClaim.ReadOnly
	case vol.Ephemeral != nil:
		return pod.Name + "-" + vol.Name, false
	}
	return "", false
}

// claimRecord is where the pod's folder remembers the staged folder of a
// claim volume, for unstaging when the claim may be gone from the API.
func (r *Runtime) claimRecord(pod *v1.Pod, volName string) string {
	return filepath.Join(r.podDir(pod.UID), "claims", volName)
}

// prepareClaim publishes the volume of a bound claim into the pod's folder.
func (r *Runtime) prepareClaim(ctx context.Context, pod *v1.Pod, vol v1.Volume, claim string) error {
	dir := r.volumeDir(pod, vol.Name)
	if mounted(dir) {
		return nil
	}
	if r.cfg.Claims == nil {
		return fmt.Errorf("persistent volumes are not served on this node")
	}
	pvc, err := r.cfg.Kube.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("persistentvolumeclaim %q not found", claim)
	}
	if err != nil {
		return fmt.Errorf("get persistentvolumeclaim %q: %w", claim, err)
	}
	if vol.Ephemeral != nil && !metav1.IsControlledBy(pvc, pod) {
		return fmt.Errorf("persistentvolumeclaim %q was not created for the pod", claim)
	}
	if pvc.Status.Phase != v1.ClaimBound || pvc.Spec.VolumeName == "" {
		return fmt.Errorf("persistentvolumeclaim %q is not bound yet", claim)
	}
	if slices.Contains(pvc.Spec.AccessModes, v1.ReadWriteOncePod) {
		// The scheduler keeps a second pod of the claim off every node; a
		// pod bound by nodeName is held here, as the kubelet's volume
		// manager holds it, until the first one is gone.
		if other := r.claimUser(pod, claim); other != "" {
			return fmt.Errorf("volume uses the ReadWriteOncePod access mode and is already in use by another pod (%s)", other)
		}
	}
	pv, err := r.cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get persistentvolume %q of claim %q: %w", pvc.Spec.VolumeName, claim, err)
	}
	rec := r.claimRecord(pod, vol.Name)
	if err := os.MkdirAll(filepath.Dir(rec), 0o755); err != nil {
		return err
	}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == v1.PersistentVolumeBlock {
		// The containers get the device itself (blockDeviceOpts).
		dev, ref, err := r.cfg.Claims.Device(ctx, pv)
		if err != nil {
			return fmt.Errorf("attach persistentvolume %q: %w", pv.Name, err)
		}
		return os.WriteFile(rec, []byte(ref+"\n"+dev+"\n"), 0o644)
	}
	staged, err := r.cfg.Claims.Stage(ctx, pv)
	if err != nil {
		return fmt.Errorf("stage persistentvolume %q: %w", pv.Name, err)
	}
	// Recorded before the publish: a publish whose record is lost would
	// keep its volume staged for ever.
	if err := os.WriteFile(rec, []byte(staged+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := unix.Mount(staged, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind persistentvolume %q into the pod: %w", pv.Name, err)
	}
	// What is mounted on it later (a volume mounted again, claimrevive.go)
	// reaches the running containers.
	return shareClaimMount(dir)
}

// releaseClaims unstages the claim volumes the pod published, once its
// folders are unmounted; each stays staged while another pod mounts it.
func (r *Runtime) releaseClaims(pod *v1.Pod) error {
	entries, err := os.ReadDir(filepath.Join(r.podDir(pod.UID), "claims"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		rec := filepath.Join(r.podDir(pod.UID), "claims", e.Name())
		if mounted(r.volumeDir(pod, e.Name())) {
			continue
		}
		ref, dev, err := readClaimRecord(rec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r.cfg.Claims == nil {
			continue
		}
		if dev != "" && r.blockInUse(pod.UID, ref) {
			// Another pod of the host has the device: no mount tells.
			_ = os.Remove(rec)
			continue
		}
		if err := r.cfg.Claims.Unstage(ref); err != nil {
			errs = append(errs, fmt.Errorf("unstage volume %q: %w", e.Name(), err))
			continue
		}
		_ = os.Remove(rec)
	}
	return errors.Join(errs...)
}

// readClaimRecord reads what prepareClaim recorded: the reference to
// unstage and, for a block volume, the device.
func readClaimRecord(path string) (ref, dev string, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) > 1 {
		dev = lines[1]
	}
	return lines[0], dev, nil
}

// blockInUse tells whether a pod of the host other than uid has the block
// volume ref.
func (r *Runtime) blockInUse(uid types.UID, ref string) bool {
	recs, _ := filepath.Glob(filepath.Join(r.cfg.StateDir, "pods", "*", "claims", "*"))
	for _, rec := range recs {
		if strings.Contains(rec, string(uid)) {
			continue
		}
		if other, _, err := readClaimRecord(rec); err == nil && other == ref {
			return true
		}
	}
	return false
}

// blockDeviceOpts give the container the block devices of its
// volumeDevices, at the paths it names, as the kubelet has the runtime do.
func (r *Runtime) blockDeviceOpts(pod *v1.Pod, c *v1.Container, handler string) ([]oci.SpecOpts, error) {
	if len(c.VolumeDevices) == 0 {
		return nil, nil
	}
	if handler == handlerGVisor {
		return nil, &configError{fmt.Errorf("container %q has volumeDevices: gVisor's sandbox cannot pass a host block device; use the runc runtime or volumeMode Filesystem", c.Name)}
	}
	var opts []oci.SpecOpts
	for _, vd := range c.VolumeDevices {
		_, dev, err := readClaimRecord(r.claimRecord(pod, vd.Name))
		if err != nil || dev == "" {
			return nil, &configError{fmt.Errorf("volumeDevice %q of container %q: the volume is not a persistentVolumeClaim of volumeMode Block", vd.Name, c.Name)}
		}
		opts = append(opts, oci.WithDevices(dev, vd.DevicePath, "rwm"), allowDevice(vd.DevicePath))
	}
	return opts, nil
}

// allowDevice lets the container's devices cgroup open the device that
// oci.WithDevices put at path (which adds the node only).
func allowDevice(path string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		for _, d := range s.Linux.Devices {
			if d.Path != path {
				continue
			}
			if s.Linux.Resources == nil {
				s.Linux.Resources = &specs.LinuxResources{}
			}
			major, minor := d.Major, d.Minor
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
				Allow: true, Type: d.Type, Major: &major, Minor: &minor, Access: "rwm",
			})
			return nil
		}
		return fmt.Errorf("device %q missing from the container's spec", path)
	}
}

// mountsUnder lists the mount points at or under dir.
func mountsUnder(dir string) []string {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// claimUser names another pod of this node, not finished, with a volume of
// the claim; "" when there is none.
func (r *Runtime) claimUser(pod *v1.Pod, claim string) string {
	r.mu.Lock()
	others := r.activePods(pod)
	r.mu.Unlock()
	for _, o := range others {
		if o.Namespace != pod.Namespace {
			continue
		}
		for _, vol := range o.Spec.Volumes {
			if name, _ := claimName(o, vol); name == claim {
				return o.Name
			}
		}
	}
	return ""
}
