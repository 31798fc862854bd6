package metering

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// UsagePath is where the endpoint serves reports:
// GET /v1/usage?tenant=T&since=…&until=…&by=day (times as ParseTime reads
// them; by=day adds the report's Days).
const UsagePath = "/v1/usage"

// EndpointConfig says where and how the usage endpoint listens.
type EndpointConfig struct {
	// Addr is host:port to listen on.
	Addr string
	// Cert is the serving certificate (issued by the cluster CA).
	Cert tls.Certificate
	// ClientCAs verify client certificates (the cluster CA); callers may
	// also present a bearer token instead.
	ClientCAs *x509.CertPool
	// Metrics, when set, is served at MetricsPath (Prometheus text) to
	// callers authenticated as for the usage reports and allowed to get
	// the non-resource URL /metrics (as the apiserver's own metrics: the
	// admin, or a role such as system:monitoring).
	Metrics http.Handler
}

// MetricsPath is where the endpoint serves the control plane's own
// Prometheus metrics (the host pools' capacity and use).
const MetricsPath = "/metrics"

// identity is an authenticated caller.
type identity struct {
	user   string
	uid    string
	groups []string
	extra  map[string]authzv1.ExtraValue
}

// Serve runs the HTTPS usage endpoint until ctx ends.
func (m *Meter) Serve(ctx context.Context, ec EndpointConfig) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc(UsagePath, m.serveUsage)
	if ec.Metrics != nil {
		mux.Handle(MetricsPath, m.metricsAuth(ec.Metrics))
	}
	l, err := net.Listen("tcp", ec.Addr)
	if err != nil {
		return fmt.Errorf("usage endpoint: listen on %q (is the port in use? choose another with --usage-port): %w", ec.Addr, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{ec.Cert},
			ClientCAs:    ec.ClientCAs,
			ClientAuth:   tls.VerifyClientCertIfGiven,
		},
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	m.log.Info("usage endpoint listening", "addr", l.Addr().String())
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("usage endpoint: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// httpError maps a failure to the status the caller sees, in one place.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func writeError(w http.ResponseWriter, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{http.StatusInternalServerError, err.Error()}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(he.code)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": he.code, "message": he.msg})
}

func (m *Meter) serveUsage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, &httpError{http.StatusMethodNotAllowed, "only GET"})
		return
	}
	rep, err := m.usageFor(r)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

func (m *Meter) usageFor(r *http.Request) (*Report, error) {
	ctx := r.Context()
	id, err := m.authenticate(ctx, r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	now := m.cfg.Now()
	since, err := ParseTime(q.Get("since"), now)
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, err.Error()}
	}
	if q.Get("since") == "" {
		since = MonthStart(now)
	}
	until, err := ParseTime(q.Get("until"), now)
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, err.Error()}
	}
	var opt ReportOptions
	switch by := q.Get("by"); by {
	case "":
	case "day":
		opt.ByDay = true
	default:
		return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("by=%q: the report can only be broken down by=day (or leave by out)", by)}
	}
	select {
	case <-m.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	admin, err := m.allowed(ctx, id, &authzv1.ResourceAttributes{Group: UsageRecordResource.Group, Resource: UsageRecordResource.Resource, Verb: "list"})
	if err != nil {
		return nil, err
	}
	var tenants []string // nil: all
	switch tenant := q.Get("tenant"); {
	case tenant != "":
		if !admin {
			ok, err := m.tenantAllowed(ctx, id, tenant)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, &httpError{http.StatusForbidden, fmt.Sprintf("%s may not read the usage of tenant %q", id.user, tenant)}
			}
		}
		tenants = []string{tenant}
	case !admin:
		own, err := m.ownTenants(ctx, id)
		if err != nil {
			return nil, err
		}
		if len(own) == 0 {
			return nil, &httpError{http.StatusForbidden, fmt.Sprintf("%s is no tenant's member and may not read usage", id.user)}
		}
		for t := range own {
			tenants = append(tenants, t)
		}
	}
	m.log.Debug("usage report", "user", id.user, "tenant", q.Get("tenant"))
	return m.Report(ctx, since, until, tenants, opt)
}

// metricsAuth lets through callers allowed to get /metrics.
func (m *Meter) metricsAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := m.authenticate(r.Context(), r)
		if err != nil {
			writeError(w, err)
			return
		}
		sar, err := m.cfg.Kube.AuthorizationV1().SubjectAccessReviews().Create(r.Context(), &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: id.user, UID: id.uid, Groups: id.groups, Extra: id.extra,
			NonResourceAttributes: &authzv1.NonResourceAttributes{Path: MetricsPath, Verb: "get"},
		}}, metav1.CreateOptions{})
		if err != nil {
			writeError(w, fmt.Errorf("subject access review: %w", err))
			return
		}
		if !sar.Status.Allowed {
			writeError(w, &httpError{http.StatusForbidden, fmt.Sprintf("%s may not get %s (the admin may, or a user bound to the role system:monitoring)", id.user, MetricsPath)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate knows the caller by its client certificate (verified by the
// TLS handshake against the cluster CA) or its bearer token (checked by a
// TokenReview against the apiserver).
func (m *Meter) authenticate(ctx context.Context, r *http.Request) (identity, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		c := r.TLS.VerifiedChains[0][0]
		return identity{user: c.Subject.CommonName, groups: c.Subject.Organization}, nil
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return identity{}, &httpError{http.StatusUnauthorized, "give a bearer token (a tenant's service-account token) or a client certificate of the cluster CA"}
	}
	tr, err := m.cfg.Kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: strings.TrimSpace(token)}}, metav1.CreateOptions{})
	if err != nil {
		return identity{}, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return identity{}, &httpError{http.StatusUnauthorized, "token not valid: " + tr.Status.Error}
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	return identity{user: u.Username, uid: u.UID, groups: u.Groups, extra: extra}, nil
}

// allowed asks the apiserver whether id may do what attrs say.
func (m *Meter) allowed(ctx context.Context, id identity, attrs *authzv1.ResourceAttributes) (bool, error) {
	sar, err := m.cfg.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: id.user, UID: id.uid, Groups: id.groups, Extra: id.extra, ResourceAttributes: attrs,
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("subject access review: %w", err)
	}
	return sar.Status.Allowed, nil
}

// tenantNamespaces lists the namespaces of a tenant (all tenants when tenant is "").
func (m *Meter) tenantNamespaces(tenant string) (map[string]string, error) {
	sel := labels.Everything()
	if tenant != "" {
		sel = labels.SelectorFromSet(labels.Set{TenantLabel: tenant})
	}
	nss, err := m.nsLister.List(sel)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range nss {
		if t := n.Labels[TenantLabel]; t != "" {
			out[n.Name] = t
		}
	}
	return out, nil
}

// serviceAccountNamespace is the namespace of a service-account user name.
func serviceAccountNamespace(user string) (string, bool) {
	parts := strings.Split(user, ":")
	if len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
		return parts[2], true
	}
	return "", false
}

// tenantAllowed says whether id belongs to tenant: a service account of one
// of its namespaces, or anyone who may get pods in one of them.
func (m *Meter) tenantAllowed(ctx context.Context, id identity, tenant string) (bool, error) {
	nss, err := m.tenantNamespaces(tenant)
	if err != nil {
		return false, err
	}
	if ns, ok := serviceAccountNamespace(id.user); ok {
		if nss[ns] == tenant {
			return true, nil
		}
	}
	names := make([]string, 0, len(nss))
	for ns := range nss {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		ok, err := m.allowed(ctx, id, &authzv1.ResourceAttributes{Namespace: ns, Resource: "pods", Verb: "get"})
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// ownTenants are the tenants id belongs to.
func (m *Meter) ownTenants(ctx context.Context, id identity) (map[string]bool, error) {
	nss, err := m.tenantNamespaces("")
	if err != nil {
		return nil, err
	}
	own := map[string]bool{}
	if ns, ok := serviceAccountNamespace(id.user); ok {
		if t := nss[ns]; t != "" {
			own[t] = true
			return own, nil
		}
	}
	for ns, t := range nss {
		if own[t] {
			continue
		}
		ok, err := m.allowed(ctx, id, &authzv1.ResourceAttributes{Namespace: ns, Resource: "pods", Verb: "get"})
		if err != nil {
			return nil, err
		}
		if ok {
			own[t] = true
		}
	}
	return own, nil
}
