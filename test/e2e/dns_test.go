package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	cdns "github.com/cci-project/cci/internal/dns"
	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// dnsQuery asks the cluster DNS for name's records of type qtype over
// network ("udp" or "tcp").
func dnsQuery(t *testing.T, network, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, cci.DNSAddr)
	return r, err
}

// kubeDNSIP is the kube-dns Service's address: the 10th of the suite's
// Service range (10.43.0.10 for `cci up`'s default range).
func kubeDNSIP(t *testing.T) string {
	t.Helper()
	ip, err := cdns.ClusterIP(cci.ServiceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	return ip.String()
}

// answers formats the answer section's data for messages: "A 10.43.0.1".
func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, "A "+v.A.String())
		case *dns.CNAME:
			out = append(out, "CNAME "+v.Target)
		case *dns.SRV:
			out = append(out, fmt.Sprintf("SRV %d %s", v.Port, v.Target))
		case *dns.PTR:
			out = append(out, "PTR "+v.Ptr)
		default:
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out
}

// waitAnswer polls the DNS until name's answer (over UDP and TCP) is rcode
// with exactly want (as answers formats them; nil: any).
func waitAnswer(t *testing.T, name string, qtype uint16, rcode int, want []string) *dns.Msg {
	t.Helper()
	slices.Sort(want)
	var last *dns.Msg
	waitFor(t, time.Minute, fmt.Sprintf("%s %s to be %s %q", dns.TypeToString[qtype], name, dns.RcodeToString[rcode], want), func() (bool, string) {
		for _, network := range []string{"udp", "tcp"} {
			r, err := dnsQuery(t, network, name, qtype)
			if err != nil {
				return false, network + ": " + err.Error()
			}
			got := answers(r)
			if r.Rcode != rcode || (want != nil && !slices.Equal(got, want)) {
				return false, fmt.Sprintf("%s: %s %q", network, dns.RcodeToString[r.Rcode], got)
			}
			last = r
		}
		return true, ""
	})
	return last
}

// The kube-dns Service holds the Service range's 10th address and points
// at the DNS server's listen address, which answers for the cluster.
func TestClusterDNSService(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	svc, err := c.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := kubeDNSIP(t); svc.Spec.ClusterIP != want {
		t.Errorf("kube-dns clusterIP = %s, want %s (the 10th of %s)", svc.Spec.ClusterIP, want, cci.ServiceCIDR)
	}
	if svc.Spec.Selector != nil {
		t.Errorf("kube-dns has a selector %v; its endpoints are cci's", svc.Spec.Selector)
	}
	if svc.Labels["k8s-app"] != "kube-dns" || svc.Labels["kubernetes.io/name"] != "CoreDNS" {
		t.Errorf("kube-dns labels = %v", svc.Labels)
	}
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, fmt.Sprintf("%s/%s/%d", p.Name, p.Protocol, p.Port))
	}
	if strings.Join(ports, ",") != "dns/UDP/53,dns-tcp/TCP/53" {
		t.Errorf("kube-dns ports = %v", ports)
	}

	host, port, _ := net.SplitHostPort(cci.DNSAddr)
	slice, err := c.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if slice.Labels[discoveryv1.LabelServiceName] != "kube-dns" || slice.Labels[discoveryv1.LabelManagedBy] != "cci.io-dns" {
		t.Errorf("EndpointSlice labels = %v", slice.Labels)
	}
	if len(slice.Endpoints) != 1 || !slices.Equal(slice.Endpoints[0].Addresses, []string{host}) {
		t.Errorf("EndpointSlice endpoints = %+v, want one at %s", slice.Endpoints, host)
	}
	var slicePorts []string
	for _, p := range slice.Ports {
		slicePorts = append(slicePorts, fmt.Sprintf("%s/%s/%d", *p.Name, *p.Protocol, *p.Port))
	}
	if want := "dns/UDP/" + port + ",dns-tcp/TCP/" + port; strings.Join(slicePorts, ",") != want {
		t.Errorf("EndpointSlice ports = %v, want %s", slicePorts, want)
	}

	k, err := c.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitAnswer(t, "kubernetes.default.svc.cluster.local", dns.TypeA, dns.RcodeSuccess, []string{"A " + k.Spec.ClusterIP})
	// Reverse lookup of a Service address.
	rev, _ := dns.ReverseAddr(kubeDNSIP(t))
	waitAnswer(t, rev, dns.TypePTR, dns.RcodeSuccess, []string{"PTR kube-dns.kube-system.svc.cluster.local."})
}

// Names of a ClusterIP Service, a headless Service (its ready pods and
// named ports), an ExternalName Service and pods; unknown names are
// NXDOMAIN.
func TestClusterDNSRecords(t *testing.T) {
	ns := testNamespace(t)
	ctx := context.Background()
	c := client(t)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []v1.Container{{
						Name: "httpd", Image: image(testimage.HTTPD),
						Ports: []v1.ContainerPort{{Name: "http", ContainerPort: testimage.HTTPDPort}},
					}},
				},
			},
		},
	}
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	httpPort := v1.ServicePort{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")}
	for _, svc := range []*v1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: v1.ServiceSpec{Selector: labels, Ports: []v1.ServicePort{httpPort}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-headless"}, Spec: v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, Selector: labels, Ports: []v1.ServicePort{httpPort}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "www.example.com"}},
	} {
		if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Service %s: %v", svc.Name, err)
		}
	}
	web, err := c.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods := waitRunning(t, ns, "app=web", 2, 2*time.Minute)
	var podIPs []string
	for _, p := range pods {
		podIPs = append(podIPs, "A "+p.Status.PodIP)
	}

	domain := ns + ".svc.cluster.local"
	waitAnswer(t, "web."+domain, dns.TypeA, dns.RcodeSuccess, []string{"A " + web.Spec.ClusterIP})
	waitAnswer(t, "web-headless."+domain, dns.TypeA, dns.RcodeSuccess, podIPs)

	// One SRV record per ready pod for the named port, each target a name
	// that resolves to one of the pods.
	r := waitAnswer(t, "_http._tcp.web-headless."+domain, dns.TypeSRV, dns.RcodeSuccess, nil)
	var targets []string
	for _, rr := range r.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		// A headless Service's SRV records carry the endpoints' port (the
		// pods' named port), not the Service's.
		if srv.Port != testimage.HTTPDPort {
			t.Errorf("SRV %s port = %d, want the pods' %d", srv.Target, srv.Port, testimage.HTTPDPort)
		}
		targets = append(targets, srv.Target)
	}
	if len(targets) != len(pods) {
		t.Fatalf("SRV targets %q, want one per pod (%d)", targets, len(pods))
	}
	var targetIPs []string
	for _, target := range targets {
		r, err := dnsQuery(t, "udp", target, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		targetIPs = append(targetIPs, answers(r)...)
	}
	slices.Sort(targetIPs)
	slices.Sort(podIPs)
	if !slices.Equal(targetIPs, podIPs) {
		t.Errorf("SRV targets %q resolve to %q, want the pods' %q", targets, targetIPs, podIPs)
	}
	// The ClusterIP Service's named port, too.
	waitAnswer(t, "_http._tcp.web."+domain, dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 80 web." + domain + "."})

	// The ExternalName is a CNAME (the target is outside the cluster and
	// this host may have no resolver for it, so only the CNAME is checked).
	r, err = dnsQuery(t, "udp", "ext."+domain, dns.TypeCNAME)
	if err != nil {
		t.Fatal(err)
	}
	if got := answers(r); !slices.Equal(got, []string{"CNAME www.example.com."}) {
		t.Errorf("ext: %s %q, want CNAME www.example.com.", dns.RcodeToString[r.Rcode], got)
	}

	// A pod by its dashed address.
	podIP := pods[0].Status.PodIP
	waitAnswer(t, strings.ReplaceAll(podIP, ".", "-")+"."+ns+".pod.cluster.local", dns.TypeA, dns.RcodeSuccess, []string{"A " + podIP})

	for _, name := range []string{"nope." + domain, "nope.svc.cluster.local", "web.no-such-namespace.svc.cluster.local"} {
		r, err := dnsQuery(t, "udp", name, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: %s %q, want NXDOMAIN", name, dns.RcodeToString[r.Rcode], answers(r))
		}
	}

	// Scaled down to one pod, the headless name follows.
	scale, err := c.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 1
	if _, err := c.AppsV1().Deployments(ns).UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	left := waitRunning(t, ns, "app=web", 1, 2*time.Minute)
	t.Logf("scaled down to one pod in %.1fs", time.Since(begin).Seconds())
	// CoreDNS's cache (30 s, as upstream's default Corefile) may hold the
	// two-pod answer that long.
	waitAnswer(t, "web-headless."+domain, dns.TypeA, dns.RcodeSuccess, []string{"A " + left[0].Status.PodIP})
	t.Logf("the headless name followed in %.1fs", time.Since(begin).Seconds())
}

// A pod reaches the DNS server at its listen address (the host's IP), the
// address kube-proxy sends the kube-dns Service's traffic to, and gets
// cluster answers there.
func TestClusterDNSFromPod(t *testing.T) {
	ns := testNamespace(t)
	k, err := client(t).CoreV1().Services("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	forEachRuntime(t, func(t *testing.T, rc string) {
		name := "dns-client"
		if rc != "" {
			name += "-" + rc
		}
		createPod(t, ns, shellPod(name, rc, "sleep 3600"))
		waitRunning(t, ns, "app="+name, 1, 2*time.Minute)
		out := execOut(t, ns, name, "nslookup", "-type=a", "kubernetes.default.svc.cluster.local", cci.DNSAddr)
		if !strings.Contains(out, "Address: "+k.Spec.ClusterIP) {
			t.Errorf("nslookup from pod %s (runtime %q) against %s:\n%s\nwant the address %s", name, rc, cci.DNSAddr, out, k.Spec.ClusterIP)
		}
	})
}

// The kube-dns Service and its EndpointSlice come back when deleted.
func TestClusterDNSServiceKept(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	host, port, _ := net.SplitHostPort(cci.DNSAddr)
	if err := c.DiscoveryV1().EndpointSlices("kube-system").Delete(ctx, "kube-dns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.CoreV1().Services("kube-system").Delete(ctx, "kube-dns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "kube-dns Service and EndpointSlice back", func() (bool, string) {
		svc, err := c.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if svc.Spec.ClusterIP != kubeDNSIP(t) {
			return false, "clusterIP " + svc.Spec.ClusterIP
		}
		slice, err := c.DiscoveryV1().EndpointSlices("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if len(slice.Endpoints) != 1 || len(slice.Ports) != 2 || slice.Endpoints[0].Addresses[0] != host || strconv.Itoa(int(*slice.Ports[0].Port)) != port {
			return false, fmt.Sprintf("slice %+v %+v", slice.Endpoints, slice.Ports)
		}
		return true, ""
	})
}

// Restarted on another port, the server moves the kube-dns endpoint to it;
// the Service keeps its address.
func TestClusterDNSRestartOnAnotherPort(t *testing.T) {
	if err := cci.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v", err)
	}
	old := cci.DNSAddr
	cci.DNSAddr = cluster.FreeDNSAddr()
	for i, a := range cci.Args {
		if a == old {
			cci.Args[i] = cci.DNSAddr
		}
	}
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	_, port, _ := net.SplitHostPort(cci.DNSAddr)
	c := client(t)
	slice, err := c.DiscoveryV1().EndpointSlices("kube-system").Get(context.Background(), "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range slice.Ports {
		if strconv.Itoa(int(*p.Port)) != port {
			t.Errorf("EndpointSlice port %s = %d after a restart on %s", *p.Name, *p.Port, cci.DNSAddr)
		}
	}
	svc, err := c.CoreV1().Services("kube-system").Get(context.Background(), "kube-dns", metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != kubeDNSIP(t) {
		t.Errorf("kube-dns after restart: %v %v", svc.Spec.ClusterIP, err)
	}
	k, err := c.CoreV1().Services("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Ready means DNS answers: no wait here.
	r, err := dnsQuery(t, "udp", "kubernetes.default.svc.cluster.local", dns.TypeA)
	if err != nil || !slices.Equal(answers(r), []string{"A " + k.Spec.ClusterIP}) {
		t.Errorf("kubernetes.default right after ready: %v %v", r, err)
	}
}

// A second server on a taken DNS port fails with a message naming the
// address and the flag. It uses a data folder and ports of its own.
func TestClusterDNSPortTaken(t *testing.T) {
	ports := cluster.FreePorts(4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, cci.Bin, "server",
		"--data-dir", t.TempDir(),
		"--api-port", strconv.Itoa(ports[0]),
		"--usage-port", strconv.Itoa(ports[1]),
		"--etcd-client-port", strconv.Itoa(ports[2]),
		"--etcd-peer-port", strconv.Itoa(ports[3]),
		"--registry-addr", "127.0.0.1:0",
		"--dns-address", cci.DNSAddr,
	).CombinedOutput()
	if err == nil {
		t.Fatalf("a second server on the DNS address %s started:\n%s", cci.DNSAddr, out)
	}
	for _, want := range []string{"dns: listen udp " + cci.DNSAddr, "address already in use", "--dns-address"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
