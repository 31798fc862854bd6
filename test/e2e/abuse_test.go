package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Tenants contained: from a tenant's kubeconfig and from inside a tenant's
// pod (gVisor, the default), every way past the tenant that a test can try
// is tried, and each must fail. Beside each network attempt a control shows
// that the target is alive (the operator's pod, or the owner's pod, reaches
// it), so that a failure is the containment's and not a dead target's.

// argOf is the value of flag in the instance's `cci up` arguments.
func argOf(t *testing.T, flag string) string {
	t.Helper()
	for i, a := range cci.Args {
		if a == flag && i+1 < len(cci.Args) {
			return cci.Args[i+1]
		}
	}
	t.Fatalf("cci up has no %s argument: %v", flag, cci.Args)
	return ""
}

// target is one address a tenant's pod must not reach.
type target struct {
	what string
	host string // an IP address or a DNS name
	port int
	// control runs the same connection from a pod that may make it
	// (namespace, pod); empty: the target is not checked alive (some of
	// the control plane's ports listen on loopback only).
	controlNS, controlPod string
}

// connectScript tries every target from one pod in one exec: a line
// "<index> <exit code of nc>" for each; nc exits 0 once connected.
func connectScript(targets []target) string {
	var b strings.Builder
	for i, tg := range targets {
		fmt.Fprintf(&b, "nc -w 3 %s %d </dev/null >/dev/null 2>&1; echo %d $?\n", tg.host, tg.port, i)
	}
	return b.String()
}

// connectResults runs connectScript in ns/pod and returns each target's
// nc exit code, by index.
func connectResults(t *testing.T, ns, pod string, targets []target) map[int]int {
	t.Helper()
	out := execOut(t, ns, pod, "sh", "-c", connectScript(targets))
	got := map[int]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var i, rc int
		if _, err := fmt.Sscan(l, &i, &rc); err == nil {
			got[i] = rc
		}
	}
	if len(got) != len(targets) {
		t.Fatalf("connection attempts from %s/%s: %d results for %d targets:\n%s", ns, pod, len(got), len(targets), out)
	}
	return got
}

func TestTenantsContained(t *testing.T) {
	ensureRuntimeClasses(t)
	ctx := context.Background()
	cs := client(t)
	a, akc := createTenant(t, "abusea")
	b, bkc := createTenant(t, "abuseb")
	op := testNamespace(t)

	// The operator's pods: a web server in "default" (its own namespace,
	// as the issue names it) and a prober in a namespace of no tenant.
	opWeb := webPod("abuse-web-"+strings.TrimPrefix(op, "t-"), "")
	createPod(t, "default", opWeb)
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods("default").Delete(context.Background(), opWeb.Name, metav1.DeleteOptions{})
		_ = cs.CoreV1().Services("default").Delete(context.Background(), opWeb.Name, metav1.DeleteOptions{})
	})
	opWebIP := waitRunning(t, "default", "app="+opWeb.Name, 1, 2*time.Minute)[0].Status.PodIP
	mustKubectl(t, "-n", "default", "expose", "pod", opWeb.Name, "--port", strconv.Itoa(8080))
	opSvcIP := strings.TrimSpace(mustKubectl(t, "-n", "default", "get", "service", opWeb.Name, "-o", "jsonpath={.spec.clusterIP}"))
	runningPodIP(t, op, shellPod("prober", "", idle))

	// Tenant B: a web server with a Service, and a pod of its own to
	// show that B reaches it.
	createPod(t, b, webPod("web", ""))
	bWebIP := waitRunning(t, b, "app=web", 1, 2*time.Minute)[0].Status.PodIP
	mustTenantKubectl(t, bkc, "", "expose", "pod", "web", "--port", "8080")
	bSvcIP := strings.TrimSpace(mustTenantKubectl(t, bkc, "", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"))
	createPod(t, b, shellPod("own", "", idle))
	waitRunning(t, b, "app=own", 1, 2*time.Minute)

	// Tenant A: the attacker, a gVisor pod (the tenants' default) and a
	// web server of its own that it must still reach.
	createPod(t, a, shellPod("attacker", "", idle))
	attacker := waitRunning(t, a, "app=attacker", 1, 2*time.Minute)[0]
	if rc := attacker.Spec.RuntimeClassName; rc == nil || *rc != "gvisor" {
		t.Fatalf("tenant pod runs with runtime class %v, want gvisor", rc)
	}
	createPod(t, a, webPod("mine", ""))
	aWebIP := waitRunning(t, a, "app=mine", 1, 2*time.Minute)[0].Status.PodIP

	hostIP := hostIPOfNode(t)
	node, err := cs.CoreV1().Nodes().Get(ctx, mainNode(t), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podCIDR, err := netip.ParsePrefix(node.Spec.PodCIDR)
	if err != nil {
		t.Fatalf("node %s pod CIDR %q: %v", node.Name, node.Spec.PodCIDR, err)
	}
	gateway := podCIDR.Masked().Addr().Next().String()
	port := func(flag string) int {
		p, err := strconv.Atoi(argOf(t, flag))
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		return p
	}
	apiPort, kubeletPort := port("--api-port"), port("--kubelet-port")
	_, regPort, _ := strings.Cut(cci.Registry, ":")
	registryPort, _ := strconv.Atoi(regPort)

	targets := []target{
		{what: "the kubelet API on the host's address", host: hostIP, port: kubeletPort, controlNS: op, controlPod: "prober"},
		{what: "the kubelet API on the bridge address", host: gateway, port: kubeletPort, controlNS: op, controlPod: "prober"},
		{what: "the apiserver's port on the host, past its Service", host: hostIP, port: apiPort, controlNS: op, controlPod: "prober"},
		{what: "the usage endpoint", host: hostIP, port: apiPort + 1, controlNS: op, controlPod: "prober"},
		{what: "etcd's client port", host: hostIP, port: port("--etcd-client-port")},
		{what: "etcd's peer port", host: hostIP, port: port("--etcd-peer-port")},
		{what: "the registry on the host's address", host: hostIP, port: registryPort},
		{what: "the registry on the bridge address", host: gateway, port: registryPort},
		{what: "the instance-metadata address 169.254.169.254:80", host: "169.254.169.254", port: 80, controlNS: op, controlPod: "prober"},
		{what: "another tenant's pod by IP", host: bWebIP, port: 8080, controlNS: b, controlPod: "own"},
		{what: "another tenant's Service", host: bSvcIP, port: 8080, controlNS: b, controlPod: "own"},
		{what: "another tenant's Service by DNS name", host: "web." + b + ".svc.cluster.local", port: 8080, controlNS: b, controlPod: "own"},
		{what: "the operator's pod in default by IP", host: opWebIP, port: 8080, controlNS: op, controlPod: "prober"},
		{what: "the operator's Service in default", host: opSvcIP, port: 8080, controlNS: op, controlPod: "prober"},
		{what: "the operator's Service in default by DNS name", host: opWeb.Name + ".default.svc.cluster.local", port: 8080, controlNS: op, controlPod: "prober"},
	}

	// Controls: each target that has one answers its rightful client.
	byControl := map[[2]string][]int{}
	for i, tg := range targets {
		if tg.controlPod != "" {
			k := [2]string{tg.controlNS, tg.controlPod}
			byControl[k] = append(byControl[k], i)
		}
	}
	for k, idx := range byControl {
		var sub []target
		for _, i := range idx {
			sub = append(sub, targets[i])
		}
		waitFor(t, 45*time.Second, fmt.Sprintf("controls from %s/%s", k[0], k[1]), func() (bool, string) {
			got := connectResults(t, k[0], k[1], sub)
			var dead []string
			for j, rc := range got {
				if rc != 0 {
					dead = append(dead, sub[j].what)
				}
			}
			return len(dead) == 0, fmt.Sprintf("not reached by their control: %v", dead)
		})
	}

	// What the tenant may do still works: its own pod, the API through
	// the kubernetes Service, DNS.
	allowed := []target{
		{what: "its own pod", host: aWebIP, port: 8080},
		{what: "the kubernetes Service", host: "kubernetes.default.svc.cluster.local", port: 443},
	}
	waitFor(t, 45*time.Second, "the tenant's own pod and the API through its Service", func() (bool, string) {
		got := connectResults(t, a, "attacker", allowed)
		return got[0] == 0 && got[1] == 0, fmt.Sprint(got)
	})

	attempts, succeeded := 0, 0
	fail := func(what, detail string) {
		succeeded++
		t.Errorf("tenant %s succeeded: %s %s", a, what, detail)
	}
	for i, rc := range connectResults(t, a, "attacker", targets) {
		attempts++
		if rc == 0 {
			fail("reached "+targets[i].what, fmt.Sprintf("(%s:%d) from its gVisor pod", targets[i].host, targets[i].port))
		}
	}
	// The host's containerd socket is nowhere in the pod's file system.
	for _, sock := range []string{"/run/containerd/containerd.sock", cci.DataDir + "/containerd/containerd.sock", "/var/run/docker.sock"} {
		attempts++
		if out, err := kubectl(t, "-n", a, "exec", "attacker", "--", "test", "-e", sock); err == nil {
			fail("found "+sock, out)
		}
	}

	// Through the API with the tenant's kubeconfig.
	api := []struct {
		what  string
		stdin string
		args  []string
	}{
		{"read another tenant's Secrets", "", []string{"-n", b, "get", "secrets"}},
		{"read another tenant's token Secret", "", []string{"-n", b, "get", "secret", "tenant-token"}},
		{"read the operator's Secrets in default", "", []string{"-n", "default", "get", "secrets"}},
		{"read the operator's Secrets in kube-system", "", []string{"-n", "kube-system", "get", "secrets"}},
		{"list the other tenant's pods", "", []string{"-n", b, "get", "pods"}},
		{"exec in the other tenant's pod", "", []string{"-n", b, "exec", "own", "--", "true"}},
		{"list nodes", "", []string{"get", "nodes"}},
		{"reach the kubelet through the node proxy", "", []string{"get", "--raw", "/api/v1/nodes/" + node.Name + "/proxy/pods"}},
		{"create a namespace", "", []string{"create", "namespace", "abuse-" + a}},
		{"pod with a hostPath volume", podYAML("hp", "sleep 1", "volumes: [{name: h, hostPath: {path: /}}]", "volumeMounts: [{name: h, mountPath: /host}]"), nil},
		{"pod with a host device node", podYAML("dev", "sleep 1", "volumes: [{name: d, hostPath: {path: /dev/mem, type: CharDevice}}]", "volumeMounts: [{name: d, mountPath: /mem}]"), nil},
		{"pod on the host network", podYAML("hn", "sleep 1", "hostNetwork: true", ""), nil},
		{"pod in the host's PID namespace", podYAML("hpid", "sleep 1", "hostPID: true", ""), nil},
		{"pod in the host's IPC namespace", podYAML("hipc", "sleep 1", "hostIPC: true", ""), nil},
		{"privileged pod", podYAML("priv", "sleep 1", "", "securityContext: {privileged: true}"), nil},
		{"pod adding CAP_SYS_ADMIN", podYAML("sysadm", "sleep 1", "", "securityContext: {capabilities: {add: [SYS_ADMIN]}}"), nil},
		{"pod adding CAP_NET_ADMIN", podYAML("netadm", "sleep 1", "", "securityContext: {capabilities: {add: [NET_ADMIN]}}"), nil},
		{"pod with a host port", podYAML("hport", "sleep 1", "", "ports: [{containerPort: 80, hostPort: 80}]"), nil},
		{"pod under runc", podYAML("runc", "sleep 1", "runtimeClassName: runc", ""), nil},
		{"pod pinned to a host", podYAML("pinned", "sleep 1", "nodeName: "+node.Name, ""), nil},
		{"Endpoints at the host's kubelet", fmt.Sprintf("apiVersion: v1\nkind: Endpoints\nmetadata: {name: kubelet}\nsubsets: [{addresses: [{ip: %s}], ports: [{port: %d}]}]\n", hostIP, kubeletPort), nil},
		{"Endpoints at the operator's pod", fmt.Sprintf("apiVersion: v1\nkind: Endpoints\nmetadata: {name: op}\nsubsets: [{addresses: [{ip: %s}], ports: [{port: 8080}]}]\n", opWebIP), nil},
		{"EndpointSlice at another tenant's pod", fmt.Sprintf("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: b, labels: {kubernetes.io/service-name: b}}\naddressType: IPv4\nendpoints: [{addresses: [%s]}]\nports: [{port: 8080}]\n", bWebIP), nil},
		{"LoadBalancer with a health-check node port", "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: mine}, ports: [{port: 80, targetPort: 8080}]}\n", nil},
		{"NodePort Service", "apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec: {type: NodePort, selector: {app: mine}, ports: [{port: 80, targetPort: 8080}]}\n", nil},
		{"Service with external IPs", fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: eip}\nspec: {externalIPs: [%s], selector: {app: mine}, ports: [{port: %d, targetPort: 8080}]}\n", hostIP, kubeletPort), nil},
	}
	for _, c := range api {
		attempts++
		args := c.args
		if args == nil {
			args = []string{"create", "-f", "-"}
		}
		if out, err := tenantKubectl(t, akc, c.stdin, args...); err == nil {
			fail(c.what, "through the API:\n"+out)
		}
	}
	// Nothing of the refused manifests was stored.
	if pods, err := cs.CoreV1().Pods(a).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			if p.Name != "attacker" && p.Name != "mine" {
				fail("stored pod "+p.Name, "")
			}
		}
	}
	t.Logf("tenant containment: %d attempts, %d succeeded", attempts, succeeded)
}
