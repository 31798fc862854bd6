package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestTerminationMessage(t *testing.T) {
	manyLines := ""
	for i := 0; i < 100; i++ {
		manyLines += "line " + strings.Repeat("x", i%3) + "\n"
	}
	tests := []struct {
		name       string
		policy     v1.TerminationMessagePolicy
		path       string // "" for none
		file       *string
		code       int32
		log        string
		containers int
		want       string
	}{
		{name: "file", path: "/dev/termination-log", file: ptr.To("bye"), code: 0, log: "out\n", want: "bye"},
		{name: "file wins over logs", policy: v1.TerminationMessageFallbackToLogsOnError, path: "/dev/termination-log", file: ptr.To("why"), code: 1, log: "out\n", want: "why"},
		{name: "empty file, no fallback", path: "/dev/termination-log", file: ptr.To(""), code: 1, log: "out\n", want: ""},
		{name: "fallback on error", policy: v1.TerminationMessageFallbackToLogsOnError, path: "/dev/termination-log", file: ptr.To(""), code: 2, log: "a\nb\n", want: "a\nb\n"},
		{name: "no fallback on success", policy: v1.TerminationMessageFallbackToLogsOnError, path: "/dev/termination-log", file: ptr.To(""), code: 0, log: "a\n", want: ""},
		{name: "fallback without a file", policy: v1.TerminationMessageFallbackToLogsOnError, code: 1, log: "last words", want: "last words"},
		{name: "fallback keeps the last 80 lines", policy: v1.TerminationMessageFallbackToLogsOnError, code: 1, log: manyLines, want: strings.Join(strings.SplitAfter(manyLines, "\n")[20:], "")},
		{name: "fallback keeps the last 2 KiB", policy: v1.TerminationMessageFallbackToLogsOnError, code: 1, log: strings.Repeat("y", 5000), want: strings.Repeat("y", 2048)},
		{name: "file keeps the last 4 KiB", path: "/dev/termination-log", file: ptr.To(strings.Repeat("a", 100) + strings.Repeat("b", 4096)), want: strings.Repeat("b", 4096)},
		{name: "pod shares 12 KiB", path: "/dev/termination-log", file: ptr.To(strings.Repeat("c", 4096)), containers: 4, want: strings.Repeat("c", 3072)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Runtime{cfg: Config{StateDir: t.TempDir()}}
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u1"}}
			c := v1.Container{Name: "app", TerminationMessagePath: tc.path, TerminationMessagePolicy: tc.policy}
			pod.Spec.Containers = []v1.Container{c}
			for i := 1; i < tc.containers; i++ {
				pod.Spec.Containers = append(pod.Spec.Containers, v1.Container{Name: "other" + string(rune('a'+i))})
			}
			if tc.file != nil {
				p, err := r.resetTerminationFile(pod, "app")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(*tc.file), 0o666); err != nil {
					t.Fatal(err)
				}
			}
			// The log as a container writes it (CRI format), and raw, as
			// containers started by older agents left it.
			cri := writeTestLog(t, time.Now(), []testWrite{{data: tc.log}})
			raw := filepath.Join(t.TempDir(), "0.log")
			if err := os.WriteFile(raw, []byte(tc.log), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, logPath := range []string{cri, raw} {
				if got := r.terminationMessage(pod, &c, tc.code, logPath); got != tc.want {
					t.Errorf("%s: message %q (%d bytes), want %q (%d bytes)", filepath.Base(filepath.Dir(logPath)), trunc(got), len(got), trunc(tc.want), len(tc.want))
				}
			}
		})
	}
}

// A new run starts with an empty termination file: an earlier run's
// message is not taken for the next one's.
func TestTerminationFileReset(t *testing.T) {
	r := &Runtime{cfg: Config{StateDir: t.TempDir()}}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u1"}}
	p, err := r.resetTerminationFile(pod, "app")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("first run"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := r.resetTerminationFile(pod, "app"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 0 || st.Mode().Perm() != 0o666 {
		t.Errorf("after reset: size %d mode %v, want 0 and -rw-rw-rw-", st.Size(), st.Mode().Perm())
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:20] + "…" + s[len(s)-20:]
	}
	return s
}
