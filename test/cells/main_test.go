// Package cells checks cells (issue 14, steps 6-7): a front CCI control
// plane and two cells, each a whole `cci up` with its own host, on one
// machine. `cci connect --cell` makes each cell one node of the front; a
// tenant's pods are placed on a cell by the front's scheduler, on a host by
// the cell's. Everything is checked through the front's and the cells' real
// APIs.
package cells

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/registry"
	"github.com/cci-project/cci/test/cluster"
)

const tenant = "acme"

var (
	front    *cluster.Instance
	cells    [2]*cluster.Instance
	connects [2]*cluster.Connect
	bin      string
)

// cellNode is the name of cell i's node in the front.
func cellNode(i int) string { return fmt.Sprintf("cell-%d", i+1) }

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var work string
	var done func()
	var err error
	if bin, work, done, err = cluster.Setup("cells", "kubectl"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer done()
	// Three slots: each cluster's pod, Service and hosts ranges are its
	// own. Each cluster's one host is a network namespace of its own (with
	// its own service proxy), so that the package runs beside others whose
	// cluster is in the machine's namespace (test/e2e's).
	slot, err := cluster.ClaimSlots(3)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	front = cluster.New(bin, filepath.Join(work, "front"), slot).WithHosts(1, slot)
	for i := range cells {
		// The cells' hosts pull the tenant's images from the front's
		// registry, at the front's hosts' gateway.
		cells[i] = cluster.New(bin, filepath.Join(work, cellNode(i)), slot+1+i).WithHosts(1, slot+1+i).PullsFrom(front)
	}
	all := []*cluster.Instance{front, cells[0], cells[1]}
	for _, c := range all {
		c.Prepare()
		defer c.Cleanup()
	}
	// Started together: each waits mostly on its own apiserver.
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for i, c := range all {
		wg.Go(func() {
			took, err := c.Start()
			errs[i] = err
			fmt.Fprintf(os.Stderr, "cluster %s ready in %s (%v)\n", filepath.Base(filepath.Dir(c.DataDir)), took.Round(time.Millisecond), err)
		})
	}
	wg.Wait()
	for i, c := range all {
		if errs[i] != nil {
			fmt.Fprintf(os.Stderr, "start cluster %d: %v\n", i, errs[i])
			return 1
		}
		defer func() {
			if err := c.Stop(syscall.SIGTERM); err != nil {
				fmt.Fprintf(os.Stderr, "stop cluster %s: %v\n", c.DataDir, err)
			}
		}()
	}
	// Images are the front's: tenants push to their one endpoint. The
	// cells' hosts pull them from the front's registry with the tenant's
	// pull secret, which connect copies with each pod.
	if err := os.Setenv("DOCKER_CONFIG", registry.AuthDir(front.DataDir)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if out, err := exec.Command(bin, "image", "build-test-images", "--registry", front.Registry).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build test images: %v\n%s", err, out)
		return 1
	}
	if out, err := exec.Command(bin, "tenant", "create", tenant, "--data-dir", front.DataDir, "--quota", "cpu=4,memory=8Gi,pods=10").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "create tenant: %v\n%s", err, out)
		return 1
	}
	// The front's own host takes no pods: what runs, runs in a cell.
	if out, err := front.Kubectl("cordon", "-l", "kubernetes.io/os"); err != nil {
		fmt.Fprintf(os.Stderr, "cordon the front's host: %v\n%s", err, out)
		return 1
	}
	for i := range cells {
		connects[i] = cluster.NewConnect(bin, "connect", "--cell", "--kubeconfig", front.Kubeconfig, "--to", cells[i].Kubeconfig,
			"--name", cellNode(i), "--kubelet-port", strconv.Itoa(cluster.FreePorts(1)[0]))
		if err := connects[i].Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = connects[i].Stop() }()
	}
	code := m.Run()
	// Pods outlive their clusters: the tenant's go while the cells are
	// connected, so that their copies go with them.
	_, _ = front.Kubectl("delete", "deployment", "--all", "-n", tenant, "--wait=false")
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		left := 0
		for _, c := range cells {
			out, _ := c.Kubectl("get", "pods", "-n", tenant, "-o", "name")
			if !strings.Contains(out, "No resources") {
				left += len(strings.Fields(out))
			}
		}
		if left == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	if code != 0 || cluster.Keep() {
		for i := range cells {
			fmt.Fprintf(os.Stderr, "cci connect %s output:\n%s\n", cellNode(i), connects[i].Output())
		}
		fmt.Fprintf(os.Stderr, "front:\n%s\n", front.Output())
	}
	return code
}
