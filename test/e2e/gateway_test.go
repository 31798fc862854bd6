package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/cci-project/cci/internal/gateway"
	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

func gatewayClient(t *testing.T, kubeconfig string) gatewayclient.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	gc, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return gc
}

// colorScript serves its color as the body of every path on port 8080.
func colorScript(color string) string {
	return fmt.Sprintf("mkdir -p /tmp/www && echo %s > /tmp/www/index.html && trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait", color)
}

// colorApp makes a Deployment and a Service web-<color> (port 80) whose
// pods answer with their color.
func colorApp(t *testing.T, ns, color string) {
	t.Helper()
	app(t, ns, color, colorScript(color))
}

// app makes a Deployment and a Service web-<color> (port 80) running script.
func app(t *testing.T, ns, color, script string) {
	t.Helper()
	ctx := context.Background()
	kc := client(t)
	one := int32(1)
	grace := int64(1)
	labels := map[string]string{"app": "web", "color": color}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + color},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []v1.Container{{
					Name: "web", Image: image(testimage.Shell), Command: []string{"sh", "-c", script},
					Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
	if _, err := kc.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-" + color}, Spec: v1.ServiceSpec{Selector: labels,
		Ports: []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitGateway waits until a Gateway is Programmed and returns its address.
func waitGateway(t *testing.T, gc gatewayclient.Interface, ns, name string) string {
	t.Helper()
	var addr string
	waitFor(t, 60*time.Second, "Gateway "+ns+"/"+name+" Programmed with an address", func() (bool, string) {
		g, err := gc.GatewayV1().Gateways(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		acc := meta.FindStatusCondition(g.Status.Conditions, string(gatewayv1.GatewayConditionAccepted))
		prog := meta.FindStatusCondition(g.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed))
		if acc == nil || acc.Status != metav1.ConditionTrue || prog == nil || prog.Status != metav1.ConditionTrue || len(g.Status.Addresses) == 0 {
			return false, fmt.Sprintf("%+v", g.Status)
		}
		addr = g.Status.Addresses[0].Value
		return prog.ObservedGeneration == g.Generation, ""
	})
	return addr
}

// routeCondition waits until the HTTPRoute's parent status has a
// condition of that type, status and reason, and returns its message.
func routeCondition(t *testing.T, gc gatewayclient.Interface, ns, name string, typ gatewayv1.RouteConditionType, status metav1.ConditionStatus, reason gatewayv1.RouteConditionReason) string {
	t.Helper()
	var msg string
	waitFor(t, 60*time.Second, fmt.Sprintf("HTTPRoute %s/%s %s=%s (%s)", ns, name, typ, status, reason), func() (bool, string) {
		r, err := gc.GatewayV1().HTTPRoutes(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range r.Status.Parents {
			c := meta.FindStatusCondition(p.Conditions, string(typ))
			if c != nil && c.Status == status && c.Reason == string(reason) && c.ObservedGeneration == r.Generation {
				msg = c.Message
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", r.Status.Parents)
	})
	return msg
}

// gatewayHTTP keeps connections to the gateway (its proxy is Go's server).
var gatewayHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// ask sends GET path with that Host to the gateway; it returns the status
// and the trimmed body.
func ask(addr, host, path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := gatewayHTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// tally sends n requests and counts the answers ("200 blue", "500 …").
func tally(addr, host, path string, n int) map[string]int {
	got := map[string]int{}
	for range n {
		code, body, err := ask(addr, host, path)
		switch {
		case err != nil:
			got["error"]++
		case code == 200:
			got[body]++
		default:
			got[strconv.Itoa(code)]++
		}
	}
	return got
}

func setWeights(t *testing.T, ns string, blue, green int) {
	t.Helper()
	mustKubectl(t, "-n", ns, "patch", "httproute", "shop", "--type=json", "-p",
		fmt.Sprintf(`[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":%d},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":%d}]`, blue, green))
}

// The Gateway API: a Gateway of class cci gets an address of the
// load-balancer pool and Programmed; an HTTPRoute sends shop.example to
// blue, then 90/10, then to green while clients send requests all along,
// none of which fails; a route to a missing Service says BackendNotFound
// and fails only that backend's share with 500; a bad regular expression
// refuses its route; the proxy's per-route metrics count the requests.
func TestGateway(t *testing.T) {
	ns := testNamespace(t)
	gc := gatewayClient(t, cci.Kubeconfig)
	colorApp(t, ns, "blue")
	colorApp(t, ns, "green")

	gcls, err := gc.GatewayV1().GatewayClasses().Get(context.Background(), "cci", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("GatewayClass cci: %v", err)
	}
	if c := meta.FindStatusCondition(gcls.Status.Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("GatewayClass cci not Accepted: %+v", gcls.Status)
	}

	// An uncommon port: other clusters on this machine share the host address.
	port := cluster.PickPort(func(p int) bool { return cluster.TCPFree("0.0.0.0", p) })
	mustTenantKubectl(t, cci.Kubeconfig, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shop, namespace: %[1]s}
spec:
  gatewayClassName: cci
  listeners: [{name: http, protocol: HTTP, port: %[2]d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: %[1]s}
spec:
  parentRefs: [{name: shop}]
  hostnames: [shop.example]
  rules:
  - backendRefs:
    - {name: web-blue, port: 80, weight: 100}
    - {name: web-green, port: 80, weight: 0}
`, ns, port), "apply", "-f", "-")
	addr := net.JoinHostPort(waitGateway(t, gc, ns, "shop"), strconv.Itoa(port))
	routeCondition(t, gc, ns, "shop", gatewayv1.RouteConditionAccepted, metav1.ConditionTrue, gatewayv1.RouteReasonAccepted)
	routeCondition(t, gc, ns, "shop", gatewayv1.RouteConditionResolvedRefs, metav1.ConditionTrue, gatewayv1.RouteReasonResolvedRefs)
	g, _ := gc.GatewayV1().Gateways(ns).Get(context.Background(), "shop", metav1.GetOptions{})
	if len(g.Status.Listeners) != 1 || g.Status.Listeners[0].AttachedRoutes != 1 ||
		!meta.IsStatusConditionTrue(g.Status.Listeners[0].Conditions, "Programmed") || !meta.IsStatusConditionTrue(g.Status.Listeners[0].Conditions, "Accepted") {
		t.Errorf("listener status: %+v", g.Status.Listeners)
	}

	waitFor(t, 90*time.Second, "shop.example answers blue through "+addr, func() (bool, string) {
		got := tally(addr, "shop.example", "/", 10)
		return got["blue"] == 10, fmt.Sprint(got)
	})
	waitRunning(t, ns, "color=green", 1, 90*time.Second)
	if got := tally(addr, "shop.example", "/", 50); got["blue"] != 50 {
		t.Errorf("weights 100/0: %v, want 50 blue", got)
	}
	if code, _, err := ask(addr, "other.example", "/"); err != nil || code != 404 {
		t.Errorf("a host no route serves: %d %v, want 404", code, err)
	}

	t.Run("weights shift under load without a failed request", func(t *testing.T) {
		var sent, failed atomic.Int64
		var mu sync.Mutex
		var failures []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
		defer stopClients()
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, body, err := ask(addr, "shop.example", "/")
					sent.Add(1)
					if err != nil || code != 200 || body != "blue" && body != "green" {
						failed.Add(1)
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%d %q %v", code, body, err))
						mu.Unlock()
					}
				}
			}()
		}
		setWeights(t, ns, 90, 10)
		waitFor(t, 30*time.Second, "green takes part of the traffic", func() (bool, string) {
			got := tally(addr, "shop.example", "/", 20)
			return got["green"] > 0, fmt.Sprint(got)
		})
		got := tally(addr, "shop.example", "/", 400)
		t.Logf("weights 90/10, 400 requests: %v", got)
		// 10 % of 400 is 40, with a standard deviation of 6.
		if got["green"] < 16 || got["green"] > 70 || got["blue"]+got["green"] != 400 {
			t.Errorf("weights 90/10: %v, want about 40 green of 400", got)
		}
		setWeights(t, ns, 0, 100)
		waitFor(t, 30*time.Second, "every request goes to green", func() (bool, string) {
			got := tally(addr, "shop.example", "/", 20)
			return got["green"] == 20, fmt.Sprint(got)
		})
		if got := tally(addr, "shop.example", "/", 100); got["green"] != 100 {
			t.Errorf("weights 0/100: %v, want 100 green", got)
		}
		stopClients()
		t.Logf("%d requests from 4 clients during the shifts, %d failed", sent.Load(), failed.Load())
		if failed.Load() != 0 {
			t.Errorf("%d of %d requests failed during the shifts: %v", failed.Load(), sent.Load(), failures[:min(len(failures), 10)])
		}
	})

	t.Run("a route to a missing Service fails only that backend's share", func(t *testing.T) {
		mustTenantKubectl(t, cci.Kubeconfig, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: %s}
spec:
  parentRefs: [{name: shop}]
  hostnames: [broken.example]
  rules:
  - backendRefs:
    - {name: web-blue, port: 80, weight: 50}
    - {name: no-such-service, port: 80, weight: 50}
`, ns), "apply", "-f", "-")
		msg := routeCondition(t, gc, ns, "broken", gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, gatewayv1.RouteReasonBackendNotFound)
		if !strings.Contains(msg, "no-such-service") {
			t.Errorf("ResolvedRefs message %q does not name the missing Service", msg)
		}
		routeCondition(t, gc, ns, "broken", gatewayv1.RouteConditionAccepted, metav1.ConditionTrue, gatewayv1.RouteReasonAccepted)
		got := tally(addr, "broken.example", "/", 60)
		t.Logf("broken.example, 60 requests: %v", got)
		if got["500"] == 0 || got["blue"] == 0 || got["500"]+got["blue"] != 60 {
			t.Errorf("route with a missing backend: %v, want blue and 500 about half each", got)
		}
		if got := tally(addr, "shop.example", "/", 20); got["green"] != 20 {
			t.Errorf("the other route while one is broken: %v, want 20 green", got)
		}
	})

	t.Run("an invalid regular expression refuses its route", func(t *testing.T) {
		mustTenantKubectl(t, cci.Kubeconfig, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: badregex, namespace: %s}
spec:
  parentRefs: [{name: shop}]
  hostnames: [regex.example]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/(unclosed"}}]
    backendRefs: [{name: web-blue, port: 80}]
`, ns), "apply", "-f", "-")
		msg := routeCondition(t, gc, ns, "badregex", gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, gatewayv1.RouteReasonUnsupportedValue)
		if !strings.Contains(msg, "/(unclosed") {
			t.Errorf("Accepted message %q does not name the expression", msg)
		}
		if code, _, err := ask(addr, "regex.example", "/x"); err != nil || code != 404 {
			t.Errorf("the refused route's host: %d %v, want 404", code, err)
		}
	})

	t.Run("per-route metrics on the control plane's /metrics", func(t *testing.T) {
		text := controlPlaneMetrics(t)
		want := fmt.Sprintf(`cci_gateway_requests_total{backend="%s/web-green:80",code="200",namespace="%s",route="shop"}`, ns, ns)
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
		if !strings.Contains(text, fmt.Sprintf(`cci_gateway_request_duration_seconds_count{namespace="%s",route="shop"}`, ns)) {
			t.Errorf("/metrics lacks the latency histogram of route shop")
		}
	})

	// The Gateway's Service goes with it.
	mustKubectl(t, "-n", ns, "delete", "gateway", "shop")
	waitFor(t, 30*time.Second, "the Gateway's address is released", func() (bool, string) {
		out, _ := kubectl(t, "-n", "cci-gateways", "get", "services", "-o", "name")
		return !strings.Contains(out, gateway.ServiceName(ns, "shop")), out
	})
}

// A tenant's route to another tenant's Service is refused until the
// other tenant grants it with a ReferenceGrant; a tenant cannot make
// Gateway API objects in another namespace.
func TestGatewayTenantReferenceGrant(t *testing.T) {
	a, akc := createTenant(t, "gwa")
	b, bkc := createTenant(t, "gwb")
	gc := gatewayClient(t, cci.Kubeconfig)
	mustTenantKubectl(t, bkc, podYAML("private", colorScript("private"), "", "ports: [{name: http, containerPort: 8080}]"), "create", "-f", "-")
	mustTenantKubectl(t, bkc, `apiVersion: v1
kind: Service
metadata: {name: private}
spec: {selector: {app: private}, ports: [{name: http, port: 80, targetPort: http}]}
`, "create", "-f", "-")
	port := cluster.PickPort(func(p int) bool { return cluster.TCPFree("0.0.0.0", p) })
	mustTenantKubectl(t, akc, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: cci
  listeners: [{name: http, protocol: HTTP, port: %d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: steal}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: private, namespace: %s, port: 80}]
`, port, b), "create", "-f", "-")
	addr := net.JoinHostPort(waitGateway(t, gc, a, "gw"), strconv.Itoa(port))
	msg := routeCondition(t, gc, a, "steal", gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, gatewayv1.RouteReasonRefNotPermitted)
	if !strings.Contains(msg, "ReferenceGrant") {
		t.Errorf("RefNotPermitted message %q does not say what grants access", msg)
	}
	waitRunning(t, b, "app=private", 1, 3*time.Minute)
	if got := tally(addr, "any.example", "/", 10); got["500"] != 10 {
		t.Errorf("route to another tenant's Service without a grant: %v, want 10 × 500", got)
	}

	out, err := tenantKubectl(t, akc, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: intruder, namespace: %s}
spec:
  parentRefs: [{name: gw, namespace: %s}]
  rules: [{backendRefs: [{name: private, port: 80}]}]
`, b, a), "create", "-f", "-")
	wantRefused(t, "a tenant's HTTPRoute in another tenant's namespace", out, err, "forbidden")

	mustTenantKubectl(t, bkc, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: let-a-in}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: %s}]
  to: [{group: "", kind: Service, name: private}]
`, a), "create", "-f", "-")
	routeCondition(t, gc, a, "steal", gatewayv1.RouteConditionResolvedRefs, metav1.ConditionTrue, gatewayv1.RouteReasonResolvedRefs)
	waitFor(t, 60*time.Second, "the granted Service answers through the Gateway", func() (bool, string) {
		got := tally(addr, "any.example", "/", 5)
		return got["private"] == 5, fmt.Sprint(got)
	})
}

// controlPlaneMetrics reads the control plane's /metrics as the admin.
func controlPlaneMetrics(t *testing.T) string {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", cci.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := rest.TransportFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(rc.Host)
	p, _ := strconv.Atoi(u.Port())
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get(fmt.Sprintf("https://%s:%d/metrics", u.Hostname(), p+1))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// cciRelease runs `cci release` as the admin.
func cciRelease(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, cci.Bin, append(append([]string{"release"}, args...), "--data-dir", cci.DataDir)...).CombinedOutput()
	if err != nil {
		t.Fatalf("cci release %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// deployments answering: the pods answer with their names (web-blue-…).
func byDeployment(got map[string]int) map[string]int {
	out := map[string]int{}
	for body, n := range got {
		switch {
		case strings.HasPrefix(body, "web-blue-"):
			out["web-blue"] += n
		case strings.HasPrefix(body, "web-green-"):
			out["web-green"] += n
		default:
			out[body] += n
		}
	}
	return out
}

// cci release: start makes the candidate and waits until it is Ready
// before it gets any traffic; shift 30 sends 30 % (±5 % of 1,000
// requests); promote sends everything to it and scales the old one down;
// a second start followed by abort sends everything back at once.
func TestGatewayRelease(t *testing.T) {
	ns := testNamespace(t)
	gc := gatewayClient(t, cci.Kubeconfig)
	kc := client(t)
	app(t, ns, "blue", whoamiScript)
	port := cluster.PickPort(func(p int) bool { return cluster.TCPFree("0.0.0.0", p) })
	mustTenantKubectl(t, cci.Kubeconfig, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: %[1]s}
spec:
  gatewayClassName: cci
  listeners: [{name: http, protocol: HTTP, port: %[2]d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: %[1]s}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: web-blue, port: 80}]}]
`, ns, port), "apply", "-f", "-")
	addr := net.JoinHostPort(waitGateway(t, gc, ns, "web"), strconv.Itoa(port))
	waitFor(t, 90*time.Second, "web-blue answers through "+addr, func() (bool, string) {
		got := byDeployment(tally(addr, "web.example", "/", 5))
		return got["web-blue"] == 5, fmt.Sprint(got)
	})

	out := cciRelease(t, "start", "web", "-n", ns, "--image", image(testimage.Shell))
	t.Logf("cci release start:\n%s", out)
	d, err := kc.AppsV1().Deployments(ns).Get(context.Background(), "web-green", metav1.GetOptions{})
	if err != nil || d.Status.ReadyReplicas != 1 {
		t.Fatalf("after start, web-green: %v %+v", err, d.Status)
	}
	if got := byDeployment(tally(addr, "web.example", "/", 20)); got["web-blue"] != 20 {
		t.Errorf("after start (weight 0): %v, want every request on web-blue", got)
	}

	cciRelease(t, "shift", "web", "30", "-n", ns)
	waitFor(t, 30*time.Second, "web-green takes part of the traffic", func() (bool, string) {
		got := byDeployment(tally(addr, "web.example", "/", 20))
		return got["web-green"] > 0, fmt.Sprint(got)
	})
	got := byDeployment(tally(addr, "web.example", "/", 1000))
	t.Logf("shift 30, 1000 requests: %v", got)
	if got["web-green"] < 250 || got["web-green"] > 350 || got["web-blue"]+got["web-green"] != 1000 {
		t.Errorf("shift 30: %v, want 300 ± 50 on web-green of 1000", got)
	}

	cciRelease(t, "promote", "web", "-n", ns, "--delay", "0s")
	if got := byDeployment(tally(addr, "web.example", "/", 50)); got["web-green"] != 50 {
		t.Errorf("after promote: %v, want every request on web-green", got)
	}
	if d, _ := kc.AppsV1().Deployments(ns).Get(context.Background(), "web-blue", metav1.GetOptions{}); d == nil || *d.Spec.Replicas != 0 {
		t.Errorf("after promote the old Deployment web-blue is not scaled to 0")
	}

	cciRelease(t, "start", "web", "-n", ns, "--image", image(testimage.Shell))
	cciRelease(t, "shift", "web", "50", "-n", ns)
	waitFor(t, 30*time.Second, "the new candidate web-blue takes part of the traffic", func() (bool, string) {
		got := byDeployment(tally(addr, "web.example", "/", 20))
		return got["web-blue"] > 0, fmt.Sprint(got)
	})
	cciRelease(t, "abort", "web", "-n", ns, "--delay", "0s")
	if got := byDeployment(tally(addr, "web.example", "/", 50)); got["web-green"] != 50 {
		t.Errorf("after abort: %v, want every request back on web-green", got)
	}
	rt, err := gc.GatewayV1().HTTPRoutes(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil || rt.Annotations["release.cci.io/candidate"] != "" || rt.Annotations["release.cci.io/stable"] != "web-green" {
		t.Errorf("route annotations after abort: %v %v", rt.Annotations, err)
	}
}
