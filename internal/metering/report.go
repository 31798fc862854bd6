package metering

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
)

// Usage is resource-seconds and their cost. Seconds, CoreSeconds,
// GiBSeconds and GPUSeconds are the pods'; Storage is the volumes', per
// StorageClass; Cost is both's.
type Usage struct {
	Seconds     int64          `json:"seconds"`
	CoreSeconds float64        `json:"coreSeconds"`
	GiBSeconds  float64        `json:"gibSeconds"`
	GPUSeconds  int64          `json:"gpuSeconds"`
	Storage     []StorageUsage `json:"storage,omitempty"`
	Cost        float64        `json:"cost"`
}

// StorageUsage is provisioned volume size over time of one StorageClass.
type StorageUsage struct {
	StorageClass string `json:"storageClass"`
	// MiBSeconds is exact; GiBHours is it in GiB-hours, rounded to 6 digits.
	MiBSeconds int64   `json:"mibSeconds"`
	GiBHours   float64 `json:"gibHours"`
	// PerGiBHour is the class's price; Cost is GiBHours' at it.
	PerGiBHour float64 `json:"perGiBHour"`
	Cost       float64 `json:"cost"`
}

// StorageGiBHours sums u's storage over its classes.
func (u Usage) StorageGiBHours() float64 {
	var n int64
	for _, s := range u.Storage {
		n += s.MiBSeconds
	}
	return gibHours(n)
}

// StorageOf is u's storage of class (zero when it has none).
func (u Usage) StorageOf(class string) StorageUsage {
	for _, s := range u.Storage {
		if s.StorageClass == class {
			return s
		}
	}
	return StorageUsage{StorageClass: class}
}

func gibHours(mibSeconds int64) float64 { return round(float64(mibSeconds)/(1024*3600), 6) }

// sums are pods' totals and volumes' MiB-seconds per StorageClass.
type sums struct {
	Totals
	storage map[string]int64
}

func (s sums) add(o sums) sums {
	out := sums{Totals: s.Totals.add(o.Totals)}
	if len(s.storage)+len(o.storage) > 0 {
		out.storage = map[string]int64{}
		for c, v := range s.storage {
			out.storage[c] += v
		}
		for c, v := range o.storage {
			out.storage[c] += v
		}
	}
	return out
}

func podSums(t Totals) sums { return sums{Totals: t} }

func volumeSums(class string, mibSeconds int64) sums {
	return sums{storage: map[string]int64{class: mibSeconds}}
}

func usageOf(t Totals, p Prices) Usage { return sumsUsage(podSums(t), p) }

func sumsUsage(s sums, p Prices) Usage {
	u := Usage{
		Seconds:     s.Seconds,
		CoreSeconds: round(float64(s.MilliCoreSeconds)/1000, 3),
		GiBSeconds:  round(float64(s.MiBSeconds)/1024, 3),
		GPUSeconds:  s.GPUSeconds,
	}
	classes := make([]string, 0, len(s.storage))
	for c := range s.storage {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		n := s.storage[c]
		u.Storage = append(u.Storage, StorageUsage{
			StorageClass: c, MiBSeconds: n, GiBHours: gibHours(n),
			PerGiBHour: p.StoragePrice(c), Cost: math.Round(p.storageCost(c, n)*1e9) / 1e9,
		})
	}
	u.Cost = p.Cost(u)
	return u
}

func round(v float64, digits int) float64 {
	f := math.Pow10(digits)
	return math.Round(v*f) / f
}

// Report is usage and cost over a window, per tenant, namespace and pod.
type Report struct {
	Since    time.Time     `json:"since"`
	Until    time.Time     `json:"until"`
	Currency string        `json:"currency"`
	Prices   Prices        `json:"prices"`
	Tenants  []TenantUsage `json:"tenants"`
	Total    Usage         `json:"total"`
	// Days is the window's usage per UTC day, every day it touches (days
	// without usage too, so a chart has no gaps); only when asked for
	// (ReportOptions.ByDay, the endpoint's by=day), as a month's report
	// otherwise carries thirty copies of what Tenants already says.
	Days []DayUsage `json:"days,omitempty"`
}

// DayUsage is one UTC day of a report: the part of the window in that day.
type DayUsage struct {
	Date string `json:"date"` // 2006-01-02
	Usage
	Namespaces []DayNamespaceUsage `json:"namespaces"`
}

// DayNamespaceUsage is one namespace's usage in one day.
type DayNamespaceUsage struct {
	Tenant    string `json:"tenant"`
	Namespace string `json:"namespace"`
	Usage
}

// ReportOptions are what a report may add to its totals.
type ReportOptions struct {
	// ByDay adds Days to the report.
	ByDay bool
}

// TenantUsage is one tenant's part of a report.
type TenantUsage struct {
	Tenant string `json:"tenant"`
	Usage
	Namespaces []NamespaceUsage `json:"namespaces"`
}

// NamespaceUsage is one namespace's part of a report.
type NamespaceUsage struct {
	Namespace string `json:"namespace"`
	Usage
	Pods []PodUsage `json:"pods"`
	// Volumes are the namespace's claims' volumes (only when it had any).
	Volumes []VolumeUsage `json:"volumes,omitempty"`
}

// VolumeUsage is one PersistentVolume's part of a report. SizeGiB is its
// latest size inside the window; Start and End bound the billed seconds
// inside the window; Bound says it is still billed. Its StorageUsage has
// its class, GiB-hours and cost.
type VolumeUsage struct {
	Name    string    `json:"name"` // the PersistentVolume's
	UID     string    `json:"uid"`
	Claim   string    `json:"claim"`
	SizeGiB float64   `json:"sizeGiB"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Bound   bool      `json:"bound"`
	Seconds int64     `json:"seconds"`
	StorageUsage
}

// PodUsage is one pod's part of a report. Start and End bound the metered
// seconds inside the window; Running says the pod is still billed.
type PodUsage struct {
	Name      string    `json:"name"`
	UID       string    `json:"uid"`
	CPU       float64   `json:"cpu"`
	MemoryGiB float64   `json:"memoryGiB"`
	GPU       int64     `json:"gpu"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Running   bool      `json:"running"`
	Usage
}

// podAcc gathers one pod's metered seconds.
type podAcc struct {
	tenant, ns, name string
	flavor           Flavor
	set              Set
	running          bool
	// live is the meter's current interval of a running pod; it may hold
	// no whole second yet (a pod in its first second), and so be absent
	// from set.
	live Interval
	// vol is set for a volume's segment (a volume at one size).
	vol volSeg
}

// sums is what the accumulated item costs over secs of it.
func (a *podAcc) sums(secs int64) sums {
	if a.vol.isVolume() {
		return volumeSums(a.vol.class, secs*a.vol.mib)
	}
	return podSums(totalsOf(a.flavor, secs))
}

// Report computes usage in [since, until) of the given tenants (all when
// tenants is nil). until is capped at now. Safe to call concurrently.
func (m *Meter) Report(ctx context.Context, since, until time.Time, tenants []string, opts ...ReportOptions) (*Report, error) {
	var opt ReportOptions
	for _, o := range opts {
		opt.ByDay = opt.ByDay || o.ByDay
	}
	now := second(m.cfg.Now())
	w := Interval{second(since), second(until)}
	if until.IsZero() || w.End.After(now) {
		w.End = now
	}
	if w.Start.After(w.End) {
		w.Start = w.End
	}
	var months []string
	for mo := time.Date(w.Start.Year(), w.Start.Month(), 1, 0, 0, 0, 0, time.UTC); !mo.After(w.End); mo = mo.AddDate(0, 1, 0) {
		months = append(months, mo.Format("2006-01"))
	}
	req, err := labels.NewRequirement(monthLabel, selection.In, months)
	if err != nil {
		return nil, fmt.Errorf("select months %v: %w", months, err)
	}
	sel := labels.NewSelector().Add(*req)
	include := func(string) bool { return true }
	if tenants != nil {
		if len(tenants) == 0 {
			return buildReport(w, *m.cfg.Prices, nil, opt), nil
		}
		treq, err := labels.NewRequirement(TenantLabel, selection.In, tenants)
		if err != nil {
			return nil, fmt.Errorf("select tenants %v: %w", tenants, err)
		}
		sel = sel.Add(*treq)
		include = func(t string) bool { return slices.Contains(tenants, t) }
	}
	recs, err := m.cfg.Store.List(ctx, sel)
	if err != nil {
		return nil, err
	}
	accs := map[types.UID]*podAcc{}
	for _, r := range recs {
		if !include(r.Spec.Tenant) {
			continue
		}
		for _, l := range r.Spec.Pods {
			uid := types.UID(l.UID)
			a := accs[uid]
			if a == nil {
				a = &podAcc{tenant: r.Spec.Tenant, ns: l.Namespace, name: l.Name, flavor: l.Flavor}
				accs[uid] = a
			}
			a.set = a.set.Add(l.interval())
		}
		for _, l := range r.Spec.Volumes {
			seg := volSeg{pv: types.UID(l.UID), name: l.Name, class: l.StorageClass, mib: l.SizeMiB, since: second(l.Since.Time).Unix()}
			key := segmentKey(seg.pv, seg.since)
			a := accs[key]
			if a == nil {
				a = &podAcc{tenant: r.Spec.Tenant, ns: l.Namespace, name: l.Claim, vol: seg}
				accs[key] = a
			}
			a.set = a.set.Add(l.interval())
		}
	}
	// What the meter holds in memory is newer than what it wrote.
	for uid, st := range m.live(now) {
		if !include(st.tenant) {
			continue
		}
		accs[uid] = &podAcc{tenant: st.tenant, ns: st.ns, name: st.pod, flavor: st.flavor, vol: st.vol, set: Set{}.Add(st.iv), running: st.open, live: st.iv}
	}
	return buildReport(w, *m.cfg.Prices, accs, opt), nil
}

func buildReport(w Interval, prices Prices, accs map[types.UID]*podAcc, opt ReportOptions) *Report {
	rep := &Report{Since: w.Start, Until: w.End, Currency: prices.Currency, Prices: prices, Tenants: []TenantUsage{}}
	type nsKey struct{ tenant, ns string }
	tenantTotals := map[string]sums{}
	nsTotals := map[nsKey]sums{}
	nsPods := map[nsKey][]PodUsage{}
	type volKey struct {
		nsKey
		pv types.UID
	}
	vols := map[volKey]*volumeAcc{}
	var total sums
	for uid, a := range accs {
		in := a.set.Clip(w)
		secs := in.Seconds()
		runningNow := a.running && !a.live.End.Before(w.End) && !a.live.Start.After(w.End)
		if secs == 0 && !runningNow {
			continue
		}
		t := a.sums(secs)
		span := in.Span()
		if len(in) == 0 {
			span = Interval{a.live.Start, a.live.Start}
		}
		k := nsKey{a.tenant, a.ns}
		nsTotals[k] = nsTotals[k].add(t)
		tenantTotals[a.tenant] = tenantTotals[a.tenant].add(t)
		total = total.add(t)
		if a.vol.isVolume() {
			vk := volKey{k, a.vol.pv}
			v := vols[vk]
			if v == nil {
				v = &volumeAcc{}
				vols[vk] = v
			}
			v.add(a, span, secs)
			continue
		}
		nsPods[k] = append(nsPods[k], PodUsage{
			Name: a.name, UID: string(uid),
			CPU: float64(a.flavor.MilliCPU) / 1000, MemoryGiB: round(float64(a.flavor.MemoryMiB)/1024, 3), GPU: a.flavor.GPU,
			Start: span.Start, End: span.End, Running: a.running,
			Usage: sumsUsage(t, prices),
		})
	}
	nsVolumes := map[nsKey][]VolumeUsage{}
	for k, v := range vols {
		if _, ok := nsTotals[k.nsKey]; ok {
			nsVolumes[k.nsKey] = append(nsVolumes[k.nsKey], v.usage(prices))
		}
	}
	tenants := make([]string, 0, len(tenantTotals))
	for t := range tenantTotals {
		tenants = append(tenants, t)
	}
	sort.Strings(tenants)
	for _, tn := range tenants {
		tu := TenantUsage{Tenant: tn, Usage: sumsUsage(tenantTotals[tn], prices), Namespaces: []NamespaceUsage{}}
		var keys []nsKey
		for k := range nsTotals {
			if k.tenant == tn {
				keys = append(keys, k)
			}
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i].ns < keys[j].ns })
		for _, k := range keys {
			pods := nsPods[k]
			if pods == nil {
				pods = []PodUsage{}
			}
			sort.Slice(pods, func(i, j int) bool {
				if c := strings.Compare(pods[i].Name, pods[j].Name); c != 0 {
					return c < 0
				}
				return pods[i].Start.Before(pods[j].Start)
			})
			vs := nsVolumes[k]
			sort.Slice(vs, func(i, j int) bool {
				if c := strings.Compare(vs[i].Claim, vs[j].Claim); c != 0 {
					return c < 0
				}
				return vs[i].Start.Before(vs[j].Start)
			})
			tu.Namespaces = append(tu.Namespaces, NamespaceUsage{Namespace: k.ns, Usage: sumsUsage(nsTotals[k], prices), Pods: pods, Volumes: vs})
		}
		rep.Tenants = append(rep.Tenants, tu)
	}
	rep.Total = sumsUsage(total, prices)
	if opt.ByDay {
		rep.Days = daysOf(w, prices, accs)
	}
	return rep
}

// volumeAcc gathers one volume's segments inside a report's window.
type volumeAcc struct {
	uid, name, claim, class string
	mib                     int64 // of the latest segment
	since                   int64
	span                    Interval
	seconds, mibSeconds     int64
	bound                   bool
}

func (v *volumeAcc) add(a *podAcc, span Interval, secs int64) {
	if v.uid == "" || a.vol.since > v.since {
		v.uid, v.name, v.claim, v.class, v.mib, v.since = string(a.vol.pv), a.vol.name, a.name, a.vol.class, a.vol.mib, a.vol.since
		v.bound = a.running
	}
	if v.span.Start.IsZero() || span.Start.Before(v.span.Start) {
		v.span.Start = span.Start
	}
	if span.End.After(v.span.End) {
		v.span.End = span.End
	}
	v.seconds += secs
	v.mibSeconds += secs * a.vol.mib
}

func (v *volumeAcc) usage(p Prices) VolumeUsage {
	return VolumeUsage{
		Name: v.name, UID: v.uid, Claim: v.claim,
		SizeGiB: round(float64(v.mib)/1024, 6), Start: v.span.Start, End: v.span.End, Bound: v.bound, Seconds: v.seconds,
		StorageUsage: sumsUsage(volumeSums(v.class, v.mibSeconds), p).Storage[0],
	}
}

// daysOf splits the window at UTC midnights. A day's cost is priced from
// its own totals, so the days' costs may differ from the window's in the
// last rounded digit.
func daysOf(w Interval, prices Prices, accs map[types.UID]*podAcc) []DayUsage {
	type nsKey struct{ tenant, ns string }
	days := []DayUsage{}
	first := time.Date(w.Start.Year(), w.Start.Month(), w.Start.Day(), 0, 0, 0, 0, time.UTC)
	for d := first; d.Before(w.End); d = d.AddDate(0, 0, 1) {
		dw := Interval{d, d.AddDate(0, 0, 1)}.Clip(w)
		var total sums
		per := map[nsKey]sums{}
		for _, a := range accs {
			secs := a.set.Clip(dw).Seconds()
			if secs == 0 {
				continue
			}
			t := a.sums(secs)
			k := nsKey{a.tenant, a.ns}
			per[k] = per[k].add(t)
			total = total.add(t)
		}
		keys := make([]nsKey, 0, len(per))
		for k := range per {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].tenant != keys[j].tenant {
				return keys[i].tenant < keys[j].tenant
			}
			return keys[i].ns < keys[j].ns
		})
		du := DayUsage{Date: d.Format(time.DateOnly), Usage: sumsUsage(total, prices), Namespaces: []DayNamespaceUsage{}}
		for _, k := range keys {
			du.Namespaces = append(du.Namespaces, DayNamespaceUsage{Tenant: k.tenant, Namespace: k.ns, Usage: sumsUsage(per[k], prices)})
		}
		days = append(days, du)
	}
	return days
}

// ParseTime reads a point in time as the usage command and endpoint take
// it: RFC 3339 ("2026-11-25T02:00:00Z"), a UTC date ("2026-11-25") or date
// and minute ("2026-11-25T02:00"), "now", or a duration before now ("90m", "24h", "7d").
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if s == "now" {
		return now, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(d, "%d", &days); err == nil && fmt.Sprint(days) == d && days >= 0 {
			return now.AddDate(0, 0, -days), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("time %q: give RFC 3339 (2026-11-25T02:00:00Z), a date (2026-11-25), \"now\" or a duration before now (90m, 24h, 7d)", s)
}

// MonthStart is the start of now's UTC month: the default --since.
func MonthStart(now time.Time) time.Time {
	now = now.UTC()
	return time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
}
