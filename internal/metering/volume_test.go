package metering

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// testPV is a PersistentVolume of class and size bound at bound to claim
// "data" of namespace ns.
func testPV(uid, ns, class, size, bound string) *v1.PersistentVolume {
	b := metav1.NewTime(at(bound))
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-" + uid, UID: types.UID(uid), CreationTimestamp: b},
		Spec: v1.PersistentVolumeSpec{
			Capacity:         v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)},
			ClaimRef:         &v1.ObjectReference{Namespace: ns, Name: "data"},
			StorageClassName: class,
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound, LastPhaseTransitionTime: &b},
	}
}

func resized(pv *v1.PersistentVolume, size string) *v1.PersistentVolume {
	c := pv.DeepCopy()
	c.Spec.Capacity[v1.ResourceStorage] = resource.MustParse(size)
	return c
}

func deleting(pv *v1.PersistentVolume, d string) *v1.PersistentVolume {
	c := pv.DeepCopy()
	t := metav1.NewTime(at(d))
	c.DeletionTimestamp = &t
	c.Status.Phase = v1.VolumeReleased
	return c
}

func (m testMeter) seeVolume(pv *v1.PersistentVolume, d string) {
	*m.clock = at(d)
	m.observeVolume(pv, false)
}

func (m testMeter) volumeGone(pv *v1.PersistentVolume, d string) {
	*m.clock = at(d)
	m.observeVolume(pv, true)
}

// volumeSeconds sums the lines of a volume over all records.
func (s *memStore) volumeSeconds(uid string) (secs, mibSecs int64, lines, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		for _, l := range r.Spec.Volumes {
			if l.UID == uid {
				secs += l.Totals.Seconds
				mibSecs += l.Totals.MiBSeconds
				lines++
				if l.Open {
					open++
				}
			}
		}
	}
	return
}

func TestVolumeScenarios(t *testing.T) {
	for _, tc := range []struct {
		name string
		// run drives meters over one store; the volume's UID is "v1".
		run                 func(t *testing.T, store *memStore, clock *time.Time)
		wantSecs, wantMiBs  int64
		wantLines, wantOpen int
	}{
		{"bound, then its claim deleted: closed at the deletionTimestamp", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-evs", "64Mi", "10s")
			m.seeVolume(pv, "11s")
			m.flushAt("30s")
			m.seeVolume(deleting(pv, "40s"), "41s")
			m.flushAt("42s")
			m.volumeGone(deleting(pv, "40s"), "45s") // the finalizers done
			m.flushAt("46s")
		}, 30, 30 * 64, 1, 0},
		{"still bound: open up to the last flush", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			m.seeVolume(testPV("v1", "ns-a", "cci-evs", "1Gi", "10s"), "11s")
			m.flushAt("30s")
			m.flushAt("50s")
		}, 40, 40 * 1024, 1, 1},
		{"not bound yet: nothing", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-evs", "1Gi", "10s")
			pv.Status.Phase = v1.VolumeAvailable
			m.seeVolume(pv, "11s")
			m.flushAt("30s")
		}, 0, 0, 0, 0},
		{"claim of a namespace of no tenant: nothing", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			m.seeVolume(testPV("v1", "plain", "cci-evs", "1Gi", "10s"), "11s")
			m.flushAt("30s")
		}, 0, 0, 0, 0},
		{"grown: the old size up to when the meter saw it, the new size after", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-evs", "64Mi", "10s")
			m.seeVolume(pv, "11s")
			m.flushAt("30s")
			m.seeVolume(resized(pv, "128Mi"), "40s")
			m.flushAt("41s")
			m.seeVolume(deleting(resized(pv, "128Mi"), "70s"), "71s")
			m.flushAt("72s")
		}, 60, 30*64 + 30*128, 2, 0},
		{"bound across a restart of the meter: billed once, no gap", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-sfs", "1Gi", "10s")
			m.seeVolume(pv, "11s")
			m.flushAt("30s")
			// down from 30 s to 2 min
			m2 := newTestMeter(t, s, c)
			m2.seeVolume(pv, "2m")
			m2.closeUnseen()
			m2.flushAt("2m1s")
			m2.seeVolume(deleting(pv, "3m"), "3m1s")
			m2.flushAt("3m2s")
		}, 170, 170 * 1024, 1, 0},
		{"deleted while the meter was down: closed at the last time seen", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			m.seeVolume(testPV("v1", "ns-a", "cci-evs", "1Gi", "10s"), "11s")
			m.flushAt("30s")
			m2 := newTestMeter(t, s, c)
			m2.closeUnseen()
			m2.flushAt("2m")
			// and a third start changes nothing
			m3 := newTestMeter(t, s, c)
			m3.closeUnseen()
			m3.flushAt("3m")
		}, 20, 20 * 1024, 1, 0},
		{"deletion asked while the meter was down: closed at the deletionTimestamp", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-evs", "1Gi", "10s")
			m.seeVolume(pv, "11s")
			m.flushAt("30s")
			m2 := newTestMeter(t, s, c)
			m2.seeVolume(deleting(pv, "50s"), "2m")
			m2.closeUnseen()
			m2.flushAt("2m1s")
		}, 40, 40 * 1024, 1, 0},
		{"grown while the meter was down: the old size until the meter saw the new", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-evs", "64Mi", "10s")
			m.seeVolume(pv, "11s")
			m.flushAt("30s")
			m2 := newTestMeter(t, s, c)
			m2.seeVolume(resized(pv, "128Mi"), "2m")
			m2.closeUnseen()
			m2.flushAt("2m1s")
			m2.seeVolume(deleting(resized(pv, "128Mi"), "3m"), "3m1s")
			m2.flushAt("3m2s")
		}, 170, 110*64 + 60*128, 2, 0},
		{"first seen while being deleted: left to the run that saw it bound", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			m.seeVolume(deleting(testPV("v1", "ns-a", "cci-evs", "1Gi", "10s"), "40s"), "1m")
			m.flushAt("1m1s")
		}, 0, 0, 0, 0},
		{"across hours, grown in the second, restarted in the third", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-evs", "1Gi", "50m")
			m.seeVolume(pv, "50m")
			m.flushAt("55m")
			m.flushAt("1h5m")
			m.seeVolume(resized(pv, "2Gi"), "1h10m")
			m.flushAt("1h11m")
			m.flushAt("2h10m")
			m2 := newTestMeter(t, s, c)
			m2.seeVolume(resized(pv, "2Gi"), "2h20m")
			m2.closeUnseen()
			m2.flushAt("2h21m")
			m2.volumeGone(resized(pv, "2Gi"), "2h30m")
			m2.flushAt("2h31m")
		}, 100 * 60, 20*60*1024 + 80*60*2048, 4, 0},
		{"the same volume processed again by new meters: unchanged", func(t *testing.T, s *memStore, c *time.Time) {
			m := newTestMeter(t, s, c)
			pv := testPV("v1", "ns-a", "cci-evs", "1Gi", "10s")
			m.seeVolume(pv, "11s")
			m.flushAt("40s")
			puts := s.puts
			for range 3 {
				m := newTestMeter(t, s, c)
				m.seeVolume(pv, "40s")
				m.closeUnseen()
				m.flushAt("40s")
			}
			if s.puts != puts {
				t.Errorf("re-processing wrote %d times", s.puts-puts)
			}
		}, 30, 30 * 1024, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore()
			clock := t0
			tc.run(t, s, &clock)
			secs, mibs, lines, open := s.volumeSeconds("v1")
			if secs != tc.wantSecs || mibs != tc.wantMiBs || lines != tc.wantLines || open != tc.wantOpen {
				t.Errorf("records hold %d s, %d MiB-s in %d lines (%d open), want %d s, %d MiB-s in %d (%d open)",
					secs, mibs, lines, open, tc.wantSecs, tc.wantMiBs, tc.wantLines, tc.wantOpen)
			}
			for _, r := range s.recs {
				hasOpen := false
				var sum int64
				for _, l := range r.Spec.Volumes {
					hasOpen = hasOpen || l.Open
					sum += l.Totals.MiBSeconds
				}
				if (r.Labels[openLabel] == "true") != hasOpen || r.Spec.Totals.StorageMiBSeconds != sum {
					t.Errorf("record %s: open label %q, open lines %v, storage total %d of %d", r.Name, r.Labels[openLabel], hasOpen, r.Spec.Totals.StorageMiBSeconds, sum)
				}
			}
		})
	}
}

// The report shows a tenant's storage per class beside its pods, per
// volume in its namespace, priced per GiB-hour; a tenant with volumes and
// no pods is in it too.
func TestReportStorage(t *testing.T) {
	s := newMemStore()
	clock := t0
	m := newTestMeter(t, s, &clock)
	evs := testPV("evs", "ns-a", "cci-evs", "64Mi", "0s")
	m.seeVolume(evs, "0s")
	m.seeVolume(testPV("obs", "ns-a", "cci-obs", "2Gi", "0s"), "0s")
	m.see(finished(testPod("pod", "ns-a", "0s"), "30s"), "31s")
	m.flushAt("1m")
	m.seeVolume(resized(evs, "128Mi"), "30m")
	m.flushAt("30m1s")
	clock = at("1h")

	rep, err := m.Report(context.Background(), at("0s"), time.Time{}, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tenants) != 1 || len(rep.Tenants[0].Namespaces) != 1 {
		t.Fatalf("report %+v: want tenant a's one namespace", rep)
	}
	tu, nu := rep.Tenants[0], rep.Tenants[0].Namespaces[0]
	// evs: 64 MiB for 30 min, 128 MiB for 30 min: 96 MiB for an hour.
	wantEVS := StorageUsage{StorageClass: "cci-evs", MiBSeconds: 96 * 3600, GiBHours: 0.09375, PerGiBHour: 0.00010959, Cost: 0.000010274}
	if got := tu.StorageOf("cci-evs"); got != wantEVS {
		t.Errorf("tenant's cci-evs %+v, want %+v", got, wantEVS)
	}
	if got := tu.StorageOf("cci-obs"); got.GiBHours != 2 || got.MiBSeconds != 2048*3600 {
		t.Errorf("tenant's cci-obs %+v, want 2 GiB-hours", got)
	}
	if tu.Seconds != 30 || len(nu.Pods) != 1 {
		t.Errorf("the pod's figures beside the storage: %d s, %d pods", tu.Seconds, len(nu.Pods))
	}
	compute := usageOf(totalsOf(Flavor{500, 1024, 0}, 30), DefaultPrices()).Cost
	if want := compute + 0.09375*0.00010959 + 2*0.000031507; tu.Cost < want-1e-9 || tu.Cost > want+1e-9 {
		t.Errorf("tenant's cost %v, want pods' and storage's %v", tu.Cost, want)
	}
	if len(nu.Volumes) != 2 {
		t.Fatalf("namespace volumes %+v, want 2", nu.Volumes)
	}
	v := nu.Volumes[0]
	if v.StorageClass == "cci-obs" {
		v = nu.Volumes[1]
	}
	if v.Name != "pvc-evs" || v.Claim != "data" || v.SizeGiB != 0.125 || !v.Bound || v.Seconds != 3600 || v.GiBHours != 0.09375 {
		t.Errorf("volume %+v", v)
	}
	if rep.Total.StorageGiBHours() != 2.09375 {
		t.Errorf("total storage %v GiB-hours", rep.Total.StorageGiBHours())
	}

	// By day, the storage is in the day's usage.
	rep, err = m.Report(context.Background(), at("0s"), time.Time{}, nil, ReportOptions{ByDay: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Days) != 1 || rep.Days[0].StorageOf("cci-obs").GiBHours != 2 {
		t.Errorf("days %+v", rep.Days)
	}

	// A window after the volumes went holds none of them.
	m.seeVolume(deleting(resized(evs, "128Mi"), "1h"), "1h")
	m.volumeGone(testPV("obs", "ns-a", "cci-obs", "2Gi", "0s"), "1h")
	m.flushAt("1h1s")
	clock = at("2h")
	rep, err = m.Report(context.Background(), at("1h"), time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tenants) != 0 || len(rep.Total.Storage) != 0 {
		t.Errorf("report after the volumes went: %+v", rep)
	}
	// It grew while billed and stopped when the volumes went.
	for d, want := range map[string]float64{"30m": 0.03125 + 1, "1h": 0.09375 + 2, "2h": 0.09375 + 2} {
		rep, err = m.Report(context.Background(), at("0s"), at(d), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := rep.Total.StorageGiBHours(); got != want {
			t.Errorf("up to %s: %v GiB-hours, want %v", d, got, want)
		}
	}
	// (Not the loop's last report: map order is random.)
	if rep, err = m.Report(context.Background(), at("0s"), at("2h"), nil); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rep.Total.StorageOf("cci-evs").MiBSeconds); got != fmt.Sprint(96*3600) {
		t.Errorf("cci-evs after the claim went: %s MiB-s, want %d", got, 96*3600)
	}
}
