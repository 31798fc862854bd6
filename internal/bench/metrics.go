package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// histogram is a cumulative Prometheus histogram: upper bound → count.
type histogram map[float64]float64

// apiHistograms are the apiserver's request-latency histograms summed by
// verb class: "mutating" (POST, PUT, PATCH, DELETE) and "read" (GET, LIST).
// Long-running requests (WATCH, CONNECT) are left out, as the Kubernetes
// API-latency SLO does.
type apiHistograms map[string]histogram

// apiMetrics is what the bench reads from the apiserver's metrics: the
// latency histograms, and the count of each kind of mutating call
// ("POST pods/binding"), to show which writes a scenario costs.
type apiMetrics struct {
	latency apiHistograms
	writes  map[string]float64
}

const apiLatencyMetric = "apiserver_request_duration_seconds_bucket{"

func verbClass(verb string) string {
	switch verb {
	case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY":
		return "mutating"
	case "GET", "LIST":
		return "read"
	}
	return ""
}

// parseAPIHistograms reads apiserver metrics in the Prometheus text format.
func parseAPIHistograms(r io.Reader) (apiMetrics, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return apiMetrics{}, err
	}
	out := apiMetrics{latency: apiHistograms{}, writes: map[string]float64{}}
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, apiLatencyMetric)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		class := verbClass(label(labels, "verb"))
		if class == "" {
			continue
		}
		le := label(labels, "le")
		bound := math.Inf(1)
		if le != "+Inf" {
			if bound, err = strconv.ParseFloat(le, 64); err != nil {
				continue
			}
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			continue
		}
		if out.latency[class] == nil {
			out.latency[class] = histogram{}
		}
		out.latency[class][bound] += v
		if class == "mutating" && math.IsInf(bound, 1) {
			kind := label(labels, "verb") + " " + label(labels, "resource")
			if sub := label(labels, "subresource"); sub != "" {
				kind += "/" + sub
			}
			out.writes[kind] += v
		}
	}
	return out, nil
}

// label returns the value of name in a Prometheus label list
// (`a="x",b="y"`), "" when absent.
func label(labels, name string) string {
	for len(labels) > 0 {
		eq := strings.IndexByte(labels, '=')
		if eq < 0 || eq+1 >= len(labels) || labels[eq+1] != '"' {
			return ""
		}
		key := strings.TrimSpace(labels[:eq])
		var val strings.Builder
		i := eq + 2
		for ; i < len(labels) && labels[i] != '"'; i++ {
			if labels[i] == '\\' && i+1 < len(labels) {
				i++
			}
			val.WriteByte(labels[i])
		}
		if key == name {
			return val.String()
		}
		labels = strings.TrimPrefix(labels[min(i+1, len(labels)):], ",")
	}
	return ""
}

// sub returns h - before, bucket by bucket.
func (h histogram) sub(before histogram) histogram {
	out := histogram{}
	for b, v := range h {
		out[b] = v - before[b]
	}
	return out
}

// quantile interpolates like Prometheus' histogram_quantile; 0 when empty.
func (h histogram) quantile(q float64) float64 {
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return 0
	}
	total := h[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, b := range bounds {
		c := h[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return prevBound // above the largest finite bucket
			}
			if c == prevCount {
				return b
			}
			return prevBound + (b-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = b, c
	}
	return prevBound
}

func (h histogram) count() float64 {
	if v, ok := h[math.Inf(1)]; ok {
		return v
	}
	return 0
}

// scrapeAPI reads the apiserver's request-latency histograms.
func scrapeAPI(ctx context.Context, kube kubernetes.Interface) (apiMetrics, error) {
	raw, err := kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return apiMetrics{}, fmt.Errorf("read apiserver metrics: %w", err)
	}
	return parseAPIHistograms(strings.NewReader(string(raw)))
}

// apiFigures adds the API latency during a measurement (after - before).
func apiFigures(run *Result, before, after apiMetrics) {
	for _, class := range []string{"mutating", "read"} {
		h := after.latency[class].sub(before.latency[class])
		n := h.count()
		if n == 0 {
			continue
		}
		run.figure(fmt.Sprintf("API p99 latency, %s calls", class), h.quantile(0.99)*1000, "ms", fmt.Sprintf("%.0f calls, from the apiserver's histogram", n))
	}
	if w := writeCounts(before, after); w != "" {
		run.note("mutating calls meanwhile, most first: %s", w)
	}
}

// writeCounts lists the kinds of mutating call made between two scrapes,
// the most frequent first: "PUT pods/status 3000, POST pods 3000, …".
func writeCounts(before, after apiMetrics) string {
	type kc struct {
		kind string
		n    float64
	}
	var list []kc
	for kind, n := range after.writes {
		if d := n - before.writes[kind]; d > 0 {
			list = append(list, kc{kind, d})
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].n != list[j].n {
			return list[i].n > list[j].n
		}
		return list[i].kind < list[j].kind
	})
	parts := make([]string, 0, 10)
	for i, c := range list {
		if i == 10 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", c.kind, c.n))
	}
	return strings.Join(parts, ", ")
}

// profiler returns the cluster's profiler when --profile asks for one and
// the cluster serves pprof, or nil with a note saying why not.
func (b *bench) profiler() *profiler {
	if !*b.cfg.Profile {
		return nil
	}
	switch {
	case b.c.PprofAddr == "":
		b.rep.note("no profiles: the cluster process serves no pprof (start it with --pprof-addr and pass --pprof-addr)")
	case b.cfg.Out == "":
		b.rep.note("no profiles: no --out folder to write them to")
	default:
		return &profiler{addr: b.c.PprofAddr, dir: b.cfg.Out}
	}
	return nil
}

// saveCPU waits for a CPU profile and lists it (and its -top text) in the report.
func (b *bench) saveCPU(run *Result, done <-chan profileResult) {
	if done == nil {
		return
	}
	res := <-done
	if res.err != nil {
		run.note("CPU profile: %v", res.err)
		return
	}
	b.rep.Files = append(b.rep.Files, res.path)
	if top := topText(res.path); top != "" {
		b.rep.Files = append(b.rep.Files, top)
	}
}

// profiler fetches CPU and heap profiles from the cluster's pprof listener.
type profiler struct {
	addr string
	dir  string
}

// cpu takes a CPU profile of the next seconds into <dir>/<name>-cpu.pprof;
// it returns at once, and done reports the file (or the error).
func (p *profiler) cpu(ctx context.Context, name string, seconds int) (done <-chan profileResult) {
	ch := make(chan profileResult, 1)
	go func() {
		path := filepath.Join(p.dir, name+"-cpu.pprof")
		err := p.fetch(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), path, time.Duration(seconds+30)*time.Second)
		ch <- profileResult{path: path, err: err}
	}()
	return ch
}

type profileResult struct {
	path string
	err  error
}

// goroutines saves the process's goroutine stacks (counted by stack) into
// <dir>/<name>-goroutines.txt and returns the path and how many goroutines
// wait at each of the places the bench knows to look for.
func (p *profiler) goroutines(ctx context.Context, name string) (string, map[string]int, error) {
	path := filepath.Join(p.dir, name+"-goroutines.txt")
	if err := p.fetch(ctx, "/debug/pprof/goroutine?debug=1", path, 30*time.Second); err != nil {
		return "", nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	return path, waitSites(string(raw)), nil
}

// waitSites counts goroutines by where they wait, from a debug=1 goroutine
// profile: blocks of "N @ addrs" followed by "#\taddr func+off file:line".
func waitSites(profile string) map[string]int {
	sites := []struct{ name, marker string }{
		{"controller-manager pod creates held by its client QPS", "RealPodControl.createPods"},
		{"agent pod status updates (throttled or in flight)", "PodController).updatePodStatus"},
		{"events being sent", "EventSinkImpl"},
		{"other API clients held by their QPS", "RateLimiter).Wait"},
		{"API calls in flight (HTTP round trip)", "net/http.(*persistConn).roundTrip"},
		{"CNI plugin exec", "containernetworking/cni/pkg/invoke"},
		{"task exit watchers (one per running container)", "tasksClient).Wait"},
		{"containerd calls in flight", "containerd/containerd/v2/client"},
		{"workqueue idle (nothing to do)", "workqueue.(*Typed[...]).Get"},
	}
	out := map[string]int{}
	for _, block := range strings.Split(profile, "\n\n") {
		n := 0
		for _, line := range strings.Split(block, "\n") {
			if nStr, _, ok := strings.Cut(line, " @ "); ok {
				if v, err := strconv.Atoi(strings.TrimSpace(nStr)); err == nil {
					n = v
					break
				}
			}
		}
		if n == 0 {
			continue
		}
		for _, s := range sites {
			if strings.Contains(block, s.marker) {
				out[s.name] += n
				break
			}
		}
	}
	return out
}

func (p *profiler) heap(ctx context.Context, name string) (string, error) {
	path := filepath.Join(p.dir, name+"-heap.pprof")
	return path, p.fetch(ctx, "/debug/pprof/heap", path, 30*time.Second)
}

func (p *profiler) fetch(ctx context.Context, path, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("profile %s: %s: %s", path, resp.Status, body)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// topText writes `go tool pprof -top` of a profile beside it, when a Go
// toolchain is at hand; it returns the text file's path.
func topText(profile string) string {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return ""
	}
	out, err := exec.Command(goBin, "tool", "pprof", "-top", "-nodecount=40", profile).Output()
	if err != nil {
		return ""
	}
	path := strings.TrimSuffix(profile, ".pprof") + "-top.txt"
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return ""
	}
	return path
}
