package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cci-project/cci/internal/hostns"
)

// hostsBridge is the machine's bridge to the hosts of a `cci up --hosts`
// whose pods' bridge is cniBridge, named as `cci up` names it
// (internal/cli's hostsBridge).
func hostsBridge(cniBridge string) string {
	if len(cniBridge) > 12 {
		cniBridge = cniBridge[:12]
	}
	return cniBridge + "h"
}

// teardownHosts removes the hosts of the bench's own `cci up --hosts`
// whose machine-side bridge is bridge: every process in their namespaces
// (agents, containerds, shims, pods) is killed, the namespaces unmounted,
// the bridge (its routes go with it) and the hosts' iptables rules
// deleted, and with dataDir set, the mounts left under it detached. It
// only touches names derived from bridge, never another cluster's.
func teardownHosts(log io.Writer, bridge, dataDir string) {
	paths, _ := filepath.Glob(filepath.Join(hostns.NetnsDir, "host."+bridge+".*"))
	if len(paths) > 0 {
		// PowerOff marks a host down in its data folder; these hosts are
		// going for good, so a scratch folder takes the marks.
		scratch, err := os.MkdirTemp("", "cci-bench-hosts-")
		if err == nil {
			defer os.RemoveAll(scratch)
		}
		for _, p := range paths {
			h := hostns.Host{Name: filepath.Base(p), Netns: p, DataDir: filepath.Join(scratch, filepath.Base(p))}
			_ = os.MkdirAll(h.DataDir, 0o755)
			if _, err := hostns.PowerOff(h); err != nil {
				fmt.Fprintf(log, "bench: power off host %s: %v\n", h.Name, err)
			}
			_ = unix.Unmount(p, unix.MNT_DETACH)
			if err := os.Remove(p); err != nil {
				fmt.Fprintf(log, "bench: remove network namespace %s: %v\n", p, err)
			}
		}
	}
	if out, err := exec.Command("ip", "link", "delete", "dev", bridge).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("Cannot find device")) {
		fmt.Fprintf(log, "bench: remove bridge %s: %v: %s\n", bridge, err, bytes.TrimSpace(out))
	}
	for _, table := range []string{"nat", "filter"} {
		rules, _ := exec.Command("iptables-save", "-t", table).Output()
		for _, l := range strings.Split(string(rules), "\n") {
			if isHostsRule(l, bridge) {
				args := append([]string{"-t", table, "-D"}, saveArgs(l)[1:]...)
				if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
					fmt.Fprintf(log, "bench: iptables %s: %v: %s\n", strings.Join(args, " "), err, bytes.TrimSpace(out))
				}
			}
		}
	}
	if dataDir != "" {
		// The killed hosts' containerds leave their mounts (snapshots,
		// shm); nothing uses them any more.
		for _, m := range mountsUnder(dataDir) {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	}
}

// isHostsRule says whether an iptables-save line is one of the rules
// `cci up --hosts` adds for the hosts of bridge (internal/hostns): their
// comments are "cci: hosts of bridge <bridge>" or start with it and a space.
func isHostsRule(line, bridge string) bool {
	if !strings.HasPrefix(line, "-A ") {
		return false
	}
	tag := "cci: hosts of bridge " + bridge
	return strings.Contains(line, `"`+tag+`"`) || strings.Contains(line, `"`+tag+` `)
}

// saveArgs splits an iptables-save line into the arguments it stands for:
// words apart at spaces, double quotes around a word with spaces, and a
// backslash before a quote or backslash inside them (iptables-save writes
// the comment "… the machine's address" as "… the machine\'s address",
// which no shell reads back as it was).
func saveArgs(line string) []string {
	var args []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case quoted && ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			quoted, inWord = !quoted, true
		case ch == ' ' && !quoted:
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args
}
