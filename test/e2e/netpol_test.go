package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cci-project/cci/internal/isolation"
	"github.com/cci-project/cci/internal/netpol"
	"github.com/cci-project/cci/internal/testimage"
)

// NetworkPolicy enforcement by the agent, and namespaces isolated by label.
// These tests need the test images (TestImagePushAndImport).

// webPod is a pod of the httpd image, its port named "http".
func webPod(name, rc string) *v1.Pod {
	grace := int64(1)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: v1.PodSpec{
			RuntimeClassName:              runtimeClassPtr(rc),
			TerminationGracePeriodSeconds: &grace,
			Containers: []v1.Container{{
				Name: "main", Image: image(testimage.HTTPD),
				Ports: []v1.ContainerPort{{Name: "http", ContainerPort: testimage.HTTPDPort}},
			}},
		},
	}
}

// runningPodIP creates p in ns, waits for it to run and returns its IP.
func runningPodIP(t *testing.T, ns string, p *v1.Pod) string {
	t.Helper()
	createPod(t, ns, p)
	pods := waitRunning(t, ns, "app="+p.Labels["app"], 1, 2*time.Minute)
	if pods[0].Status.PodIP == "" {
		t.Fatalf("pod %s/%s runs without an IP", ns, p.Name)
	}
	return pods[0].Status.PodIP
}

// fetchFrom fetches http://ip:8080/ from inside pod; nil means the page came.
func fetchFrom(ns, pod, ip string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s:%d/", ip, testimage.HTTPDPort)
	// nc rather than wget: this busybox's wget crashes with -T, and nc's
	// -w bounds the connect.
	script := fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s %d`, ip, testimage.HTTPDPort)
	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", cci.Kubeconfig, "-n", ns, "exec", pod, "--",
		"sh", "-c", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fetch %s from %s/%s: %v: %s", url, ns, pod, err, dropStreamNoise(string(out)))
	}
	if !strings.Contains(string(out), strings.TrimSpace(testimage.IndexHTML)) {
		return fmt.Errorf("fetch %s from %s/%s: unexpected answer %q", url, ns, pod, out)
	}
	return nil
}

// fetchFromHost fetches http://ip:8080/ from the test process, on the host.
func fetchFromHost(ip string) error {
	c := http.Client{Timeout: 3 * time.Second, Transport: plainHTTP.Transport}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/", ip, testimage.HTTPDPort))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), strings.TrimSpace(testimage.IndexHTML)) {
		return fmt.Errorf("unexpected page %q", body)
	}
	return nil
}

func waitReachable(t *testing.T, ns, pod, ip string) {
	t.Helper()
	waitFor(t, 45*time.Second, fmt.Sprintf("%s/%s to reach %s", ns, pod, ip), func() (bool, string) {
		err := fetchFrom(ns, pod, ip)
		return err == nil, fmt.Sprint(err)
	})
}

// waitBlocked waits for a fetch to fail, then checks that the next one
// fails too: a block that comes and goes is no block.
func waitBlocked(t *testing.T, ns, pod, ip string) {
	t.Helper()
	waitFor(t, 45*time.Second, fmt.Sprintf("%s/%s to be blocked from %s", ns, pod, ip), func() (bool, string) {
		err := fetchFrom(ns, pod, ip)
		return err != nil, "still reachable"
	})
	if err := fetchFrom(ns, pod, ip); err == nil {
		t.Fatalf("%s/%s reached %s again right after being blocked", ns, pod, ip)
	}
}

// mangleRules is iptables-save's mangle table.
func mangleRules(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "mangle").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	return string(out)
}

// waitNoRulesFor waits until no rule of the mangle table names any of ips.
func waitNoRulesFor(t *testing.T, ips ...string) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("no mangle rule naming %v", ips), func() (bool, string) {
		rules := mangleRules(t)
		for _, ip := range ips {
			if strings.Contains(rules, " "+ip+"/32 ") {
				return false, rules
			}
		}
		return true, ""
	})
}

func policy(name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func appSelector(app string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func TestNetworkPolicy(t *testing.T) {
	for _, rc := range []string{"", "gvisor"} {
		name := "runc"
		if rc != "" {
			name = rc
		}
		t.Run(name, func(t *testing.T) { testNetworkPolicy(t, rc) })
	}
}

func testNetworkPolicy(t *testing.T, rc string) {
	ensureRuntimeClasses(t)
	ctx := context.Background()
	ns := testNamespace(t)
	pods := client(t).CoreV1().Pods(ns)
	nps := client(t).NetworkingV1().NetworkPolicies(ns)

	webIP := runningPodIP(t, ns, webPod("web", rc))
	clientIP := runningPodIP(t, ns, shellPod("client", "", idle))
	waitReachable(t, ns, "client", webIP)

	// Deny all ingress to web.
	if _, err := nps.Create(ctx, policy("web-deny", networkingv1.NetworkPolicySpec{
		PodSelector: appSelector("web"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
	}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBlocked(t, ns, "client", webIP)
	if chain := netpol.ChainName(cci.Bridge); !strings.Contains(mangleRules(t), "-A "+chain+" -d "+webIP+"/32 ") {
		t.Errorf("chain %s has no ingress rule for %s:\n%s", chain, webIP, mangleRules(t))
	}
	// The host (probes, port-forward, a masquerading service proxy) still
	// reaches the pod.
	if err := fetchFromHost(webIP); err != nil {
		t.Errorf("host → %s under deny-all ingress: %v", webIP, err)
	}

	// A malformed policy is refused by the apiserver, and enforcement of
	// the others goes on.
	_, err := nps.Create(ctx, policy("bad-cidr", networkingv1.NetworkPolicySpec{
		PodSelector: appSelector("web"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
			IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"},
		}}}},
	}), metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Errorf("policy with CIDR 10.0.0.0/33: got %v, want Invalid", err)
	}

	// Allowed from the client, but on ports 8000-8079 only: still blocked.
	tcp := v1.ProtocolTCP
	low, high := intstr.FromInt32(8000), int32(8079)
	allow := policy("web-allow-client", networkingv1.NetworkPolicySpec{
		PodSelector: appSelector("web"),
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &low, EndPort: &high}},
		}},
	})
	if allow, err = nps.Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := fetchFrom(ns, "client", webIP); err == nil {
		t.Errorf("client reached web on 8080 with only 8000-8079 allowed")
	}
	// By the port's name: allowed.
	named := intstr.FromString("http")
	allow.Spec.Ingress[0].Ports = []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named}}
	if _, err := nps.Update(ctx, allow, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReachable(t, ns, "client", webIP)

	// No egress at all for the client: blocked again.
	if _, err := nps.Create(ctx, policy("client-no-egress", networkingv1.NetworkPolicySpec{
		PodSelector: appSelector("client"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
	}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBlocked(t, ns, "client", webIP)

	// The egress policy gone: the ingress allow applies again.
	if err := nps.Delete(ctx, "client-no-egress", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReachable(t, ns, "client", webIP)

	// Pods gone while their policies stay: no rule names them any more.
	for _, p := range []string{"web", "client"} {
		if err := pods.Delete(ctx, p, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "pods gone", func() (bool, string) {
		left := listPods(t, ns, "")
		return len(left) == 0, fmt.Sprint(len(left), " left")
	})
	waitNoRulesFor(t, webIP, clientIP)
	if err := nps.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitIsolationPolicy waits for the managed policy of ns and returns it.
func waitIsolationPolicy(t *testing.T, ns string, cond func(*networkingv1.NetworkPolicy) bool) *networkingv1.NetworkPolicy {
	t.Helper()
	var got *networkingv1.NetworkPolicy
	waitFor(t, 30*time.Second, "managed policy in "+ns, func() (bool, string) {
		p, err := client(t).NetworkingV1().NetworkPolicies(ns).Get(context.Background(), isolation.PolicyName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got = p
		return cond(p), fmt.Sprintf("%+v", p.Spec)
	})
	return got
}

func TestNamespaceIsolation(t *testing.T) {
	ensureRuntimeClasses(t)
	ctx := context.Background()
	cs := client(t)
	iso, other := testNamespace(t), testNamespace(t)
	mustKubectl(t, "label", "namespace", iso, isolation.Label+"="+isolation.DefaultDeny)
	first := waitIsolationPolicy(t, iso, func(*networkingv1.NetworkPolicy) bool { return true })
	if first.Labels[isolation.ManagedByLabel] != isolation.ManagedBy {
		t.Errorf("managed policy labels %v", first.Labels)
	}

	webIP := runningPodIP(t, iso, webPod("web", ""))
	runningPodIP(t, iso, shellPod("near", "", idle))
	runningPodIP(t, other, shellPod("far", "", idle))

	waitReachable(t, iso, "near", webIP)
	waitBlocked(t, other, "far", webIP)
	if err := fetchFromHost(webIP); err != nil {
		t.Errorf("host → isolated pod %s: %v", webIP, err)
	}

	// Deleted: recreated. Opened up by hand: restored.
	nps := cs.NetworkingV1().NetworkPolicies(iso)
	if err := nps.Delete(ctx, isolation.PolicyName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recreated := waitIsolationPolicy(t, iso, func(p *networkingv1.NetworkPolicy) bool { return p.UID != first.UID })
	opened := recreated.DeepCopy()
	opened.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}} // from anywhere
	if _, err := nps.Update(ctx, opened, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIsolationPolicy(t, iso, func(p *networkingv1.NetworkPolicy) bool {
		return len(p.Spec.Ingress) == 1 && len(p.Spec.Ingress[0].From) > 0 && p.ResourceVersion != recreated.ResourceVersion
	})
	waitBlocked(t, other, "far", webIP)

	// An unknown value is refused with an event, and isolation goes.
	mustKubectl(t, "label", "--overwrite", "namespace", iso, isolation.Label+"=sometimes")
	waitFor(t, 30*time.Second, "policy gone and warning event", func() (bool, string) {
		_, err := nps.Get(ctx, isolation.PolicyName, metav1.GetOptions{})
		evs, _ := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=UnknownIsolation,involvedObject.name=" + iso})
		var n int
		if evs != nil {
			n = len(evs.Items)
		}
		return apierrors.IsNotFound(err) && n > 0, fmt.Sprintf("get: %v, events: %d", err, n)
	})
	// Label gone: reachable from anywhere.
	mustKubectl(t, "label", "namespace", iso, isolation.Label+"-")
	waitReachable(t, other, "far", webIP)
}

// TestTenantNamespaceIsolated checks that tenant namespaces are labelled
// isolated and get the managed policy.
func TestTenantNamespaceIsolated(t *testing.T) {
	name, _ := createTenant(t, "iso")
	ns, err := client(t).CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Labels[isolation.Label] != isolation.DefaultDeny {
		t.Errorf("tenant namespace %s labels %v, want %s=%s", name, ns.Labels, isolation.Label, isolation.DefaultDeny)
	}
	waitIsolationPolicy(t, name, func(*networkingv1.NetworkPolicy) bool { return true })
}

// netnsOf is the name of the network namespace (under /var/run/netns) that
// holds ip.
func netnsOf(t *testing.T, ip string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		addrs, _ := exec.Command("ip", "-n", f[0], "-4", "-o", "addr").Output()
		if strings.Contains(string(addrs), " "+ip+"/") {
			return f[0]
		}
	}
	t.Fatalf("no network namespace holds %s", ip)
	return ""
}

// fetchInNetns fetches http://ip:8080/ with the host's busybox nc run in
// the network namespace netns: it needs no apiserver and no agent.
func fetchInNetns(netns, ip string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	script := fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | %s nc -w 3 %s %d`, testimage.DefaultBusybox, ip, testimage.HTTPDPort)
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", netns, "sh", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), strings.TrimSpace(testimage.IndexHTML)) {
		return fmt.Errorf("in netns %s: %v: %q", netns, err, out)
	}
	return nil
}

// TestNetworkPolicyAcrossRestart checks fail-open and the re-sync: with the
// agent down its rules stay and traffic passes (--queue-bypass); started
// again, it enforces again.
func TestNetworkPolicyAcrossRestart(t *testing.T) {
	ensureRuntimeClasses(t)
	ns := testNamespace(t)
	webIP := runningPodIP(t, ns, webPod("web", ""))
	clientIP := runningPodIP(t, ns, shellPod("client", "", idle))
	clientNetns := netnsOf(t, clientIP)
	if _, err := client(t).NetworkingV1().NetworkPolicies(ns).Create(context.Background(), policy("web-deny", networkingv1.NetworkPolicySpec{
		PodSelector: appSelector("web"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
	}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBlocked(t, ns, "client", webIP)
	if err := fetchInNetns(clientNetns, webIP); err == nil {
		t.Fatalf("client's netns reached %s under deny-all while the agent runs", webIP)
	}

	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !strings.Contains(mangleRules(t), " "+webIP+"/32 ") {
		t.Errorf("the agent's rules for %s went with the agent", webIP)
	}
	if err := fetchInNetns(clientNetns, webIP); err != nil {
		t.Errorf("with the agent down, traffic should pass (fail open): %v", err)
	}
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	waitRunning(t, ns, "app=client", 1, time.Minute)
	waitBlocked(t, ns, "client", webIP)
}

// TestNetworkPolicyEndsConnections checks that a policy also ends
// connections opened before it: the agent forgets their conntrack entries,
// so their next packet is judged like a new connection's.
func TestNetworkPolicyEndsConnections(t *testing.T) {
	ensureRuntimeClasses(t)
	ns := testNamespace(t)
	sinkIP := runningPodIP(t, ns, shellPod("sink", "", "sleep 100000 | nc -l -p 9000 > /tmp/got"))
	runningPodIP(t, ns, shellPod("ticker", "", fmt.Sprintf("i=0; while :; do echo tick $i; i=$((i+1)); sleep 1; done | nc %s 9000", sinkIP)))
	received := func() int {
		out := execOut(t, ns, "sink", "sh", "-c", "cat /tmp/got | wc -l")
		var n int
		fmt.Sscan(strings.TrimSpace(out), &n)
		return n
	}
	waitFor(t, 30*time.Second, "ticks flowing", func() (bool, string) {
		n := received()
		return n >= 3, fmt.Sprint(n, " lines")
	})
	if _, err := client(t).NetworkingV1().NetworkPolicies(ns).Create(context.Background(), policy("sink-deny", networkingv1.NetworkPolicySpec{
		PodSelector: appSelector("sink"),
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
	}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	last := received()
	stable := 0
	waitFor(t, 30*time.Second, "ticks to stop after the deny", func() (bool, string) {
		time.Sleep(time.Second)
		n := received()
		if n == last {
			stable++
		} else {
			stable = 0
		}
		last = n
		return stable >= 4, fmt.Sprint(n, " lines")
	})
}
