package metering

import (
	"sort"
	"time"
)

// Interval is the half-open span [Start, End) of whole seconds, in UTC.
// An interval whose End is not after its Start is empty.
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// second truncates t to the metering granularity.
func second(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

// hourOf is the UTC hour t falls in.
func hourOf(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// Empty says whether the interval holds no second.
func (i Interval) Empty() bool { return !i.End.After(i.Start) }

// Seconds is the interval's length in whole seconds.
func (i Interval) Seconds() int64 {
	if i.Empty() {
		return 0
	}
	return int64(second(i.End).Sub(second(i.Start)) / time.Second)
}

// Clip is the part of i inside w; empty (at w's start or i's) when they do not meet.
func (i Interval) Clip(w Interval) Interval {
	out := i
	if w.Start.After(out.Start) {
		out.Start = w.Start
	}
	if w.End.Before(out.End) {
		out.End = w.End
	}
	if out.Empty() {
		return Interval{Start: out.Start, End: out.Start}
	}
	return out
}

// Hours splits i at UTC hour boundaries; each piece lies in one hour.
func (i Interval) Hours() []Interval {
	if i.Empty() {
		return nil
	}
	var out []Interval
	for h := hourOf(i.Start); h.Before(i.End); h = h.Add(time.Hour) {
		if p := i.Clip(Interval{h, h.Add(time.Hour)}); !p.Empty() {
			out = append(out, p)
		}
	}
	return out
}

// Set is a union of intervals, kept sorted and disjoint. Adding the same
// seconds twice counts them once: that is what makes re-processing safe.
type Set []Interval

// Add returns the union of s and i.
func (s Set) Add(i Interval) Set {
	if i.Empty() {
		return s
	}
	out := append(Set{}, s...)
	out = append(out, i)
	sort.Slice(out, func(a, b int) bool { return out[a].Start.Before(out[b].Start) })
	merged := out[:0]
	for _, iv := range out {
		if n := len(merged); n > 0 && !iv.Start.After(merged[n-1].End) {
			if iv.End.After(merged[n-1].End) {
				merged[n-1].End = iv.End
			}
			continue
		}
		merged = append(merged, iv)
	}
	return merged
}

// Clip is the part of s inside w.
func (s Set) Clip(w Interval) Set {
	var out Set
	for _, iv := range s {
		if c := iv.Clip(w); !c.Empty() {
			out = append(out, c)
		}
	}
	return out
}

// Seconds is the total length of s.
func (s Set) Seconds() int64 {
	var n int64
	for _, iv := range s {
		n += iv.Seconds()
	}
	return n
}

// Span is the smallest interval holding all of s (empty for an empty set).
func (s Set) Span() Interval {
	if len(s) == 0 {
		return Interval{}
	}
	return Interval{s[0].Start, s[len(s)-1].End}
}
