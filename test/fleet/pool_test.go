package fleet

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/cci-project/cci/internal/testimage"
)

func cci_(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(bin, append(args, "--data-dir", cci.DataDir)...).CombinedOutput()
	return string(out), err
}

func tenantKubectl(kubeconfig, stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// createTenant makes a tenant for the test; it returns its namespace and
// kubeconfig.
func createTenant(t *testing.T, prefix string, flags ...string) (string, string) {
	t.Helper()
	name := prefix + "-" + rand.String(5)
	if out, err := cci_(t, append([]string{"tenant", "create", name}, flags...)...); err != nil {
		t.Fatalf("cci tenant create: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = cci_(t, "tenant", "delete", name, "--wait=false") })
	return name, filepath.Join(cci.DataDir, "tenants", name+".kubeconfig")
}

func tenantPod(name, pool string) string {
	ann := ""
	if pool != "" {
		ann = fmt.Sprintf("  annotations: {cci.io/pool: %s}\n", pool)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
%s  labels: {app: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: %s, command: [sleep, "3600"]}
`, name, ann, name, image(testimage.Shell))
}

// A tenant pod lands in the pool it names and nowhere else; a tenant may
// not use a pool it was not given; `cci pool list` counts each pool's
// hosts and pods.
func TestPoolsAcrossHosts(t *testing.T) {
	ns, kc := createTenant(t, "pools", "--pools", "general,gpu")
	for _, p := range []struct{ name, pool string }{{"plain", ""}, {"ongpu", "gpu"}} {
		if out, err := tenantKubectl(kc, tenantPod(p.name, p.pool), "apply", "-f", "-"); err != nil {
			t.Fatalf("tenant pod %s: %v\n%s", p.name, err, out)
		}
	}
	for _, p := range waitRunning(t, ns, "app in (plain, ongpu)", 2, 3*time.Minute) {
		node, err := client(t).CoreV1().Nodes().Get(context.Background(), p.Spec.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := "general"
		if p.Name == "ongpu" {
			want = "gpu"
		}
		if got := node.Labels["cci.io/pool"]; got != want {
			t.Errorf("pod %s on %s of pool %q, want pool %q", p.Name, p.Spec.NodeName, got, want)
		}
	}

	other, kc2 := createTenant(t, "nogpu")
	out, err := tenantKubectl(kc2, tenantPod("ongpu", "gpu"), "apply", "-f", "-")
	if err == nil || !strings.Contains(out, fmt.Sprintf(`pool "gpu" is not allowed for tenant %s; allowed pools: general`, other)) {
		t.Errorf("tenant without pool gpu asking for it: %v\n%s", err, out)
	}

	list, err := cci_(t, "pool", "list")
	if err != nil {
		t.Fatalf("cci pool list: %v\n%s", err, list)
	}
	t.Logf("cci pool list:\n%s", list)
	for pool, hosts := range map[string]string{"general": "3/3", "gpu": "1/1"} {
		found := false
		for _, l := range strings.Split(list, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == pool {
				found = f[1] == hosts
			}
		}
		if !found {
			t.Errorf("cci pool list: pool %s should have %s hosts Ready:\n%s", pool, hosts, list)
		}
	}
}
