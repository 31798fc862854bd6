package snapshot

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snaplisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/utils"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// sourceRelease takes upstream's pvc-as-source-protection finalizer off a
// claim being deleted once no VolumeSnapshot names it as its source. The
// snapshot-controller puts that finalizer on the claim before it makes the
// snapshot's content, and takes it off only through that content: when the
// content is refused (a claim of another class snapshotted with class
// cci-evs, cci-evs-snapshot-source) and the VolumeSnapshot deleted, the
// finalizer stays and the claim, and its namespace, can never go. With no
// VolumeSnapshot of the claim left, it protects nothing.
type sourceRelease struct {
	kube  kubernetes.Interface
	pvcs  corelisters.PersistentVolumeClaimLister
	snaps snaplisters.VolumeSnapshotLister
}

// register hooks the release on the informers: a claim updated (its
// deletion asked) and a VolumeSnapshot gone (the last one naming a claim
// being deleted).
func (s *sourceRelease) register(pvcInformer, snapInformer cache.SharedIndexInformer) {
	_, _ = pvcInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.check(obj) },
		UpdateFunc: func(_, obj any) { s.check(obj) },
	})
	_, _ = snapInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			vs, ok := obj.(*snapv1.VolumeSnapshot)
			if !ok || vs.Spec.Source.PersistentVolumeClaimName == nil {
				return
			}
			if pvc, err := s.pvcs.PersistentVolumeClaims(vs.Namespace).Get(*vs.Spec.Source.PersistentVolumeClaimName); err == nil {
				s.check(pvc)
			}
		},
	})
}

func (s *sourceRelease) check(obj any) {
	pvc, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok || pvc.DeletionTimestamp == nil || !slices.Contains(pvc.Finalizers, utils.PVCFinalizer) {
		return
	}
	all, err := s.snaps.VolumeSnapshots(pvc.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, vs := range all {
		if src := vs.Spec.Source.PersistentVolumeClaimName; src != nil && *src == pvc.Name {
			return // upstream's own case: it releases the claim
		}
	}
	go s.release(pvc)
}

// release removes the finalizer, guarded by the claim's resourceVersion
// (a JSON patch test), so that a claim changed meanwhile is looked at again.
func (s *sourceRelease) release(pvc *v1.PersistentVolumeClaim) {
	i := slices.Index(pvc.Finalizers, utils.PVCFinalizer)
	patch, _ := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/resourceVersion", "value": pvc.ResourceVersion},
		{"op": "test", "path": "/metadata/finalizers/" + strconv.Itoa(i), "value": utils.PVCFinalizer},
		{"op": "remove", "path": "/metadata/finalizers/" + strconv.Itoa(i)},
	})
	_, err := s.kube.CoreV1().PersistentVolumeClaims(pvc.Namespace).Patch(context.Background(), pvc.Name, types.JSONPatchType, patch, metav1.PatchOptions{})
	if err != nil {
		slog.Debug("release a claim no snapshot names", "claim", pvc.Namespace+"/"+pvc.Name, "err", err)
		return
	}
	slog.Info("took the snapshot-source finalizer off a claim no VolumeSnapshot names", "claim", pvc.Namespace+"/"+pvc.Name)
}
