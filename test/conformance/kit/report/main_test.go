package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/onsi/ginkgo/v2/types"
)

func spec(sig, name string, state types.SpecState, msg string) types.SpecReport {
	return types.SpecReport{
		ContainerHierarchyTexts: []string{"[sig-" + sig + "] Things"},
		LeafNodeText:            name + " [Conformance]",
		LeafNodeType:            types.NodeTypeIt,
		State:                   state,
		Failure:                 types.Failure{Message: msg},
	}
}

func TestSummarize(t *testing.T) {
	reports := []types.Report{{SpecReports: types.SpecReports{
		spec("node", "runs a pod", types.SpecStatePassed, ""),
		spec("node", "runs a long name", types.SpecStateFailed, "timed out\nmore"),
		spec("node", "needs curl", types.SpecStateFailed, "curl: not found"),
		spec("network", "needs two nodes", types.SpecStateSkipped, "Requires at least 2 nodes"),
		spec("network", "left out by the focus", types.SpecStateSkipped, ""),
		spec("apps", "panics", types.SpecStatePanicked, "boom"),
	}}}
	exceptions := []exception{{category: "kit", re: regexp.MustCompile(`needs curl`), reason: "no curl"}}
	var out bytes.Buffer
	failed := summarize(&out, reports, exceptions)
	if failed != 2 {
		t.Errorf("failed = %d, want 2 (the long name and the panic)", failed)
	}
	for _, want := range []string{
		"| SIG | passed | failed | kit | skipped |",
		"| apps | 0 | 1 | 0 | 0 |",
		"| network | 0 | 0 | 0 | 1 |",
		"| node | 1 | 1 | 1 | 0 |",
		"| **all** | **1** | **2** | **1** | **1** |",
		"- kit: [sig-node] Things needs curl [Conformance] (no curl)",
		"- skipped: [sig-network] Things needs two nodes [Conformance] (Requires at least 2 nodes)",
		"- [failed] [sig-node] Things runs a long name [Conformance]\n  timed out\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "left out by the focus") {
		t.Errorf("a spec the focus left out is reported:\n%s", out.String())
	}
}
