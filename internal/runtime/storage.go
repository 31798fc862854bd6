package runtime

// Local ephemeral storage limits.
//
// As the kubelet's eviction manager does for local storage, every
// storageCheckInterval a pod that limits its ephemeral storage (a
// container's limits.ephemeral-storage, an emptyDir's sizeLimit) has its
// use measured, and the first limit it is past evicts it: its containers
// are killed at once, it is Failed with reason Evicted and the kubelet's
// message, and what it wrote goes with its sandbox. The use counted is the
// kubelet's:
//
//   - a container: its writable layer (the containerd snapshot over its
//     image) and its log files;
//   - an emptyDir on disk: the files in it (a Memory one is a tmpfs of its
//     size, counted as memory);
//   - the pod: its containers and emptyDirs together, against the sum of
//     its containers' limits.
//
// Pods that set no such limit are not measured: they share the node's
// disk as on a kubelet without eviction thresholds.

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// storageCheckInterval is how often a pod's storage use is measured: the
// kubelet's eviction manager runs every 10 s too.
const storageCheckInterval = 10 * time.Second

// Reason and messages of an eviction for local storage, as the kubelet
// words them (pkg/kubelet/eviction/helpers.go).
const (
	evictedReason                = "Evicted"
	emptyDirStorageMessage       = "Usage of EmptyDir volume %q exceeds the limit %q. "
	podStorageMessage            = "Pod ephemeral local storage usage exceeds the total limit of containers %s. "
	containerStorageMessage      = "Container %s exceeded its local ephemeral storage limit %q. "
	disruptionTerminationReason  = "TerminationByKubelet"
	disruptionTerminationMessage = "The node had condition: [LocalStorageExceeded]. "
)

// storageUse is what a pod's containers and emptyDirs use, in bytes, by name.
type storageUse struct {
	containers map[string]int64
	emptyDirs  map[string]int64
}

// limitsStorage tells whether the pod sets any local storage limit.
func limitsStorage(pod *v1.Pod) bool {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.Medium != v1.StorageMediumMemory && v.EmptyDir.SizeLimit != nil {
			return true
		}
	}
	for _, c := range allContainers(pod) {
		if _, ok := c.Resources.Limits[v1.ResourceEphemeralStorage]; ok {
			return true
		}
	}
	return false
}

// allContainers are the pod's init and app containers.
func allContainers(pod *v1.Pod) []v1.Container {
	return append(append([]v1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
}

// storageViolation is the kubelet's eviction message for the first limit
// the pod is past (emptyDirs, then the pod, then each container), or "".
func storageViolation(pod *v1.Pod, use storageUse) string {
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir == nil || v.EmptyDir.Medium == v1.StorageMediumMemory || v.EmptyDir.SizeLimit == nil {
			continue
		}
		if used, ok := use.emptyDirs[v.Name]; ok && v.EmptyDir.SizeLimit.Cmp(*resource.NewQuantity(used, resource.BinarySI)) < 0 {
			return fmt.Sprintf(emptyDirStorageMessage, v.Name, v.EmptyDir.SizeLimit.String())
		}
	}
	var podLimit resource.Quantity
	limited := false
	for _, c := range allContainers(pod) {
		if q, ok := c.Resources.Limits[v1.ResourceEphemeralStorage]; ok {
			podLimit.Add(q)
			limited = true
		}
	}
	if limited {
		var total int64
		for _, n := range use.containers {
			total += n
		}
		for _, n := range use.emptyDirs {
			total += n
		}
		if podLimit.Cmp(*resource.NewQuantity(total, resource.BinarySI)) < 0 {
			return fmt.Sprintf(podStorageMessage, podLimit.String())
		}
	}
	for _, c := range allContainers(pod) {
		q, ok := c.Resources.Limits[v1.ResourceEphemeralStorage]
		if !ok {
			continue
		}
		if used, ok := use.containers[c.Name]; ok && q.Cmp(*resource.NewQuantity(used, resource.BinarySI)) < 0 {
			return fmt.Sprintf(containerStorageMessage, c.Name, q.String())
		}
	}
	return ""
}

// dirSize is the size of the regular files under dir (0 if it is gone).
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// measureStorage reads the pod's storage use: each container's writable
// layer (of its current run) and logs, and each emptyDir on disk.
func (w *podWorker) measureStorage(ctx context.Context, pod *v1.Pod) storageUse {
	use := storageUse{containers: map[string]int64{}, emptyDirs: map[string]int64{}}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.Medium != v1.StorageMediumMemory {
			use.emptyDirs[v.Name] = dirSize(w.r.volumeDir(pod, v.Name))
		}
	}
	w.mu.Lock()
	ids := map[string]string{}
	for _, cr := range w.rec.Containers {
		if !cr.Ephemeral {
			ids[cr.Name] = cr.ID
		}
	}
	w.mu.Unlock()
	for name, id := range ids {
		n := dirSize(filepath.Join(w.r.podDir(pod.UID), "logs", name))
		if c, err := w.r.cfg.Containerd.LoadContainer(ctx, id); err == nil {
			if info, err := c.Info(ctx); err == nil && info.SnapshotKey != "" {
				if u, err := w.r.cfg.Containerd.SnapshotService(info.Snapshotter).Usage(ctx, info.SnapshotKey); err == nil {
					n += u.Size
				}
			}
		}
		use.containers[name] = n
	}
	return use
}

// checkStorage evicts the pod when it is past a storage limit; it says
// whether it did.
func (w *podWorker) checkStorage(pod *v1.Pod) bool {
	msg := storageViolation(pod, w.measureStorage(w.ctx(), pod))
	if msg == "" {
		return false
	}
	w.log.Warn("pod evicted: local storage limit exceeded", "message", msg)
	w.event(v1.EventTypeWarning, evictedReason, "%s", msg)
	w.killAll(0)
	w.update(func(rec *podRecord) {
		now := metav1.Now()
		rec.Pod.Status.Conditions = append(rec.Pod.Status.Conditions, v1.PodCondition{
			Type: v1.DisruptionTarget, Status: v1.ConditionTrue, LastTransitionTime: now,
			Reason: disruptionTerminationReason, Message: disruptionTerminationMessage,
		})
	})
	w.finish(v1.PodFailed, evictedReason, msg)
	w.release()
	// What it wrote goes now, not when the pod is deleted: its writable
	// layers and its emptyDirs. Its logs stay for kubectl logs.
	ctx := w.ctx()
	w.mu.Lock()
	var ids []string
	for _, cr := range w.rec.Containers {
		ids = append(ids, cr.ID)
	}
	w.mu.Unlock()
	for _, id := range ids {
		if c, err := w.r.cfg.Containerd.LoadContainer(ctx, id); err == nil {
			_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
		}
	}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil && v.EmptyDir.Medium != v1.StorageMediumMemory {
			_ = os.RemoveAll(w.r.volumeDir(pod, v.Name))
		}
	}
	return true
}
