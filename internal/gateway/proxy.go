package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Dataplane is the gateway's HTTP proxy: one listening socket per Gateway
// listener (its proxy port), each serving the table the controller last
// gave it. It is safe for concurrent use.
type Dataplane struct {
	// Addr is the address the proxy ports listen on: the address the
	// gateways' load-balancer Services send their traffic to.
	addr   string
	log    *slog.Logger
	access *slog.Logger

	h1, h2c http.RoundTripper

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec

	mu        sync.Mutex
	listeners map[int]*listener
	// direct are the sockets on Gateways' own addresses (addr:port →
	// server), see SetDirect.
	direct map[string]*directServer
}

type directServer struct {
	proxyPort int
	srv       *http.Server
}

type listener struct {
	port  int
	table atomic.Pointer[Table]
	srv   *http.Server
	d     *Dataplane
}

// NewDataplane makes a data plane listening on addr. access receives one
// line per request (nil: none).
func NewDataplane(addr string, log, access *slog.Logger) *Dataplane {
	h1 := http.DefaultTransport.(*http.Transport).Clone()
	h1.MaxIdleConnsPerHost = 64
	h1.ResponseHeaderTimeout = 0
	h2c := h1.Clone()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c.Protocols = &p
	return &Dataplane{
		addr: addr, log: log, access: access,
		h1: h1, h2c: h2c,
		listeners: map[int]*listener{},
		direct:    map[string]*directServer{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cci_gateway_requests_total",
			Help: "Requests through the Gateway API data plane, by HTTPRoute, backend and status code.",
		}, []string{"namespace", "route", "backend", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cci_gateway_request_duration_seconds",
			Help:    "Latency of requests through the Gateway API data plane, by HTTPRoute, from the request's arrival to its response's end.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"namespace", "route"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cci_gateway_retries_total",
			Help: "Requests the Gateway API data plane sent to a backend again (HTTPRoute retry), by HTTPRoute.",
		}, []string{"namespace", "route"}),
	}
}

// Collectors are the data plane's Prometheus metrics.
func (d *Dataplane) Collectors() []prometheus.Collector {
	return []prometheus.Collector{d.requests, d.duration, d.retries}
}

// Addr is the address the proxy ports listen on.
func (d *Dataplane) Addr() string { return d.addr }

// Set makes the proxy ports of tables serve them, opens the ports not
// open yet and closes (gracefully: requests in flight finish) those not
// in tables. A table swap is atomic per port.
func (d *Dataplane) Set(tables map[int]*Table) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for port, t := range tables {
		l := d.listeners[port]
		if l == nil {
			var err error
			if l, err = d.open(port); err != nil {
				errs = append(errs, err)
				continue
			}
			d.listeners[port] = l
		}
		l.table.Store(t)
	}
	for port, l := range d.listeners {
		if _, ok := tables[port]; !ok {
			delete(d.listeners, port)
			for a, ds := range d.direct {
				if ds.proxyPort == port {
					ds.srv.Close()
					delete(d.direct, a)
				}
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_ = l.srv.Shutdown(ctx)
			}()
		}
	}
	return errors.Join(errs...)
}

func (d *Dataplane) open(port int) (*listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(d.addr, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("gateway proxy port %d: %w", port, err)
	}
	l := &listener{port: ln.Addr().(*net.TCPAddr).Port, d: d}
	l.srv = l.server()
	go func() {
		if err := l.srv.Serve(newTLSListener(ln, l)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Warn("gateway proxy port stopped", "port", l.port, "err", err)
		}
	}()
	return l, nil
}

// server is the HTTP server of a proxy port or of a Gateway's own
// address: HTTP/1.1 and h2c on plain connections, HTTP/1.1 and h2 (by
// ALPN) on the TLS connections of HTTPS listeners.
func (l *listener) server() *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	return &http.Server{Handler: l, Protocols: &p, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(l.d.log.Handler(), slog.LevelDebug)}
}

// Close stops every proxy port at once.
func (d *Dataplane) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for port, l := range d.listeners {
		l.srv.Close()
		delete(d.listeners, port)
	}
	for a, ds := range d.direct {
		ds.srv.Close()
		delete(d.direct, a)
	}
}

// SetDirect makes each proxy port's table also answer on a Gateway's own
// address and port (want: "ip:port" → proxy port), for addresses of this
// host. Traffic to them then reaches the proxy without the service
// proxy's rules (which other kube-proxies in the same network namespace
// may rewrite, and which cost a hop); the Service stays, for the
// address's bookkeeping and for addresses routed to other hosts. An
// address that cannot be bound is left to the service proxy and tried
// again on the next call.
func (d *Dataplane) SetDirect(want map[string]int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for a, ds := range d.direct {
		if p, ok := want[a]; !ok || p != ds.proxyPort || d.listeners[p] == nil {
			ds.srv.Close()
			delete(d.direct, a)
		}
	}
	for a, p := range want {
		l := d.listeners[p]
		if _, ok := d.direct[a]; ok || l == nil {
			continue
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			d.log.Debug("gateway address not bound; the service proxy carries it", "address", a, "err", err)
			continue
		}
		srv := l.server()
		d.direct[a] = &directServer{proxyPort: p, srv: srv}
		go func() {
			if err := srv.Serve(newTLSListener(ln, l)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Warn("gateway address socket stopped", "address", a, "err", err)
			}
		}()
	}
}

// Ports are the proxy ports open now.
func (d *Dataplane) Ports() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for p := range d.listeners {
		out = append(out, p)
	}
	return out
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack (WebSockets
// go through ReverseProxy's upgrade path).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (l *listener) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	t := l.table.Load()
	var e *entry
	if t != nil {
		e = t.Lookup(r)
	}
	ns, route, backend := "", "", ""
	defer func() {
		code := w.code
		if code == 0 {
			code = http.StatusOK
		}
		l.d.requests.WithLabelValues(ns, route, backend, strconv.Itoa(code)).Inc()
		if route != "" {
			l.d.duration.WithLabelValues(ns, route).Observe(time.Since(start).Seconds())
		}
		if l.d.access != nil {
			l.d.access.Info("request", "method", r.Method, "host", r.Host, "path", r.URL.RequestURI(), "status", code,
				"route", ns+"/"+route, "backend", backend, "duration", time.Since(start), "client", r.RemoteAddr)
		}
	}()
	if e == nil {
		http.Error(w, "no HTTPRoute matches this request", http.StatusNotFound)
		return
	}
	rule := e.rule
	ns, route = rule.Namespace, rule.Route
	if rule.Redirect != nil {
		redirect(w, r, t.Port, e, rule.Redirect)
		return
	}
	b := rule.pick()
	if b == nil {
		http.Error(w, "the HTTPRoute rule has no backend with a weight above zero", http.StatusInternalServerError)
		return
	}
	backend = b.Name
	if b.Status != 0 {
		http.Error(w, "the backend of this HTTPRoute rule does not resolve (see the route's status)", b.Status)
		return
	}
	target, first := b.endpoint()
	if target == "" {
		http.Error(w, "no Ready endpoint of "+b.Name, http.StatusServiceUnavailable)
		return
	}
	if rule.Timeout > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), rule.Timeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	transport := l.d.h1
	if b.H2C {
		transport = l.d.h2c
	}
	if rule.Retry != nil {
		body, ok, err := replayable(r)
		if err != nil {
			http.Error(w, "read the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if ok {
			transport = &retrier{next: transport, policy: rule.Retry, backend: b, first: first, body: body, retries: l.d.retries.WithLabelValues(ns, route)}
		}
	}
	rp := &httputil.ReverseProxy{
		Transport: transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: target})
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			if rw := rule.Rewrite; rw != nil {
				if rw.Hostname != nil {
					pr.Out.Host = string(*rw.Hostname)
				}
				if rw.Path != nil {
					pr.Out.URL.Path = rewritePath(pr.In.URL.Path, e.match.path, rw.Path)
					pr.Out.URL.RawPath = ""
				}
			}
			applyHeaders(pr.Out.Header, rule.RequestHeaders)
		},
		ModifyResponse: func(resp *http.Response) error {
			applyHeaders(resp.Header, rule.ResponseHeaders)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code := http.StatusBadGateway
			if errors.Is(err, context.DeadlineExceeded) {
				code = http.StatusGatewayTimeout
			}
			l.d.log.Debug("gateway backend request failed", "backend", b.Name, "endpoint", target, "err", err)
			w.WriteHeader(code)
		},
	}
	rp.ServeHTTP(w, r)
}

// redirect answers a RequestRedirect filter.
func redirect(w http.ResponseWriter, r *http.Request, listenerPort int32, e *entry, f *gatewayv1.HTTPRequestRedirectFilter) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	port := int(listenerPort)
	if f.Scheme != nil {
		scheme = *f.Scheme
		// A new scheme without a port goes to the scheme's own port.
		port = wellKnownPort(scheme)
	}
	if f.Hostname != nil {
		host = string(*f.Hostname)
	}
	if f.Port != nil {
		port = int(*f.Port)
	}
	path := r.URL.Path
	if f.Path != nil {
		path = rewritePath(path, e.match.path, f.Path)
	}
	u := url.URL{Scheme: scheme, Host: host, Path: path, RawQuery: r.URL.RawQuery}
	if port != wellKnownPort(scheme) {
		u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	}
	code := http.StatusFound
	if f.StatusCode != nil {
		code = *f.StatusCode
	}
	http.Redirect(w, r, u.String(), code)
}

func wellKnownPort(scheme string) int {
	if strings.EqualFold(scheme, "https") {
		return 443
	}
	return 80
}

// Reserve makes sure a proxy port is open and returns it: port itself
// when it is open or can be opened, else a new port of the system's
// choosing (port 0 asks for one at once). A reserved port not given a
// table by the next Set is closed by it.
func (d *Dataplane) Reserve(port int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if port != 0 {
		if _, ok := d.listeners[port]; ok {
			return port, nil
		}
		if l, err := d.open(port); err == nil {
			d.listeners[port] = l
			return port, nil
		}
	}
	l, err := d.open(0)
	if err != nil {
		return 0, err
	}
	d.listeners[l.port] = l
	return l.port, nil
}

// maxReplayBody is the largest request body kept in memory so that a
// retry can send it again; a larger one, or one of unknown length, is
// sent once.
const maxReplayBody = 64 << 10

// replayable says whether a request may be retried: an idempotent method
// (RFC 9110 9.2.2), no protocol upgrade, and a body that is empty or
// small and of known length, which it then reads into memory (the
// request's Body is replaced by a reader of it) and returns.
func replayable(r *http.Request) ([]byte, bool, error) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		return nil, false, nil
	}
	if r.Header.Get("Upgrade") != "" {
		return nil, false, nil
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, true, nil
	}
	if r.ContentLength < 0 || r.ContentLength > maxReplayBody {
		return nil, false, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
	if err != nil {
		return nil, false, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true, nil
}

// retrier sends a request again, to the backend's next endpoint, when
// the first try fails with a connection error or answers one of the
// policy's codes; the last try's answer or error is what the client gets.
type retrier struct {
	next    http.RoundTripper
	policy  *RetryPolicy
	backend *Backend
	first   uint64
	body    []byte
	retries prometheus.Counter
}

func (rt *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for i := 0; ; i++ {
		out := req
		if i > 0 {
			wait := min(rt.policy.Backoff<<(i-1), 10*rt.policy.Backoff)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			out = req.Clone(ctx)
			out.URL.Host = rt.backend.at(rt.first + uint64(i))
			if req.Body != nil {
				out.Body = io.NopCloser(bytes.NewReader(rt.body))
			}
			rt.retries.Inc()
		}
		resp, err := rt.next.RoundTrip(out)
		last := i >= rt.policy.Attempts || ctx.Err() != nil
		if err != nil {
			if last {
				return nil, err
			}
			continue
		}
		if last || !slices.Contains(rt.policy.Codes, resp.StatusCode) {
			return resp, nil
		}
		// Read a little of the failed answer so its connection can be
		// used again.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
}
