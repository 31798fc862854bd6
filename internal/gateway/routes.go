package gateway

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Table is the compiled routing of one listener. It is never changed once
// built: the data plane swaps whole tables (atomic.Pointer), so a request
// in flight finishes on the table it started with, and a weight change
// never touches the match rules of another route.
type Table struct {
	// Port is the listener's port, the default port of redirects.
	Port int32
	// exact holds the entries of routes with that exact hostname;
	// wildcard those of "*.suffix" hostnames, longest suffix first; any
	// those of routes that name no hostname (under a listener that names
	// none).
	exact    map[string][]*entry
	wildcard []wildcardEntries
	any      []*entry
	// TLS, when set, makes the port terminate TLS with these
	// certificates (HTTPS listeners); nil: plain HTTP.
	TLS *Certs
}

type wildcardEntries struct {
	suffix  string // ".example.com" for "*.example.com"
	entries []*entry
}

// entry is one match of one rule, in precedence order within its host.
type entry struct {
	rule  *Rule
	match match
	// order keys (the spec's tie breakers after the match itself)
	created time.Time
	route   string
	index   int
}

type match struct {
	pathType gatewayv1.PathMatchType
	path     string
	pathRE   *regexp.Regexp
	headers  []kvMatch
	query    []kvMatch
	method   string
}

type kvMatch struct {
	name  string
	value string
	re    *regexp.Regexp
}

// Rule is what a matched request gets: its filters and its backends.
type Rule struct {
	// Namespace and Route name the HTTPRoute, for metrics and logs.
	Namespace, Route string
	Backends         []*Backend
	total            int64
	RequestHeaders   *gatewayv1.HTTPHeaderFilter
	ResponseHeaders  *gatewayv1.HTTPHeaderFilter
	Redirect         *gatewayv1.HTTPRequestRedirectFilter
	Rewrite          *gatewayv1.HTTPURLRewriteFilter
	// Timeout bounds the whole request (spec.rules[].timeouts.request);
	// zero: none.
	Timeout time.Duration
	// Retry, when set, retries failed requests (spec.rules[].retry).
	Retry *RetryPolicy
}

// RetryPolicy is a rule's retry: which answers are retried, how often,
// after how long. Connection errors are always retried; only requests
// that can be sent again unchanged are (see replayable).
type RetryPolicy struct {
	// Codes are the status codes retried.
	Codes []int
	// Attempts is the number of retries after the first try.
	Attempts int
	// Backoff is the wait before the first retry; it doubles for each
	// further one, up to ten times itself.
	Backoff time.Duration
}

// Backend is one weighted backendRef, resolved to endpoints.
type Backend struct {
	// Name is "namespace/service:port", for metrics and logs.
	Name   string
	Weight int32
	// Endpoints are the Ready endpoints' host:port.
	Endpoints []string
	// Status, when not zero, is what requests sent to this backend get
	// instead: 500 for a reference that does not resolve, as the spec
	// requires for that backend's share of the traffic.
	Status int
	// H2C: the backend speaks HTTP/2 without TLS (appProtocol
	// kubernetes.io/h2c).
	H2C  bool
	next atomic.Uint64
}

// endpoint picks the next endpoint, round robin; "" when there is none.
// The retries of a request take the endpoints after it (at), so a retry
// goes to another endpoint when there is one.
func (b *Backend) endpoint() (string, uint64) {
	if len(b.Endpoints) == 0 {
		return "", 0
	}
	i := b.next.Add(1) - 1
	return b.at(i), i
}

func (b *Backend) at(i uint64) string { return b.Endpoints[i%uint64(len(b.Endpoints))] }

// pick chooses a backend by weight; nil when every weight is zero or there
// are no backends (the spec's 500).
func (r *Rule) pick() *Backend {
	if r.total <= 0 {
		return nil
	}
	n := rand.Int64N(r.total)
	for _, b := range r.Backends {
		if n < int64(b.Weight) {
			return b
		}
		n -= int64(b.Weight)
	}
	return nil
}

// RouteSpec is one HTTPRoute as the table needs it: the hostnames it
// serves on this listener (already intersected with the listener's) and
// its rules with resolved backends.
type RouteSpec struct {
	Namespace, Name string
	Created         time.Time
	// Hostnames: empty serves every host of the listener.
	Hostnames []string
	Rules     []RuleSpec
}

// RuleSpec is one rule of a RouteSpec.
type RuleSpec struct {
	Matches  []gatewayv1.HTTPRouteMatch
	Filters  []gatewayv1.HTTPRouteFilter
	Backends []*Backend
	Timeout  time.Duration
	Retry    *RetryPolicy
}

// Compile builds a listener's table. A rule with an invalid match (a
// regular expression that does not compile) is an error naming the route,
// so the controller can refuse that route and keep the others.
func Compile(port int32, routes []RouteSpec) (*Table, error) {
	t := &Table{Port: port, exact: map[string][]*entry{}}
	wild := map[string][]*entry{}
	for _, rs := range routes {
		key := rs.Namespace + "/" + rs.Name
		for ri, spec := range rs.Rules {
			rule, err := compileRule(rs, spec)
			if err != nil {
				return nil, fmt.Errorf("HTTPRoute %s rule %d: %w", key, ri, err)
			}
			matches := spec.Matches
			if len(matches) == 0 {
				// No match: every request, as a "/" prefix.
				matches = []gatewayv1.HTTPRouteMatch{{}}
			}
			for mi, m := range matches {
				cm, err := compileMatch(m)
				if err != nil {
					return nil, fmt.Errorf("HTTPRoute %s rule %d match %d: %w", key, ri, mi, err)
				}
				e := &entry{rule: rule, match: cm, created: rs.Created, route: key, index: ri*1000 + mi}
				if len(rs.Hostnames) == 0 {
					t.any = append(t.any, e)
				}
				for _, h := range rs.Hostnames {
					h = strings.ToLower(h)
					if suffix, ok := strings.CutPrefix(h, "*"); ok {
						wild[suffix] = append(wild[suffix], e)
					} else {
						t.exact[h] = append(t.exact[h], e)
					}
				}
			}
		}
	}
	for h := range t.exact {
		sortEntries(t.exact[h])
	}
	for s, es := range wild {
		sortEntries(es)
		t.wildcard = append(t.wildcard, wildcardEntries{suffix: s, entries: es})
	}
	slices.SortFunc(t.wildcard, func(a, b wildcardEntries) int {
		return cmp.Or(cmp.Compare(len(b.suffix), len(a.suffix)), strings.Compare(a.suffix, b.suffix))
	})
	sortEntries(t.any)
	return t, nil
}

func compileRule(rs RouteSpec, spec RuleSpec) (*Rule, error) {
	r := &Rule{Namespace: rs.Namespace, Route: rs.Name, Backends: spec.Backends, Timeout: spec.Timeout, Retry: spec.Retry}
	for _, b := range spec.Backends {
		if b.Weight < 0 {
			return nil, fmt.Errorf("backend %s: weight %d is negative", b.Name, b.Weight)
		}
		r.total += int64(b.Weight)
	}
	for _, f := range spec.Filters {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			r.RequestHeaders = f.RequestHeaderModifier
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			r.ResponseHeaders = f.ResponseHeaderModifier
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			r.Redirect = f.RequestRedirect
		case gatewayv1.HTTPRouteFilterURLRewrite:
			r.Rewrite = f.URLRewrite
		default:
			return nil, fmt.Errorf("filter type %q is not supported by CCI's gateway (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect and URLRewrite are)", f.Type)
		}
	}
	return r, nil
}

func compileMatch(m gatewayv1.HTTPRouteMatch) (match, error) {
	cm := match{pathType: gatewayv1.PathMatchPathPrefix, path: "/"}
	if m.Path != nil {
		if m.Path.Type != nil {
			cm.pathType = *m.Path.Type
		}
		if m.Path.Value != nil {
			cm.path = *m.Path.Value
		}
	}
	switch cm.pathType {
	case gatewayv1.PathMatchExact:
	case gatewayv1.PathMatchPathPrefix:
		// "/foo/" matches as "/foo" does: on whole segments.
		if len(cm.path) > 1 {
			cm.path = strings.TrimRight(cm.path, "/")
		}
	case gatewayv1.PathMatchRegularExpression:
		re, err := regexp.Compile("^(?:" + cm.path + ")$")
		if err != nil {
			return cm, fmt.Errorf("path regular expression %q: %w", cm.path, err)
		}
		cm.pathRE = re
	default:
		return cm, fmt.Errorf("path match type %q is not supported", cm.pathType)
	}
	for _, h := range m.Headers {
		kv := kvMatch{name: http.CanonicalHeaderKey(string(h.Name)), value: h.Value}
		if h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression {
			re, err := regexp.Compile(h.Value)
			if err != nil {
				return cm, fmt.Errorf("header %q regular expression %q: %w", h.Name, h.Value, err)
			}
			kv.re = re
		}
		cm.headers = append(cm.headers, kv)
	}
	for _, q := range m.QueryParams {
		kv := kvMatch{name: string(q.Name), value: q.Value}
		if q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression {
			re, err := regexp.Compile(q.Value)
			if err != nil {
				return cm, fmt.Errorf("query parameter %q regular expression %q: %w", q.Name, q.Value, err)
			}
			kv.re = re
		}
		cm.query = append(cm.query, kv)
	}
	if m.Method != nil {
		cm.method = string(*m.Method)
	}
	return cm, nil
}

// sortEntries orders one host's entries by the spec's precedence: an exact
// path before a prefix, a longer prefix before a shorter one (regular
// expressions, whose place the spec leaves to implementations, come
// between exact paths and prefixes, longer first, as in Envoy Gateway: a
// regex is written to catch what a prefix would), then a
// method match, then more header matches, then more query matches; ties go
// to the older route, then the route first by namespace/name, then the
// rule and match written first.
func sortEntries(es []*entry) {
	rank := func(m match) int {
		switch m.pathType {
		case gatewayv1.PathMatchExact:
			return 0
		case gatewayv1.PathMatchRegularExpression:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(es, func(a, b *entry) int {
		return cmp.Or(
			cmp.Compare(rank(a.match), rank(b.match)),
			cmp.Compare(len(b.match.path), len(a.match.path)),
			cmp.Compare(boolInt(b.match.method != ""), boolInt(a.match.method != "")),
			cmp.Compare(len(b.match.headers), len(a.match.headers)),
			cmp.Compare(len(b.match.query), len(a.match.query)),
			a.created.Compare(b.created),
			strings.Compare(a.route, b.route),
			cmp.Compare(a.index, b.index),
		)
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Lookup returns the entry a request matches: among the routes of the
// request's exact host first, then of the longest matching wildcard, then
// of routes for any host. nil: no route (404).
func (t *Table) Lookup(r *http.Request) *entry {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if e := first(t.exact[host], r); e != nil {
		return e
	}
	for _, w := range t.wildcard {
		if strings.HasSuffix(host, w.suffix) && len(host) > len(w.suffix) {
			if e := first(w.entries, r); e != nil {
				return e
			}
		}
	}
	return first(t.any, r)
}

func first(es []*entry, r *http.Request) *entry {
	for _, e := range es {
		if e.match.matches(r) {
			return e
		}
	}
	return nil
}

func (m *match) matches(r *http.Request) bool {
	p := r.URL.Path
	if p == "" {
		p = "/"
	}
	switch m.pathType {
	case gatewayv1.PathMatchExact:
		if p != m.path {
			return false
		}
	case gatewayv1.PathMatchPathPrefix:
		if m.path != "/" && p != m.path && !strings.HasPrefix(p, m.path+"/") {
			return false
		}
	case gatewayv1.PathMatchRegularExpression:
		if !m.pathRE.MatchString(p) {
			return false
		}
	}
	if m.method != "" && r.Method != m.method {
		return false
	}
	for _, h := range m.headers {
		vals := r.Header.Values(h.name)
		if h.name == "Host" {
			vals = []string{r.Host}
		}
		if !anyMatches(vals, h) {
			return false
		}
	}
	if len(m.query) > 0 {
		q := r.URL.Query()
		for _, kv := range m.query {
			if !anyMatches(q[kv.name], kv) {
				return false
			}
		}
	}
	return true
}

func anyMatches(vals []string, kv kvMatch) bool {
	for _, v := range vals {
		if kv.re != nil && kv.re.MatchString(v) || kv.re == nil && v == kv.value {
			return true
		}
	}
	return false
}

// rewritePath applies a path modifier to path; prefix is the matched
// prefix for ReplacePrefixMatch.
func rewritePath(path, prefix string, mod *gatewayv1.HTTPPathModifier) string {
	switch mod.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if mod.ReplaceFullPath != nil {
			return *mod.ReplaceFullPath
		}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if mod.ReplacePrefixMatch == nil {
			return path
		}
		repl := *mod.ReplacePrefixMatch
		rest := path
		if prefix != "/" {
			rest = strings.TrimPrefix(path, prefix)
		}
		// Join on exactly one slash: "/foo/bar" with prefix "/foo" and
		// replacement "/" is "/bar", not "//bar".
		switch {
		case strings.HasSuffix(repl, "/") && strings.HasPrefix(rest, "/"):
			rest = rest[1:]
		case !strings.HasSuffix(repl, "/") && rest != "" && !strings.HasPrefix(rest, "/"):
			rest = "/" + rest
		}
		out := repl + rest
		if out == "" {
			out = "/"
		}
		return out
	}
	return path
}

// applyHeaders applies a header modifier.
func applyHeaders(h http.Header, f *gatewayv1.HTTPHeaderFilter) {
	if f == nil {
		return
	}
	for _, kv := range f.Set {
		h.Set(string(kv.Name), kv.Value)
	}
	for _, kv := range f.Add {
		h.Add(string(kv.Name), kv.Value)
	}
	for _, name := range f.Remove {
		h.Del(name)
	}
}
