package metering

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Config is the meter's configuration.
type Config struct {
	// Kube reads pods, PersistentVolumes and namespaces and checks callers of the endpoint
	// (TokenReview, SubjectAccessReview).
	Kube kubernetes.Interface
	// Store keeps the usage records.
	Store Store
	// Prices turn usage into cost. Default DefaultPrices().
	Prices *Prices
	// FlushInterval is how often running pods' usage is written. Default 15 s.
	// It bounds what is lost of a pod that vanishes while the meter is down.
	FlushInterval time.Duration
	// Log receives the meter's messages. Default slog.Default().
	Log *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Meter meters tenant pods and volumes into usage records. Create with New, then Run.
type Meter struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}
	// nsLister is set by Run before any pod is observed.
	nsLister corelisters.NamespaceLister

	mu sync.Mutex
	// items holds the pods and volume segments whose records are not final
	// yet: running (bound) ones and those whose last change is not
	// written. Guarded by mu.
	items map[types.UID]*itemState
	// volumes maps a PersistentVolume's UID to the key of its latest
	// segment, kept after the segment is closed so that later events of a
	// deleted volume open nothing new. Guarded by mu.
	volumes map[types.UID]types.UID
	// ready is closed once recovery and the first informer sync are done.
	ready chan struct{}

	// records caches records the flush loop read or wrote; flush loop only.
	records map[string]*cachedRecord
}

type cachedRecord struct {
	rec     *UsageRecord
	touched time.Time
}

// itemState is the meter's view of one pod, or of one volume at one size
// (a segment: a volume that grows gets a new one).
type itemState struct {
	// uid is the pod's UID, or segmentKey of a volume segment.
	uid             types.UID
	tenant, ns, pod string // a volume's pod is its claim's name
	flavor          Flavor
	vol             volSeg // set for a volume segment
	iv              Interval
	open            bool
	// written is the interval last written for the item; its hours are the
	// records that may hold a line of it. writtenID is the rest of what
	// was written (flavor, names, open), to tell when every line must change.
	written   Interval
	writtenID lineID
	// version counts changes, so that a flush does not mark as written a
	// change that arrived while it was writing.
	version, flushed int
	// seen is set once the pod's API object was observed after start.
	seen bool
}

// volSeg is what a volume line says besides its interval.
type volSeg struct {
	pv          types.UID
	name, class string
	mib         int64
	since       int64 // Unix seconds
}

func (v volSeg) isVolume() bool { return v.pv != "" }

// segmentKey is the key of a volume's segment that began at since.
func segmentKey(pv types.UID, since int64) types.UID {
	return types.UID(fmt.Sprintf("%s@%d", pv, since))
}

// lineID is everything of an item's lines but their interval.
type lineID struct {
	ns, name string
	flavor   Flavor
	vol      volSeg
	open     bool
}

func (st *itemState) id() lineID {
	return lineID{st.ns, st.pod, st.flavor, st.vol, st.open}
}

// New makes a meter.
func New(cfg Config) *Meter {
	if cfg.Prices == nil {
		p := DefaultPrices()
		cfg.Prices = &p
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 15 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Meter{
		cfg:     cfg,
		log:     cfg.Log.With("component", "metering"),
		kick:    make(chan struct{}, 1),
		items:   map[types.UID]*itemState{},
		volumes: map[types.UID]types.UID{},
		ready:   make(chan struct{}),
		records: map[string]*cachedRecord{},
	}
}

// Run meters until ctx ends: it reads back the open lines of earlier runs,
// follows pods, PersistentVolumes and namespaces, and writes usage every FlushInterval and
// soon after every change.
func (m *Meter) Run(ctx context.Context) error {
	// Metering must not start without knowing what ran before; a store
	// that does not answer yet is waited for, not fatal.
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		if err := m.recover(ctx); err != nil {
			m.log.Warn("read open usage; retrying", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return nil // ctx ended
	}
	factory := informers.NewSharedInformerFactory(m.cfg.Kube, 0)
	defer factory.Shutdown()
	// Namespaces first: a pod's tenant is read from its namespace.
	nsInformer := factory.Core().V1().Namespaces()
	nsSynced := nsInformer.Informer().HasSynced
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nsSynced) {
		return nil // ctx ended
	}
	m.nsLister = nsInformer.Lister()
	reg, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.observePod(obj, false) },
		UpdateFunc: func(_, obj any) { m.observePod(obj, false) },
		DeleteFunc: func(obj any) { m.observePod(obj, true) },
	})
	if err != nil {
		return err
	}
	volReg, err := factory.Core().V1().PersistentVolumes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.observeVolume(obj, false) },
		UpdateFunc: func(_, obj any) { m.observeVolume(obj, false) },
		DeleteFunc: func(obj any) { m.observeVolume(obj, true) },
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	// The handlers have seen every pod and volume that exists before unseen
	// ones are closed.
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced, volReg.HasSynced) {
		return nil
	}
	m.closeUnseen()
	close(m.ready)
	m.log.Info("metering tenant pods and volumes", "flushInterval", m.cfg.FlushInterval)

	tick := time.NewTicker(m.cfg.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Last write of running pods' usage, so that the next start
			// knows how far they ran.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			m.flush(fctx)
			cancel()
			return nil
		case <-tick.C:
		case <-m.kick:
			// Let a burst of changes arrive before writing.
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
				continue
			}
		}
		m.flush(ctx)
	}
}

// recover reads the open lines that earlier runs left: pods that were
// running and volumes that were bound when the meter last wrote.
func (m *Meter) recover(ctx context.Context) error {
	sel := labels.NewSelector()
	req, _ := labels.NewRequirement(openLabel, selection.Equals, []string{"true"})
	sel = sel.Add(*req)
	recs, err := m.cfg.Store.List(ctx, sel)
	if err != nil {
		return fmt.Errorf("read open usage: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		for _, l := range r.Spec.Pods {
			if !l.Open {
				continue
			}
			uid := types.UID(l.UID)
			st := m.items[uid]
			if st == nil {
				st = &itemState{uid: uid, tenant: r.Spec.Tenant, ns: l.Namespace, pod: l.Name, flavor: l.Flavor}
				m.items[uid] = st
			}
			iv := l.interval()
			if st.written.Empty() || iv.Start.Before(st.written.Start) {
				st.written.Start = iv.Start
			}
			if iv.End.After(st.written.End) {
				st.written.End = iv.End
			}
			st.iv, st.open = st.written, true
			st.writtenID = st.id()
		}
		for _, l := range r.Spec.Volumes {
			if !l.Open {
				continue
			}
			seg := volSeg{pv: types.UID(l.UID), name: l.Name, class: l.StorageClass, mib: l.SizeMiB, since: second(l.Since.Time).Unix()}
			key := segmentKey(seg.pv, seg.since)
			st := m.items[key]
			if st == nil {
				// The run that wrote this open line wrote every hour of the
				// segment before it, whole: the segment was written from Since.
				st = &itemState{uid: key, tenant: r.Spec.Tenant, ns: l.Namespace, pod: l.Claim, vol: seg,
					written: Interval{Start: second(l.Since.Time)}}
				m.items[key] = st
			}
			if end := second(l.End.Time); end.After(st.written.End) {
				st.written.End = end
			}
			st.iv, st.open = st.written, true
			st.writtenID = st.id()
			if cur := m.items[m.volumes[seg.pv]]; cur == nil || cur.vol.since < seg.since {
				m.volumes[seg.pv] = key
			}
		}
	}
	if len(m.items) > 0 {
		m.log.Info("pods running and volumes bound at the last stop", "count", len(m.items))
	}
	return nil
}

// closeUnseen closes the recovered pods and volumes whose API object is
// gone: they stopped (were deleted) while the meter was down, and are
// billed up to the last moment the meter saw them.
func (m *Meter) closeUnseen() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, st := range m.items {
		if !st.seen && st.open {
			if st.vol.isVolume() {
				m.log.Info("volume deleted while the meter was down; closing its usage at the last time seen",
					"volume", st.vol.name, "claim", st.ns+"/"+st.pod, "tenant", st.tenant, "end", st.written.End)
			} else {
				m.log.Info("pod vanished while the meter was down; closing its usage at the last time seen running",
					"pod", st.ns+"/"+st.pod, "tenant", st.tenant, "end", st.written.End)
			}
			st.open = false
			st.version++
		}
	}
	m.poke()
}

func (m *Meter) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Meter) tenantOf(ns string) string {
	if m.nsLister == nil {
		return ""
	}
	n, err := m.nsLister.Get(ns)
	if err != nil {
		return ""
	}
	return n.Labels[TenantLabel]
}

// observePod updates the meter's view of a pod from an informer event.
func (m *Meter) observePod(obj any, gone bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	now := m.cfg.Now()
	var iv Interval
	var open bool
	if gone {
		iv, ok = vanishedInterval(p, now)
	} else {
		iv, open, ok = podInterval(p, now)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.items[p.UID]
	tenant := m.tenantOf(p.Namespace)
	if tenant == "" && st != nil {
		tenant = st.tenant
	}
	if !ok || tenant == "" {
		return
	}
	if st == nil {
		st = &itemState{uid: p.UID}
		m.items[p.UID] = st
	}
	if !st.seen && !st.written.Empty() && iv.Start.Before(st.written.Start) && st.written.Start.Equal(hourOf(st.written.Start)) {
		// Recovered from an open line that began on the hour: the run that
		// wrote it had written the pod's earlier hours, whole.
		st.written.Start = iv.Start
	}
	flavor := FlavorOf(&p.Spec)
	if st.seen && st.open == open && st.iv.Start.Equal(iv.Start) && (open || st.iv.End.Equal(iv.End)) && st.flavor == flavor && st.tenant == tenant {
		return
	}
	st.tenant, st.ns, st.pod, st.flavor = tenant, p.Namespace, p.Name, flavor
	st.iv, st.open, st.seen = iv, open, true
	st.version++
	m.poke()
}

// flush writes the usage of every pod changed since the last flush and of
// every running pod up to now.
func (m *Meter) flush(ctx context.Context) {
	now := second(m.cfg.Now())
	type job struct {
		st      itemState
		version int
	}
	var jobs []job
	m.mu.Lock()
	for _, st := range m.items {
		if st.open && st.seen && now.After(st.iv.End) {
			st.iv.End = now
			st.version++
		}
		if st.version != st.flushed {
			jobs = append(jobs, job{*st, st.version})
		}
	}
	m.mu.Unlock()

	changed := map[string]*UsageRecord{}
	failed := map[types.UID]bool{}
	owners := map[string][]types.UID{}
	for _, j := range jobs {
		st := j.st
		if !st.seen && st.open {
			continue // recovered, waiting for the informer
		}
		hours := Set{}.Add(st.iv).Add(st.written).Span()
		same := st.writtenID == st.id()
		for h := hourOf(hours.Start); h.Before(hours.End); h = h.Add(time.Hour) {
			if same && unchanged(st.iv, st.written, h) {
				continue // its line stands: no read, no write
			}
			rec, err := m.record(ctx, st.tenant, h)
			if err != nil {
				m.log.Warn("read usage record", "tenant", st.tenant, "err", err)
				failed[st.uid] = true
				break
			}
			part := st.iv.Clip(Interval{h, h.Add(time.Hour)})
			open := st.open && part.End.Equal(st.iv.End)
			var lineChanged bool
			if v := st.vol; v.isVolume() {
				lineChanged = rec.setVolumeLine(VolumeLine{
					UID: string(v.pv), Name: v.name, Namespace: st.ns, Claim: st.pod, StorageClass: v.class, SizeMiB: v.mib,
					Since: metav1.NewTime(time.Unix(v.since, 0).UTC()),
					Start: metav1.NewTime(part.Start), End: metav1.NewTime(part.End), Open: open,
				})
			} else {
				lineChanged = rec.setLine(PodLine{
					UID: string(st.uid), Namespace: st.ns, Name: st.pod, Flavor: st.flavor,
					Start: metav1.NewTime(part.Start), End: metav1.NewTime(part.End), Open: open,
				})
			}
			if lineChanged {
				changed[rec.Name] = rec
			}
			owners[rec.Name] = append(owners[rec.Name], st.uid)
		}
	}
	for name, rec := range changed {
		if len(rec.Spec.Pods) == 0 && len(rec.Spec.Volumes) == 0 && rec.ResourceVersion == "" {
			continue
		}
		stored, err := m.cfg.Store.Put(ctx, rec)
		if err != nil {
			// Read it again next time: the write may have conflicted.
			delete(m.records, name)
			for _, uid := range owners[name] {
				failed[uid] = true
			}
			if !errors.Is(err, context.Canceled) {
				m.log.Warn("write usage record", "record", name, "err", err)
			}
			continue
		}
		m.records[name] = &cachedRecord{rec: stored, touched: now}
	}

	m.mu.Lock()
	for _, j := range jobs {
		st := m.items[j.st.uid]
		if st == nil || failed[st.uid] || (!j.st.seen && j.st.open) {
			continue
		}
		st.written = j.st.iv
		st.writtenID = j.st.id()
		if st.version == j.version {
			st.flushed = j.version
			if !st.open {
				delete(m.items, st.uid)
			}
		}
	}
	m.mu.Unlock()

	// Records of past hours are rarely needed again; forget them.
	for name, c := range m.records {
		if now.Sub(c.touched) > 2*time.Hour || c.rec.Spec.Hour.Time.Before(now.Add(-3*time.Hour)) && now.Sub(c.touched) > 10*time.Minute {
			delete(m.records, name)
		}
	}
}

// unchanged says whether a pod's line in hour h is the same for intervals a
// and b, and is not the line either ends in (which carries the open flag).
func unchanged(a, b Interval, h time.Time) bool {
	hour := Interval{h, h.Add(time.Hour)}
	ca, cb := a.Clip(hour), b.Clip(hour)
	return ca.Start.Equal(cb.Start) && ca.End.Equal(cb.End) && !ca.Empty() && a.End.After(hour.End) && b.End.After(hour.End)
}

// record returns the cached record of tenant for hour, read from the store
// or new.
func (m *Meter) record(ctx context.Context, tenant string, hour time.Time) (*UsageRecord, error) {
	name := recordName(tenant, hour)
	if c, ok := m.records[name]; ok {
		return c.rec, nil
	}
	rec, err := m.cfg.Store.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		rec = newRecord(tenant, hour)
	}
	m.records[name] = &cachedRecord{rec: rec, touched: m.cfg.Now()}
	return rec, nil
}

// live returns copies of the pods and volume segments whose records may
// lag: running (bound) ones (billed up to now) and changed ones not
// written yet.
func (m *Meter) live(now time.Time) map[types.UID]itemState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[types.UID]itemState, len(m.items))
	for uid, st := range m.items {
		if !st.seen {
			continue
		}
		c := *st
		if c.open && now.After(c.iv.End) {
			c.iv.End = now
		}
		out[uid] = c
	}
	return out
}
