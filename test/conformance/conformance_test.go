// Package conformance runs the upstream Kubernetes conformance suite
// (e2e.test v1.37.2, built offline by build.sh with the test images of
// images.sh) against a private `cci up`, and fails on any spec that fails
// for a reason exceptions.tsv does not list.
//
// By default it runs CISubset, the specs that cover the agent and are known
// to pass, in a few minutes; `make conformance FOCUS=… SKIP=…` runs any set
// (see docs/conformance.md).
package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/test/cluster"
)

// CISubset is the focus `go test` runs when CCI_CONFORMANCE_FOCUS is unset:
// sig-node conformance specs of the agent's own work (pods, containers,
// hooks, volumes it fills, environment) that pass on one host, 68
// specs in a few minutes. The probe specs wait minutes each, and the
// project's own e2e tests cover probes, so they run in the full set only.
const CISubset = `\[sig-node\] (Pods should|Containers should|Container Runtime|Downward API|Variable Expansion|InitContainer|Security Context|Sysctls|Ephemeral Containers|Container Lifecycle Hook|PreStop|RuntimeClass|Secrets|ConfigMap).*\[Conformance\]`

var (
	cci  *cluster.Instance
	kit  string // where build.sh put the suite and its tools
	root string // the repository
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root = cluster.RepoRoot()
	bin, work, done, err := cluster.Setup("conformance")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()

	kit = os.Getenv("E2EB")
	if kit == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		kit = filepath.Join(cache, "cci", "conformance")
	}
	if err := script("build.sh"); err != nil {
		fmt.Fprintln(os.Stderr, "build the conformance kit:", err)
		return 1
	}
	slot, err := cluster.ClaimSlots(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cci = cluster.New(bin, work, slot)
	// CCI_CONFORMANCE_HOSTS=3: the suite on `cci up --hosts 3`, for the
	// specs that need several schedulable nodes. One host by default, in a
	// network namespace of its own: its service proxy then owns its
	// iptables chains, and the suite runs beside test/e2e's cluster (two
	// kube-proxies in one network namespace rewrite each other's chains).
	hosts := 1
	if v := os.Getenv("CCI_CONFORMANCE_HOSTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "CCI_CONFORMANCE_HOSTS=%q: want a number of hosts\n", v)
			return 1
		}
		hosts = n
	}
	cci.WithHosts(hosts, slot)
	cci.Prepare()
	defer cci.Cleanup()
	if _, err := cci.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start cci up:", err)
		return 1
	}
	code := 1
	// images.sh pushes with crane as the operator.
	if err := script("images.sh", "REG="+cci.Registry, "DOCKER_CONFIG="+registry.AuthDir(cci.DataDir)); err != nil {
		fmt.Fprintln(os.Stderr, "conformance images:", err)
	} else {
		code = m.Run()
	}
	if err := cci.Stop(syscall.SIGTERM); err != nil {
		fmt.Fprintln(os.Stderr, "stop cci up:", err)
	}
	if code != 0 || cluster.Keep() {
		fmt.Fprintf(os.Stderr, "cci output:\n%s\nlogs in %s\n", cci.Output(), filepath.Join(cci.DataDir, "logs"))
	}
	return code
}

// script runs one of the kit's scripts with E2EB set, its output on stderr.
func script(name string, env ...string) error {
	cmd := exec.Command("bash", filepath.Join(root, "test", "conformance", name))
	cmd.Env = append(append(os.Environ(), "E2EB="+kit), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// TestConformance runs the focused specs with ginkgo, then the report: the
// per-SIG table and every failure goes to the test log, and the test fails
// when a spec failed that exceptions.tsv does not explain.
func TestConformance(t *testing.T) {
	// Set and empty, CCI_CONFORMANCE_SKIP skips nothing (the serial set).
	skip, set := os.LookupEnv("CCI_CONFORMANCE_SKIP")
	if !set {
		skip = `\[Serial\]|\[Disruptive\]`
	}
	suite(t, "CCI_CONFORMANCE", env("CCI_CONFORMANCE_FOCUS", CISubset), skip, 8)
}

// StorageDrivers are the driver definitions of the upstream "External
// Storage" suite (test/e2e/storage/external) that TestStorage gives
// e2e.test: one per StorageClass of CCI that the suite can judge.
var StorageDrivers = []string{"test/conformance/storage/evs-driver.yaml"}

// StorageCISubset is the focus of TestStorage when CCI_STORAGE_FOCUS is
// unset: the External Storage specs of cci-evs that pass on one host in a
// few minutes (docs/conformance.md, "Storage", lists the whole set).
const StorageCISubset = `External.Storage.*evs\.cci\.io.*(volumes should|volume-expand|ephemeral should|\(delayed binding\)\] topology should provision|subPath should (support (existing directory|existing single file|file as subpath|non-existent path|readOnly (directory|file))|be able to unmount)|subPath should support existing directories when readOnly|read-write-once-pod should block a second pod)`

// StorageSkip leaves out what a run of one host cannot judge in minutes:
// slow, serial and disruptive specs, and optional features (snapshots,
// volume attributes classes, SELinux mounts).
const StorageSkip = `\[Slow\]|\[Serial\]|\[Disruptive\]|\[Feature:|\[FeatureGate:|\[Flaky\]`

// TestStorage runs the upstream External Storage suite against CCI's
// storage classes, described by StorageDrivers, and reports as
// TestConformance does. CCI_STORAGE_FOCUS, CCI_STORAGE_SKIP (set and empty
// skips nothing), CCI_STORAGE_PROCS, CCI_STORAGE_OUT and
// CCI_STORAGE_TIMEOUT choose the run.
func TestStorage(t *testing.T) {
	skip, set := os.LookupEnv("CCI_STORAGE_SKIP")
	if !set {
		skip = StorageSkip
	}
	var drivers []string
	for _, d := range StorageDrivers {
		drivers = append(drivers, "--storage.testdriver="+filepath.Join(root, d))
	}
	suite(t, "CCI_STORAGE", env("CCI_STORAGE_FOCUS", StorageCISubset), skip, 4, drivers...)
}

// suite runs e2e.test with ginkgo on the focus, then the report: the
// per-SIG table and every failure go to the test log, and the test fails
// when a spec failed that exceptions.tsv does not explain. prefix names the
// environment variables of the run (<prefix>_PROCS, _OUT, _TIMEOUT); extra
// are more arguments of e2e.test.
func suite(t *testing.T, prefix, focus, skip string, defProcs int, extra ...string) {
	procs, err := strconv.Atoi(env(prefix+"_PROCS", strconv.Itoa(defProcs)))
	if err != nil || procs < 1 {
		t.Fatalf("%s_PROCS=%q: want a positive number", prefix, os.Getenv(prefix+"_PROCS"))
	}
	out := env(prefix+"_OUT", t.TempDir())
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(out, "report.json")
	timeout := env(prefix+"_TIMEOUT", "80m")
	d, err := time.ParseDuration(timeout)
	if err != nil {
		t.Fatalf("%s_TIMEOUT=%q: %v", prefix, timeout, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Minute)
	defer cancel()
	args := []string{
		"--procs=" + strconv.Itoa(procs), "--focus=" + focus, "--timeout=" + timeout,
		"--json-report=" + report, "--no-color", "--silence-skips",
		filepath.Join(kit, "e2e.test"), "--",
		"--kubeconfig=" + cci.Kubeconfig, "--provider=skeleton",
		"--report-dir=" + out,
	}
	args = append(args, extra...)
	if skip != "" {
		args = append([]string{"--skip=" + skip}, args...)
	}
	t.Logf("ginkgo %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(kit, "ginkgo"), args...)
	cmd.Env = append(os.Environ(), "KUBE_TEST_REPO_LIST="+filepath.Join(kit, "repo-list.yaml"))
	log, err := os.Create(filepath.Join(out, "ginkgo.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	begin := time.Now()
	runErr := cmd.Run()
	t.Logf("ginkgo ran %s (%v); its output is in %s", time.Since(begin).Round(time.Second), runErr, log.Name())
	if _, err := os.Stat(report); err != nil {
		t.Fatalf("no report from ginkgo (%v): see %s", runErr, log.Name())
	}

	rep := exec.Command(filepath.Join(kit, "report"),
		"-exceptions", filepath.Join(root, "test", "conformance", "exceptions.tsv"), report)
	summary, err := rep.CombinedOutput()
	t.Logf("report of %s:\n%s", report, summary)
	if err := os.WriteFile(filepath.Join(out, "summary.md"), summary, 0o644); err != nil {
		t.Error(err)
	}
	if err != nil {
		t.Fatalf("conformance specs failed (%v): see the report above", err)
	}
}
