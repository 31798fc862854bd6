package bench

import (
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestContainsAddr(t *testing.T) {
	for _, tc := range []struct {
		line, ip string
		want     bool
	}{
		{"-A KUBE-SEP-X -s 10.79.0.5/32 -j KUBE-MARK-MASQ", "10.79.0.5", true},
		{"-A KUBE-SEP-X -s 10.79.0.50/32 -j KUBE-MARK-MASQ", "10.79.0.5", false},
		{"-A KUBE-SEP-X -s 110.79.0.5/32", "10.79.0.5", false},
		{"ip daddr 10.79.0.5 tcp dport 8080 dnat to 10.79.0.5:8080", "10.79.0.5", true},
		{"-m tcp -j DNAT --to-destination 10.79.0.5:8080", "10.79.0.5", true},
		{"elements = { 10.79.0.51, 10.79.0.5 }", "10.79.0.5", true},
		{"", "10.79.0.5", false},
	} {
		if got := containsAddr(tc.line, tc.ip); got != tc.want {
			t.Errorf("containsAddr(%q, %q) = %v, want %v", tc.line, tc.ip, got, tc.want)
		}
	}
	if n := countIPRules("a 10.0.0.1\nb 10.0.0.10\nc 10.0.0.2 10.0.0.1\n", []string{"10.0.0.1", "10.0.0.2"}); n != 2 {
		t.Errorf("countIPRules = %d, want 2 (a line naming two addresses counts once)", n)
	}
	table := `ipv4     2 tcp      6 431990 ESTABLISHED src=10.79.0.5 dst=10.79.1.7 sport=4100 dport=8080 src=10.79.1.7 dst=10.79.0.5 sport=8080 dport=4100 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 110 SYN_SENT src=10.79.0.9 dst=10.79.0.6 sport=4200 dport=8080 [UNREPLIED] src=10.79.0.6 dst=10.79.0.9 sport=8080 dport=4200 mark=0 zone=0 use=2
ipv4     2 udp      17 20 src=10.79.0.9 dst=10.43.0.10 sport=5353 dport=53 src=10.79.0.8 dst=10.79.0.9 sport=53 dport=5353 mark=0 zone=0 use=2
`
	if n := countConntrack(table, []string{"10.79.0.5", "10.79.0.6", "10.79.0.8"}); n != 2 {
		t.Errorf("countConntrack = %d, want 2 (an answered flow of each of two gone pods; the unanswered knock at the third does not count)", n)
	}
}

func TestGoroutineTotal(t *testing.T) {
	if n := goroutineTotal("goroutine profile: total 1234\n5 @ 0x1 0x2\n"); n != 1234 {
		t.Errorf("goroutineTotal = %d, want 1234", n)
	}
	if n := goroutineTotal("404 page not found\n"); n != -1 {
		t.Errorf("goroutineTotal of no profile = %d, want -1", n)
	}
}

// podLosses finds the pods a fault should not have touched and did.
func TestPodLosses(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	run := func(name string, restarts int32, started time.Time) podState {
		return podState{Name: name, Phase: v1.PodRunning, Restart: v1.RestartPolicyAlways, Ready: true,
			Ctrs: []ctrState{{Name: "c", ID: "containerd://" + name + "-c", Restarts: restarts, StartedAt: started, Running: true}}}
	}
	job := func(name string, phase v1.PodPhase, code int32) podState {
		p := podState{Name: name, Phase: phase, Restart: v1.RestartPolicyNever, Job: true,
			Ctrs: []ctrState{{Name: "c", ID: "containerd://" + name + "-c", StartedAt: t0}}}
		if phase == v1.PodRunning {
			p.Ctrs[0].Running = true
		} else {
			p.Ctrs[0].Exited, p.Ctrs[0].ExitCode = true, code
		}
		return p
	}
	before := map[types.UID]podState{
		"same": run("same", 0, t0), "restarted": run("restarted", 0, t0), "killed": run("killed", 0, t0),
		"gone": run("gone", 0, t0), "again": run("again", 0, t0),
		"job-ok": job("job-ok", v1.PodRunning, 0), "job-failed": job("job-failed", v1.PodRunning, 0),
	}
	after := map[types.UID]podState{
		"same": run("same", 0, t0), "restarted": run("restarted", 1, t0.Add(time.Minute)), "killed": run("killed", 1, t0.Add(time.Minute)),
		"again":  run("again", 0, t0.Add(time.Second)),
		"job-ok": job("job-ok", v1.PodSucceeded, 0), "job-failed": job("job-failed", v1.PodFailed, 128),
		"job-new-failed": job("job-new-failed", v1.PodFailed, 128),
	}
	got := podLosses(1, "agent", before, after, map[types.UID]bool{"killed": true})
	want := []string{"restarted restarted", "gone is gone", "again started again", "job-failed went from Running to Failed", "job-new-failed failed"}
	if len(got) != len(want) {
		t.Fatalf("losses %q, want %d of them", got, len(want))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			words := strings.SplitN(w, " ", 2)
			found = found || (strings.Contains(g, "pod "+words[0]) && strings.Contains(g, words[1]))
		}
		if !found {
			t.Errorf("no loss like %q in %q", w, got)
		}
	}
}

func TestSkipObject(t *testing.T) {
	for _, tc := range []struct {
		group, resource, ns, name string
		skip                      bool
	}{
		{"", "events", "default", "x", true},
		{"events.k8s.io", "events", "default", "x", true},
		{"metrics.k8s.io", "pods", "default", "x", true},
		{"coordination.k8s.io", "leases", "kube-system", "apiserver-abc", true},
		{"coordination.k8s.io", "leases", "kube-node-lease", "vm", false},
		{"", "pods", "default", "x", false},
		{"apps", "deployments", "default", "x", false},
	} {
		gr := schemaGR(tc.group, tc.resource)
		if got := skipObject(gr, tc.ns, tc.name); got != tc.skip {
			t.Errorf("skipObject(%s %s/%s) = %v, want %v", gr, tc.ns, tc.name, got, tc.skip)
		}
	}
}

// A pod the fault killed counts as running again only with containers
// started since the fault: the API may still show the ones from before.
func TestStartedSince(t *testing.T) {
	fault := time.Date(2026, 12, 6, 7, 46, 11, 500e6, time.UTC)
	old := podState{Phase: v1.PodRunning, Ready: true, Ctrs: []ctrState{{Running: true, StartedAt: fault.Add(-time.Minute)}}}
	fresh := podState{Phase: v1.PodRunning, Ready: true, Ctrs: []ctrState{{Running: true, StartedAt: fault.Truncate(time.Second)}}}
	starting := podState{Phase: v1.PodRunning, Ready: false, Ctrs: []ctrState{{Running: true, StartedAt: fault.Add(time.Second)}}}
	done := podState{Phase: v1.PodFailed}
	for name, tc := range map[string]struct {
		p    podState
		want bool
	}{"stale status": {old, false}, "started in the fault's second": {fresh, true}, "not ready yet": {starting, false}, "finished": {done, true}} {
		if got := startedSince(tc.p, fault); got != tc.want {
			t.Errorf("%s: startedSince = %v, want %v", name, got, tc.want)
		}
	}
}

func TestMemStat(t *testing.T) {
	// The tail of a real debug=1 heap profile: taken from this process.
	var buf strings.Builder
	if err := pprof.Lookup("heap").WriteTo(&buf, 1); err != nil {
		t.Fatal(err)
	}
	if v := memStat(buf.String(), "HeapInuse"); v <= 0 {
		t.Errorf("HeapInuse %d from this process's profile, want > 0", v)
	}
	if v := memStat("# HeapAlloc = 7\n", "HeapInuse"); v != -1 {
		t.Errorf("HeapInuse %d where the profile has none, want -1", v)
	}
	if v := memStat("heap profile: …\n# HeapInuse = 4096\n# HeapSys = 9\n", "HeapInuse"); v != 4096 {
		t.Errorf("HeapInuse %d, want 4096", v)
	}
}

func TestTraceFigures(t *testing.T) {
	var none Result
	traceFigures(&none, []ProcStat{{RSS: 1 << 30}})
	if len(none.Figures) != 0 {
		t.Errorf("one wave gave figures %v, want none", none.Figures)
	}
	var r Result
	traceFigures(&r, []ProcStat{
		{RSS: 1000 << 20, HeapLive: 400 << 20},
		{RSS: 1100 << 20, HeapLive: 300 << 20},
		{RSS: 1200 << 20, HeapLive: 200 << 20},
	})
	if len(r.Figures) != 2 {
		t.Fatalf("figures %v, want RSS and live heap", r.Figures)
	}
	if f := r.Figures[0]; f.Value != 1.2 || f.Note != "1000 1100 1200 MiB" {
		t.Errorf("RSS figure %+v, want 1.2× over 1000 1100 1200 MiB", f)
	}
	if f := r.Figures[1]; f.Value != 0.5 || f.Note != "400 300 200 MiB" {
		t.Errorf("live heap figure %+v, want 0.5× over 400 300 200 MiB", f)
	}
	var nolive Result
	traceFigures(&nolive, []ProcStat{{RSS: 1, HeapLive: -1}, {RSS: 2, HeapLive: -1}})
	if len(nolive.Figures) != 1 {
		t.Errorf("without a pprof listener: figures %v, want RSS only", nolive.Figures)
	}
}

func TestChaosFaultChoice(t *testing.T) {
	for name, c := range map[string]Config{
		"host without hosts":      {Scenario: "chaos", Faults: []string{FaultHost}},
		"etcd embedded":           {Scenario: "chaos", Faults: []string{FaultEtcd}},
		"neither can be injected": {Scenario: "chaos", Faults: []string{FaultHost, FaultEtcd}},
		"unknown fault":           {Scenario: "chaos", Faults: []string{"disk"}},
	} {
		if err := c.defaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for name, c := range map[string]Config{
		"etcd apart":       {Scenario: "chaos", Faults: []string{FaultEtcd}, EtcdApart: true},
		"host with hosts":  {Scenario: "chaos", Faults: []string{FaultHost}, Hosts: 2},
		"one of two works": {Scenario: "chaos", Faults: []string{FaultEtcd, FaultShim}},
		"all by default":   {Scenario: "chaos"},
	} {
		if err := c.defaults(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	avail := func(c Config, etcdPID int) []string {
		b := &bench{cfg: c, c: &Cluster{EtcdPID: etcdPID}}
		return b.availableFaults()
	}
	if got := avail(Config{Faults: AllFaults}, 0); slices.Contains(got, FaultEtcd) || slices.Contains(got, FaultHost) {
		t.Errorf("one host, etcd embedded: faults %v, want neither host nor etcd", got)
	}
	if got := avail(Config{Faults: AllFaults, Hosts: 3}, 4242); !slices.Contains(got, FaultEtcd) || !slices.Contains(got, FaultHost) {
		t.Errorf("three hosts, etcd apart: faults %v, want host and etcd among them", got)
	}
}
