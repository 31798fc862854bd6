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
	"strings"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClaimVolumes makes the PersistentVolumes of this host ready to mount. Its
// methods are idempotent and may be called concurrently.
type ClaimVolumes interface {
	// Stage makes pv's file system ready on the host and returns the
	// folder it is mounted on; a staged volume is returned as it is.
	Stage(ctx context.Context, pv *v1.PersistentVolume) (string, error)
	// Unstage undoes Stage for the volume staged at dir, once no pod of
	// the host mounts it any more (a call while one does is no change).
	Unstage(dir string) error
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
	pv, err := r.cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get persistentvolume %q of claim %q: %w", pvc.Spec.VolumeName, claim, err)
	}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return fmt.Errorf("persistentvolume %q is a raw block volume: volumeMode Block is not served on this node yet; use volumeMode Filesystem", pv.Name)
	}
	staged, err := r.cfg.Claims.Stage(ctx, pv)
	if err != nil {
		return fmt.Errorf("stage persistentvolume %q: %w", pv.Name, err)
	}
	rec := r.claimRecord(pod, vol.Name)
	if err := os.MkdirAll(filepath.Dir(rec), 0o755); err != nil {
		return err
	}
	// Recorded before the publish: a publish whose record is lost would
	// keep its volume staged for ever.
	if err := os.WriteFile(rec, []byte(staged), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := unix.Mount(staged, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind persistentvolume %q into the pod: %w", pv.Name, err)
	}
	return nil
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
		raw, err := os.ReadFile(rec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r.cfg.Claims == nil {
			continue
		}
		if err := r.cfg.Claims.Unstage(strings.TrimSpace(string(raw))); err != nil {
			errs = append(errs, fmt.Errorf("unstage volume %q: %w", e.Name(), err))
			continue
		}
		_ = os.Remove(rec)
	}
	return errors.Join(errs...)
}
