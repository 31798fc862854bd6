package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

const (
	// gwHost is the route's hostname; requests through the gateway carry it.
	gwHost = "bench.example"
	// gwPodPort is where the pods' busybox httpd listens.
	gwPodPort = 8080
	// gwRounds is how many rounds of each kind the comparison runs, in
	// the order roundOrder gives.
	gwRounds = 2
	// gwShifts is how many weight shifts are timed: blue→green,
	// green→blue, … so that each starts from a route that served one
	// color only.
	gwShifts = 4
	// gwSettle is how long a shift's clients go on after the first answer
	// of the new color before the shift counts as done, so that a late
	// answer of the old color is seen.
	gwSettle = 2 * time.Second
)

// gwScript serves color as the body of every path on gwPodPort. No -v:
// a log line per request would cost the pod as much as the answer.
func gwScript(color string) string {
	return fmt.Sprintf("mkdir -p /tmp/www && echo %s > /tmp/www/index.html && trap 'exit 0' TERM; httpd -f -p %d -h /tmp/www & wait", color, gwPodPort)
}

// roundOrder is the order of the comparison's rounds: direct, via, via,
// direct, direct, via, …: a machine that gets busier or quieter during
// the run weighs on both kinds alike.
func roundOrder(rounds int) []string {
	var order []string
	for r := range rounds {
		if r%2 == 0 {
			order = append(order, "direct", "via")
		} else {
			order = append(order, "via", "direct")
		}
	}
	return order
}

// loadRun is what one kind's rounds measured.
type loadRun struct {
	Latencies []float64 // ms, of the requests that succeeded
	Errors    int
	Took      time.Duration // the rounds' durations, summed
	Reused    int           // requests sent on a kept-alive connection
}

func (l *loadRun) add(o loadRun) {
	l.Latencies = append(l.Latencies, o.Latencies...)
	l.Errors += o.Errors
	l.Took += o.Took
	l.Reused += o.Reused
}

// rps is the successful requests per second over the rounds.
func (l loadRun) rps() float64 {
	if l.Took <= 0 {
		return 0
	}
	return float64(len(l.Latencies)) / l.Took.Seconds()
}

// gwComparison is the figures of the via result: the gateway against the
// pod straight.
type gwComparison struct {
	RPSPercent float64 // via's requests/s, % of direct's
	P50Ratio   float64 // via's p50 over direct's
	P99Ratio   float64
	AddedP50   float64 // ms
	AddedP99   float64 // ms
}

func compare(direct, via loadRun) gwComparison {
	d, v := summarize(direct.Latencies), summarize(via.Latencies)
	return gwComparison{
		RPSPercent: 100 * ratio(via.rps(), direct.rps()),
		P50Ratio:   ratio(v.P50, d.P50),
		P99Ratio:   ratio(v.P99, d.P99),
		AddedP50:   v.P50 - d.P50,
		AddedP99:   v.P99 - d.P99,
	}
}

// answer is one request of a weight shift's clients.
type answer struct {
	At   time.Time // when the answer (or the error) came
	Body string    // "" on an error
	Err  bool
}

// shiftTimes reads a shift from the answers: from patched (the patch
// call) to the first answer of to and to the last answer of from (0 when
// none came after the patch), and how many requests failed.
func shiftTimes(answers []answer, patched time.Time, from, to string) (first, last time.Duration, failed int, ok bool) {
	for _, a := range answers {
		switch {
		case a.Err || a.Body != from && a.Body != to:
			failed++
		case a.Body == to && !a.At.Before(patched):
			if d := a.At.Sub(patched); !ok || d < first {
				first, ok = d, true
			}
		case a.Body == from:
			if d := a.At.Sub(patched); d > last {
				last = d
			}
		}
	}
	return first, last, failed, ok
}

// gateway is `cci bench gateway`: requests through a Gateway of class cci
// to one pod against the same requests straight to the pod's IP, in
// alternating rounds of one run, and the time a weight shift takes to
// reach the clients.
func (b *bench) gateway(ctx context.Context) error {
	gc, err := gatewayclient.NewForConfig(b.c.Rest)
	if err != nil {
		return fmt.Errorf("gateway API client: %w", err)
	}
	if _, err := gc.GatewayV1().GatewayClasses().Get(ctx, "cci", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("the cluster has no GatewayClass cci (is its gateway controller on?): %w", err)
	}
	for _, color := range []string{"blue", "green"} {
		if err := b.gwApp(ctx, color); err != nil {
			return err
		}
	}
	port, err := hostFreePort()
	if err != nil {
		return err
	}
	if err := b.gwCreate(ctx, gc, port); err != nil {
		return err
	}
	gwAddr, err := b.gwWaitProgrammed(ctx, gc)
	if err != nil {
		return err
	}
	via := "http://" + net.JoinHostPort(gwAddr, strconv.Itoa(port)) + "/"
	blueIP, err := b.gwPodIP(ctx, "blue")
	if err != nil {
		return err
	}
	if _, err := b.gwPodIP(ctx, "green"); err != nil {
		return err
	}
	direct := "http://" + net.JoinHostPort(blueIP, strconv.Itoa(gwPodPort)) + "/"
	b.logf("gateway: pod %s, gateway %s (Host %s)", direct, via, gwHost)

	client := gwClient(b.cfg.GatewayClients)
	// The route answers once the proxy has its table and the backend its
	// endpoints; the pod once httpd listens.
	for _, t := range []struct{ url, host string }{{direct, ""}, {via, gwHost}} {
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			body, err := get(ctx, client, t.url, t.host, nil)
			return err == nil && body == "blue", nil
		}); err != nil {
			_, gerr := get(ctx, client, t.url, t.host, nil)
			return fmt.Errorf("%s (Host %q) did not answer blue within 90s (last: %v): %w", t.url, t.host, gerr, err)
		}
	}
	// Warm both paths: connections, the proxy's first use.
	b.gwLoad(ctx, client, direct, "", "blue", 100)
	b.gwLoad(ctx, client, via, gwHost, "blue", 100)

	n, c := b.cfg.GatewayRequests, b.cfg.GatewayClients
	perRound := max(n/gwRounds, 1)
	var d, v loadRun
	sampler := startCPUSampler(b.c.processGroups, 500*time.Millisecond)
	for _, kind := range roundOrder(gwRounds) {
		if kind == "direct" {
			b.logf("gateway: %d requests straight to the pod, %d clients", perRound, c)
			d.add(b.gwLoad(ctx, client, direct, "", "blue", perRound))
		} else {
			b.logf("gateway: %d requests through the gateway, %d clients", perRound, c)
			v.add(b.gwLoad(ctx, client, via, gwHost, "blue", perRound))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	use := sampler.Stop()
	dr := &Result{Name: fmt.Sprintf("gateway/direct (pod IP, %d requests, %d clients)", perRound*gwRounds, c)}
	vr := &Result{Name: fmt.Sprintf("gateway/via (Gateway → pod, %d requests, %d clients)", perRound*gwRounds, c)}
	for _, x := range []struct {
		r *Result
		l loadRun
	}{{dr, d}, {vr, v}} {
		x.r.latency("request", x.l.Latencies, nil)
		x.r.figure("requests per second", x.l.rps(), "req/s", "")
		x.r.figure("failed requests", float64(x.l.Errors), "", "")
		x.r.figure("requests on a kept-alive connection", float64(x.l.Reused), "", "")
	}
	cmp := compare(d, v)
	vr.figure("requests/s through the gateway, of direct", cmp.RPSPercent, "%", "")
	vr.figure("p50 through the gateway, of direct", cmp.P50Ratio, "×", "")
	vr.figure("p99 through the gateway, of direct", cmp.P99Ratio, "×", "")
	vr.figure("p50 added by the gateway", cmp.AddedP50, "ms", "")
	vr.figure("p99 added by the gateway", cmp.AddedP99, "ms", "")
	vr.setCPU(use)
	b.rep.Results = append(b.rep.Results, dr, vr)

	return b.gwShifts(ctx, gc, client, via)
}

// gwShifts patches the route's weights from one color to the other
// gwShifts times while C clients send requests through the gateway, and
// records how long each took to reach them.
func (b *bench) gwShifts(ctx context.Context, gc gatewayclient.Interface, client *http.Client, via string) error {
	sr := &Result{Name: fmt.Sprintf("gateway/weight shift (%d shifts, %d clients)", gwShifts, b.cfg.GatewayClients)}
	b.rep.Results = append(b.rep.Results, sr)
	var firsts, lasts []float64
	failed, sent := 0, 0
	from, to := "blue", "green"
	for i := range gwShifts {
		b.logf("gateway: shift %d: %s → %s", i+1, from, to)
		answers, patched, err := b.gwShift(ctx, gc, client, via, to)
		if err != nil {
			return err
		}
		first, last, f, ok := shiftTimes(answers, patched, from, to)
		if !ok {
			return fmt.Errorf("shift %d (%s → %s): no answer came from %s within %s of the patch", i+1, from, to, to, gwShiftTimeout)
		}
		firsts, lasts = append(firsts, ms(first)), append(lasts, ms(last))
		failed, sent = failed+f, sent+len(answers)
		from, to = to, from
	}
	sr.latency("patch→first answer of the new backend", firsts, nil)
	sr.latency("patch→last answer of the old backend", lasts, nil)
	sr.figure("requests during the shifts", float64(sent), "", "")
	sr.figure("failed requests during the shifts", float64(failed), "", "goal 0")
	if failed > 0 {
		sr.note("%d of %d requests failed while the weights changed", failed, sent)
	}
	return nil
}

// gwShiftTimeout bounds the wait for a shift's first answer of the new color.
const gwShiftTimeout = 30 * time.Second

// gwShift sends requests through the gateway from C clients, patches the
// route to send everything to color to, and goes on until gwSettle after
// the first answer of to; it returns every answer and the patch time.
func (b *bench) gwShift(ctx context.Context, gc gatewayclient.Interface, client *http.Client, via, to string) ([]answer, time.Time, error) {
	var mu sync.Mutex
	var answers []answer
	var sawTo atomic.Int64 // unix nanoseconds of the first answer of to after the patch
	var patchedAt atomic.Int64
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range b.cfg.GatewayClients {
		wg.Go(func() {
			for cctx.Err() == nil {
				body, err := get(cctx, client, via, gwHost, nil)
				now := time.Now()
				if cctx.Err() != nil {
					// Cut short by the end of the shift, not the gateway's failure.
					return
				}
				mu.Lock()
				answers = append(answers, answer{At: now, Body: body, Err: err != nil})
				mu.Unlock()
				if err == nil && body == to && patchedAt.Load() != 0 && now.UnixNano() >= patchedAt.Load() {
					sawTo.CompareAndSwap(0, now.UnixNano())
				}
			}
		})
	}
	// Let the clients run on the old weights first.
	time.Sleep(500 * time.Millisecond)
	blue, green := 100, 0
	if to == "green" {
		blue, green = 0, 100
	}
	patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":%d},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":%d}]`, blue, green)
	patched := time.Now()
	patchedAt.Store(patched.UnixNano())
	if _, err := gc.GatewayV1().HTTPRoutes(b.ns).Patch(ctx, "bench", types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		cancel()
		wg.Wait()
		return nil, patched, fmt.Errorf("patch the route's weights to %d/%d: %w", blue, green, err)
	}
	deadline := time.Now().Add(gwShiftTimeout)
	for time.Now().Before(deadline) {
		if s := sawTo.Load(); s != 0 && time.Since(time.Unix(0, s)) >= gwSettle {
			break
		}
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			return nil, patched, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	wg.Wait()
	return answers, patched, nil
}

// gwLoad sends n GET requests to url (with Host host when set) from
// C clients at once and times each; an answer other than 200 with body
// want counts as an error.
func (b *bench) gwLoad(ctx context.Context, client *http.Client, url, host, want string, n int) loadRun {
	var next atomic.Int64
	var mu sync.Mutex
	var run loadRun
	var wg sync.WaitGroup
	t0 := time.Now()
	for range b.cfg.GatewayClients {
		wg.Go(func() {
			var lat []float64
			errs, reused := 0, 0
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				start := time.Now()
				body, err := get(ctx, client, url, host, &reused)
				took := time.Since(start)
				if err != nil || body != want {
					errs++
					continue
				}
				lat = append(lat, ms(took))
			}
			mu.Lock()
			run.Latencies = append(run.Latencies, lat...)
			run.Errors += errs
			run.Reused += reused
			mu.Unlock()
		})
	}
	wg.Wait()
	run.Took = time.Since(t0)
	return run
}

// gwClient keeps up to c connections to each address, one per client.
func gwClient(c int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: c,
			DisableCompression:  true,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// get sends GET url with Host host ("" keeps the URL's) and returns the
// trimmed body of a 200; other codes are errors. reused, when not nil,
// counts requests sent on a kept-alive connection.
func get(ctx context.Context, client *http.Client, url, host string, reused *int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if host != "" {
		req.Host = host
	}
	if reused != nil {
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			if i.Reused {
				*reused++
			}
		}}))
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// gwApp makes a Deployment of one pod and a Service bench-<color> (port
// 80) whose pod answers with its color.
func (b *bench) gwApp(ctx context.Context, color string) error {
	tmpl := b.podTemplate(podOpts{Image: b.image, Script: gwScript(color), RuntimeClass: b.cfg.RuntimeClass})
	tmpl.Labels["cci-bench/color"] = color
	tmpl.Spec.Containers[0].Ports = []v1.ContainerPort{{Name: "http", ContainerPort: gwPodPort}}
	one := int32(1)
	sel := map[string]string{labelRun: b.runID, "cci-bench/color": color}
	name := "bench-" + color
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tmpl.Labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: tmpl,
		},
	}
	if _, err := b.kube.AppsV1().Deployments(b.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create deployment %s: %w", name, err)
	}
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1.ServiceSpec{Selector: sel, Ports: []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	if _, err := b.kube.CoreV1().Services(b.ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s: %w", name, err)
	}
	return nil
}

// gwCreate makes the Gateway (an HTTP listener on port) and the HTTPRoute
// gwHost → bench-blue 100, bench-green 0.
func (b *bench) gwCreate(ctx context.Context, gc gatewayclient.Interface, port int) error {
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: gatewayv1.GatewaySpec{
			GatewayClassName: "cci",
			Listeners:        []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: gatewayv1.PortNumber(port)}},
		},
	}
	if _, err := gc.GatewayV1().Gateways(b.ns).Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Gateway: %w", err)
	}
	ref := func(color string, weight int32) gatewayv1.HTTPBackendRef {
		p := gatewayv1.PortNumber(80)
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName("bench-" + color), Port: &p},
			Weight:                 &weight,
		}}
	}
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "bench"}}},
			Hostnames:       []gatewayv1.Hostname{gwHost},
			Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref("blue", 100), ref("green", 0)}}},
		},
	}
	if _, err := gc.GatewayV1().HTTPRoutes(b.ns).Create(ctx, route, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create HTTPRoute: %w", err)
	}
	return nil
}

// gwWaitProgrammed waits until the Gateway is Programmed with an address.
func (b *bench) gwWaitProgrammed(ctx context.Context, gc gatewayclient.Interface) (string, error) {
	var addr, last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		g, err := gc.GatewayV1().Gateways(b.ns).Get(ctx, "bench", metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		prog := meta.FindStatusCondition(g.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed))
		if prog == nil || prog.Status != metav1.ConditionTrue || prog.ObservedGeneration != g.Generation || len(g.Status.Addresses) == 0 {
			last = fmt.Sprintf("%+v", g.Status.Conditions)
			return false, nil
		}
		addr = g.Status.Addresses[0].Value
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("Gateway %s/bench not Programmed with an address within 90s (conditions: %s): %w", b.ns, last, err)
	}
	return addr, nil
}

// gwPodIP waits until the pod of color runs and returns its IP.
func (b *bench) gwPodIP(ctx context.Context, color string) (string, error) {
	var ip string
	var last *v1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, b.cfg.PodTimeout, true, func(ctx context.Context) (bool, error) {
		l, err := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: "cci-bench/color=" + color})
		if err != nil || len(l.Items) == 0 {
			return false, nil
		}
		last = &l.Items[0]
		if last.Status.Phase != v1.PodRunning || last.Status.PodIP == "" {
			return false, nil
		}
		ip = last.Status.PodIP
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("the %s pod did not run within %s: %s: %w", color, b.cfg.PodTimeout, podProblem(last), err)
	}
	return ip, nil
}

// hostFreePort picks a port that nothing on the machine listens on, below
// the ephemeral range so that no client's socket takes it meanwhile.
func hostFreePort() (int, error) {
	for range 200 {
		p := 20000 + rand.IntN(10000)
		l, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(p)))
		if err == nil {
			l.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free TCP port between 20000 and 30000 for the Gateway's listener")
}
