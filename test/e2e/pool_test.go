package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/metering"
	"github.com/cci-project/cci/test/cluster"
)

// cciPoolList runs `cci pool list` against the instance.
func cciPoolList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(cci.Bin, "pool", "list", "--data-dir", cci.DataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("cci pool list: %v\n%s", err, out)
	}
	return string(out)
}

// poolLine is the fields of pool's line in `cci pool list`, nil if none.
func poolLine(out, pool string) []string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == pool {
			return f
		}
	}
	return nil
}

// adminMetrics reads the control plane's /metrics with the admin's client
// certificate, and with token when given instead.
func adminMetrics(t *testing.T, token string) (int, string) {
	t.Helper()
	_, base := usageClient(t)
	rc, err := clientcmd.BuildConfigFromFlags("", cci.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		rc = &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: rc.CAData, CAFile: rc.CAFile}}
	}
	tlsCfg, err := rest.TLSConfigFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	req, _ := http.NewRequest(http.MethodGet, base+metering.MetricsPath, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The one host of `cci up` is pool general: a tenant pod of that pool runs
// with the pool's nodeSelector; a pool the tenant may not use, and one
// without hosts, are refused with the pools that would do; `cci pool list`
// and /metrics count the pool.
func TestPoolsOneHost(t *testing.T) {
	hostName := ""
	nodes, err := client(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if n.Labels["cci.io/pool"] == "general" {
			hostName = n.Name
			if _, old := n.Labels["node.cci.io/pool"]; old {
				t.Errorf("node %s still has the label node.cci.io/pool", n.Name)
			}
			for _, taint := range n.Spec.Taints {
				if taint.Key == "cci.io/pool" {
					t.Errorf("node %s of pool general has the taint %v", n.Name, taint)
				}
			}
		}
	}
	if hostName == "" {
		t.Fatalf("no node with the label cci.io/pool=general: %v", nodes.Items)
	}

	name, kc := createTenant(t, "pool")
	mustTenantKubectl(t, kc, podYAML("gen", "sleep 3600", "", ""), "apply", "-f", "-")
	// The annotation names the pool; the pod above named none.
	withAnnotation := strings.Replace(podYAML("gen2", "sleep 3600", "", ""), "  labels:", "  annotations: {cci.io/pool: general}\n  labels:", 1)
	mustTenantKubectl(t, kc, withAnnotation, "apply", "-f", "-")
	for _, p := range waitRunning(t, name, "app in (gen, gen2)", 2, 90*time.Second) {
		if p.Spec.NodeSelector["cci.io/pool"] != "general" || p.Annotations["cci.io/pool"] != "general" {
			t.Errorf("pod %s: nodeSelector %v, annotations %v", p.Name, p.Spec.NodeSelector, p.Annotations)
		}
		tol := map[string]*int64{}
		for _, tl := range p.Spec.Tolerations {
			tol[tl.Key] = tl.TolerationSeconds
		}
		for _, k := range []string{"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"} {
			if s := tol[k]; s == nil || *s != 30 {
				t.Errorf("pod %s: toleration of %s for %v s, want 30", p.Name, k, s)
			}
		}
	}

	gpuPod := strings.Replace(podYAML("gpu", "sleep 3600", "", ""), "  labels:", "  annotations: {cci.io/pool: gpu}\n  labels:", 1)
	out, err := tenantKubectl(t, kc, gpuPod, "apply", "-f", "-")
	wantRefused(t, "pod of pool gpu, not allowed", out, err, fmt.Sprintf(`pool "gpu" is not allowed for tenant %s; allowed pools: general`, name))

	_, kc2 := createTenant(t, "poolgpu", "--pools", "general,gpu")
	out, err = tenantKubectl(t, kc2, gpuPod, "apply", "-f", "-")
	wantRefused(t, "pod of pool gpu, which has no host", out, err, `pool "gpu" does not exist: no host is in it; pools with hosts: general`)
	// A contradicting nodeSelector of the pod's own.
	out, err = tenantKubectl(t, kc2, podYAML("sel", "sleep 1", "nodeSelector: {cci.io/pool: gpu}", ""), "apply", "-f", "-")
	wantRefused(t, "pod with its own pool nodeSelector", out, err, `nodeSelector cci.io/pool=gpu contradicts the pod's pool "general"`)

	f := poolLine(cciPoolList(t), "general")
	if len(f) != 6 || f[1] != "1/1" {
		t.Fatalf("cci pool list: general line %v", f)
	}
	// PODS is used/allocatable: at least the tenant's two pods.
	used, _, _ := strings.Cut(f[4], "/")
	if n, err := strconv.Atoi(used); err != nil || n < 2 {
		t.Errorf("cci pool list: pods %q, want at least 2 in use", f[4])
	}

	code, body := adminMetrics(t, "")
	if code != http.StatusOK || !strings.Contains(body, `cci_pool_hosts{pool="general"} 1`) ||
		!strings.Contains(body, `cci_pool_hosts_ready{pool="general"} 1`) ||
		!strings.Contains(body, `cci_pool_requested{pool="general",resource="pods",unit="integer"}`) {
		t.Errorf("admin /metrics: %d\n%s", code, body)
	}
	token := strings.TrimSpace(mustKubectl(t, "-n", name, "create", "token", "tenant"))
	if code, body := adminMetrics(t, token); code != http.StatusForbidden {
		t.Errorf("a tenant reading /metrics: %d %s, want 403", code, body)
	}
}

// A host joins pool gpu (`cci agent --pool gpu`: a second agent on this
// machine, as in TestSecondAgentJoins): its node carries the pool's label
// and taint. Once it is down, a pod of the pool stays Pending and is told
// that the pool has no Ready host.
func TestPoolWithoutReadyHost(t *testing.T) {
	data := filepath.Join(t.TempDir(), "gpuhost")
	token, err := os.ReadFile(filepath.Join(cci.DataDir, "pki", "token"))
	if err != nil {
		t.Fatal(err)
	}
	server := strings.TrimSpace(grepLines(cci.Output(), "apiserver:"))
	server = strings.TrimSpace(strings.TrimPrefix(server, "apiserver:"))
	bad, err := exec.Command(cci.Bin, "agent", "--pool", "GPU_1", "--data-dir", data, "--server", server, "--token", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), `pool name "GPU_1"`) {
		t.Errorf("cci agent --pool GPU_1: %v\n%s", err, bad)
	}
	cmd := exec.Command(cci.Bin, "agent", "--pool", "gpu", "--data-dir", data, "--server", server, "--token", strings.TrimSpace(string(token)),
		"--node-name", "gpuhost", "--kubelet-port", strconv.Itoa(cluster.FreePorts(1)[0]), "--cni-bridge", cci.Bridge+"g",
		"--insecure-registry", cci.Registry, "--service-proxy", "off")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	t.Cleanup(func() {
		stop()
		kubectl(t, "delete", "node", "gpuhost")
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})
	waitFor(t, 60*time.Second, "node gpuhost Ready", func() (bool, string) {
		s, _ := kubectl(t, "get", "node", "gpuhost", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
		return s == "True", s
	})
	n, err := client(t).CoreV1().Nodes().Get(context.Background(), "gpuhost", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["cci.io/pool"] != "gpu" {
		t.Errorf("labels %v", n.Labels)
	}
	hasTaint := false
	for _, taint := range n.Spec.Taints {
		hasTaint = hasTaint || (taint.Key == "cci.io/pool" && taint.Value == "gpu" && taint.Effect == v1.TaintEffectNoSchedule)
	}
	if !hasTaint {
		t.Errorf("taints %v, want cci.io/pool=gpu:NoSchedule", n.Spec.Taints)
	}
	if f := poolLine(cciPoolList(t), "gpu"); len(f) != 6 || f[1] != "1/1" {
		t.Errorf("cci pool list: gpu line %v", f)
	}

	stop()
	waitFor(t, 3*time.Minute, "node gpuhost no longer Ready", func() (bool, string) {
		s, _ := kubectl(t, "get", "node", "gpuhost", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
		return s != "True", s
	})
	if f := poolLine(cciPoolList(t), "gpu"); len(f) != 6 || f[1] != "0/1" {
		t.Errorf("cci pool list with the host down: gpu line %v", f)
	}

	name, kc := createTenant(t, "poolwait", "--pools", "gpu")
	gpuPod := strings.Replace(podYAML("gpu", "sleep 3600", "", ""), "  labels:", "  annotations: {cci.io/pool: gpu}\n  labels:", 1)
	mustTenantKubectl(t, kc, gpuPod, "apply", "-f", "-")
	waitFor(t, 90*time.Second, "event PoolHasNoReadyHost on pod gpu", func() (bool, string) {
		evs, err := client(t).CoreV1().Events(name).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=gpu"})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Reason == "PoolHasNoReadyHost" && strings.Contains(e.Message, `pool "gpu" has no Ready host (0 of 1 Ready)`) {
				return true, ""
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return false, strings.Join(seen, "\n")
	})
	p, err := client(t).CoreV1().Pods(name).Get(context.Background(), "gpu", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.NodeName != "" || p.Status.Phase != v1.PodPending {
		t.Errorf("pod of the pool without a Ready host: node %q, phase %s; want Pending and unbound", p.Spec.NodeName, p.Status.Phase)
	}
}

// The pods of one workload spread over hosts: 6 replicas on 3 equal Ready
// hosts land 2/2/2, and a host that takes no pods (tainted) holds none of
// the next replicas back. Simulated hosts (`cci agent simulate`) stand in
// for three machines; the scheduler and its default spread are the real
// ones.
func TestSpreadOverHosts(t *testing.T) {
	prefix := "spread-"
	sim := exec.Command(cci.Bin, "agent", "simulate", "--kubeconfig", cci.Kubeconfig, "--nodes", "3", "--name-prefix", prefix,
		"--listen", "127.0.0.1:"+strconv.Itoa(cluster.FreePorts(1)[0]))
	out := &strings.Builder{}
	sim.Stdout, sim.Stderr = out, out
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kubectl(t, "delete", "deployment", "spread", "--wait=true")
		sim.Process.Signal(syscall.SIGTERM)
		sim.Wait()
		if t.Failed() {
			t.Logf("simulated hosts:\n%s", out.String())
		}
	})
	waitFor(t, 90*time.Second, "3 simulated hosts Ready", func() (bool, string) {
		s, _ := kubectl(t, "get", "nodes", "-l", "node.cci.io/simulated=true", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}")
		return s == "True True True", s
	})
	deployment := `apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 6
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      nodeSelector: {node.cci.io/simulated: "true"}
      tolerations: [{key: node.cci.io/simulated, operator: Exists, effect: NoSchedule}]
      containers: [{name: c, image: none}]
`
	cmd := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(deployment)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, b)
	}
	perHost := func(n int) map[string]int {
		pods := waitRunning(t, "default", "app=spread", n, 90*time.Second)
		count := map[string]int{}
		for _, p := range pods {
			count[p.Spec.NodeName]++
		}
		return count
	}
	first := perHost(6)
	for i := range 3 {
		if host := fmt.Sprintf("%s%04d", prefix, i); first[host] != 2 {
			t.Errorf("6 replicas over 3 hosts: %v, want 2 on each", first)
			break
		}
	}
	tainted := prefix + "0000"
	mustKubectl(t, "taint", "node", tainted, "e2e-down=true:NoSchedule")
	mustKubectl(t, "scale", "deployment", "spread", "--replicas=9")
	then := perHost(9)
	if then[tainted] != first[tainted] || then[prefix+"0001"]+then[prefix+"0002"] != 9-first[tainted] {
		t.Errorf("after tainting %s and scaling to 9: %v (before: %v)", tainted, then, first)
	}
}
