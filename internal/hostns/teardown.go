package hostns

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// BridgeFor names the machine's bridge to the hosts of a `cci up --hosts`
// after the pods' bridge, so that two clusters on one machine keep apart.
func BridgeFor(cniBridge string) string {
	if cniBridge == "" {
		cniBridge = "cci0"
	}
	if len(cniBridge) > 12 {
		cniBridge = cniBridge[:12]
	}
	return cniBridge + "h"
}

// Teardown removes for good the hosts of a `cci up --hosts` (not running)
// whose machine-side bridge is bridge: every process in their namespaces
// (agents, containerds, shims, pods) is killed, the namespaces unmounted,
// the bridge (its routes go with it) and the hosts' iptables rules
// deleted, and with dataDir set, the mounts left under it detached. It
// only touches names derived from bridge, never another cluster's.
func Teardown(log io.Writer, bridge, dataDir string) {
	paths, _ := filepath.Glob(filepath.Join(NetnsDir, "host."+bridge+".*"))
	if len(paths) > 0 {
		// PowerOff marks a host down in its data folder; these hosts are
		// going for good, so a scratch folder takes the marks.
		scratch, err := os.MkdirTemp("", "cci-bench-hosts-")
		if err == nil {
			defer os.RemoveAll(scratch)
		}
		for _, p := range paths {
			h := Host{Name: filepath.Base(p), Netns: p, DataDir: filepath.Join(scratch, filepath.Base(p))}
			_ = os.MkdirAll(h.DataDir, 0o755)
			if _, err := PowerOff(h); err != nil {
				fmt.Fprintf(log, "hosts: power off host %s: %v\n", h.Name, err)
			}
			_ = unix.Unmount(p, unix.MNT_DETACH)
			if err := os.Remove(p); err != nil {
				fmt.Fprintf(log, "hosts: remove network namespace %s: %v\n", p, err)
			}
		}
	}
	if out, err := exec.Command("ip", "link", "delete", "dev", bridge).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("Cannot find device")) {
		fmt.Fprintf(log, "hosts: remove bridge %s: %v: %s\n", bridge, err, bytes.TrimSpace(out))
	}
	for _, table := range []string{"nat", "filter"} {
		rules, _ := exec.Command("iptables-save", "-t", table).Output()
		for _, l := range strings.Split(string(rules), "\n") {
			if isHostsRule(l, bridge) {
				args := append([]string{"-t", table, "-D"}, saveArgs(l)[1:]...)
				if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
					fmt.Fprintf(log, "hosts: iptables %s: %v: %s\n", strings.Join(args, " "), err, bytes.TrimSpace(out))
				}
			}
		}
	}
	if dataDir != "" {
		// The killed hosts' containerds leave their mounts (snapshots,
		// shm); nothing uses them any more.
		for _, m := range MountsUnder(dataDir) {
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

// MountsUnder lists the mount points at or below dir.
func MountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}

// ReleaseNullNetns detaches the empty network namespace that the current
// runsc pins under its root folders (a bind mount named null-netns, which
// the gofers of every sandbox join and runsc never removes). Once a data
// folder's pods are all gone nothing needs it, and the folder cannot be
// removed while it is mounted; runsc pins a new one at its next start.
func ReleaseNullNetns(dir string) {
	for _, m := range MountsUnder(dir) {
		if filepath.Base(m) == "null-netns" {
			for unix.Unmount(m, unix.MNT_DETACH) == nil {
			}
		}
	}
}
