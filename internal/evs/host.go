package evs

import (
	"context"
	"fmt"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
)

// Host stages this host's disks for the pods of its agent (the runtime's
// ClaimVolumes).
type Host struct {
	Node string
	Pool *Pool
}

// Stage mounts pv's disk on the host and returns the folder.
func (h *Host) Stage(_ context.Context, pv *v1.PersistentVolume) (string, error) {
	if err := h.check(pv); err != nil {
		return "", err
	}
	fsType := pv.Spec.CSI.FSType
	if fsType == "" {
		fsType = DefaultFSType
	}
	return h.Pool.Stage(pv.Spec.CSI.VolumeHandle, fsType)
}

// check refuses a volume that is not a disk of this host.
func (h *Host) check(pv *v1.PersistentVolume) error {
	host := HostOf(pv)
	if host == "" {
		driver := "none"
		if pv.Spec.CSI != nil {
			driver = pv.Spec.CSI.Driver
		}
		return fmt.Errorf("persistentvolume %q is not a %s volume (CSI driver %s): this node mounts only %s volumes", pv.Name, ClassName, driver, Driver)
	}
	if host != h.Node {
		return fmt.Errorf("persistentvolume %q is a disk of host %q, not of this host %q", pv.Name, host, h.Node)
	}
	return nil
}

// Device attaches pv's disk as a block device.
func (h *Host) Device(_ context.Context, pv *v1.PersistentVolume) (string, string, error) {
	if err := h.check(pv); err != nil {
		return "", "", err
	}
	dev, err := h.Pool.Device(pv.Spec.CSI.VolumeHandle)
	return dev, h.Pool.staging(pv.Spec.CSI.VolumeHandle), err
}

// Unstage unmounts the disk staged at dir once no pod mounts it.
func (h *Host) Unstage(dir string) error {
	if filepath.Dir(dir) != filepath.Join(h.Pool.Dir, "staged") {
		return fmt.Errorf("%q is not a staged %s disk of this host", dir, ClassName)
	}
	_, err := h.Pool.Unstage(filepath.Base(dir))
	return err
}
