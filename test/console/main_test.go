// Package console checks the web console end to end in a real browser:
// Debian's Chromium, driven by Playwright (playwright-core from
// console/node_modules, pointed at /usr/bin/chromium), against one `cci up`
// of its own with the console's assets built into the binary.
package console

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cci-project/cci/test/cluster"
)

var cci *cluster.Instance

// chromium is the browser the tests drive.
const chromium = "/usr/bin/chromium"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "console tests need root (they run cci up): run them with sudo or as root")
		return 1
	}
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
	work, remove, err := cluster.WorkDir("cci-console-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	bin := os.Getenv("CCI_E2E_BIN")
	if bin == "" {
		if bin, err = cluster.Build(root, work); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// One host in its own network namespace: pod veths then come and go
	// there, not in the namespace Chromium runs in, which aborts requests
	// in flight (net::ERR_NETWORK_CHANGED) whenever its interfaces change.
	slot := os.Getpid() + 7
	cci = cluster.New(bin, work, slot).WithHosts(1, slot)
	cci.Prepare()
	defer cci.Cleanup()
	return cci.RunSuite(m, bin)
}

func runIn(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}
