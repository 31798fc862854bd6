package gateway

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func pathMatch(t gatewayv1.PathMatchType, v string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(t), Value: ptr.To(v)}}
}

// backend makes a backend whose name is what the test expects back.
func backend(name string, weight int32) *Backend {
	return &Backend{Name: name, Weight: weight, Endpoints: []string{"192.0.2.1:80"}}
}

func route(name string, hosts []string, rules ...RuleSpec) RouteSpec {
	return RouteSpec{Namespace: "ns", Name: name, Hostnames: hosts, Created: time.Unix(100, 0), Rules: rules}
}

func rule(b string, matches ...gatewayv1.HTTPRouteMatch) RuleSpec {
	return RuleSpec{Matches: matches, Backends: []*Backend{backend(b, 1)}}
}

func TestLookup(t *testing.T) {
	older := route("older", []string{"shop.example"}, rule("older", pathMatch(gatewayv1.PathMatchPathPrefix, "/tie")))
	older.Created = time.Unix(50, 0)
	routes := []RouteSpec{
		route("shop", []string{"shop.example"},
			rule("root", pathMatch(gatewayv1.PathMatchPathPrefix, "/")),
			rule("api", pathMatch(gatewayv1.PathMatchPathPrefix, "/api/")),
			rule("api-exact", pathMatch(gatewayv1.PathMatchExact, "/api")),
			rule("post", gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/api")}, Method: ptr.To(gatewayv1.HTTPMethodPost)}),
			rule("canary", gatewayv1.HTTPRouteMatch{
				Path:    &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/api")},
				Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-canary", Value: "yes"}}}),
			rule("query", gatewayv1.HTTPRouteMatch{
				Path:        &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/api")},
				QueryParams: []gatewayv1.HTTPQueryParamMatch{{Name: "v", Value: "2"}}}),
			rule("regex", pathMatch(gatewayv1.PathMatchRegularExpression, "/img/[0-9]+\\.png")),
			rule("newer-tie", pathMatch(gatewayv1.PathMatchPathPrefix, "/tie")),
		),
		older,
		route("wild", []string{"*.example"}, rule("wild")),
		route("any", nil, rule("any")),
	}
	tbl, err := Compile(80, routes)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, url, host string
		header            [2]string
		want              string
	}{
		{"GET", "/", "shop.example", [2]string{}, "root"},
		{"GET", "/index.html", "shop.example:8080", [2]string{}, "root"},
		{"GET", "/api", "shop.example", [2]string{}, "api-exact"},
		{"GET", "/api/x", "shop.example", [2]string{}, "api"},
		{"GET", "/apix", "shop.example", [2]string{}, "root"}, // prefixes match whole segments
		{"POST", "/api/x", "shop.example", [2]string{}, "post"},
		{"GET", "/api/x", "shop.example", [2]string{"X-Canary", "yes"}, "canary"},
		{"GET", "/api/x", "shop.example", [2]string{"X-Canary", "no"}, "api"},
		{"GET", "/api/x?v=2", "shop.example", [2]string{}, "query"},
		{"GET", "/img/12.png", "shop.example", [2]string{}, "regex"},
		{"GET", "/img/12.png.bak", "shop.example", [2]string{}, "root"},
		{"GET", "/tie", "SHOP.example", [2]string{}, "older"},
		{"GET", "/", "a.b.example", [2]string{}, "wild"},
		{"GET", "/", "example", [2]string{}, "any"},
		{"GET", "/", "other.test", [2]string{}, "any"},
	} {
		r := httptest.NewRequest(tc.method, "http://"+tc.host+tc.url, nil)
		if tc.header[0] != "" {
			r.Header.Set(tc.header[0], tc.header[1])
		}
		e := tbl.Lookup(r)
		if e == nil {
			t.Errorf("%s %s%s: no match, want %s", tc.method, tc.host, tc.url, tc.want)
			continue
		}
		if got := e.rule.Backends[0].Name; got != tc.want {
			t.Errorf("%s %s%s: matched %s, want %s", tc.method, tc.host, tc.url, got, tc.want)
		}
	}

	// Without a route for any host, another host gets nothing.
	tbl, _ = Compile(80, routes[:1])
	if e := tbl.Lookup(httptest.NewRequest("GET", "http://other.test/", nil)); e != nil {
		t.Errorf("other.test matched %s; want no match (404)", e.rule.Backends[0].Name)
	}
}

func TestCompileRefusesBadInput(t *testing.T) {
	for name, rs := range map[string]RuleSpec{
		"path regex":   rule("x", pathMatch(gatewayv1.PathMatchRegularExpression, "/(unclosed")),
		"header regex": {Matches: []gatewayv1.HTTPRouteMatch{{Headers: []gatewayv1.HTTPHeaderMatch{{Type: ptr.To(gatewayv1.HeaderMatchRegularExpression), Name: "a", Value: "*"}}}}},
		"weight":       {Backends: []*Backend{backend("x", -1)}},
		"filter":       {Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror}}},
	} {
		_, err := Compile(80, []RouteSpec{route("bad", nil, rs)})
		if err == nil || !strings.Contains(err.Error(), "HTTPRoute ns/bad rule 0") {
			t.Errorf("%s: error %v, want one naming the route and rule", name, err)
		}
	}
}

func TestWeights(t *testing.T) {
	r, err := compileRule(RouteSpec{}, RuleSpec{Backends: []*Backend{backend("blue", 70), backend("green", 30), backend("off", 0)}})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	const n = 100000
	for range n {
		counts[r.pick().Name]++
	}
	// 100,000 draws: the standard deviation of a 70 % share is 0.14 %.
	if share := float64(counts["blue"]) / n; share < 0.68 || share > 0.72 {
		t.Errorf("blue got %.3f of the requests, want 0.70", share)
	}
	if counts["off"] != 0 {
		t.Errorf("a backend of weight 0 got %d requests", counts["off"])
	}
	r, _ = compileRule(RouteSpec{}, RuleSpec{Backends: []*Backend{backend("blue", 0)}})
	if b := r.pick(); b != nil {
		t.Errorf("every weight 0: picked %s, want none (500)", b.Name)
	}
}

func TestRewritePath(t *testing.T) {
	full := &gatewayv1.HTTPPathModifier{Type: gatewayv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr.To("/new")}
	pre := func(s string) *gatewayv1.HTTPPathModifier {
		return &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To(s)}
	}
	for _, tc := range []struct {
		path, prefix string
		mod          *gatewayv1.HTTPPathModifier
		want         string
	}{
		{"/a/b", "/a", full, "/new"},
		{"/a/b", "/a", pre("/x"), "/x/b"},
		{"/a/b", "/a", pre("/"), "/b"},
		{"/a", "/a", pre("/x"), "/x"},
		{"/a", "/a", pre("/"), "/"},
		{"/a/b", "/", pre("/x"), "/x/a/b"},
		{"/a/b", "/a", pre("/x/"), "/x/b"},
	} {
		if got := rewritePath(tc.path, tc.prefix, tc.mod); got != tc.want {
			t.Errorf("rewrite %s (prefix %s) with %v: %s, want %s", tc.path, tc.prefix, tc.mod, got, tc.want)
		}
	}
}

func TestIntersect(t *testing.T) {
	h := func(s string) *gatewayv1.Hostname { v := gatewayv1.Hostname(s); return &v }
	for _, tc := range []struct {
		listener *gatewayv1.Hostname
		route    []gatewayv1.Hostname
		want     string
		ok       bool
	}{
		{nil, nil, "", true},
		{nil, []gatewayv1.Hostname{"a.example"}, "a.example", true},
		{h("a.example"), nil, "a.example", true},
		{h("*.example"), []gatewayv1.Hostname{"a.example", "b.test"}, "a.example", true},
		{h("a.example"), []gatewayv1.Hostname{"*.example"}, "a.example", true},
		{h("a.example"), []gatewayv1.Hostname{"b.example"}, "", false},
	} {
		got, ok := intersect(tc.listener, tc.route)
		if ok != tc.ok || strings.Join(got, ",") != tc.want {
			t.Errorf("intersect(%v, %v) = %v %v, want %q %v", ptr.Deref(tc.listener, ""), tc.route, got, ok, tc.want, tc.ok)
		}
	}
}

// TestProxy sends requests through a data plane port to two real HTTP
// servers and checks filters, redirects, the unresolved backend's 500 and
// that a table swap leaves a request in flight alone.
func TestProxy(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{})
	blue := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		w.Header().Set("X-Remove", "1")
		w.Write([]byte("blue " + r.URL.Path + " " + r.Header.Get("X-Added") + " " + r.Host))
	}))
	defer blue.Close()
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("green")) }))
	defer green.Close()
	ep := func(s *httptest.Server) []string { return []string{strings.TrimPrefix(s.URL, "http://")} }

	dp := NewDataplane("127.0.0.1", testLogger(t), nil)
	defer dp.Close()
	port, err := dp.Reserve(0)
	if err != nil {
		t.Fatal(err)
	}
	tableWith := func(blueW, greenW int32) *Table {
		tbl, err := Compile(80, []RouteSpec{route("shop", []string{"shop.example"},
			RuleSpec{Backends: []*Backend{{Name: "blue", Weight: blueW, Endpoints: ep(blue)}, {Name: "green", Weight: greenW, Endpoints: ep(green)}}},
			RuleSpec{
				Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, "/old")},
				Filters: []gatewayv1.HTTPRouteFilter{
					{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Hostname: ptr.To(gatewayv1.PreciseHostname("rewritten.example")), Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/new")}}},
					{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Add: []gatewayv1.HTTPHeader{{Name: "X-Added", Value: "yes"}}}},
					{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Remove: []string{"X-Remove"}, Set: []gatewayv1.HTTPHeader{{Name: "X-Set", Value: "1"}}}},
				},
				Backends: []*Backend{{Name: "blue", Weight: 1, Endpoints: ep(blue)}},
			},
			RuleSpec{
				Matches: []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, "/go")},
				Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{Scheme: ptr.To("https"), StatusCode: ptr.To(301)}}},
			},
			RuleSpec{
				Matches:  []gatewayv1.HTTPRouteMatch{pathMatch(gatewayv1.PathMatchPathPrefix, "/missing")},
				Backends: []*Backend{{Name: "missing", Weight: 1, Status: 500}},
			},
		)})
		if err != nil {
			t.Fatal(err)
		}
		return tbl
	}
	if err := dp.Set(map[int]*Table{port: tableWith(1, 0)}); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(port)+path, nil)
		req.Host = "shop.example"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if _, body := get("/"); body != "blue /  shop.example" {
		t.Errorf("GET /: %q", body)
	}
	// The same table on a Gateway's own address, bound directly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	direct := ln.Addr().String()
	ln.Close()
	dp.SetDirect(map[string]int{direct: port})
	req, _ := http.NewRequest("GET", "http://"+direct+"/", nil)
	req.Host = "shop.example"
	if resp, err := client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("GET / on the direct address %s: %v %v", direct, resp, err)
	} else {
		resp.Body.Close()
	}
	dp.SetDirect(nil)
	if _, err := client.Do(req); err == nil {
		t.Errorf("the direct address %s still answers after SetDirect(nil)", direct)
	}
	resp, body := get("/old/page")
	if body != "blue /new/page yes rewritten.example" || resp.Header.Get("X-Remove") != "" || resp.Header.Get("X-Set") != "1" {
		t.Errorf("rewrite and header filters: %q, headers %v", body, resp.Header)
	}
	if resp, _ := get("/go/x?q=1"); resp.StatusCode != 301 || resp.Header.Get("Location") != "https://shop.example/go/x?q=1" {
		t.Errorf("redirect: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get("/missing"); resp.StatusCode != 500 {
		t.Errorf("unresolved backend: %d, want 500", resp.StatusCode)
	}

	// A request in flight on blue while the weights go to green finishes.
	done := make(chan string)
	go func() {
		_, body := get("/slow")
		done <- body
	}()
	<-started
	if err := dp.Set(map[int]*Table{port: tableWith(0, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, body := get("/"); body != "green" {
		t.Errorf("after the shift: %q, want green", body)
	}
	close(release)
	if body := <-done; body != "blue /slow  shop.example" {
		t.Errorf("the request in flight during the shift: %q", body)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
