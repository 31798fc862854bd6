package bench

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one bench run measured. It is written as JSON and
// drawn as HTML; the table on stdout is its short form.
type Report struct {
	Scenario string    `json:"scenario"`
	Started  time.Time `json:"started"`
	Took     string    `json:"took"`
	Version  string    `json:"version"`
	Commit   string    `json:"commit,omitempty"`
	Machine  Machine   `json:"machine"`
	// Params are the options the scenario ran with.
	Params map[string]any `json:"params"`
	// Floor is the bare-containerd floor measured in the same run, when
	// the scenario has containers and the containerd socket was reachable.
	Floor   *Floor    `json:"floor,omitempty"`
	Results []*Result `json:"results"`
	// Notes say what was not measured and why, and what looked wrong.
	Notes []string `json:"notes,omitempty"`
	// Chaos is chaos's outcome; Churn that of churn's waves.
	Chaos *ChaosReport `json:"chaos,omitempty"`
	Churn *WavesReport `json:"churnWaves,omitempty"`
	// Files are what was written next to the report (profiles, charts).
	Files []string `json:"files,omitempty"`
}

// Machine is where the run happened.
type Machine struct {
	Host     string `json:"host"`
	OS       string `json:"os"`
	Kernel   string `json:"kernel"`
	CPUModel string `json:"cpuModel"`
	CPUs     int    `json:"cpus"`
	MemBytes int64  `json:"memBytes"`
}

// Floor is the physical floor of this machine: the same image started
// straight through containerd (create container + task start, same
// snapshotter and runtime), no Kubernetes, no CNI.
type Floor struct {
	Runtime string `json:"runtime"`
	// Start is create container → task started, one after another.
	Start Summary `json:"start"`
	// FirstInstruction is create container → the container's first
	// instruction (the timestamp it writes).
	FirstInstruction Summary `json:"firstInstruction"`
	// ParallelPods started all at once took ParallelTook (0: not measured).
	ParallelPods int     `json:"parallelPods,omitempty"`
	ParallelTook float64 `json:"parallelTookMs,omitempty"`
	// MemPerContainer is what each running container costs: shim (PSS),
	// container cgroup, and the kernel's unreclaimable memory growth.
	MemPerContainer int64     `json:"memPerContainerBytes"`
	Samples         []float64 `json:"startSamplesMs"`
}

// Result is one measured configuration of a scenario (a runtime, a mode, a rate).
type Result struct {
	Name      string     `json:"name"`
	Latencies []*Latency `json:"latencies,omitempty"`
	Figures   []Figure   `json:"figures,omitempty"`
	Series    []*Series  `json:"series,omitempty"`
	CPU       []CPUUse   `json:"cpu,omitempty"`
	Notes     []string   `json:"notes,omitempty"`
}

// Latency is one distribution, with its ratio to the floor when there is one.
type Latency struct {
	Name    string  `json:"name"`
	Summary Summary `json:"summary"`
	// FloorP50 and FloorP99 are p50 and p99 over the floor's (0: no floor).
	FloorP50 float64   `json:"floorRatioP50,omitempty"`
	FloorP99 float64   `json:"floorRatioP99,omitempty"`
	Samples  []float64 `json:"samplesMs"`
}

// Figure is one number.
type Figure struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Note  string  `json:"note,omitempty"`
}

// Series is a curve, such as pods running over time.
type Series struct {
	Name string `json:"name"`
	// Step draws a count that changes at events; otherwise points are joined.
	Step   bool         `json:"step,omitempty"`
	X      string       `json:"x"`
	Y      string       `json:"y"`
	Points [][2]float64 `json:"points"`
}

func (r *Result) latency(name string, samples []float64, floor *Summary) *Latency {
	l := &Latency{Name: name, Summary: summarize(samples), Samples: samples}
	if floor != nil && floor.N > 0 {
		l.FloorP50 = ratio(l.Summary.P50, floor.P50)
		l.FloorP99 = ratio(l.Summary.P99, floor.P99)
	}
	r.Latencies = append(r.Latencies, l)
	return l
}

// setCPU records the CPU use of the run and warns when other processes
// competed for the machine.
func (r *Result) setCPU(use []CPUUse) {
	r.CPU = use
	if o := otherCores(use); o > 0.25 {
		r.note("other processes kept %.2f cores busy during this run: the machine was not quiet, figures are pessimistic", o)
	}
}

func (r *Result) figure(name string, value float64, unit, note string) {
	r.Figures = append(r.Figures, Figure{Name: name, Value: value, Unit: unit, Note: note})
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (rep *Report) note(format string, args ...any) {
	rep.Notes = append(rep.Notes, fmt.Sprintf(format, args...))
}

// WriteTable prints the report's short form.
func (rep *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\n== cci bench %s — %s, %d CPUs, %s RAM, %s\n", rep.Scenario, rep.Machine.Host, rep.Machine.CPUs, bytesIEC(rep.Machine.MemBytes), rep.Started.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	if f := rep.Floor; f != nil {
		fmt.Fprintf(w, "\nfloor (containerd direct, %s):\n", f.Runtime)
		fmt.Fprintln(tw, "\tn\tp50\tp90\tp99\tmax\t")
		latencyRow(tw, "create→started", f.Start, nil)
		latencyRow(tw, "create→first instruction", f.FirstInstruction, nil)
		tw.Flush()
		if f.ParallelPods > 0 {
			fmt.Fprintf(w, "  %d containers at once: %s (%.1f/s)\n", f.ParallelPods, fmtMs(f.ParallelTook), float64(f.ParallelPods)/(f.ParallelTook/1000))
		}
		if f.MemPerContainer > 0 {
			fmt.Fprintf(w, "  memory per running container: %s\n", bytesIEC(f.MemPerContainer))
		}
	}
	for _, run := range rep.Results {
		fmt.Fprintf(w, "\n%s:\n", run.Name)
		if len(run.Latencies) > 0 {
			fmt.Fprintln(tw, "\tn\tp50\tp90\tp99\tmax\t×floor p50\t×floor p99\t")
			for _, l := range run.Latencies {
				latencyRow(tw, l.Name, l.Summary, l)
			}
			tw.Flush()
		}
		for _, f := range run.Figures {
			note := ""
			if f.Note != "" {
				note = "  (" + f.Note + ")"
			}
			fmt.Fprintf(w, "  %-44s %s%s\n", f.Name, fmtValue(f.Value, f.Unit), note)
		}
		if len(run.CPU) > 0 {
			fmt.Fprintf(w, "  CPU during the run:\n")
			for _, c := range run.CPU {
				rss := ""
				if c.PeakRSS > 0 {
					rss = ", peak RSS " + bytesIEC(c.PeakRSS)
				}
				if c.ChildSeconds >= 0.05 {
					rss += fmt.Sprintf(", %.1f CPU-s of it in child processes", c.ChildSeconds)
				}
				fmt.Fprintf(w, "    %-28s %7.1f CPU-s  %5.2f cores%s\n", c.Group, c.CPUSeconds, c.Cores, rss)
			}
		}
		for _, n := range run.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, f := range rep.Files {
		fmt.Fprintf(w, "wrote %s\n", f)
	}
	fmt.Fprintln(w)
}

func latencyRow(tw io.Writer, name string, s Summary, l *Latency) {
	if s.N == 0 {
		fmt.Fprintf(tw, "  %s\t0\t-\t-\t-\t-\t", name)
		if l != nil {
			fmt.Fprint(tw, "-\t-\t")
		}
		fmt.Fprintln(tw)
		return
	}
	fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t", name, s.N, fmtMs(s.P50), fmtMs(s.P90), fmtMs(s.P99), fmtMs(s.Max))
	if l != nil {
		fmt.Fprintf(tw, "%s\t%s\t", fmtRatio(l.FloorP50), fmtRatio(l.FloorP99))
	}
	fmt.Fprintln(tw)
}

func fmtRatio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f×", r)
}

func fmtMs(v float64) string {
	switch {
	case v > 0 && v < 1:
		// Network round trips are tens of microseconds.
		return fmt.Sprintf("%.0fµs", v*1000)
	case v >= 10000:
		return fmt.Sprintf("%.1fs", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.1fms", v)
	}
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmtMs(v)
	case "bytes":
		return bytesIEC(int64(v))
	case "":
		return trimFloat(v)
	default:
		return trimFloat(v) + " " + unit
	}
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e12 {
		return fmt.Sprintf("%.0f", v)
	}
	if math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// write saves the report as <dir>/<scenario>.json and <scenario>.html.
func (rep *Report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output folder %q: %w", dir, err)
	}
	jsonPath := filepath.Join(dir, rep.Scenario+".json")
	htmlPath := filepath.Join(dir, rep.Scenario+".html")
	rep.Files = append(rep.Files, jsonPath, htmlPath)
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(jsonPath, append(raw, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(htmlPath)
	if err != nil {
		return err
	}
	defer f.Close()
	return rep.WriteHTML(f)
}

// WriteHTML draws the report as one self-contained page: tables and inline
// SVG charts, no script, nothing fetched from the network.
func (rep *Report) WriteHTML(w io.Writer) error {
	var table strings.Builder
	rep.WriteTable(&table)
	type chart struct {
		Title string
		SVG   template.HTML
	}
	type runView struct {
		Name   string
		Charts []chart
	}
	var runs []runView
	for _, run := range rep.Results {
		rv := runView{Name: run.Name}
		// Latency distribution: one CDF per latency, the floor's beside them.
		var lines []line
		for _, l := range run.Latencies {
			if len(l.Samples) > 0 {
				lines = append(lines, line{Name: l.Name, Points: cdf(l.Samples)})
			}
		}
		if rep.Floor != nil && len(rep.Floor.Samples) > 0 && len(lines) > 0 {
			lines = append(lines, line{Name: "floor: create→started", Points: cdf(rep.Floor.Samples), Dashed: true})
		}
		if len(lines) > 0 {
			rv.Charts = append(rv.Charts, chart{Title: "latency distribution (CDF)", SVG: template.HTML(svgChart(lines, "latency (ms)", "fraction of pods"))})
		}
		for _, s := range run.Series {
			rv.Charts = append(rv.Charts, chart{Title: s.Name, SVG: template.HTML(svgChart([]line{{Name: s.Name, Points: s.Points, Step: s.Step}}, s.X, s.Y))})
		}
		runs = append(runs, rv)
	}
	return pageTmpl.Execute(w, map[string]any{
		"Report":  rep,
		"Table":   table.String(),
		"Results": runs,
	})
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>cci bench {{.Report.Scenario}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:13px}
h2{margin-top:1.5em;border-bottom:1px solid #ddd}
.chart{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
.chart h3{font-size:14px;margin:.2em 0}
</style></head><body>
<h1>cci bench {{.Report.Scenario}}</h1>
<p>{{.Report.Started.Format "2006-01-02 15:04 MST"}} · {{.Report.Machine.Host}} · {{.Report.Machine.CPUModel}} · {{.Report.Machine.CPUs}} CPUs · {{.Report.Machine.Kernel}} · cci {{.Report.Version}} {{.Report.Commit}}</p>
<pre>{{.Table}}</pre>
{{range .Results}}<h2>{{.Name}}</h2>
{{range .Charts}}<div class="chart"><h3>{{.Title}}</h3>{{.SVG}}</div>{{end}}
{{end}}
</body></html>
`))

type line struct {
	Name   string
	Points [][2]float64
	Dashed bool
	Step   bool
}

// cdf turns samples into the points of their cumulative distribution.
func cdf(samples []float64) [][2]float64 {
	s := summarizeSorted(samples)
	pts := make([][2]float64, 0, len(s)+1)
	pts = append(pts, [2]float64{s[0], 0})
	for i, v := range s {
		pts = append(pts, [2]float64{v, float64(i+1) / float64(len(s))})
	}
	return pts
}

func summarizeSorted(samples []float64) []float64 {
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	return s
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}

// svgChart draws lines on shared axes starting at zero.
func svgChart(lines []line, xLabel, yLabel string) string {
	const (
		width, plotHeight = 520, 210
		left, right, top  = 60, 20, 20
	)
	// Room under the plot for the axis label and two legend entries a row.
	height := top + plotHeight + 40 + (len(lines)+1)/2*14 + 6
	pw, ph := float64(width-left-right), float64(plotHeight)
	var maxX, maxY float64
	for _, l := range lines {
		for _, p := range l.Points {
			maxX = math.Max(maxX, p[0])
			maxY = math.Max(maxY, p[1])
		}
	}
	maxX, maxY = niceCeil(maxX), niceCeil(maxY)
	x := func(v float64) float64 { return float64(left) + v/maxX*pw }
	y := func(v float64) float64 { return float64(top) + ph - v/maxY*ph }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`, width, height, width, height)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`, left, top, pw, ph)
	for i := 0; i <= 5; i++ {
		vx, vy := maxX*float64(i)/5, maxY*float64(i)/5
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#eee"/>`, x(vx), top, x(vx), float64(top)+ph)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, left, y(vy), float64(left)+pw, y(vy))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x(vx), float64(top)+ph+14, template.HTMLEscapeString(trimFloat(vx)))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, left-4, y(vy)+4, template.HTMLEscapeString(trimFloat(vy)))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, float64(left)+pw/2, float64(top)+ph+30, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(&b, `<text transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, float64(top)+ph/2, template.HTMLEscapeString(yLabel))
	for i, l := range lines {
		color := palette[i%len(palette)]
		var pts strings.Builder
		for j, p := range l.Points {
			if l.Step && j > 0 {
				fmt.Fprintf(&pts, "%.1f,%.1f ", x(p[0]), y(l.Points[j-1][1]))
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(p[0]), y(p[1]))
		}
		dash := ""
		if l.Dashed {
			dash = ` stroke-dasharray="5,4"`
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.8"%s/>`, strings.TrimSpace(pts.String()), color, dash)
		lx := float64(left) + float64(i%2)*pw/2
		ly := float64(top) + ph + 46 + float64(i/2)*14
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`, lx, ly-4, lx+18, ly-4, color, dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`, lx+22, ly, template.HTMLEscapeString(l.Name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
