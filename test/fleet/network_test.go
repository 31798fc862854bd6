package fleet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// webDeployment is httpd pods that serve their own name at /name and
// 300 kB of random bytes at /big (with its md5 at /big.md5), spread one
// per host at most skew apart.
func webDeployment(ns, name string, replicas int, extra string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  replicas: %[3]d
  selector: {matchLabels: {app: %[2]s}}
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: %[2]s}}}
      tolerations:
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 20}
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 20}
%[5]s      containers:
      - name: web
        image: %[4]s
        command: [sh, -c, 'hostname > /www/name; head -c 300000 /dev/urandom > /www/big; md5sum /www/big | cut -d" " -f1 > /www/big.md5; exec httpd -f -p 8080 -h /www']
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
`, ns, name, replicas, image(testimage.HTTPD), extra)
}

// podOn runs a shell pod pinned to a host.
func podOn(t *testing.T, ns, name, host string, labels string) {
	t.Helper()
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: sh, image: %s, command: [sleep, "3600"]}
`, name, ns, labels, host, image(testimage.Shell)))
}

func byHost(pods []v1.Pod) map[string][]v1.Pod {
	out := map[string][]v1.Pod{}
	for _, p := range pods {
		out[p.Spec.NodeName] = append(out[p.Spec.NodeName], p)
	}
	return out
}

// A pod on host-1 reaches pods on every host by IP, with payloads far
// larger than one segment (the overlay's MTU leaves no black hole).
func TestPodToPodAcrossHosts(t *testing.T) {
	ns := namespace(t, "pod2pod")
	apply(t, webDeployment(ns, "web", 6, ""))
	pods := waitRunning(t, ns, "app=web", 6, 3*time.Minute)
	spread := byHost(pods)
	for h, ps := range spread {
		t.Logf("%s: %d pods", h, len(ps))
	}
	if len(spread) != hosts {
		t.Fatalf("6 replicas landed on %d hosts, want %d: %v", len(spread), hosts, spread)
	}
	client := spread["host-1"][0]
	for _, p := range pods {
		name, err := httpGet(t, ns, client.Name, p.Status.PodIP+":8080", "/name")
		if err != nil || strings.TrimSpace(name) != p.Name {
			t.Errorf("%s (host-1) → %s (%s, %s)/name: %q %v", client.Name, p.Name, p.Spec.NodeName, p.Status.PodIP, name, err)
			continue
		}
		if p.Spec.NodeName == client.Spec.NodeName {
			continue
		}
		want, err := httpGet(t, ns, client.Name, p.Status.PodIP+":8080", "/big.md5")
		if err != nil {
			t.Fatal(err)
		}
		out := mustKubectl(t, "exec", "-n", ns, client.Name, "--", "sh", "-c",
			fmt.Sprintf("printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc -w 5 %s 8080 | tail -c 300000 | md5sum", p.Status.PodIP))
		if got := strings.Fields(out); len(got) == 0 || got[0] != strings.TrimSpace(want) {
			t.Errorf("300 kB from %s on %s arrived as md5 %q, sent %q", p.Name, p.Spec.NodeName, out, want)
		}
	}
}

// A pod of an operator's namespace reaches the pods of other hosts with
// its very first packet: the tenant containment trusts it from the moment
// it has its IP, not from when the API shows it (which used to refuse
// such a pod's first connections).
func TestFirstPacketAcrossHosts(t *testing.T) {
	ns := namespace(t, "first-packet")
	apply(t, webDeployment(ns, "web", 3, ""))
	pods := waitRunning(t, ns, "app=web", 3, 3*time.Minute)
	var targets []v1.Pod
	for _, p := range pods {
		if p.Spec.NodeName != "host-1" {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		t.Fatalf("no web pod off host-1: %v", byHost(pods))
	}
	for i, p := range targets {
		apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: first-%d, namespace: %s}
spec:
  nodeName: host-1
  restartPolicy: Never
  containers:
  - name: sh
    image: %s
    command: [sh, -c, 'printf "GET /name HTTP/1.0\r\n\r\n" | nc -w 5 %s 8080']
`, i, ns, image(testimage.Shell), p.Status.PodIP))
	}
	for i, p := range targets {
		name := fmt.Sprintf("first-%d", i)
		waitFor(t, 2*time.Minute, name+" done", func() (bool, string) {
			got, err := client(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return got.Status.Phase == v1.PodSucceeded || got.Status.Phase == v1.PodFailed, string(got.Status.Phase)
		})
		out, _ := kubectl(t, "logs", "-n", ns, name)
		if !strings.Contains(out, p.Name) {
			t.Errorf("%s (host-1), first connection to %s (%s, %s): %q; want its name", name, p.Name, p.Spec.NodeName, p.Status.PodIP, out)
		}
	}
}

// A pod on host-1 reaches a Service whose endpoints are all on host-2
// and host-3, by ClusterIP and by DNS name.
func TestServiceAcrossHosts(t *testing.T) {
	ns := namespace(t, "svc")
	apply(t, webDeployment(ns, "backend", 2, `      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [host-2, host-3]}]
`))
	mustKubectl(t, "expose", "-n", ns, "deployment", "backend", "--port", "80", "--target-port", "8080")
	backends := waitRunning(t, ns, "app=backend", 2, 3*time.Minute)
	names := map[string]string{}
	for _, p := range backends {
		if p.Spec.NodeName == "host-1" {
			t.Fatalf("backend %s on host-1 despite its affinity", p.Name)
		}
		names[p.Name] = p.Spec.NodeName
	}
	podOn(t, ns, "client", "host-1", "role: client")
	waitRunning(t, ns, "role=client", 1, 2*time.Minute)
	svc, err := client(t).CoreV1().Services(ns).Get(context.Background(), "backend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{svc.Spec.ClusterIP + ":80", "backend." + ns + ".svc.cluster.local:80"} {
		seen := map[string]bool{}
		for i := 0; i < 12; i++ {
			body, err := httpGet(t, ns, "client", addr, "/name")
			name := strings.TrimSpace(body)
			if _, ok := names[name]; err != nil || !ok {
				t.Fatalf("client on host-1 → %s: %q %v", addr, body, err)
			}
			seen[name] = true
		}
		t.Logf("%s answered from %v", addr, seen)
	}
	// The control plane reaches pods on the hosts too (what admission
	// webhooks, aggregated APIs and the apiserver's proxy need).
	for _, p := range backends {
		out := mustKubectl(t, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8080/proxy/name", ns, p.Name))
		if strings.TrimSpace(out) != p.Name {
			t.Errorf("apiserver proxy to pod %s on %s: %q", p.Name, p.Spec.NodeName, out)
		}
	}
	if out := mustKubectl(t, "get", "--raw", "/api/v1/namespaces/"+ns+"/services/backend:80/proxy/name"); names[strings.TrimSpace(out)] == "" {
		t.Errorf("apiserver proxy to Service backend: %q", out)
	}
}

// The machine reaches a LoadBalancer address, and the pods behind it on
// every host answer.
func TestLoadBalancerReachesEveryHost(t *testing.T) {
	lbReachesEveryHost(t, namespace(t, "lb"), "8090")
}

// The same for a namespace isolated as a tenant's is (its managed policy
// admits the hosts only): a host that forwards the Service's traffic to a
// pod on another host masquerades it to its overlay device's address,
// which the policy must count as the host's (it did not: the tenant's
// LoadBalancer answered only from the pods of the host it reached).
func TestIsolatedLoadBalancerReachesEveryHost(t *testing.T) {
	ns := namespace(t, "lb-isolated")
	mustKubectl(t, "label", "namespace", ns, "cci.io/isolation=default-deny")
	waitFor(t, time.Minute, "the namespace's managed policy", func() (bool, string) {
		out, _ := kubectl(t, "get", "networkpolicy", "-n", ns, "-o", "name")
		return strings.TrimSpace(out) != "", out
	})
	lbReachesEveryHost(t, ns, "8091")
}

func lbReachesEveryHost(t *testing.T, ns, port string) {
	t.Helper()
	apply(t, webDeployment(ns, "front", 3, ""))
	pods := waitRunning(t, ns, "app=front", 3, 3*time.Minute)
	if len(byHost(pods)) != hosts {
		t.Fatalf("3 replicas with a hard spread landed on %d hosts", len(byHost(pods)))
	}
	mustKubectl(t, "expose", "-n", ns, "deployment", "front", "--type", "LoadBalancer", "--port", port, "--target-port", "8080")
	var ingress string
	waitFor(t, time.Minute, "a LoadBalancer address", func() (bool, string) {
		svc, err := client(t).CoreV1().Services(ns).Get(context.Background(), "front", metav1.GetOptions{})
		if err != nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
			return false, fmt.Sprint(err)
		}
		ingress = svc.Status.LoadBalancer.Ingress[0].IP
		return true, ""
	})
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	seen := map[string]int{}
	waitFor(t, time.Minute, "answers from the pods of all 3 hosts", func() (bool, string) {
		resp, err := hc.Get("http://" + ingress + ":" + port + "/name")
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[strings.TrimSpace(string(body))]++
		return len(seen) == hosts, fmt.Sprint(seen)
	})
	for _, p := range pods {
		if seen[p.Name] == 0 {
			t.Errorf("pod %s on %s never answered at %s:%s: %v", p.Name, p.Spec.NodeName, ingress, port, seen)
		}
	}
	t.Logf("LoadBalancer %s:%s answered from %v", ingress, port, seen)
}

// A NetworkPolicy on host-2 judges traffic from other hosts by the real
// source pod: it lets host-3's client in and keeps host-1's out.
func TestNetworkPolicyAcrossHosts(t *testing.T) {
	ns := namespace(t, "netpol")
	apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: server, namespace: %s, labels: {app: server}}
spec:
  nodeName: host-2
  terminationGracePeriodSeconds: 1
  containers:
  - {name: web, image: %s, readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}}
`, ns, image(testimage.HTTPD)))
	podOn(t, ns, "client-a", "host-1", "role: a")
	podOn(t, ns, "client-c", "host-3", "role: c")
	server := waitRunning(t, ns, "app=server", 1, 2*time.Minute)[0]
	waitRunning(t, ns, "role", 2, 2*time.Minute)
	addr := server.Status.PodIP + ":8080"
	for _, c := range []string{"client-a", "client-c"} {
		if body, err := httpGet(t, ns, c, addr, "/"); err != nil || body != testimage.IndexHTML {
			t.Fatalf("%s → server before any policy: %q %v", c, body, err)
		}
	}
	apply(t, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-c, namespace: %s}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: c}}}]
`, ns))
	waitFor(t, 30*time.Second, "host-1's client refused", func() (bool, string) {
		body, err := httpGet(t, ns, "client-a", addr, "/")
		return err != nil || body != testimage.IndexHTML, body
	})
	for i := 0; i < 3; i++ {
		if body, err := httpGet(t, ns, "client-c", addr, "/"); err != nil || body != testimage.IndexHTML {
			t.Fatalf("host-3's client, allowed by the policy: %q %v", body, err)
		}
		if body, err := httpGet(t, ns, "client-a", addr, "/"); err == nil && body == testimage.IndexHTML {
			t.Fatalf("host-1's client, not allowed, got through")
		}
	}
}
