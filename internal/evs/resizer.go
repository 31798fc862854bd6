package evs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// resizer grows this host's disks when their claims ask for more: what
// the CSI external-resizer (the volume, then the claim's status) and the
// kubelet's node expansion (the file system) do between them, in one step
// here because the disk and its mount are on this host.
//
//	claim edited (request > status.capacity)
//	   ─► disk file, loop device, mounted file system grown (Pool.Expand)
//	   ─► PV spec.capacity ─► claim status.capacity, allocatedResources
//	   ─► event VolumeResizeSuccessful on the claim
//
// A claim whose StorageClass does not allow expansion never gets here:
// the apiserver refuses the edit.
//
// The agent of each host runs one for the cci-evs disks of its host; the
// control plane runs one for the cci-sfs disks it keeps (RunResizer).
type resizer struct {
	kube   kubernetes.Interface
	mine   func(*v1.PersistentVolume) bool
	pool   *Pool
	log    *slog.Logger
	queue  workqueue.TypedRateLimitingInterface[string]
	claims corelisters.PersistentVolumeClaimLister
	pvs    corelisters.PersistentVolumeLister
	events record.EventRecorder
}

func newResizer(kube kubernetes.Interface, node string, pool *Pool, log *slog.Logger) *resizer {
	mine := func(pv *v1.PersistentVolume) bool { return HostOf(pv) == node }
	return newResizerOf(kube, "evs-resizer", node, mine, pool, log)
}

func newResizerOf(kube kubernetes.Interface, component, host string, mine func(*v1.PersistentVolume) bool, pool *Pool, log *slog.Logger) *resizer {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return &resizer{
		kube: kube, mine: mine, pool: pool, log: log,
		queue:  workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		events: b.NewRecorder(scheme.Scheme, v1.EventSource{Component: component, Host: host}),
	}
}

// RunResizer grows the disks of pool whose volumes mine selects when
// their claims ask for more, until ctx ends: the same growth as a cci-evs
// disk's, for the disks of another class kept as cci-evs disks (cci-sfs
// on the control plane's host). component names the events' source.
func RunResizer(ctx context.Context, kube kubernetes.Interface, component string, mine func(*v1.PersistentVolume) bool, pool *Pool, log *slog.Logger) {
	newResizerOf(kube, component, "", mine, pool, log).run(ctx)
}

func (r *resizer) run(ctx context.Context) {
	defer r.queue.ShutDown()
	f := informers.NewSharedInformerFactory(r.kube, 10*time.Minute)
	ci := f.Core().V1().PersistentVolumeClaims()
	r.claims, r.pvs = ci.Lister(), f.Core().V1().PersistentVolumes().Lister()
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	_, _ = ci.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), ci.Informer().HasSynced, f.Core().V1().PersistentVolumes().Informer().HasSynced) {
		return
	}
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for r.next(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
}

func (r *resizer) next(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.sync(ctx, key); err != nil {
		r.log.Warn("resize volume", "claim", key, "err", err)
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// sync grows the claim's disk if the claim asks for more than it has.
func (r *resizer) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pvc, err := r.claims.PersistentVolumeClaims(ns).Get(name)
	if err != nil || pvc.Spec.VolumeName == "" || pvc.Status.Phase != v1.ClaimBound {
		return nil
	}
	pv, err := r.pvs.Get(pvc.Spec.VolumeName)
	if err != nil || pv.Spec.CSI == nil || !r.mine(pv) {
		return nil
	}
	want, ok := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	if !ok {
		return nil
	}
	have := pvc.Status.Capacity[v1.ResourceStorage]
	if want.Cmp(have) <= 0 {
		return nil
	}
	size := RoundSize(want)
	thick := pv.Spec.CSI.VolumeAttributes[AllocationAttribute] == "thick"
	if err := r.pool.Expand(pv.Spec.CSI.VolumeHandle, size, thick); err != nil {
		r.events.Eventf(pvc, v1.EventTypeWarning, "VolumeResizeFailed", "resize volume %q to %s: %v", pv.Name, want.String(), err)
		return err
	}
	capacity := *resource.NewQuantity(size, resource.BinarySI)
	if cur := pv.Spec.Capacity[v1.ResourceStorage]; cur.Cmp(capacity) < 0 {
		pv = pv.DeepCopy()
		pv.Spec.Capacity[v1.ResourceStorage] = capacity
		if _, err := r.kube.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update the capacity of volume %q: %w", pv.Name, err)
		}
	}
	pvc = pvc.DeepCopy()
	if pvc.Status.Capacity == nil {
		pvc.Status.Capacity = v1.ResourceList{}
	}
	pvc.Status.Capacity[v1.ResourceStorage] = capacity
	if pvc.Status.AllocatedResources == nil {
		pvc.Status.AllocatedResources = v1.ResourceList{}
	}
	pvc.Status.AllocatedResources[v1.ResourceStorage] = capacity
	delete(pvc.Status.AllocatedResourceStatuses, v1.ResourceStorage)
	var conds []v1.PersistentVolumeClaimCondition
	for _, c := range pvc.Status.Conditions {
		if c.Type != v1.PersistentVolumeClaimResizing && c.Type != v1.PersistentVolumeClaimFileSystemResizePending {
			conds = append(conds, c)
		}
	}
	pvc.Status.Conditions = conds
	if _, err := r.kube.CoreV1().PersistentVolumeClaims(ns).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update the status of claim %s: %w", key, err)
	}
	r.events.Eventf(pvc, v1.EventTypeNormal, "VolumeResizeSuccessful", "resize volume %q to %s: done", pv.Name, capacity.String())
	r.log.Info("disk grown", "pv", pv.Name, "claim", key, "bytes", size)
	return nil
}
