// Command report reads the JSON report of a conformance run (ginkgo
// --json-report) and prints, per SIG, how many specs passed, failed, and
// could not be judged for a reason listed in an exceptions file, then the
// failures. It exits 1 when a spec failed that no exception covers.
//
// A spec that skips itself at run time (it needs two nodes, say) is
// counted as "skipped" with its reason.
//
// The exceptions file has one line per exception: a category ("kit" for a
// limit of this offline kit, "refused" for what CCI deliberately refuses,
// "hosts" for a spec that needs more hosts than the run had), a regular
// expression matched against the spec's full text, and the reason, separated
// by tabs. Lines starting with # are comments.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/onsi/ginkgo/v2/types"
)

type exception struct {
	category string
	re       *regexp.Regexp
	reason   string
}

type tally struct {
	passed, failed int
	excepted       map[string]int
}

func main() {
	exceptionsPath := flag.String("exceptions", "", "file of exceptions (category<TAB>regexp<TAB>reason)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: report [-exceptions FILE] REPORT.json")
		os.Exit(2)
	}
	exceptions, err := readExceptions(*exceptionsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(2)
	}
	data, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(2)
	}
	var reports []types.Report
	if err := json.Unmarshal(data, &reports); err != nil {
		fmt.Fprintf(os.Stderr, "report: %s is not a ginkgo JSON report: %v\n", flag.Arg(0), err)
		os.Exit(2)
	}
	if failed := summarize(os.Stdout, reports, exceptions); failed > 0 {
		os.Exit(1)
	}
}

func readExceptions(path string) ([]exception, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []exception
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("%s:%d: want category<TAB>regexp<TAB>reason", path, n)
		}
		re, err := regexp.Compile(parts[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, exception{category: parts[0], re: re, reason: parts[2]})
	}
	return out, sc.Err()
}

var sigRE = regexp.MustCompile(`\[sig-([a-z-]+)\]`)

// summarize writes the per-SIG table and the failures; it returns the
// number of failures no exception covers.
func summarize(w io.Writer, reports []types.Report, exceptions []exception) int {
	bySIG := map[string]*tally{}
	var failures, excepted []string
	categories := map[string]bool{}
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != types.NodeTypeIt || s.State == types.SpecStatePending {
				continue
			}
			// Specs the focus left out are skipped without a message; a
			// spec that skipped itself at run time says why.
			if s.State == types.SpecStateSkipped && s.Failure.Message == "" {
				continue
			}
			text := s.FullText()
			sig := "other"
			if m := sigRE.FindStringSubmatch(text); m != nil {
				sig = m[1]
			}
			t := bySIG[sig]
			if t == nil {
				t = &tally{excepted: map[string]int{}}
				bySIG[sig] = t
			}
			if s.State == types.SpecStatePassed {
				t.passed++
				continue
			}
			if s.State == types.SpecStateSkipped {
				t.excepted["skipped"]++
				categories["skipped"] = true
				excepted = append(excepted, fmt.Sprintf("- skipped: %s (%s)", text, firstLine(s.Failure.Message)))
				continue
			}
			if e := match(exceptions, text); e != nil {
				t.excepted[e.category]++
				categories[e.category] = true
				excepted = append(excepted, fmt.Sprintf("- %s: %s (%s)", e.category, text, e.reason))
				continue
			}
			t.failed++
			failures = append(failures, fmt.Sprintf("- [%s] %s\n  %s", s.State, text, firstLine(s.Failure.Message)))
		}
	}
	cats := make([]string, 0, len(categories))
	for c := range categories {
		cats = append(cats, c)
	}
	sort.Strings(cats)
	sigs := make([]string, 0, len(bySIG))
	for s := range bySIG {
		sigs = append(sigs, s)
	}
	sort.Strings(sigs)

	header := "| SIG | passed | failed |"
	rule := "| --- | ---: | ---: |"
	for _, c := range cats {
		header += " " + c + " |"
		rule += " ---: |"
	}
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, rule)
	total := tally{excepted: map[string]int{}}
	for _, sig := range sigs {
		t := bySIG[sig]
		row := fmt.Sprintf("| %s | %d | %d |", sig, t.passed, t.failed)
		for _, c := range cats {
			row += fmt.Sprintf(" %d |", t.excepted[c])
			total.excepted[c] += t.excepted[c]
		}
		total.passed += t.passed
		total.failed += t.failed
		fmt.Fprintln(w, row)
	}
	row := fmt.Sprintf("| **all** | **%d** | **%d** |", total.passed, total.failed)
	for _, c := range cats {
		row += fmt.Sprintf(" **%d** |", total.excepted[c])
	}
	fmt.Fprintln(w, row)
	if len(excepted) > 0 {
		sort.Strings(excepted)
		fmt.Fprintf(w, "\nNot judged (%d):\n%s\n", len(excepted), strings.Join(excepted, "\n"))
	}
	if len(failures) > 0 {
		sort.Strings(failures)
		fmt.Fprintf(w, "\nFailed (%d):\n%s\n", len(failures), strings.Join(failures, "\n"))
	}
	return total.failed
}

func match(exceptions []exception, text string) *exception {
	for i := range exceptions {
		if exceptions[i].re.MatchString(text) {
			return &exceptions[i]
		}
	}
	return nil
}

// firstLine is the first line of a failure message, at most 300 bytes.
func firstLine(msg string) string {
	msg = strings.SplitN(strings.TrimSpace(msg), "\n", 2)[0]
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return msg
}
