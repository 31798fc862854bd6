// Package evs is CCI's block storage (cci-evs): disks of exactly the size
// a PersistentVolumeClaim asks, on the host that runs its first pod, made
// by the host's agent.
//
// Where provisioning runs: a disk lives on one host (its file and loop
// device are that host's), so the agent of the host the scheduler selected
// for the claim's first pod (volume binding WaitForFirstConsumer) makes
// it, as the CSI external-provisioner does in its per-node deployment and
// local-path-provisioner's helpers do on their node. Every agent runs the
// upstream provisioner library's controller for provisioner evs.cci.io,
// qualified to claims whose selected node is its own and to volumes whose
// host is its own; the control plane needs no path to the hosts' disks,
// and a host's disks are made, grown and removed by the one process that
// mounts them. The PV carries node affinity to its host, so the scheduler
// keeps the claim's later pods there.
//
// Disks are sparse files on loop devices (disk.go), not LVM thin volumes:
// this project's hosts (and CI's) run kernels without device-mapper, where
// LVM cannot work at all; a sparse file of the claim's size on a loop
// device enforces the size (ENOSPC past it), is thin (blocks are taken as
// they are written) and grows online (file, loop device, xfs_growfs).
package evs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

const (
	// Driver is the provisioner name of cci-evs and the CSI driver name its
	// PersistentVolumes carry.
	Driver = "evs.cci.io"
	// ClassName is the StorageClass of cci-evs.
	ClassName = "cci-evs"
	// SharedClassName is the StorageClass that offers ReadWriteMany.
	SharedClassName = "cci-sfs"
	// HostAttribute is the volume attribute naming the disk's host.
	HostAttribute = "cci.io/host"
	// FSTypeParameter is the StorageClass parameter choosing the file
	// system of Filesystem volumes: xfs (default) or ext4.
	FSTypeParameter = "fsType"
	// CSIFSTypeParameter is the CSI external-provisioner's name of the
	// same parameter, which tools written for any CSI driver set (the
	// upstream storage e2e suite among them); it means what fsType means.
	CSIFSTypeParameter = "csi.storage.k8s.io/fstype"
	// AllocationParameter is the StorageClass parameter choosing how a
	// disk takes its host's space: "thin" (default: as it is written, so
	// a host may promise more than it has, and a full host file system
	// fails the writes of disks that grow) or "thick" (all at once, when
	// it is made or grown).
	AllocationParameter = "allocation"
	// AllocationAttribute carries the allocation on the volume, for growth.
	AllocationAttribute = "cci.io/allocation"
	// DefaultFSType is the file system of a disk whose class names none:
	// XFS grows online with the rights an agent has everywhere (ext4's
	// online growth needs CAP_SYS_RESOURCE, which some hosts' root lacks).
	DefaultFSType = "xfs"

	mib = 1 << 20
)

// Provisioner makes and removes the disks of one host for the upstream
// provisioner library's controller.
type Provisioner struct {
	Node string
	Pool *Pool
	// Snapshots finds the copies that claims with a VolumeSnapshot as
	// data source are restored from; nil refuses such claims.
	Snapshots SnapshotLookup
	Log       *slog.Logger
}

var (
	_ controller.Provisioner      = (*Provisioner)(nil)
	_ controller.Qualifier        = (*Provisioner)(nil)
	_ controller.DeletionGuard    = (*Provisioner)(nil)
	_ controller.BlockProvisioner = (*Provisioner)(nil)
)

// ShouldProvision takes the claims the scheduler placed on this host, and
// the claims restored from a snapshot whose copy is on this host wherever
// the scheduler placed them: the copy is a file of this host, so the new
// disk is made here and its volume's node affinity brings the claim's pod
// here (the scheduler finds the bound volume does not fit the node it
// picked first and places the pod again). A restore whose snapshot cannot
// be used is taken by the selected host, which reports why.
func (p *Provisioner) ShouldProvision(ctx context.Context, pvc *v1.PersistentVolumeClaim) bool {
	selected := pvc.Annotations["volume.kubernetes.io/selected-node"]
	if selected == "" {
		return false
	}
	if ref := snapshotRef(pvc); ref != nil && p.Snapshots != nil && ref.Namespace == nil {
		if src, err := p.Snapshots.Lookup(ctx, pvc.Namespace, ref.Name); err == nil {
			return p.Pool.HasSnapshot(src.handle)
		}
	}
	return selected == p.Node
}

// snapshotRef is the claim's data source, or nil for a claim made empty.
func snapshotRef(pvc *v1.PersistentVolumeClaim) *v1.TypedObjectReference {
	if ref := pvc.Spec.DataSourceRef; ref != nil {
		return ref
	}
	if ds := pvc.Spec.DataSource; ds != nil {
		return &v1.TypedObjectReference{APIGroup: ds.APIGroup, Kind: ds.Kind, Name: ds.Name}
	}
	return nil
}

// snapshotGroup is the API group of VolumeSnapshots.
const snapshotGroup = "snapshot.storage.k8s.io"

// source is the snapshot a claim is restored from; ok is false for a
// claim made empty.
func (p *Provisioner) source(ctx context.Context, pvc *v1.PersistentVolumeClaim) (src snapshotSource, ok bool, err error) {
	ref := snapshotRef(pvc)
	if ref == nil {
		return snapshotSource{}, false, nil
	}
	group := ""
	if ref.APIGroup != nil {
		group = *ref.APIGroup
	}
	if group != snapshotGroup || ref.Kind != "VolumeSnapshot" {
		return snapshotSource{}, false, fmt.Errorf("claim %s/%s: data source %s %q is not offered: StorageClass %s makes disks empty or from a VolumeSnapshot (apiGroup %s)", pvc.Namespace, pvc.Name, ref.Kind, ref.Name, ClassName, snapshotGroup)
	}
	if ref.Namespace != nil && *ref.Namespace != pvc.Namespace {
		return snapshotSource{}, false, fmt.Errorf("claim %s/%s: VolumeSnapshot %s/%s is in another namespace: StorageClass %s restores only snapshots of the claim's namespace", pvc.Namespace, pvc.Name, *ref.Namespace, ref.Name, ClassName)
	}
	if p.Snapshots == nil {
		return snapshotSource{}, false, fmt.Errorf("claim %s/%s: this host cannot restore VolumeSnapshots", pvc.Namespace, pvc.Name)
	}
	src, err = p.Snapshots.Lookup(ctx, pvc.Namespace, ref.Name)
	if err != nil {
		return snapshotSource{}, false, fmt.Errorf("claim %s/%s cannot be restored: %w", pvc.Namespace, pvc.Name, err)
	}
	return src, true, nil
}

// ShouldDelete takes the volumes whose disk is on this host.
func (p *Provisioner) ShouldDelete(_ context.Context, pv *v1.PersistentVolume) bool {
	return HostOf(pv) == p.Node
}

// SupportsBlock: a disk can be handed to a pod as a block device.
func (p *Provisioner) SupportsBlock(context.Context) bool { return true }

// HostOf is the host of a cci-evs volume, or "" for another volume.
func HostOf(pv *v1.PersistentVolume) string {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver {
		return ""
	}
	return pv.Spec.CSI.VolumeAttributes[HostAttribute]
}

// AccessModesMessage is the refusal of a claim of cci-evs for an access
// mode a disk of one host cannot give; the control plane's admission
// policy and the provisioner say the same.
const AccessModesMessage = "StorageClass " + ClassName + " offers only ReadWriteOnce and ReadWriteOncePod (a disk of one host): " +
	"for a volume that many pods share (ReadWriteMany, ReadOnlyMany) use StorageClass " + SharedClassName +
	" where the cluster offers it (kubectl get storageclass), or give each pod its own claim"

// CheckAccessModes refuses the access modes a disk of one host cannot
// give, naming the class that gives them.
func CheckAccessModes(modes []v1.PersistentVolumeAccessMode) error {
	for _, m := range modes {
		switch m {
		case v1.ReadWriteOnce, v1.ReadWriteOncePod:
		default:
			return fmt.Errorf("access mode %s: %s", m, AccessModesMessage)
		}
	}
	return nil
}

// RoundSize is a claim's size as a disk has it: whole MiB, at least 1.
func RoundSize(q resource.Quantity) int64 {
	n := q.Value()
	if n < mib {
		n = mib
	}
	return (n + mib - 1) / mib * mib
}

// Provision makes the disk of a claim on this host and returns its volume.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	pvc := opts.PVC
	src, restore, err := p.source(ctx, pvc)
	switch {
	case err != nil && opts.SelectedNodeName != p.Node:
		return nil, controller.ProvisioningNoChange, &controller.IgnoredError{Reason: "the claim's selected node is another host"}
	case err != nil:
		return nil, controller.ProvisioningFinished, err
	case restore && !p.Pool.HasSnapshot(src.handle):
		return nil, controller.ProvisioningNoChange, &controller.IgnoredError{Reason: "the claim's snapshot is on another host"}
	case !restore && opts.SelectedNodeName != p.Node:
		return nil, controller.ProvisioningNoChange, &controller.IgnoredError{Reason: "the claim's selected node is another host"}
	}
	if err := CheckAccessModes(pvc.Spec.AccessModes); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	req, ok := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	if !ok || req.IsZero() {
		return nil, controller.ProvisioningFinished, fmt.Errorf("claim %s/%s asks for no storage: set spec.resources.requests.storage", pvc.Namespace, pvc.Name)
	}
	fsType, err := FSTypeOf(opts.StorageClass.Name, opts.StorageClass.Parameters)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	alloc := "thin"
	if a, ok := opts.StorageClass.Parameters[AllocationParameter]; ok {
		alloc = a
	}
	if alloc != "thin" && alloc != "thick" {
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s: parameter %s=%q is not offered; use thin or thick", opts.StorageClass.Name, AllocationParameter, alloc)
	}
	size := RoundSize(req)
	if restore {
		have, _, err := p.Pool.SnapshotInfo(src.handle)
		if err != nil {
			return nil, controller.ProvisioningFinished, err
		}
		if size < have {
			min := resource.NewQuantity(have, resource.BinarySI).String()
			return nil, controller.ProvisioningFinished, fmt.Errorf("claim %s/%s asks for %s, less than the restore size %s of VolumeSnapshot %s: ask for at least %s",
				pvc.Namespace, pvc.Name, req.String(), min, snapshotRef(pvc).Name, min)
		}
		err = p.Pool.CreateFromSnapshot(ctx, opts.PVName, src.handle, size, alloc == "thick")
		switch {
		case errors.Is(err, ErrTooLarge):
			free, _ := p.Pool.Free()
			return nil, controller.ProvisioningFinished, fmt.Errorf("cannot restore a disk of %s on host %s: its cci-evs pool has %s free; ask for less", req.String(), p.Node, resource.NewQuantity(free, resource.BinarySI).String())
		case err != nil:
			return nil, controller.ProvisioningFinished, fmt.Errorf("restore disk %s on host %s: %w", opts.PVName, p.Node, err)
		}
		p.Log.Info("disk restored", "pv", opts.PVName, "claim", pvc.Namespace+"/"+pvc.Name, "snapshot", src.handle, "bytes", size)
	} else if err := p.Pool.Create(opts.PVName, size, alloc == "thick"); err != nil {
		if errors.Is(err, ErrTooLarge) {
			free, _ := p.Pool.Free()
			return nil, controller.ProvisioningFinished, fmt.Errorf("cannot make a disk of %s on host %s: its cci-evs pool has %s free; ask for less", req.String(), p.Node, resource.NewQuantity(free, resource.BinarySI).String())
		}
		return nil, controller.ProvisioningFinished, fmt.Errorf("make disk %s on host %s: %w", opts.PVName, p.Node, err)
	}
	if !restore {
		p.Log.Info("disk made", "pv", opts.PVName, "claim", pvc.Namespace+"/"+pvc.Name, "bytes", size)
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	mode := v1.PersistentVolumeFilesystem
	if pvc.Spec.VolumeMode != nil {
		mode = *pvc.Spec.VolumeMode
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   pvc.Spec.AccessModes,
			VolumeMode:                    &mode,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)},
			MountOptions:                  opts.StorageClass.MountOptions,
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:           Driver,
				VolumeHandle:     opts.PVName,
				VolumeAttributes: map[string]string{HostAttribute: p.Node, AllocationAttribute: alloc},
			}},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{p.Node}}},
			}}}},
		},
	}
	if mode == v1.PersistentVolumeFilesystem {
		pv.Spec.CSI.FSType = fsType
	}
	return pv, controller.ProvisioningFinished, nil
}

// FSTypeOf is the file system a class's parameters ask for:
// csi.storage.k8s.io/fstype, else fsType, else xfs; another file system is
// refused. The CSI name wins because tools that test any CSI driver (the
// upstream storage e2e suite) copy an existing class, fsType included, and
// add it to choose the file system.
func FSTypeOf(class string, params map[string]string) (string, error) {
	name, fsType := "", DefaultFSType
	if t, ok := params[CSIFSTypeParameter]; ok {
		name, fsType = CSIFSTypeParameter, t
	} else if t, ok := params[FSTypeParameter]; ok {
		name, fsType = FSTypeParameter, t
	}
	if fsType != "xfs" && fsType != "ext4" {
		return "", fmt.Errorf("StorageClass %s: parameter %s=%q is not offered; use xfs or ext4", class, name, fsType)
	}
	return fsType, nil
}

// Delete removes a volume's disk from this host.
func (p *Provisioner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	if HostOf(pv) != p.Node {
		return &controller.IgnoredError{Reason: "the disk is on another host"}
	}
	if err := p.Pool.Delete(pv.Spec.CSI.VolumeHandle); err != nil {
		// A disk still staged (its last pod not yet released) is
		// retried by the controller with back-off.
		return err
	}
	p.Log.Info("disk removed", "pv", pv.Name)
	return nil
}

// Run runs the provisioner and the resizer of this host's disks, and
// reports a full host file system under them, until ctx ends.
func Run(ctx context.Context, kube kubernetes.Interface, snapshots SnapshotLookup, node string, pool *Pool, log *slog.Logger) error {
	// A snapshot cut short by the agent's end left its disk frozen.
	pool.thaw()
	p := &Provisioner{Node: node, Pool: pool, Snapshots: snapshots, Log: log}
	pc := NewProvisionController(ctx, kube, Driver, p,
		// One controller per host, each for its own claims: no leader.
		controller.LeaderElection(false),
		// Claims it cannot provision (too large) are retried without end,
		// with back-off: space may be freed.
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
		controller.Threadiness(2),
	)
	rs := newResizer(kube, node, pool, log)
	go rs.run(ctx)
	go watchSpace(ctx, kube, node, pool, log, 10*time.Second)
	pc.Run(ctx)
	return nil
}
