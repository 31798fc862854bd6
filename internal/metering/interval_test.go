package metering

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)

func at(s string) time.Time {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return t0.Add(d)
}

func iv(from, to string) Interval { return Interval{at(from), at(to)} }

func TestIntervalSecondsAndClip(t *testing.T) {
	for _, tc := range []struct {
		name        string
		i, w        Interval
		wantSeconds int64
		wantClip    int64
	}{
		{"inside", iv("10s", "30s"), iv("0s", "1h"), 20, 20},
		{"cut at both ends", iv("0s", "1h"), iv("10m", "20m"), 3600, 600},
		{"disjoint", iv("0s", "10s"), iv("20s", "30s"), 10, 0},
		{"touching is not overlap", iv("0s", "10s"), iv("10s", "20s"), 10, 0},
		{"empty", iv("10s", "10s"), iv("0s", "1h"), 0, 0},
		{"backwards is empty", iv("20s", "10s"), iv("0s", "1h"), 0, 0},
		{"sub-second ends truncated", Interval{at("1.9s"), at("3.2s")}, iv("0s", "1h"), 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.i.Seconds(); got != tc.wantSeconds {
				t.Errorf("Seconds = %d, want %d", got, tc.wantSeconds)
			}
			if got := tc.i.Clip(tc.w).Seconds(); got != tc.wantClip {
				t.Errorf("Clip.Seconds = %d, want %d", got, tc.wantClip)
			}
		})
	}
}

func TestIntervalHours(t *testing.T) {
	for _, tc := range []struct {
		name string
		i    Interval
		want []Interval
	}{
		{"within one hour", iv("5m", "10m"), []Interval{iv("5m", "10m")}},
		{"across one boundary", iv("50m", "1h10m"), []Interval{iv("50m", "1h"), iv("1h", "1h10m")}},
		{"ends on a boundary", iv("30m", "1h"), []Interval{iv("30m", "1h")}},
		{"three hours", iv("59m", "2h1m"), []Interval{iv("59m", "1h"), iv("1h", "2h"), iv("2h", "2h1m")}},
		{"empty", iv("1h", "1h"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.i.Hours()
			if len(got) != len(tc.want) {
				t.Fatalf("Hours = %v, want %v", got, tc.want)
			}
			var sum int64
			for k := range got {
				if !got[k].Start.Equal(tc.want[k].Start) || !got[k].End.Equal(tc.want[k].End) {
					t.Errorf("piece %d = %v, want %v", k, got[k], tc.want[k])
				}
				sum += got[k].Seconds()
			}
			if sum != tc.i.Seconds() {
				t.Errorf("pieces hold %d s, interval %d s", sum, tc.i.Seconds())
			}
		})
	}
}

func TestSetUnion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		add     []Interval
		seconds int64
		pieces  int
	}{
		{"same interval twice counts once", []Interval{iv("0s", "20s"), iv("0s", "20s")}, 20, 1},
		{"re-processing a longer view", []Interval{iv("0s", "20s"), iv("0s", "45s")}, 45, 1},
		{"overlap", []Interval{iv("0s", "20s"), iv("10s", "30s")}, 30, 1},
		{"adjacent merge", []Interval{iv("0s", "10s"), iv("10s", "20s")}, 20, 1},
		{"gap kept", []Interval{iv("30s", "40s"), iv("0s", "10s")}, 20, 2},
		{"hour pieces rebuild the life", []Interval{iv("50m", "1h"), iv("1h", "1h10m"), iv("55m", "1h")}, 1200, 1},
		{"empty ignored", []Interval{iv("5s", "5s")}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Set
			for _, i := range tc.add {
				s = s.Add(i)
			}
			if s.Seconds() != tc.seconds || len(s) != tc.pieces {
				t.Errorf("set %v: %d s in %d pieces, want %d s in %d", s, s.Seconds(), len(s), tc.seconds, tc.pieces)
			}
		})
	}
	s := Set{}.Add(iv("0s", "10s")).Add(iv("20s", "30s"))
	if got := s.Clip(iv("5s", "25s")).Seconds(); got != 10 {
		t.Errorf("clipped set holds %d s, want 10", got)
	}
}

func TestParseTime(t *testing.T) {
	now := at("30m")
	for _, tc := range []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", time.Time{}, false},
		{"now", now, false},
		{"2026-11-25T02:10:00Z", at("10m"), false},
		{"2026-11-25T04:10:00+02:00", at("10m"), false},
		{"2026-11-25T02:10", at("10m"), false},
		{"2026-11-25", at("-2h"), false},
		{"15m", at("15m"), false},
		{"1d", now.AddDate(0, 0, -1), false},
		{"yesterday", time.Time{}, true},
		{"-5m", time.Time{}, true},
	} {
		got, err := ParseTime(tc.in, now)
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}
