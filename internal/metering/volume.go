package metering

import (
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Volumes are billed as a cloud bills disks: the provisioned size of every
// PersistentVolume bound to a claim of a tenant namespace, by the second,
// per StorageClass, whether or not a pod uses it.
//
//	not bound yet (Pending, Available) ──────────────────► never billed
//	bound: billed from status.lastPhaseTransitionTime (else creation)
//	    │ open: billed up to now, written every FlushInterval
//	    ├─► capacity changed (grown) ─► this size closed when the meter saw
//	    │   the change, a new line of the new size opened at that second
//	    ├─► deletionTimestamp set ─► closed at the deletionTimestamp
//	    ├─► vanished without one ─► closed when the meter saw it go
//	    └─► vanished while the meter was down ─► closed at the last moment
//	        the meter had written it (never billed for time not seen)
//
// A volume released by its claim (reclaim policy Retain) stays provisioned
// and billed to the claim's tenant until it is deleted.
//
// Unlike a pod's, a volume's interval cannot be recomputed from its API
// object alone (the object does not say when it grew), so each size is a
// segment of its own, known by the volume's UID and the second the size
// began (VolumeLine.Since). A volume the meter first sees with a
// deletionTimestamp is left alone: the run that saw it bound has written
// it, and one that never did cannot tell its sizes.

// mib is a quantity in MiB, rounded up.
func mib(bytes int64) int64 { return (bytes + (1<<20 - 1)) >> 20 }

// volumeStart is when a volume's billing begins, and whether it is billed at
// all: it must be, or have been, bound to a claim.
func volumeStart(pv *v1.PersistentVolume) (time.Time, bool) {
	if pv.Spec.ClaimRef == nil {
		return time.Time{}, false
	}
	switch pv.Status.Phase {
	case v1.VolumeBound:
		if t := pv.Status.LastPhaseTransitionTime; t != nil {
			return second(t.Time), true
		}
	case v1.VolumeReleased, v1.VolumeFailed:
		// Bound before the meter saw it; its binding time is gone.
	default:
		return time.Time{}, false
	}
	return second(pv.CreationTimestamp.Time), true
}

// observeVolume updates the meter's view of a PersistentVolume from an
// informer event.
func (m *Meter) observeVolume(obj any, gone bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok {
		return
	}
	now := second(m.cfg.Now())
	m.mu.Lock()
	defer m.mu.Unlock()

	curKey, known := m.volumes[pv.UID]
	cur := m.items[curKey]
	if gone {
		// Its last event: nothing of it is to be told apart any more.
		defer delete(m.volumes, pv.UID)
	}
	if known && cur == nil {
		return // closed and written: a deleted volume's last events
	}
	if cur != nil && !cur.open {
		return // closed, not written yet
	}
	// When it ends: asked to be deleted, or gone.
	var end time.Time
	switch {
	case pv.DeletionTimestamp != nil:
		end = second(pv.DeletionTimestamp.Time)
	case gone:
		end = now
	case pv.Spec.ClaimRef == nil && cur != nil:
		end = now // unbound by hand from its claim: no tenant's any more
	}

	if cur == nil {
		start, billed := volumeStart(pv)
		if !billed || !end.IsZero() {
			return
		}
		tenant := m.tenantOf(pv.Spec.ClaimRef.Namespace)
		size := pv.Spec.Capacity.Storage().Value()
		if tenant == "" || size <= 0 {
			return
		}
		if start.After(now) {
			start = now // a clock ahead of the meter's
		}
		m.openSegment(pv, tenant, start, now, mib(size))
		return
	}

	cur.seen = true
	if !end.IsZero() {
		m.closeSegment(cur, end)
		return
	}
	if ref := pv.Spec.ClaimRef; ref != nil {
		cur.ns, cur.pod = ref.Namespace, ref.Name
		if t := m.tenantOf(ref.Namespace); t != "" {
			cur.tenant = t
		}
	}
	cur.vol.name, cur.vol.class = pv.Name, pv.Spec.StorageClassName
	if size := mib(pv.Spec.Capacity.Storage().Value()); size > 0 && size != cur.vol.mib {
		// Grown (or shrunk by hand): the old size ends, the new begins,
		// the second the meter sees it.
		at := now
		if at.Before(time.Unix(cur.vol.since, 0)) {
			at = time.Unix(cur.vol.since, 0).UTC()
		}
		m.closeSegment(cur, at)
		m.openSegment(pv, cur.tenant, at, now, size)
		return
	}
	cur.version++
	m.poke()
}

// openSegment starts billing pv at size from start. Called with mu held.
func (m *Meter) openSegment(pv *v1.PersistentVolume, tenant string, start, now time.Time, size int64) {
	key := segmentKey(pv.UID, start.Unix())
	st := &itemState{
		uid: key, tenant: tenant, ns: pv.Spec.ClaimRef.Namespace, pod: pv.Spec.ClaimRef.Name,
		vol:  volSeg{pv: pv.UID, name: pv.Name, class: pv.Spec.StorageClassName, mib: size, since: start.Unix()},
		iv:   Interval{start, now},
		open: true, seen: true, version: 1,
	}
	if old := m.items[key]; old != nil {
		// The same second as a segment just closed (grown twice in a
		// second): take its place, keeping what it wrote.
		st.written, st.writtenID, st.flushed = old.written, old.writtenID, old.flushed
		st.version = old.version + 1
	}
	m.items[key] = st
	m.volumes[pv.UID] = key
	m.poke()
}

// closeSegment ends a segment at end. Called with mu held.
func (m *Meter) closeSegment(st *itemState, end time.Time) {
	if end.Before(st.iv.Start) {
		end = st.iv.Start
	}
	st.iv.End, st.open = end, false
	st.version++
	m.poke()
}
