package metering

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// memStore is a Store in memory, with the apiserver's optimistic concurrency.
type memStore struct {
	mu   sync.Mutex
	recs map[string]UsageRecord
	rv   int
	puts int
	gets int
}

func newMemStore() *memStore { return &memStore{recs: map[string]UsageRecord{}} }

func (s *memStore) Get(_ context.Context, name string) (*UsageRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	r, ok := s.recs[name]
	if !ok {
		return nil, nil
	}
	return deepCopy(r), nil
}

func (s *memStore) Put(_ context.Context, r *UsageRecord) (*UsageRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.recs[r.Name]
	if exists != (r.ResourceVersion != "") || exists && old.ResourceVersion != r.ResourceVersion {
		return nil, fmt.Errorf("conflict on %q", r.Name)
	}
	s.rv++
	c := deepCopy(*r)
	c.ResourceVersion = fmt.Sprint(s.rv)
	s.recs[r.Name] = *c
	s.puts++
	return deepCopy(*c), nil
}

func (s *memStore) List(_ context.Context, sel labels.Selector) ([]UsageRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []UsageRecord
	for _, r := range s.recs {
		if sel.Matches(labels.Set(r.Labels)) {
			out = append(out, *deepCopy(r))
		}
	}
	return out, nil
}

func deepCopy(r UsageRecord) *UsageRecord {
	c := r
	c.ObjectMeta = *r.ObjectMeta.DeepCopy()
	c.Spec.Pods = append([]PodLine(nil), r.Spec.Pods...)
	return &c
}

// lineSeconds sums the lines of uid over all records and counts open ones.
func (s *memStore) lineSeconds(uid string) (secs int64, lines, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		for _, l := range r.Spec.Pods {
			if l.UID == uid {
				secs += l.Totals.Seconds
				lines++
				if l.Open {
					open++
				}
			}
		}
	}
	return
}

// testMeter is a meter on a fixed clock, with namespace "ns-a" of tenant "a"
// and "plain" of no tenant; start runs what Run does before its loop.
type testMeter struct {
	*Meter
	clock *time.Time
}

func newTestMeter(t *testing.T, store Store, clock *time.Time) testMeter {
	t.Helper()
	m := New(Config{Store: store, Now: func() time.Time { return *clock }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = idx.Add(&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns-a", Labels: map[string]string{TenantLabel: "a"}}})
	_ = idx.Add(&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}})
	if err := m.recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.nsLister = corelisters.NewNamespaceLister(idx)
	return testMeter{m, clock}
}

func (m testMeter) flushAt(d string) {
	*m.clock = at(d)
	m.flush(context.Background())
}

func (m testMeter) see(p *v1.Pod, d string) {
	*m.clock = at(d)
	m.observePod(p, false)
}

func (m testMeter) gone(p *v1.Pod, d string) {
	*m.clock = at(d)
	m.observePod(p, true)
}

// testPod is a 0.5 CPU / 1 GiB pod of namespace ns started at start.
func testPod(uid, ns, start string) *v1.Pod {
	s := metav1.NewTime(at(start))
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p-" + uid, Namespace: ns, UID: types.UID(uid)},
		Spec:       v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "500m", "memory", "1Gi"), nil)}},
		Status:     v1.PodStatus{Phase: v1.PodRunning, StartTime: &s, ContainerStatuses: []v1.ContainerStatus{running()}},
	}
}

func finished(p *v1.Pod, d string) *v1.Pod {
	c := p.DeepCopy()
	c.Status.Phase = v1.PodSucceeded
	c.Status.ContainerStatuses = []v1.ContainerStatus{terminated(at(d))}
	return c
}

func TestMeterScenarios(t *testing.T) {
	for _, tc := range []struct {
		name string
		// run drives meters over one store and returns the pod's UID.
		run                 func(t *testing.T, store *memStore, clock *time.Time) string
		wantSecs            int64
		wantLines, wantOpen int
	}{
		{"running, then done", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := testPod("u1", "ns-a", "10s")
			m.see(p, "11s")
			m.flushAt("30s")
			m.see(finished(p, "40s"), "41s")
			m.flushAt("42s")
			return "u1"
		}, 30, 1, 0},
		{"never started", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := testPod("u1", "ns-a", "10s")
			p.Status = v1.PodStatus{Phase: v1.PodPending}
			m.see(p, "11s")
			m.flushAt("30s")
			return "u1"
		}, 0, 0, 0},
		{"not a tenant's namespace", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			m.see(testPod("u1", "plain", "10s"), "11s")
			m.flushAt("30s")
			return "u1"
		}, 0, 0, 0},
		{"still running: open up to the last flush", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			m.see(testPod("u1", "ns-a", "10s"), "11s")
			m.flushAt("30s")
			m.flushAt("50s")
			return "u1"
		}, 40, 1, 1},
		{"running across a restart of the meter: billed once, no gap", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := testPod("u1", "ns-a", "10s")
			m.see(p, "11s")
			m.flushAt("30s")
			// down from 30 s to 2 min; the pod runs on and ends at 3 min
			m2 := newTestMeter(t, s, c)
			m2.see(p, "2m")
			m2.closeUnseen()
			m2.flushAt("2m1s")
			m2.see(finished(p, "3m"), "3m1s")
			m2.flushAt("3m2s")
			return "u1"
		}, 170, 1, 0},
		{"finished while the meter was down", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := testPod("u1", "ns-a", "10s")
			m.see(p, "11s")
			m.flushAt("30s")
			m2 := newTestMeter(t, s, c)
			m2.see(finished(p, "1m"), "2m")
			m2.closeUnseen()
			m2.flushAt("2m1s")
			return "u1"
		}, 50, 1, 0},
		{"vanished while the meter was down: closed at the last time seen", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			m.see(testPod("u1", "ns-a", "10s"), "11s")
			m.flushAt("30s")
			m2 := newTestMeter(t, s, c)
			m2.closeUnseen()
			m2.flushAt("2m")
			// and a third start changes nothing
			m3 := newTestMeter(t, s, c)
			m3.closeUnseen()
			m3.flushAt("3m")
			return "u1"
		}, 20, 1, 0},
		{"deleted while running: closed when seen gone", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := testPod("u1", "ns-a", "10s")
			m.see(p, "11s")
			m.flushAt("30s")
			m.gone(p, "35s")
			m.flushAt("36s")
			return "u1"
		}, 25, 1, 0},
		{"across an hour: one line per hour", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := testPod("u1", "ns-a", "50m")
			m.see(p, "50m")
			m.flushAt("55m")
			m.flushAt("1h5m")
			m.see(finished(p, "1h10m"), "1h10m")
			m.flushAt("1h11m")
			return "u1"
		}, 1200, 2, 0},
		{"late terminal status takes back what an open flush wrote past the end", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := testPod("u1", "ns-a", "50m")
			m.see(p, "50m")
			m.flushAt("1h5m")
			m.see(finished(p, "58m"), "1h6m")
			m.flushAt("1h7m")
			return "u1"
		}, 480, 1, 0},
		{"same pod processed again by new meters: unchanged", func(t *testing.T, s *memStore, c *time.Time) string {
			m := newTestMeter(t, s, c)
			p := finished(testPod("u1", "ns-a", "10s"), "40s")
			m.see(p, "41s")
			m.flushAt("42s")
			puts := s.puts
			for range 3 {
				m := newTestMeter(t, s, c)
				m.see(p, "5m")
				m.closeUnseen()
				m.flushAt("5m1s")
			}
			if s.puts != puts {
				t.Errorf("re-processing wrote %d times", s.puts-puts)
			}
			return "u1"
		}, 30, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore()
			clock := t0
			uid := tc.run(t, s, &clock)
			secs, lines, open := s.lineSeconds(uid)
			if secs != tc.wantSecs || lines != tc.wantLines || open != tc.wantOpen {
				t.Errorf("records hold %d s in %d lines (%d open), want %d s in %d (%d open)", secs, lines, open, tc.wantSecs, tc.wantLines, tc.wantOpen)
			}
			for _, r := range s.recs {
				hasOpen := false
				for _, l := range r.Spec.Pods {
					hasOpen = hasOpen || l.Open
				}
				if (r.Labels[openLabel] == "true") != hasOpen {
					t.Errorf("record %s: open label %q, open lines %v", r.Name, r.Labels[openLabel], hasOpen)
				}
			}
		})
	}
}

// A pod running for days costs its meter a few reads per flush, before and
// after a restart, not one per hour of its life.
func TestMeterLongRunningPod(t *testing.T) {
	s := newMemStore()
	clock := t0
	m := newTestMeter(t, s, &clock)
	p := testPod("long", "ns-a", "10s")
	m.see(p, "11s")
	for h := 1; h <= 72; h++ {
		m.flushAt(fmt.Sprintf("%dh30m", h))
	}
	if secs, lines, open := s.lineSeconds("long"); secs != 72*3600+30*60-10 || lines != 73 || open != 1 {
		t.Fatalf("records hold %d s in %d lines (%d open)", secs, lines, open)
	}
	m.flushAt("80h0m15s") // past the cache's memory of old hours
	gets, puts := s.gets, s.puts
	m.flushAt("80h0m30s")
	if s.gets != gets || s.puts != puts+1 {
		t.Errorf("one flush of a running pod: %d reads, %d writes; want 0 and 1", s.gets-gets, s.puts-puts)
	}
	gets = s.gets
	m2 := newTestMeter(t, s, &clock)
	m2.see(p, "80h1m")
	m2.closeUnseen()
	m2.flushAt("80h1m")
	if s.gets-gets > 2 {
		t.Errorf("first flush after a restart read %d records", s.gets-gets)
	}
	if secs, _, open := s.lineSeconds("long"); secs != 80*3600+60-10 || open != 1 {
		t.Errorf("after restart: %d s, %d open", secs, open)
	}
}

func TestReport(t *testing.T) {
	s := newMemStore()
	clock := t0
	m := newTestMeter(t, s, &clock)
	done := finished(testPod("done", "ns-a", "10s"), "30s")
	live := testPod("live", "ns-a", "20s")
	m.see(done, "31s")
	m.see(live, "31s")
	m.flushAt("40s")
	clock = at("1m")
	for _, tc := range []struct {
		name         string
		since, until string
		tenants      []string
		want         map[string]int64
	}{
		{"everything: the running pod up to now", "0s", "1h", nil, map[string]int64{"done": 20, "live": 40}},
		{"a window", "25s", "35s", nil, map[string]int64{"done": 5, "live": 10}},
		{"after the first ended", "30s", "1h", nil, map[string]int64{"live": 30}},
		{"this tenant", "0s", "1h", []string{"a"}, map[string]int64{"done": 20, "live": 40}},
		{"another tenant", "0s", "1h", []string{"b"}, map[string]int64{}},
		{"no tenant", "0s", "1h", []string{}, map[string]int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := m.Report(context.Background(), at(tc.since), at(tc.until), tc.tenants)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			var total int64
			for _, tu := range rep.Tenants {
				for _, nu := range tu.Namespaces {
					for _, p := range nu.Pods {
						got[p.UID] = p.Seconds
						total += p.Seconds
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || rep.Total.Seconds != total {
				t.Errorf("report %v (total %d), want %v", got, rep.Total.Seconds, tc.want)
			}
			if want := float64(total) * 0.5; rep.Total.CoreSeconds != want {
				t.Errorf("core-seconds %v, want %v", rep.Total.CoreSeconds, want)
			}
		})
	}
}

// A pod in its first second has no whole second billed yet, but the report
// shows it as running all the same.
func TestReportPodInItsFirstSecond(t *testing.T) {
	s := newMemStore()
	clock := t0
	m := newTestMeter(t, s, &clock)
	m.see(testPod("new", "ns-a", "10s"), "10s")
	clock = at("10s").Add(400 * time.Millisecond)
	rep, err := m.Report(context.Background(), at("0s"), time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var found []PodUsage
	for _, tu := range rep.Tenants {
		for _, nu := range tu.Namespaces {
			found = append(found, nu.Pods...)
		}
	}
	if len(found) != 1 || !found[0].Running || found[0].Seconds != 0 || !found[0].Start.Equal(at("10s")) {
		t.Fatalf("report pods %+v, want the new pod running with 0 s from 10s", found)
	}
}

// TestReportByDay: by=day splits the window at UTC midnights, per
// namespace, with days that had no usage kept, and the days add up to the
// window.
func TestReportByDay(t *testing.T) {
	s := newMemStore()
	clock := t0 // 2026-11-25 02:00 UTC
	m := newTestMeter(t, s, &clock)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, ns := range []string{"ns-a", "ns-b"} {
		_ = idx.Add(&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{TenantLabel: "a"}}})
	}
	m.nsLister = corelisters.NewNamespaceLister(idx)
	done := testPod("done", "ns-a", "10s") // until 2026-11-26 01:00
	live := testPod("live", "ns-b", "21h") // from 2026-11-25 23:00, still running
	m.see(done, "11s")
	for h := 1; h <= 47; h++ {
		if h == 22 {
			m.see(live, "21h30m")
		}
		if h == 24 {
			m.see(finished(done, "23h"), "23h30m")
		}
		m.flushAt(fmt.Sprintf("%dh", h))
	}
	clock = at("47h") // 2026-11-27 01:00

	show := func(days []DayUsage) string {
		var out []string
		for _, d := range days {
			ns := []string{}
			for _, n := range d.Namespaces {
				ns = append(ns, fmt.Sprintf("%s/%s:%d", n.Tenant, n.Namespace, n.Seconds))
			}
			out = append(out, fmt.Sprintf("%s=%d%v", d.Date, d.Seconds, ns))
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		name, since, until string
		want               string
	}{
		{"the whole run", "0s", "", "2026-11-25=82790[a/ns-a:79190 a/ns-b:3600] 2026-11-26=90000[a/ns-a:3600 a/ns-b:86400] 2026-11-27=3600[a/ns-b:3600]"},
		{"one day", "22h", "46h", "2026-11-26=90000[a/ns-a:3600 a/ns-b:86400]"},
		{"part of a day", "22h30m", "23h30m", "2026-11-26=5400[a/ns-a:1800 a/ns-b:3600]"},
		{"a day without usage is kept", "-24h", "12h", "2026-11-24=0[] 2026-11-25=43190[a/ns-a:43190]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			until := time.Time{}
			if tc.until != "" {
				until = at(tc.until)
			}
			rep, err := m.Report(context.Background(), at(tc.since), until, nil, ReportOptions{ByDay: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := show(rep.Days); got != tc.want {
				t.Errorf("days\n got %s\nwant %s", got, tc.want)
			}
			var sum Usage
			for _, d := range rep.Days {
				sum.Seconds += d.Seconds
				sum.CoreSeconds += d.CoreSeconds
				sum.GPUSeconds += d.GPUSeconds
			}
			if sum.Seconds != rep.Total.Seconds || sum.CoreSeconds != rep.Total.CoreSeconds {
				t.Errorf("days add up to %+v, the window is %+v", sum, rep.Total)
			}
		})
	}

	rep, err := m.Report(context.Background(), at("0s"), time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Days != nil {
		t.Errorf("a report not asked by day has days: %s", show(rep.Days))
	}
}
