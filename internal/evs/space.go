package evs

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// fullBelow is the free space under which the host file system holding
// the disks counts as full: a thin disk's next write that needs a block
// of the host fails.
const fullBelow = 1 << 20

// Space is what the host file system holding a pool's disks has left.
type Space struct {
	// Free is the bytes a disk may still take on the host.
	Free int64
	// Full says Free is below what a write needs.
	Full bool
	// Short are the disks (by name) that may still take host blocks:
	// thin disks not yet written to their size. On a full host, writes
	// to them that need a new block fail with I/O errors in their pods;
	// thick disks and disks written whole are not affected.
	Short []string
}

// Space reads what the pool's host file system has left and which disks
// a full one fails.
func (p *Pool) Space() (Space, error) {
	free, err := p.Free()
	if err != nil {
		return Space{}, err
	}
	s := Space{Free: free, Full: free < fullBelow}
	imgs, err := filepath.Glob(filepath.Join(p.Dir, "disks", "*.img"))
	if err != nil {
		return s, err
	}
	for _, img := range imgs {
		var st unix.Stat_t
		if err := unix.Stat(img, &st); err != nil {
			continue
		}
		if st.Blocks*512 < st.Size {
			s.Short = append(s.Short, strings.TrimSuffix(filepath.Base(img), ".img"))
		}
	}
	slices.Sort(s.Short)
	return s, nil
}

// watchSpace reports a full host file system under the pool, every
// period until ctx ends: a Warning event "EVSHostFull" on the Node and on
// the claim of each disk it fails (Space.Short), and the agent's log,
// once each time the host becomes full; a Normal event "EVSHostSpace" on
// the Node when it has room again. The disks themselves are left as they
// are: the pods see the errors of their writes, and what was written
// before stays readable.
func watchSpace(ctx context.Context, kube kubernetes.Interface, node string, pool *Pool, log *slog.Logger, period time.Duration) {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer b.Shutdown()
	events := b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "evs-space", Host: node})
	// The Node's event names it by name; its UID is not needed to show
	// in `kubectl describe node`.
	nodeRef := &v1.ObjectReference{Kind: "Node", Name: node, UID: "", APIVersion: "v1"}
	full := false
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		s, err := pool.Space()
		switch {
		case err != nil:
			log.Warn("read the free space of the disks' host file system", "dir", pool.Dir, "err", err)
		case s.Full && !full:
			full = true
			msg := fmt.Sprintf("the file system holding this host's cci-evs disks (%s) is full (%s free): writes of thin disks that need new blocks fail with I/O errors in their pods (%d disk(s): %s); free space on the host or move claims to thick allocation",
				pool.Dir, resource.NewQuantity(s.Free, resource.BinarySI), len(s.Short), strings.Join(s.Short, ", "))
			log.Error("host file system of the cci-evs disks is full", "dir", pool.Dir, "free", s.Free, "disks", s.Short)
			events.Event(nodeRef, v1.EventTypeWarning, "EVSHostFull", msg)
			for _, name := range s.Short {
				if pvc := claimOf(ctx, kube, name); pvc != nil {
					events.Eventf(pvc, v1.EventTypeWarning, "EVSHostFull",
						"the file system of host %s that holds this claim's disk is full: the pod's writes that need new blocks fail with I/O errors until space is freed on the host", node)
				}
			}
		case !s.Full && full:
			full = false
			log.Info("host file system of the cci-evs disks has room again", "dir", pool.Dir, "free", s.Free)
			events.Eventf(nodeRef, v1.EventTypeNormal, "EVSHostSpace", "the file system holding this host's cci-evs disks has %s free again",
				resource.NewQuantity(s.Free, resource.BinarySI))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// claimOf is the claim bound to volume pv, or nil.
func claimOf(ctx context.Context, kube kubernetes.Interface, pv string) *v1.PersistentVolumeClaim {
	vol, err := kube.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{})
	if err != nil || vol.Spec.ClaimRef == nil {
		return nil
	}
	pvc, err := kube.CoreV1().PersistentVolumeClaims(vol.Spec.ClaimRef.Namespace).Get(ctx, vol.Spec.ClaimRef.Name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return pvc
}
