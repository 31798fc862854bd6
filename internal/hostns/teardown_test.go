package hostns

import (
	"strings"
	"testing"
)

func TestIsHostsRule(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{`-A POSTROUTING -s 10.44.250.0/24 ! -d 10.44.250.0/24 -m comment --comment "cci: hosts of bridge cci-bench0h reach the outside through the machine's address" -j MASQUERADE`, true},
		{`-A FORWARD -i cci-bench0h -m comment --comment "cci: hosts of bridge cci-bench0h" -j ACCEPT`, true},
		// Another cluster's hosts, whose bridge name starts the same.
		{`-A FORWARD -i cci-bench0hx -m comment --comment "cci: hosts of bridge cci-bench0hx" -j ACCEPT`, false},
		{`-A FORWARD -i cci0h -m comment --comment "cci: hosts of bridge cci0h" -j ACCEPT`, false},
		{`# -A FORWARD "cci: hosts of bridge cci-bench0h"`, false},
	} {
		if got := isHostsRule(tc.line, "cci-bench0h"); got != tc.want {
			t.Errorf("isHostsRule(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestSaveArgs(t *testing.T) {
	line := `-A POSTROUTING -s 10.44.250.0/24 ! -d 10.44.250.0/24 -m comment --comment "cci: hosts of bridge cci-bench0h reach the outside through the machine\'s address" -j MASQUERADE`
	want := []string{"-A", "POSTROUTING", "-s", "10.44.250.0/24", "!", "-d", "10.44.250.0/24", "-m", "comment", "--comment",
		"cci: hosts of bridge cci-bench0h reach the outside through the machine's address", "-j", "MASQUERADE"}
	got := saveArgs(line)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("saveArgs:\n got %q\nwant %q", got, want)
	}
	if got := saveArgs(`-A X --comment "a \"b\" \\ c" -j Y`); len(got) != 6 || got[3] != `a "b" \ c` {
		t.Errorf("escaped quote and backslash: got %q", got)
	}
}
