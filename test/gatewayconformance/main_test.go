// Package gatewayconformance runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, the version go.mod requires,
// profile GATEWAY-HTTP) against a private `cci up`, with the suite's echo
// backend built from its Go module and pushed to the cluster's registry.
// It writes the suite's YAML report, prints a summary per test, and fails
// when a test fails that knownFailures does not list (see
// docs/gateway.md, "Conformance").
package gatewayconformance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

var (
	cci *cluster.Instance
	// echoImage is the echo-basic image in the cluster's registry.
	echoImage string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root := cluster.RepoRoot()
	bin, work, done, err := cluster.Setup("gatewayconformance")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	slot, err := cluster.ClaimSlots(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// One host in a network namespace of its own: its service proxy owns
	// its iptables chains, so the suite runs beside other test packages,
	// and the Gateways' pool addresses are routed to that host, whose
	// service proxy carries them to the control plane's proxy, as for a
	// user's client outside the cluster.
	cci = cluster.New(bin, work, slot).WithHosts(1, slot)
	cci.Prepare()
	defer cci.Cleanup()
	if _, err := cci.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "start cci up:", err)
		return 1
	}
	code := 1
	// The suite's client reads the kubeconfig from KUBECONFIG
	// (controller-runtime's config); images are pushed as the operator.
	if err := os.Setenv("KUBECONFIG", cci.Kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else if err := os.Setenv("DOCKER_CONFIG", registry.AuthDir(cci.DataDir)); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else if echoImage, err = testimage.BuildEchoBasic(context.Background(), root, work, cci.Registry, ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
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
