package evs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Snapshotter takes and removes the snapshots of this host's disks for the
// external-snapshotter's sidecar controller (its snapshotter.Snapshotter,
// what the CSI snapshotter sidecar calls over the driver's socket, here
// called in-process). The sidecar runs with --node-deployment's shape:
// it sees only the VolumeSnapshotContents the snapshot-controller labelled
// with this host, so every call is about a disk of this host.
//
// Errors that will not go away by retrying are gRPC statuses other than
// the sidecar's retryable codes, so the sidecar marks the content failed;
// other errors are retried with back-off.
type Snapshotter struct {
	Node string
	Pool *Pool
	Log  *slog.Logger
}

// CreateSnapshot copies the disk volumeHandle into the snapshot named
// snapshotName (the snapshot handle).
func (s *Snapshotter) CreateSnapshot(ctx context.Context, snapshotName, volumeHandle string, _, _ map[string]string) (string, string, time.Time, int64, bool, error) {
	size, at, err := s.Pool.Snapshot(ctx, volumeHandle, snapshotName)
	switch {
	case errors.Is(err, ErrNoDisk):
		return "", "", time.Time{}, 0, false, status.Errorf(codes.NotFound, "disk %q is not on host %q: %v", volumeHandle, s.Node, err)
	case errors.Is(err, ErrTooLarge):
		// Space may be freed: retried.
		return "", "", time.Time{}, 0, false, status.Error(codes.ResourceExhausted, err.Error())
	case err != nil:
		return "", "", time.Time{}, 0, false, err
	}
	s.Log.Info("snapshot taken", "pv", volumeHandle, "snapshot", snapshotName, "bytes", size)
	return Driver, snapshotName, at, size, true, nil
}

// DeleteSnapshot removes the snapshot's copy.
func (s *Snapshotter) DeleteSnapshot(_ context.Context, snapshotID string, _ map[string]string) error {
	if err := s.Pool.DeleteSnapshot(snapshotID); err != nil {
		return err
	}
	s.Log.Info("snapshot removed", "snapshot", snapshotID)
	return nil
}

// GetSnapshotStatus: a snapshot on this host is ready as soon as it is
// taken.
func (s *Snapshotter) GetSnapshotStatus(_ context.Context, snapshotID string, _ map[string]string) (bool, time.Time, int64, string, error) {
	size, at, err := s.Pool.SnapshotInfo(snapshotID)
	if err != nil {
		return false, time.Time{}, 0, "", status.Errorf(codes.NotFound, "%v on host %q", err, s.Node)
	}
	return true, at, size, "", nil
}

// snapshotSource is what a restore needs of a VolumeSnapshot: the handle
// of its copy and the smallest disk it restores into.
type snapshotSource struct {
	handle      string
	restoreSize int64
}

// SnapshotLookup finds the copy a VolumeSnapshot stands for; the
// provisioner calls it, possibly concurrently.
type SnapshotLookup interface {
	Lookup(ctx context.Context, namespace, name string) (snapshotSource, error)
}

// APISnapshots looks VolumeSnapshots up in the API.
type APISnapshots struct{ Client snapclient.Interface }

// Lookup checks that the VolumeSnapshot namespace/name is a ready snapshot
// of a cci-evs disk and returns its copy; the binding is checked both
// ways, as upstream asks of consumers.
func (a APISnapshots) Lookup(ctx context.Context, namespace, name string) (snapshotSource, error) {
	vs, err := a.Client.SnapshotV1().VolumeSnapshots(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return snapshotSource{}, fmt.Errorf("VolumeSnapshot %s/%s: %w", namespace, name, err)
	}
	if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil || *vs.Status.BoundVolumeSnapshotContentName == "" {
		return snapshotSource{}, fmt.Errorf("VolumeSnapshot %s/%s is not bound to a VolumeSnapshotContent yet", namespace, name)
	}
	if vs.Status.ReadyToUse == nil || !*vs.Status.ReadyToUse {
		return snapshotSource{}, fmt.Errorf("VolumeSnapshot %s/%s is not ready to use yet", namespace, name)
	}
	content, err := a.Client.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		return snapshotSource{}, fmt.Errorf("VolumeSnapshotContent of VolumeSnapshot %s/%s: %w", namespace, name, err)
	}
	if ref := content.Spec.VolumeSnapshotRef; ref.Namespace != namespace || ref.Name != name || ref.UID != vs.UID {
		return snapshotSource{}, fmt.Errorf("VolumeSnapshotContent %q is not bound to VolumeSnapshot %s/%s", content.Name, namespace, name)
	}
	if content.Spec.Driver != Driver {
		return snapshotSource{}, fmt.Errorf("VolumeSnapshot %s/%s is a snapshot of driver %s: StorageClass %s restores only %s snapshots", namespace, name, content.Spec.Driver, ClassName, Driver)
	}
	src := snapshotSource{}
	switch {
	case content.Status != nil && content.Status.SnapshotHandle != nil:
		src.handle = *content.Status.SnapshotHandle
	case content.Spec.Source.SnapshotHandle != nil:
		src.handle = *content.Spec.Source.SnapshotHandle
	default:
		return snapshotSource{}, fmt.Errorf("VolumeSnapshotContent %q has no snapshot handle yet", content.Name)
	}
	if vs.Status.RestoreSize != nil {
		src.restoreSize = vs.Status.RestoreSize.Value()
	}
	return src, nil
}
