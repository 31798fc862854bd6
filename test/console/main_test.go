// Package console checks the web console end to end in a real browser:
// Debian's Chromium, driven by Playwright (playwright-core from
// console/node_modules, pointed at /usr/bin/chromium), against one `cci up`
// of its own with the console's assets built into the binary.
package console

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cci-project/cci/test/cluster"
)

var cci *cluster.Instance

// browser runs Chromium in a network namespace of its own, and consoleURL is the
// console's address from there (see chromiumNetns).
var (
	browser    string
	consoleURL string
)

// chromium is the browser the tests drive.
const chromium = "/usr/bin/chromium"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if _, err := os.Stat(chromium); err != nil {
		fmt.Fprintf(os.Stderr, "console tests need Chromium at %s: apt-get install chromium (make setup does)\n", chromium)
		return 1
	}
	root := cluster.RepoRoot()
	// The binary embeds the console's assets: build them first when missing
	// or older than their sources, and the Node packages the browser script
	// needs.
	if err := runIn(root, "make", "--no-print-directory", "console-assets"); err != nil {
		fmt.Fprintln(os.Stderr, "build the console's assets (needs npm; make setup installs it):", err)
		return 1
	}
	if _, err := os.Stat(filepath.Join(root, "console/node_modules/playwright-core")); err != nil {
		if err := runIn(filepath.Join(root, "console"), "npm", "ci", "--no-audit", "--no-fund"); err != nil {
			fmt.Fprintln(os.Stderr, "install the console's Node packages:", err)
			return 1
		}
	}
	bin, work, done, err := cluster.Setup("console", "kubectl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	// One host in its own network namespace: pod veths then come and go
	// there, not in the namespace Chromium runs in, which aborts requests
	// in flight (net::ERR_NETWORK_CHANGED) whenever its interfaces change.
	slot, err := cluster.ClaimSlots(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cci = cluster.New(bin, work, slot).WithHosts(1, slot)
	cci.Prepare()
	defer cci.Cleanup()
	remove, err := chromiumNetns(work, slot)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	return cci.RunSuite(m, bin)
}

// chromiumNetns makes a network namespace for Chromium, joined to the
// machine by a veth pair, and a script that runs Chromium in it: Chromium
// aborts every request in flight (net::ERR_NETWORK_CHANGED) when its
// interfaces change, and on a test machine other clusters add and remove
// pod veths all the time. In a namespace of its own it sees only its
// veth; it reaches the console (which listens on every address) at the
// machine's end of the pair. It sets browser and consoleURL.
func chromiumNetns(work string, slot int) (func(), error) {
	n := slot % 100
	ns := fmt.Sprintf("cci-chrome%d", n)
	outer, inner := fmt.Sprintf("ccichr%da", n), fmt.Sprintf("ccichr%db", n)
	hostIP, nsIP := fmt.Sprintf("10.47.%d.1", n), fmt.Sprintf("10.47.%d.2", n)
	// What an earlier run of this slot left.
	_ = exec.Command("ip", "netns", "del", ns).Run()
	_ = exec.Command("ip", "link", "del", outer).Run()
	remove := func() { _ = exec.Command("ip", "netns", "del", ns).Run() }
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", outer, "type", "veth", "peer", "name", inner},
		{"link", "set", inner, "netns", ns},
		{"addr", "add", hostIP + "/30", "dev", outer},
		{"link", "set", outer, "up"},
		{"-n", ns, "addr", "add", nsIP + "/30", "dev", inner},
		{"-n", ns, "link", "set", inner, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			remove()
			return nil, fmt.Errorf("network namespace for Chromium: ip %v: %v: %s", args, err, out)
		}
	}
	browser = filepath.Join(work, "chromium-in-netns")
	// ip netns exec execs Chromium in place: the pipes Playwright drives it
	// through stay open.
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns, chromium)
	if err := os.WriteFile(browser, []byte(script), 0o755); err != nil {
		remove()
		return nil, err
	}
	u, err := url.Parse(cci.ConsoleURL)
	if err != nil {
		remove()
		return nil, err
	}
	u.Host = net.JoinHostPort(hostIP, u.Port())
	consoleURL = u.String()
	return remove, nil
}

func runIn(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}
