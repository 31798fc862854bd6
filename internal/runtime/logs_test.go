package runtime

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

// writeTestLog writes a container log the way a run of a container does:
// each write on its stream, one second apart from t0.
func writeTestLog(t *testing.T, t0 time.Time, writes []testWrite) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	l := newContainerLog(f, func() time.Time { return now })
	for i, w := range writes {
		now = t0.Add(time.Duration(i) * time.Second)
		s := l.stdout
		if w.stderr {
			s = l.stderr
		}
		if _, err := s.Write([]byte(w.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

type testWrite struct {
	stderr bool
	data   string
}

func TestContainerLogFormat(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 123456789, time.UTC)
	long := strings.Repeat("x", maxLogLineSize+5)
	for _, tc := range []struct {
		name   string
		writes []testWrite
		want   string
	}{
		{"lines", []testWrite{{data: "a\nb\n"}}, "2026-12-05T10:00:00.123456789Z stdout F a\n2026-12-05T10:00:00.123456789Z stdout F b\n"},
		{"line in pieces", []testWrite{{data: "he"}, {data: "llo\n"}}, "2026-12-05T10:00:01.123456789Z stdout F hello\n"},
		{"stderr", []testWrite{{stderr: true, data: "oops\n"}}, "2026-12-05T10:00:00.123456789Z stderr F oops\n"},
		{"unfinished line at the end", []testWrite{{data: "bye"}}, "2026-12-05T10:00:00.123456789Z stdout P bye\n"},
		{"empty line", []testWrite{{data: "\n"}}, "2026-12-05T10:00:00.123456789Z stdout F \n"},
		{"long line", []testWrite{{data: long + "\n"}}, "2026-12-05T10:00:00.123456789Z stdout P " + long[:maxLogLineSize] + "\n2026-12-05T10:00:00.123456789Z stdout F xxxxx\n"},
		{"carriage return kept", []testWrite{{data: "tty\r\n"}}, "2026-12-05T10:00:00.123456789Z stdout F tty\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := os.ReadFile(writeTestLog(t, t0, tc.writes))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("log\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// The log options of `kubectl logs` read a CRI log as the kubelet reads it.
func TestReadContainerLog(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	path := writeTestLog(t, t0, []testWrite{
		{data: "one\n"}, {stderr: true, data: "two\n"}, {data: "three\n"}, {data: "four\n"},
	})
	for _, tc := range []struct {
		name string
		opts api.ContainerLogOpts
		now  time.Time
		want string
	}{
		{name: "all", want: "one\ntwo\nthree\nfour\n"},
		{name: "timestamps", opts: api.ContainerLogOpts{Timestamps: true, Tail: 2}, want: "2026-12-05T10:00:02.000000000Z three\n2026-12-05T10:00:03.000000000Z four\n"},
		{name: "tail", opts: api.ContainerLogOpts{Tail: 1}, want: "four\n"},
		{name: "limit bytes", opts: api.ContainerLogOpts{LimitBytes: 6}, want: "one\ntw"},
		{name: "since time", opts: api.ContainerLogOpts{SinceTime: t0.Add(2 * time.Second)}, want: "three\nfour\n"},
		{name: "since seconds", opts: api.ContainerLogOpts{SinceSeconds: 2}, now: t0.Add(3 * time.Second), want: "two\nthree\nfour\n"},
		{name: "since after the last line", opts: api.ContainerLogOpts{SinceTime: t0.Add(time.Hour)}, want: ""},
		{name: "follow of an exited container ends", opts: api.ContainerLogOpts{Follow: true}, want: "one\ntwo\nthree\nfour\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = t0.Add(time.Hour)
			}
			var out bytes.Buffer
			err := readCRILog(context.Background(), path, logOptions(tc.opts, now), func() bool { return false }, &out)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("got %q, want %q", out.String(), tc.want)
			}
		})
	}
}

func TestIsCRILog(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    bool
	}{
		{"", true},
		{"2026-12-05T10:00:00.1Z stdout F hi\n", true},
		{"2026-12-05T10:00:00.1Z stderr P hi", true},
		{"hello world\n", false},
		{"2026 stdout F x\n", false},
	} {
		p := filepath.Join(dir, "log")
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := isCRILog(p); got != tc.want {
			t.Errorf("isCRILog(%q) = %v, want %v", tc.content, got, tc.want)
		}
	}
}

// A log over its size is rotated: at most maxFiles files, each at most
// maxSize (an entry is never split across files), the newest entries in
// the current file; older runs' logs are pruned.
func TestContainerLogRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "3.log")
	l, err := openContainerLog(path, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	l.now = func() time.Time { tick = tick.Add(time.Millisecond); return tick }
	line := strings.Repeat("y", 90) + "\n"
	for i := 0; i < 200; i++ {
		if _, err := l.stdout.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(path + "*")
	if len(files) != 3 {
		t.Fatalf("%d files %v, want 3 (the current one and 2 rotated)", len(files), files)
	}
	var total int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1000 {
			t.Errorf("%s holds %d bytes, over the 1000 of maxSize", f, st.Size())
		}
		total += st.Size()
	}
	if total < 2000 {
		t.Errorf("%d bytes kept in all, want the last 2000 or more", total)
	}
	cur, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(cur), " stdout F "+line) {
		t.Errorf("current file does not end with the last line: %q", cur)
	}

	for _, n := range []string{"0.log", "1.log", "1.log.20261205-100000.000000000", "2.log", "10.log"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pruneLogs(dir, 2)
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range left {
		if b := filepath.Base(f); strings.HasPrefix(b, "0.") || strings.HasPrefix(b, "1.") {
			t.Errorf("%s of a run before 2 was kept", b)
		}
	}
	if len(left) != 5 { // 2.log, 10.log, 3.log and its two rotated files
		t.Errorf("after pruning: %v", left)
	}
}
