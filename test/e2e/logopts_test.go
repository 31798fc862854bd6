package e2e

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// kubectl logs options as on a kubelet with containerd: --timestamps
// prefixes each line with its RFC 3339 time, --tail, --limit-bytes,
// --since and --since-time select as the kubelet's log reader does, and
// --previous shows the run before a restart.
func TestLogOptions(t *testing.T) {
	// stdout and stderr reach the log through pipes of their own, whose
	// lines interleave as they are read (as under containerd's CRI): the
	// pauses keep the order of the lines.
	pod := probePod("log-options", "", "echo one; sleep 1; echo two >&2; sleep 1; echo three; "+idle)
	p := createProbePod(t, pod)
	waitPod(t, p.Name, 90*time.Second, "running", func(p *v1.Pod) (bool, string) {
		return mainStatus(p).State.Running != nil, describe(p)
	})
	waitFor(t, 30*time.Second, "all lines logged", func() (bool, string) {
		out, _ := kubectl(t, "logs", p.Name)
		return out == "one\ntwo\nthree\n", out
	})
	t.Run("timestamps", func(t *testing.T) {
		out := mustKubectl(t, "logs", "--timestamps", p.Name)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("logs --timestamps: %q", out)
		}
		for i, want := range []string{"one", "two", "three"} {
			ts, text, _ := strings.Cut(lines[i], " ")
			if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || text != want {
				t.Errorf("line %q: want an RFC 3339 time and %q (%v)", lines[i], want, err)
			}
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"tail", []string{"--tail=1"}, "three\n"},
		{"limit-bytes", []string{"--limit-bytes=6"}, "one\ntw"},
		{"since", []string{"--since=1h"}, "one\ntwo\nthree\n"},
		{"since-time in the future", []string{"--since-time=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, ""},
		{"since-time in the past", []string{"--since-time=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}, "one\ntwo\nthree\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out := mustKubectl(t, append([]string{"logs", p.Name}, tc.args...)...); out != tc.want {
				t.Errorf("logs %v: %q, want %q", tc.args, out, tc.want)
			}
		})
	}
	t.Run("previous", func(t *testing.T) {
		pod := probePod("log-previous", "", `echo "run $(cat /proc/sys/kernel/random/uuid)"; sleep 2; exit 1`)
		p := createProbePod(t, pod)
		got := waitPod(t, p.Name, 90*time.Second, "restarted", func(p *v1.Pod) (bool, string) {
			return mainStatus(p).RestartCount >= 1, describe(p)
		})
		_ = got
		out := mustKubectl(t, "logs", "--previous", "--timestamps", p.Name)
		if ts, text, _ := strings.Cut(strings.TrimSpace(out), " "); !strings.HasPrefix(text, "run ") {
			t.Errorf("logs --previous: %q", out)
		} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("logs --previous --timestamps: %q: %v", out, err)
		}
	})
}
