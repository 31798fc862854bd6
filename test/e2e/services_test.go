package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// whoamiScript serves the pod's own name over HTTP on port 8080, so that a
// test can tell which endpoint answered.
const whoamiScript = "mkdir -p /tmp/www && hostname > /tmp/www/index.html && trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait"

// whoamiPodSpec is a pod that answers with its name on the port named http;
// ready says whether its readiness probe passes.
func whoamiPodSpec(ready bool) v1.PodSpec {
	grace := int64(1)
	probe := []string{"true"}
	if !ready {
		probe = []string{"false"}
	}
	return v1.PodSpec{
		TerminationGracePeriodSeconds: &grace,
		Containers: []v1.Container{{
			Name: "web", Image: image(testimage.Shell), Command: []string{"sh", "-c", whoamiScript},
			Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &v1.Probe{
				ProbeHandler:  v1.ProbeHandler{Exec: &v1.ExecAction{Command: probe}},
				PeriodSeconds: 1,
			},
		}},
	}
}

// askHTTP sends GET / to addr from the host and returns the body.
func askHTTP(addr string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return strings.TrimSpace(b.String()), nil
}

// httpAnswers asks addr n times and counts the answers.
func httpAnswers(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		body, err := askHTTP(addr)
		if err != nil {
			got["error: "+err.Error()]++
			continue
		}
		got[body]++
	}
	return got
}

func keys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// podHTTP sends GET / to host:port from inside a pod with busybox nc and
// returns the body (the last line of the response).
func podHTTP(t *testing.T, ns, pod, host string, port int) string {
	t.Helper()
	script := fmt.Sprintf("printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -w 3 %s %d", host, port)
	out := execOut(t, ns, pod, "sh", "-c", script)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func hostIPOfNode(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(mustKubectl(t, "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`))
}

// Services: ClusterIP (balanced, multi-port, targetPort by name, session
// affinity) from the host and from pods under every runtime class, the
// kubernetes Service from pods, and a LoadBalancer Service from the host
// that reaches only Ready pods and follows a scale-down. Then everything is
// deleted and no rule or tracked connection of it is left.
func TestServices(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	kc := client(t)
	replicas := int32(3)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "backend"}},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "backend", "tier": "web"}},
				Spec:       whoamiPodSpec(true),
			},
		},
	}
	if _, err := kc.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod the Services select that never becomes Ready.
	createPod(t, ns, &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "unready", Labels: map[string]string{"app": "unready", "tier": "web"}}, Spec: whoamiPodSpec(false)})
	backends := waitRunning(t, ns, "app=backend", 3, 90*time.Second)
	want := map[string]bool{}
	var podIPs []string
	for _, p := range backends {
		want[p.Name] = true
		podIPs = append(podIPs, p.Status.PodIP)
	}
	unready, err := kc.CoreV1().Pods(ns).Get(ctx, "unready", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podIPs = append(podIPs, unready.Status.PodIP)

	selector := map[string]string{"tier": "web"}
	web := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: v1.ServiceSpec{Selector: selector, Ports: []v1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			{Name: "alt", Port: 8081, TargetPort: intstr.FromInt32(8080)},
		}},
	}
	sticky := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "sticky"},
		Spec: v1.ServiceSpec{Selector: selector, SessionAffinity: v1.ServiceAffinityClientIP,
			Ports: []v1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	lbPort := int32(cluster.PickPort(func(p int) bool { return cluster.TCPFree("0.0.0.0", p) }))
	lb := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-lb"},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Selector: selector,
			Ports: []v1.ServicePort{{Port: lbPort, TargetPort: intstr.FromString("http")}}},
	}
	svcIPs := map[string]string{}
	for _, s := range []*v1.Service{web, sticky, lb} {
		created, err := kc.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service %s: %v", s.Name, err)
		}
		svcIPs[s.Name] = created.Spec.ClusterIP
	}
	webIP := svcIPs["web"]

	t.Run("ClusterIP from the host is balanced over the Ready endpoints", func(t *testing.T) {
		var got map[string]int
		waitFor(t, 30*time.Second, "every Ready endpoint answers on "+webIP+":80", func() (bool, string) {
			got = httpAnswers(t, net.JoinHostPort(webIP, "80"), 30)
			for name := range want {
				if got[name] == 0 {
					return false, fmt.Sprint(got)
				}
			}
			return len(got) == len(want), fmt.Sprint(got)
		})
		t.Logf("30 requests to %s:80: %v", webIP, got)
		if got := httpAnswers(t, net.JoinHostPort(webIP, "8081"), 5); len(got) == 0 || !allIn(got, want) {
			t.Errorf("second port 8081 answered %v", got)
		}
	})

	t.Run("sessionAffinity ClientIP sticks to one endpoint", func(t *testing.T) {
		addr := net.JoinHostPort(svcIPs["sticky"], "80")
		var got map[string]int
		waitFor(t, 30*time.Second, "sticky service answers", func() (bool, string) {
			got = httpAnswers(t, addr, 1)
			return allIn(got, want), fmt.Sprint(got)
		})
		got = httpAnswers(t, addr, 15)
		if len(got) != 1 || !allIn(got, want) {
			t.Errorf("15 requests with ClientIP affinity reached %v; want one endpoint", got)
		}
	})

	t.Run("from pods", func(t *testing.T) {
		forEachRuntime(t, func(t *testing.T, rc string) {
			name := "client"
			if rc != "" {
				name = "client-" + rc
			}
			createPod(t, ns, shellPod(name, rc, "sleep 3600"))
			waitRunning(t, ns, "app="+name, 1, 90*time.Second)
			seen := map[string]int{}
			for i := 0; i < 12; i++ {
				seen[podHTTP(t, ns, name, webIP, 80)]++
			}
			if !allIn(seen, want) || len(seen) < 2 {
				t.Errorf("12 requests from pod %s to %s:80 reached %v; want several of %v", name, webIP, seen, keys(boolMap(want)))
			}
			// By name, through cluster DNS (the kube-dns Service) and the
			// search path: svc, svc.ns and the full name.
			for _, host := range []string{"web", "web." + ns, "web." + ns + ".svc.cluster.local"} {
				if got := podHTTP(t, ns, name, host, 80); !want[got] {
					t.Errorf("pod %s to http://%s/: %q, want one of the backends", name, host, got)
				}
			}
			if out := execOut(t, ns, name, "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver "+kubeDNSIP(t)) || !strings.Contains(out, "search "+ns+".svc.cluster.local svc.cluster.local cluster.local") || !strings.Contains(out, "ndots:5") {
				t.Errorf("pod %s resolv.conf:\n%s", name, out)
			}
			// The kubernetes Service leads to the apiserver.
			kubeIP := strings.TrimSpace(mustKubectl(t, "-n", "default", "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"))
			out := execOut(t, ns, name, "sh", "-c", "echo | nc -w 3 "+kubeIP+" 443 >/dev/null; echo rc=$?")
			if !strings.Contains(out, "rc=0") {
				t.Errorf("pod %s cannot connect to the kubernetes Service %s:443: %s", name, kubeIP, out)
			}
		})
	})

	t.Run("pods reach the host", func(t *testing.T) {
		l, err := net.Listen("tcp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "host saw %s\n", r.RemoteAddr)
		})}
		go srv.Serve(l)
		defer srv.Close()
		port := l.Addr().(*net.TCPAddr).Port
		hostIP := hostIPOfNode(t)
		for _, pod := range []string{"client", "client-gvisor"} {
			if body := podHTTP(t, ns, pod, hostIP, port); !strings.HasPrefix(body, "host saw ") {
				t.Errorf("pod %s to the host's %s:%d: %q", pod, hostIP, port, body)
			} else {
				t.Logf("pod %s → host %s:%d: %s", pod, hostIP, port, body)
			}
		}
	})

	var ingress string
	t.Run("LoadBalancer reaches only Ready pods and follows scaling", func(t *testing.T) {
		waitFor(t, 30*time.Second, "load-balancer address", func() (bool, string) {
			s, err := kc.CoreV1().Services(ns).Get(ctx, "web-lb", metav1.GetOptions{})
			if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
				return false, fmt.Sprint(err)
			}
			ingress = s.Status.LoadBalancer.Ingress[0].IP
			return true, ""
		})
		addr := net.JoinHostPort(ingress, strconv.Itoa(int(lbPort)))
		var got map[string]int
		waitFor(t, 30*time.Second, "every Ready endpoint answers on "+addr, func() (bool, string) {
			got = httpAnswers(t, addr, 30)
			for name := range want {
				if got[name] == 0 {
					return false, fmt.Sprint(got)
				}
			}
			return allIn(got, want), fmt.Sprint(got)
		})
		t.Logf("30 requests to the load balancer %s: %v", addr, got)
		if got["unready"] > 0 {
			t.Errorf("the pod that is not Ready got traffic: %v", got)
		}
		mustKubectl(t, "-n", ns, "scale", "deployment", "backend", "--replicas=1")
		start := time.Now()
		waitFor(t, 30*time.Second, "one backend left behind "+addr, func() (bool, string) {
			got = httpAnswers(t, addr, 10)
			return len(got) == 1 && allIn(got, want), fmt.Sprint(got)
		})
		t.Logf("after scaling to 1, the load balancer reached only %v within %.1fs", keys(got), time.Since(start).Seconds())
	})

	t.Run("load-balancer port conflicts are reported", func(t *testing.T) {
		// The pool (the host's address) has lbPort taken by web-lb, and the
		// test process listens on another port of it.
		l, err := net.Listen("tcp", net.JoinHostPort(ingress, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		busy := int32(l.Addr().(*net.TCPAddr).Port)
		for name, port := range map[string]int32{"clash": lbPort, "busy": busy} {
			s := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Selector: selector,
				Ports: []v1.ServicePort{{Port: port, TargetPort: intstr.FromString("http")}}}}
			if _, err := kc.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		wantMsg := map[string]string{
			"clash": fmt.Sprintf("port %d/TCP is taken on %s by Service %s/web-lb", lbPort, ingress, ns),
			"busy":  fmt.Sprintf("port %d/TCP is in use on %s by a process of the host", busy, ingress),
		}
		for name, msg := range wantMsg {
			waitFor(t, 20*time.Second, "AllocationFailed event of "+name, func() (bool, string) {
				out, _ := kubectl(t, "-n", ns, "get", "events", "--field-selector", "involvedObject.name="+name+",reason=AllocationFailed", "-o", "jsonpath={.items[*].message}")
				return strings.Contains(out, msg), out
			})
			s, err := kc.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || len(s.Status.LoadBalancer.Ingress) != 0 {
				t.Errorf("service %s got an address despite the conflict: %v %v", name, s.Status.LoadBalancer.Ingress, err)
			}
			mustKubectl(t, "-n", ns, "delete", "service", name)
		}
		// web-lb still serves.
		if got := httpAnswers(t, net.JoinHostPort(ingress, strconv.Itoa(int(lbPort))), 3); !allIn(got, want) {
			t.Errorf("web-lb after the refused services: %v", got)
		}
	})

	t.Run("a tenant LoadBalancer has no node port and serves through its address", func(t *testing.T) {
		tns, tkc := createTenant(t, "tlb")
		mustTenantKubectl(t, tkc, podYAML("whoami", whoamiScript, "", "ports: [{name: http, containerPort: 8080}]"), "create", "-f", "-")
		waitRunning(t, tns, "app=whoami", 1, 2*time.Minute)
		port := cluster.PickPort(func(p int) bool { return cluster.TCPFree("0.0.0.0", p) })
		mustTenantKubectl(t, tkc, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec: {type: LoadBalancer, selector: {app: whoami}, ports: [{name: http, port: %d, targetPort: http}]}
`, port), "create", "-f", "-")
		s, err := kc.CoreV1().Services(tns).Get(ctx, "web-lb", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a := s.Spec.AllocateLoadBalancerNodePorts; a == nil || *a {
			t.Errorf("tenant LoadBalancer: allocateLoadBalancerNodePorts %v, want false", a)
		}
		if np := s.Spec.Ports[0].NodePort; np != 0 {
			t.Errorf("tenant LoadBalancer got nodePort %d; kube-proxy would open it on the host's address", np)
		}
		var tingress string
		waitFor(t, 30*time.Second, "load-balancer address of the tenant's Service", func() (bool, string) {
			s, err := kc.CoreV1().Services(tns).Get(ctx, "web-lb", metav1.GetOptions{})
			if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
				return false, fmt.Sprint(err)
			}
			tingress = s.Status.LoadBalancer.Ingress[0].IP
			return true, ""
		})
		addr := net.JoinHostPort(tingress, strconv.Itoa(port))
		waitFor(t, 30*time.Second, "the tenant's pod answers on "+addr, func() (bool, string) {
			got := httpAnswers(t, addr, 3)
			return got["whoami"] == 3, fmt.Sprint(got)
		})
		// The proxy's rules serve the address and no node port for the
		// tenant's Service; the admin's LoadBalancer (no policy) has one.
		rules, err := exec.Command("iptables-save", "-t", "nat").Output()
		if err != nil {
			t.Fatal(err)
		}
		nodePortRule := func(svc string) bool {
			for _, l := range strings.Split(string(rules), "\n") {
				if strings.HasPrefix(l, "-A KUBE-NODEPORTS ") && (strings.Contains(l, svc+`"`) || strings.Contains(l, svc+":") || strings.Contains(l, svc+" ")) {
					return true
				}
			}
			return false
		}
		if nodePortRule(tns + "/web-lb") {
			t.Errorf("kube-proxy has a node-port rule for the tenant's %s/web-lb", tns)
		}
		if !nodePortRule(ns + "/web-lb") {
			t.Errorf("kube-proxy has no node-port rule for the admin's %s/web-lb, so the check above proves nothing", ns)
		}
		// A tenant may not pick a node port or external IPs either.
		out, err := tenantKubectl(t, tkc, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: pick}
spec: {type: LoadBalancer, selector: {app: whoami}, externalIPs: [%s], ports: [{name: http, port: %d, nodePort: 30999}]}
`, tingress, port+1), "create", "-f", "-", "--dry-run=server")
		wantRefused(t, "tenant LoadBalancer with nodePort and externalIPs", out, err, "CCI tenant policy",
			`port "http": nodePort 30999 is not allowed`, "spec.externalIPs ["+tingress+"] is not allowed", "use type LoadBalancer")
		mustTenantKubectl(t, tkc, "", "delete", "service", "web-lb")
	})

	t.Run("a Service selecting nothing gets an event", func(t *testing.T) {
		mustKubectl(t, "-n", ns, "create", "service", "clusterip", "nobody", "--tcp=80:8080")
		// kubectl's selector for this service is app=nobody: no pod has it.
		waitFor(t, 30*time.Second, "NoEndpoints event", func() (bool, string) {
			out, _ := kubectl(t, "-n", ns, "get", "events", "--field-selector", "involvedObject.name=nobody,reason=NoEndpoints", "-o", "jsonpath={.items[*].message}")
			return strings.Contains(out, "selector app=nobody matches no pod in namespace "+ns), out
		})
		mustKubectl(t, "-n", ns, "delete", "service", "nobody")
	})

	t.Run("deleting leaves no rule or tracked connection", func(t *testing.T) {
		for _, s := range []string{"web", "sticky", "web-lb"} {
			mustKubectl(t, "-n", ns, "delete", "service", s)
		}
		mustKubectl(t, "-n", ns, "delete", "deployment", "backend")
		mustKubectl(t, "-n", ns, "delete", "pod", "unready", "client", "client-gvisor", "--wait=true")
		waitFor(t, 60*time.Second, "pods gone", func() (bool, string) {
			left := listPods(t, ns, "")
			return len(left) == 0, fmt.Sprint(len(left))
		})
		gone := []string{}
		for _, ip := range svcIPs {
			gone = append(gone, ip)
		}
		gone = append(gone, podIPs...)
		waitFor(t, 30*time.Second, "no rule or tracked connection of the deleted services and pods", func() (bool, string) {
			rules, err := exec.Command("iptables-save").Output()
			if err != nil {
				return false, err.Error()
			}
			var left []string
			for _, ip := range gone {
				if strings.Contains(string(rules), ip+"/32") || strings.Contains(string(rules), ip+":") {
					left = append(left, "rule for "+ip)
				}
			}
			if strings.Contains(string(rules), fmt.Sprintf("--dport %d ", lbPort)) {
				left = append(left, fmt.Sprintf("rule for load-balancer port %d", lbPort))
			}
			flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
			if err != nil {
				return false, err.Error()
			}
			for _, f := range flows {
				for _, ip := range gone {
					if f.Forward.SrcIP.String() == ip || f.Forward.DstIP.String() == ip || f.Reverse.SrcIP.String() == ip || f.Reverse.DstIP.String() == ip {
						left = append(left, "tracked "+f.String())
					}
				}
				if f.Forward.DstIP.String() == ingress && f.Forward.DstPort == uint16(lbPort) {
					left = append(left, "tracked "+f.String())
				}
			}
			return len(left) == 0, strings.Join(left, "\n")
		})
	})
}

func allIn(got map[string]int, want map[string]bool) bool {
	for k := range got {
		if !want[k] {
			return false
		}
	}
	return len(got) > 0
}

func boolMap(m map[string]bool) map[string]int {
	out := map[string]int{}
	for k := range m {
		out[k] = 1
	}
	return out
}

// A pod calls the API with client-go's in-cluster configuration: the
// kubernetes Service from its environment and its service-account token.
func TestInClusterClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ref, err := testimage.BuildInCluster(ctx, repoRoot(), t.TempDir(), cci.Registry, "")
	if err != nil {
		t.Fatal(err)
	}
	kubeIP := strings.TrimSpace(mustKubectl(t, "-n", "default", "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"))
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		createPod(t, ns, &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "incluster"},
			Spec: v1.PodSpec{
				RuntimeClassName: runtimeClassPtr(rc),
				RestartPolicy:    v1.RestartPolicyNever,
				Containers:       []v1.Container{{Name: "main", Image: ref}},
			},
		})
		pod := waitPodDone(t, ns, "incluster", 90*time.Second)
		logs, _ := kubectl(t, "-n", ns, "logs", "incluster")
		if pod.Status.Phase != v1.PodSucceeded {
			t.Fatalf("in-cluster client pod %s: %s", pod.Status.Phase, logs)
		}
		want := []string{"host=https://" + net.JoinHostPort(kubeIP, "443"), "user=system:serviceaccount:" + ns + ":default"}
		for _, w := range want {
			if !strings.Contains(logs, w) {
				t.Errorf("in-cluster client printed %q, want %q", logs, w)
			}
		}
		t.Logf("%s", strings.TrimSpace(logs))
	})
}
