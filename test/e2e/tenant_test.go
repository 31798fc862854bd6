package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/cci-project/cci/internal/testimage"
)

// cciTenant runs `cci tenant ARGS` against the instance.
func cciTenant(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cci.Bin, append(append([]string{"tenant"}, args...), "--data-dir", cci.DataDir)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// createTenant makes a tenant that goes with the test and returns the path
// of its kubeconfig.
func createTenant(t *testing.T, prefix string, flags ...string) (name, kubeconfig string) {
	t.Helper()
	ensureRuntimeClasses(t)
	name = prefix + "-" + rand.String(5)
	out, err := cciTenant(t, append([]string{"create", name}, flags...)...)
	if err != nil {
		t.Fatalf("cci tenant create %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { cciTenant(t, "delete", name, "--wait=false") })
	kubeconfig = filepath.Join(cci.DataDir, "tenants", name+".kubeconfig")
	if !strings.Contains(out, kubeconfig) {
		t.Fatalf("cci tenant create does not name the kubeconfig %s:\n%s", kubeconfig, out)
	}
	return name, kubeconfig
}

// ensureRuntimeClasses makes the runtime classes tenant pods name (the
// agent maps their handlers to runtimes).
func ensureRuntimeClasses(t *testing.T) {
	t.Helper()
	for _, h := range []string{"runc", "gvisor"} {
		_, err := client(t).NodeV1().RuntimeClasses().Create(context.Background(),
			&nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: h}, Handler: h}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// tenantKubectl runs the real kubectl with a tenant's kubeconfig, stdin
// given (may be "").
func tenantKubectl(t *testing.T, kubeconfig, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustTenantKubectl(t *testing.T, kubeconfig, stdin string, args ...string) string {
	t.Helper()
	out, err := tenantKubectl(t, kubeconfig, stdin, args...)
	if err != nil {
		t.Fatalf("tenant kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// wantRefused checks a kubectl answer is a refusal containing every want.
func wantRefused(t *testing.T, what, out string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: accepted, want refusal:\n%s", what, out)
		return
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: answer lacks %q:\n%s", what, w, out)
		}
	}
}

// podYAML is a pod manifest of the shell image running script, with extra
// lines spliced into the pod spec and the container.
func podYAML(name, script, specExtra, containerExtra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {app: %s}
spec:
  terminationGracePeriodSeconds: 1
%s  containers:
  - name: main
    image: %s
    command: ["sh", "-c", %q]
%s`, name, name, indent(specExtra, "  "), image(testimage.Shell), script, indent(containerExtra, "    "))
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

func TestTenantRBAC(t *testing.T) {
	a, akc := createTenant(t, "ta")
	b, bkc := createTenant(t, "tb")

	// The admin sees tenants as objects; each has its labelled namespace.
	out := mustKubectl(t, "get", "tenants")
	for _, n := range []string{a, b} {
		if !strings.Contains(out, n) || !strings.Contains(out, "Ready") {
			t.Errorf("kubectl get tenants lacks %s Ready:\n%s", n, out)
		}
	}
	out, err := cciTenant(t, "list")
	if err != nil || !strings.Contains(out, a) || !strings.Contains(out, b) || !strings.Contains(out, "0/50") {
		t.Errorf("cci tenant list: %v\n%s", err, out)
	}
	ns, err := client(t).CoreV1().Namespaces().Get(context.Background(), a, metav1.GetOptions{})
	if err != nil || ns.Labels["cci.io/tenant"] != a {
		t.Fatalf("namespace %s: %v %v", a, err, ns.Labels)
	}

	// A's kubeconfig works in A's namespace, with the real kubectl.
	mustTenantKubectl(t, akc, "", "create", "deployment", "web", "--image="+image(testimage.HTTPD))
	pods := waitRunning(t, a, "app=web", 1, 2*time.Minute)
	pod := pods[0].Name
	if out := mustTenantKubectl(t, akc, "", "get", "pods"); !strings.Contains(out, pod) {
		t.Errorf("tenant's get pods lacks %s:\n%s", pod, out)
	}
	if _, err := tenantKubectl(t, akc, "", "logs", pod); err != nil {
		t.Errorf("tenant's logs: %v", err)
	}
	if out := mustTenantKubectl(t, akc, "", "exec", pod, "--", "echo", "hello-from-"+a); !strings.Contains(out, "hello-from-"+a) {
		t.Errorf("tenant's exec: %q", out)
	}
	p := pods[0]
	if p.Spec.RuntimeClassName == nil || *p.Spec.RuntimeClassName != "gvisor" {
		t.Errorf("tenant pod runtimeClassName %v, want gvisor", p.Spec.RuntimeClassName)
	}
	if got := p.Annotations["cci.io/flavor"]; got != `{"cpu":"0.25","memory":"512Mi","gpu":0}` {
		t.Errorf("tenant pod flavor annotation %q", got)
	}

	// The classes the service offers are readable (a claim and a pod name
	// them), and only readable.
	if out := mustTenantKubectl(t, akc, "", "get", "storageclass", "-o", "name"); !strings.Contains(out, "storageclass.storage.k8s.io/cci-evs") {
		t.Errorf("tenant's get storageclass lacks cci-evs:\n%s", out)
	}
	if out := mustTenantKubectl(t, akc, "", "get", "runtimeclass", "-o", "name"); !strings.Contains(out, "runtimeclass.node.k8s.io/gvisor") {
		t.Errorf("tenant's get runtimeclass lacks gvisor:\n%s", out)
	}
	// kubectl may print a warning first ("not namespace scoped"): the
	// answer is the last line.
	if out, err := tenantKubectl(t, akc, "", "auth", "can-i", "delete", "storageclasses"); lastLine(out) != "no" {
		t.Errorf("tenant may delete storageclasses: %q %v", out, err)
	}

	// Everything outside A's namespace is refused by the apiserver's RBAC.
	for _, tc := range []struct {
		kc   string
		args []string
		want string
	}{
		{akc, []string{"get", "pods", "-n", b}, `cannot list resource "pods" in API group "" in the namespace "` + b + `"`},
		{bkc, []string{"get", "pods", "-n", a}, `cannot list resource "pods" in API group "" in the namespace "` + a + `"`},
		{bkc, []string{"get", "pod", pod, "-n", a}, `cannot get resource "pods"`},
		{akc, []string{"get", "nodes"}, `cannot list resource "nodes"`},
		{akc, []string{"get", "node", "x"}, `cannot get resource "nodes"`},
		{akc, []string{"get", "namespaces"}, `cannot list resource "namespaces"`},
		{akc, []string{"get", "namespace", b}, `cannot get resource "namespaces"`},
		{akc, []string{"get", "tenants"}, `cannot list resource "tenants"`},
		{akc, []string{"get", "pods", "-A"}, `cannot list resource "pods" in API group "" at the cluster scope`},
		{akc, []string{"get", "clusterroles"}, `cannot list resource "clusterroles"`},
		{akc, []string{"create", "daemonset", "x", "--image=x"}, ""},
	} {
		out, err := tenantKubectl(t, tc.kc, "", tc.args...)
		if tc.args[0] == "create" {
			// kubectl has no `create daemonset`; ask the apiserver instead.
			out, err = tenantKubectl(t, tc.kc, "", "auth", "can-i", "create", "daemonsets")
			if strings.TrimSpace(out) != "no" {
				t.Errorf("tenant may create daemonsets: %q %v", out, err)
			}
			continue
		}
		wantRefused(t, strings.Join(tc.args, " "), out, err, "Forbidden", tc.want)
	}
}

func TestAdmissionPolicy(t *testing.T) {
	_, kc := createTenant(t, "tp")
	dryRun := func(manifest string) (string, error) {
		return tenantKubectl(t, kc, manifest, "create", "-f", "-", "--dry-run=server", "-o", "json")
	}
	for _, tc := range []struct {
		name     string
		manifest string
		want     []string
	}{
		{"hostNetwork", podYAML("p", "sleep 1", "hostNetwork: true", ""), []string{"hostNetwork is not allowed"}},
		{"hostPID and hostIPC", podYAML("p", "sleep 1", "hostPID: true\nhostIPC: true", ""), []string{"hostPID is not allowed; hostIPC is not allowed"}},
		{"privileged", podYAML("p", "sleep 1", "", "securityContext: {privileged: true}"), []string{`container "main": privileged is not allowed`}},
		{"capability", podYAML("p", "sleep 1", "", "securityContext: {capabilities: {add: [SYS_ADMIN]}}"), []string{"adding capability SYS_ADMIN is not allowed"}},
		{"hostPath", podYAML("p", "sleep 1", "volumes: [{name: root, hostPath: {path: /}}]", ""), []string{`hostPath volumes are not allowed`}},
		{"hostPort", podYAML("p", "sleep 1", "", "ports: [{containerPort: 80, hostPort: 8080}]"), []string{"hostPort 8080 is not allowed"}},
		{"nodeName", podYAML("p", "sleep 1", "nodeName: somehost", ""), []string{"nodeName is not allowed"}},
		{"nodeSelector on hostname", podYAML("p", "sleep 1", "nodeSelector: {kubernetes.io/hostname: h}", ""), []string{`node label "kubernetes.io/hostname" is not allowed`}},
		{"flavor outside the table", podYAML("p", "sleep 1", "", "resources: {limits: {cpu: 300m, memory: 1Gi}}"),
			[]string{"pod flavor 0.3 CPU / 1 GiB is not offered", "nearest flavor: 0.5 CPU / 1 GiB"}},
		{"ratio above 8 GiB per core", podYAML("p", "sleep 1", "", "resources: {requests: {cpu: 500m, memory: 8Gi}}"),
			[]string{"above 8 GiB per core", "nearest flavor: 1 CPU / 8 GiB"}},
		{"runc not allowed", podYAML("p", "sleep 1", "runtimeClassName: runc", ""), []string{`runtimeClassName "runc" is not allowed for this tenant`}},
		{"deployment with hostPID", `apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      hostPID: true
      containers: [{name: main, image: x}]
`, []string{"hostPID is not allowed"}},
		{"NodePort service", `apiVersion: v1
kind: Service
metadata: {name: s}
spec: {type: NodePort, selector: {app: x}, ports: [{port: 80}]}
`, []string{"Service type NodePort is not allowed"}},
		{"externalIPs", `apiVersion: v1
kind: Service
metadata: {name: s}
spec: {selector: {app: x}, externalIPs: [192.0.2.99], ports: [{port: 80}]}
`, []string{"spec.externalIPs [192.0.2.99] is not allowed", "CVE-2020-8554", "use type LoadBalancer"}},
		{"nodePort on a LoadBalancer", `apiVersion: v1
kind: Service
metadata: {name: s}
spec: {type: LoadBalancer, selector: {app: x}, ports: [{name: web, port: 80, nodePort: 30998}]}
`, []string{`port "web": nodePort 30998 is not allowed`}},
	} {
		out, err := dryRun(tc.manifest)
		wantRefused(t, tc.name, out, err, append([]string{"Forbidden", "denied the request", "CCI tenant policy"}, tc.want...)...)
	}

	// Admitted pods come back normalised: requests == limits, the flavor
	// annotation, the secure runtime.
	for _, tc := range []struct {
		name, container, flavor, cpu, memory string
	}{
		{"defaults", "", `{"cpu":"0.25","memory":"512Mi","gpu":0}`, "250m", "512Mi"},
		{"limits only", "resources: {limits: {cpu: 500m, memory: 1Gi}}", `{"cpu":"0.5","memory":"1Gi","gpu":0}`, "500m", "1Gi"},
		{"requests only", "resources: {requests: {cpu: '1', memory: 4Gi}}", `{"cpu":"1","memory":"4Gi","gpu":0}`, "1", "4Gi"},
	} {
		out, err := dryRun(podYAML("p", "sleep 1", "", tc.container))
		if err != nil {
			t.Errorf("%s: refused: %v\n%s", tc.name, err, out)
			continue
		}
		var p v1.Pod
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, out)
		}
		res := p.Spec.Containers[0].Resources
		if got := p.Annotations["cci.io/flavor"]; got != tc.flavor {
			t.Errorf("%s: flavor %q, want %q", tc.name, got, tc.flavor)
		}
		if p.Spec.RuntimeClassName == nil || *p.Spec.RuntimeClassName != "gvisor" {
			t.Errorf("%s: runtimeClassName %v", tc.name, p.Spec.RuntimeClassName)
		}
		if res.Requests.Cpu().String() != tc.cpu || res.Limits.Cpu().String() != tc.cpu ||
			res.Requests.Memory().String() != tc.memory || res.Limits.Memory().String() != tc.memory {
			t.Errorf("%s: resources %v, want requests = limits = %s/%s", tc.name, res, tc.cpu, tc.memory)
		}
	}

	// Admin namespaces are not restricted.
	ns := testNamespace(t)
	cmd := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "-n", ns, "create", "-f", "-", "--dry-run=server")
	cmd.Stdin = strings.NewReader(podYAML("p", "sleep 1", "hostNetwork: true\nnodeName: somehost", "securityContext: {privileged: true}"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("admin pod with host access refused: %v\n%s", err, out)
	}
}

// TestTenantEndpoints: a tenant may point a selectorless Service at an
// address outside the cluster or at its own pods, never at another
// tenant's pod; the endpoint controllers keep working in tenant namespaces.
func TestTenantEndpoints(t *testing.T) {
	ctx := context.Background()
	a, akc := createTenant(t, "te")
	b, bkc := createTenant(t, "tf")
	mustTenantKubectl(t, bkc, podYAML("db", "sleep 3600", "", ""), "create", "-f", "-")
	bpod := waitRunning(t, b, "app=db", 1, 2*time.Minute)[0]
	bip := bpod.Status.PodIP
	service := "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{port: 5432}]}\n"
	endpoints := func(ip string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets: [{addresses: [{ip: %s}], ports: [{port: 5432}]}]\n", ip)
	}
	slice := func(ip string) string {
		// Labelled as the controller's own: the label earns nothing.
		return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-manual
  labels: {kubernetes.io/service-name: db, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
endpoints: [{addresses: [%s]}]
ports: [{port: 5432}]
`, ip)
	}
	mustTenantKubectl(t, akc, service, "create", "-f", "-")

	// A's Endpoints and EndpointSlices at B's pod are refused, saying why.
	why := fmt.Sprintf("it is in the pod range %s and not the IP of a pod in this namespace", cci.ClusterCIDR)
	out, err := tenantKubectl(t, akc, endpoints(bip), "create", "-f", "-")
	wantRefused(t, "Endpoints at another tenant's pod", out, err, "Forbidden", "CCI tenant policy",
		fmt.Sprintf("endpoint address %s (subsets[0].addresses[0]) is not allowed: %s", bip, why))
	out, err = tenantKubectl(t, akc, slice(bip), "create", "-f", "-")
	wantRefused(t, "EndpointSlice at another tenant's pod", out, err, "Forbidden", "CCI tenant policy",
		fmt.Sprintf("endpoint address %s (endpoints[0].addresses[0]) is not allowed: %s", bip, why))
	// So are the host and the Service range.
	kubeIP := strings.TrimSpace(mustKubectl(t, "-n", "default", "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"))
	out, err = tenantKubectl(t, akc, endpoints(kubeIP), "create", "-f", "-", "--dry-run=server")
	wantRefused(t, "Endpoints at a ClusterIP", out, err, "endpoint address "+kubeIP, "is in the Service range")
	host := hostIPOfNode(t)
	out, err = tenantKubectl(t, akc, endpoints(host), "create", "-f", "-", "--dry-run=server")
	wantRefused(t, "Endpoints at the host", out, err, "endpoint address "+host, "it is a node's address")

	// An outside database is fine, and the EndpointSlice mirroring
	// controller (a system identity) copies it into a slice.
	mustTenantKubectl(t, akc, endpoints("203.0.113.10"), "create", "-f", "-")
	waitFor(t, time.Minute, "mirrored EndpointSlice of "+a+"/db", func() (bool, string) {
		out, _ := kubectl(t, "-n", a, "get", "endpointslices", "-l", "kubernetes.io/service-name=db", "-o", "jsonpath={.items[*].endpoints[*].addresses}")
		return strings.Contains(out, "203.0.113.10"), out
	})
	// Changing it to B's pod is refused too.
	out, err = tenantKubectl(t, akc, endpoints(bip), "apply", "-f", "-")
	wantRefused(t, "Endpoints updated to another tenant's pod", out, err, "endpoint address "+bip, why)
	ep, err := client(t).CoreV1().Endpoints(a).Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != 1 || ep.Subsets[0].Addresses[0].IP != "203.0.113.10" {
		t.Errorf("endpoints %s/db are %v after the refused update, want 203.0.113.10", a, ep.Subsets)
	}

	// B may point its own selectorless Service at its own pod, and B's
	// Service with a selector gets its endpoints from the controllers.
	mustTenantKubectl(t, bkc, service, "create", "-f", "-")
	mustTenantKubectl(t, bkc, endpoints(bip), "create", "-f", "-")
	mustTenantKubectl(t, bkc, "", "create", "service", "clusterip", "db-sel", "--tcp=5432:5432")
	mustTenantKubectl(t, bkc, "", "label", "pod", "db", "app=db-sel", "--overwrite")
	waitFor(t, time.Minute, "EndpointSlice of "+b+"/db-sel with "+bip, func() (bool, string) {
		slices, err := client(t).DiscoveryV1().EndpointSlices(b).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=db-sel"})
		if err != nil {
			return false, err.Error()
		}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if len(e.Addresses) > 0 && e.Addresses[0] == bip {
					return true, ""
				}
			}
		}
		return false, fmt.Sprint(slices.Items)
	})
}

func TestTenantQuota(t *testing.T) {
	name, kc := createTenant(t, "tq", "--quota", "pods=2,cpu=1,memory=4Gi")
	create := func(pod, resources string) (string, error) {
		return tenantKubectl(t, kc, podYAML(pod, "sleep 3600", "", resources), "create", "-f", "-")
	}
	if out, err := create("half", "resources: {limits: {cpu: 500m, memory: 1Gi}}"); err != nil {
		t.Fatalf("first pod: %v\n%s", err, out)
	}
	out, err := create("big", "resources: {limits: {cpu: 750m, memory: 1Gi}}")
	wantRefused(t, "pod over the CPU quota", out, err, "Forbidden", "exceeded quota: cci-tenant", "requests.cpu=1")
	if out, err := create("quarter", ""); err != nil {
		t.Fatalf("second pod: %v\n%s", err, out)
	}
	out, err = create("third", "")
	wantRefused(t, "pod over the pod quota", out, err, "Forbidden", "exceeded quota: cci-tenant", "requested: pods=1, used: pods=2, limited: pods=2")

	out, err = cciTenant(t, "get", name)
	if err != nil {
		t.Fatalf("cci tenant get: %v\n%s", err, out)
	}
	for _, want := range []string{"Phase:", "Ready", "pods", "requests.cpu", "750m", "requests.memory", "1536Mi", "4Gi"} {
		if !strings.Contains(out, want) {
			t.Errorf("cci tenant get lacks %q:\n%s", want, out)
		}
	}
}

// procWith says whether a host process has s in its command line.
func procWith(s string) bool {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		raw, err := os.ReadFile(d)
		if err == nil && strings.Contains(strings.ReplaceAll(string(raw), "\x00", " "), s) {
			return true
		}
	}
	return false
}

func TestTenantDelete(t *testing.T) {
	// runc, so that the pod's process is visible on the host.
	name, kc := createTenant(t, "td", "--allow-runc")
	marker := fmt.Sprintf("sleep %d", 700000+rand.Intn(99999))
	mustTenantKubectl(t, kc, podYAML("sleeper", marker, "runtimeClassName: runc", ""), "create", "-f", "-")
	waitRunning(t, name, "app=sleeper", 1, 2*time.Minute)
	waitFor(t, 10*time.Second, "the pod's process on the host", func() (bool, string) { return procWith(marker), marker })

	out, err := cciTenant(t, "delete", name)
	if err != nil {
		t.Fatalf("cci tenant delete: %v\n%s", err, out)
	}
	if _, err := client(t).CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s after delete: %v", name, err)
	}
	if procWith(marker) {
		t.Errorf("the pod's process %q still runs", marker)
	}
	if _, err := os.Stat(kc); !os.IsNotExist(err) {
		t.Errorf("kubeconfig %s after delete: %v", kc, err)
	}
	if out, err := cciTenant(t, "get", name); err == nil || !strings.Contains(out, "no tenant") {
		t.Errorf("cci tenant get after delete: %v\n%s", err, out)
	}
	if out, _ := cciTenant(t, "list"); strings.Contains(out, name) {
		t.Errorf("cci tenant list after delete:\n%s", out)
	}
}

// A tenant named like an admin namespace fails and, deleted, leaves that
// namespace alone.
func TestTenantNameTaken(t *testing.T) {
	ns := testNamespace(t)
	out, err := cciTenant(t, "create", ns, "--timeout", "30s")
	wantRefused(t, "tenant named like an admin namespace", out, err, "failed", "exists and does not belong to tenant")
	if out, err := cciTenant(t, "delete", ns); err != nil {
		t.Fatalf("cci tenant delete: %v\n%s", err, out)
	}
	got, err := client(t).CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil || got.DeletionTimestamp != nil {
		t.Errorf("admin namespace %s after deleting the tenant of that name: %v", ns, err)
	}
}

// TestTenantRestart stops and starts the instance; it runs last in this
// file and leaves the instance running.
func TestTenantRestart(t *testing.T) {
	name, kc := createTenant(t, "tr")
	mustTenantKubectl(t, kc, "", "create", "deployment", "web", "--image="+image(testimage.HTTPD))
	before := waitRunning(t, name, "app=web", 1, 2*time.Minute)[0]

	webhookURL := func() string {
		c, err := client(t).AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "cci-tenant-policy", metav1.GetOptions{})
		if err != nil || len(c.Webhooks) != 1 || c.Webhooks[0].ClientConfig.URL == nil {
			t.Fatalf("webhook configuration: %v", err)
		}
		return *c.Webhooks[0].ClientConfig.URL
	}
	urlBefore := webhookURL()

	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}

	out, err := cciTenant(t, "get", name)
	if err != nil || !strings.Contains(out, "Ready") {
		t.Fatalf("cci tenant get after restart: %v\n%s", err, out)
	}
	// The webhook keeps its port, so the apiserver never calls a stale URL.
	if got := webhookURL(); got != urlBefore {
		t.Errorf("webhook URL %s after restart, was %s", got, urlBefore)
	}
	after := waitRunning(t, name, "app=web", 1, 2*time.Minute)[0]
	if after.UID != before.UID {
		t.Errorf("pod %s replaced by %s across the restart", before.Name, after.Name)
	}
	// The same kubeconfig works, and the policy is served again.
	if out := mustTenantKubectl(t, kc, "", "get", "pods"); !strings.Contains(out, before.Name) {
		t.Errorf("tenant's get pods after restart:\n%s", out)
	}
	out = mustTenantKubectl(t, kc, podYAML("after", "sleep 3600", "", "resources: {limits: {cpu: '1', memory: 2Gi}}"), "create", "-f", "-")
	p, err := client(t).CoreV1().Pods(name).Get(context.Background(), "after", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("pod created after restart: %v (%s)", err, out)
	}
	if got := p.Annotations["cci.io/flavor"]; got != `{"cpu":"1","memory":"2Gi","gpu":0}` {
		t.Errorf("flavor after restart %q", got)
	}
	out, err = tenantKubectl(t, kc, podYAML("bad", "sleep 1", "hostNetwork: true", ""), "create", "-f", "-")
	wantRefused(t, "hostNetwork after restart", out, err, "hostNetwork is not allowed")
}

// lastLine is the last non-empty line of out, trimmed.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
