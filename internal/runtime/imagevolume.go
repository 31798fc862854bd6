package runtime

// Image volumes.
//
// A pod volume of source `image` is an OCI image's file tree, mounted
// read-only. The kubelet pulls it as it pulls a container image, with the
// volume's pullPolicy, before it starts each container that mounts it, and a
// failed pull fails that container with ErrImagePull / ImagePullBackOff
// (kuberuntime_manager.go getImageVolumes). containerd's CRI then mounts the
// unpacked image once per pod and image, and the container binds it
// read-only. The agent does the same with containerd's client:
//
//	container that mounts it starts ─► pull (policy) ─► unpack ─►
//	  snapshot View of the image's chain (read-only, gc.root) mounted on
//	  the pod's volumes/<name> ─► bind "ro" into the container (subPath: a
//	  folder of the image only, as containerd allows)
//	pod released ─► unmount (unmountVolumes) ─► View removed
//
// The mount is a plain host mount, so a gVisor pod reads it through its
// gofer like any other volume.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// imageVolumePrefix starts the key of every snapshot the agent views an
// image volume through.
const imageVolumePrefix = "cci-image-volume/"

// imageVolumeKey names the read-only snapshot of one image volume of a pod.
func imageVolumeKey(uid types.UID, volume string) string {
	return imageVolumePrefix + string(uid) + "/" + volume
}

// imageVolumesOf lists the image volumes that container c mounts, in the
// order of its volumeMounts, each once.
func imageVolumesOf(pod *v1.Pod, c *v1.Container) []*v1.Volume {
	var out []*v1.Volume
	seen := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		if seen[vm.Name] {
			continue
		}
		for i := range pod.Spec.Volumes {
			if v := &pod.Spec.Volumes[i]; v.Name == vm.Name && v.Image != nil {
				out = append(out, v)
				seen[vm.Name] = true
			}
		}
	}
	return out
}

// mountImageVolume mounts the unpacked image on the volume's folder, once
// per pod: a container that restarts, or a second one that mounts the same
// volume, finds it there.
func (r *Runtime) mountImageVolume(ctx context.Context, pod *v1.Pod, vol *v1.Volume, img *pulledImage) error {
	dir := r.volumeDir(pod, vol.Name)
	if mounted(dir) {
		return nil
	}
	if err := r.pulls.unpack(ctx, img.image); err != nil {
		return err
	}
	diffIDs, err := img.image.RootFS(ctx)
	if err != nil {
		return fmt.Errorf("read the layers of image %q: %w", img.ref, err)
	}
	sn := r.cfg.Containerd.SnapshotService(r.cfg.Snapshotter)
	key := imageVolumeKey(pod.UID, vol.Name)
	// gc.root keeps containerd's garbage collector off the view while the
	// pod lives; release removes it.
	mounts, err := sn.View(ctx, key, identity.ChainID(diffIDs).String(),
		snapshots.WithLabels(map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)}))
	if errdefs.IsAlreadyExists(err) {
		mounts, err = sn.Mounts(ctx, key)
	}
	if err != nil {
		return fmt.Errorf("view image %q in snapshotter %q: %w", img.ref, r.cfg.Snapshotter, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create volume folder: %w", err)
	}
	if err := mount.All(mounts, dir); err != nil {
		return fmt.Errorf("mount image %q on %q: %w", img.ref, dir, err)
	}
	return nil
}

// checkImageSubPath refuses a subPath of an image volume that is not a
// folder of the image, as containerd's CRI does: the image is read-only, so
// nothing can be created, and a single file is a non-goal of the feature
// (KEP 4639).
func checkImageSubPath(dir, subPath string) error {
	f, err := os.OpenInRoot(dir, subPath)
	if err != nil {
		return fmt.Errorf("subPath %q of an image volume must be a folder of the image: %w", subPath, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat subPath %q of the image volume: %w", subPath, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("subPath %q of an image volume must be a folder of the image; it is a file (only folder subPaths are supported)", subPath)
	}
	return nil
}

// removeImageVolumes removes the views of the pod's image volumes, once
// unmounted. Views of a pod the agent no longer knows (removed while the
// agent was down) go with the sweep below.
func (r *Runtime) removeImageVolumes(ctx context.Context, pod *v1.Pod) error {
	for _, vol := range pod.Spec.Volumes {
		if vol.Image == nil {
			continue
		}
		sn := r.cfg.Containerd.SnapshotService(r.cfg.Snapshotter)
		if err := sn.Remove(ctx, imageVolumeKey(pod.UID, vol.Name)); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove the view of image volume %q: %w", vol.Name, err)
		}
	}
	return nil
}

// sweepImageVolumes removes views of image volumes whose pod the agent does
// not know: keep says which pod UIDs it still runs.
func (r *Runtime) sweepImageVolumes(ctx context.Context, keep func(types.UID) bool) error {
	sn := r.cfg.Containerd.SnapshotService(r.cfg.Snapshotter)
	var stale []string
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		rest, ok := strings.CutPrefix(info.Name, imageVolumePrefix)
		if !ok {
			return nil
		}
		uid, _, _ := strings.Cut(rest, "/")
		if !keep(types.UID(uid)) {
			stale = append(stale, info.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list image volume views: %w", err)
	}
	for _, key := range stale {
		if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove stale image volume view %q: %w", key, err)
		}
	}
	return nil
}
