package console

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/cci-project/cci/internal/metering"
	"github.com/cci-project/cci/internal/policy"
)

const goodToken = "good-token"

// upstream is an HTTPS server in the apiserver's place: it knows one
// token, answers the review calls the console makes at login and records
// what the console forwards to it.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
	// revoked makes goodToken refused too, as the API does once a
	// tenant's service account and token are deleted.
	revoked atomic.Bool
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Clone(r.Context()))
		u.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+goodToken || u.revoked.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/apis/authentication.k8s.io/v1/selfsubjectreviews":
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","status":{"userInfo":{"username":"system:serviceaccount:acme:tenant","groups":["system:serviceaccounts"]}}}`)
		case r.URL.Path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","status":{"allowed":false}}`)
		case r.URL.Path == metering.UsagePath && r.URL.Query().Get("by") == "day":
			// A report by day: namespace acme costs the day of the month
			// and 10 core-seconds a day, namespace other 100.
			since, _ := time.Parse(time.RFC3339, r.URL.Query().Get("since"))
			until, _ := time.Parse(time.RFC3339, r.URL.Query().Get("until"))
			rep := metering.Report{Currency: "CNY"}
			for d := since; d.Before(until); d = d.AddDate(0, 0, 1) {
				acme := metering.Usage{Cost: float64(d.Day()), CoreSeconds: 10}
				other := metering.Usage{Cost: 100}
				rep.Days = append(rep.Days, metering.DayUsage{Date: d.Format(time.DateOnly), Usage: metering.Usage{Cost: acme.Cost + other.Cost, CoreSeconds: 10},
					Namespaces: []metering.DayNamespaceUsage{{Tenant: "acme", Namespace: "acme", Usage: acme}, {Tenant: "acme", Namespace: "other", Usage: other}}})
			}
			_ = json.NewEncoder(w).Encode(rep)
		case r.URL.Query().Get("watch") == "1":
			// A watch: one event now, the next only when the client is gone
			// (it never is before the test reads the first).
			fmt.Fprintf(w, `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p","resourceVersion":%q}}}`+"\n", r.URL.Query().Get("resourceVersion"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case r.Header.Get("Upgrade") == "websocket":
			// Enough of an upgrade to see bytes pass both ways.
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprint(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n")
			buf.Flush()
			line, _ := buf.ReadString('\n')
			fmt.Fprint(buf, "echo:"+line)
			buf.Flush()
		default:
			fmt.Fprintf(w, `{"kind":"PodList","path":%q}`, r.URL.Path)
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func newTestServer(t *testing.T, up *upstream) *Server {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	admin := fake.NewClientset()
	// The apiserver's TokenReview of a bad token says why it failed.
	admin.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &authnv1.TokenReview{Status: authnv1.TokenReviewStatus{Authenticated: false, Error: "token has expired"}}, nil
	})
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw})
	s, err := New(Config{
		APIServer: up.URL, CAPEM: caPEM, UsageURL: up.URL, RegistryAddr: "127.0.0.1:5000",
		Prices: metering.DefaultPrices(), SessionKey: key, Admin: admin, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Assets: fstest.MapFS{"index.html": {Data: []byte("<html>app</html>")}, "assets/app-1.js": {Data: []byte("js")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func do(t *testing.T, h http.Handler, method, path, body string, hdr map[string]string, cookies ...*http.Cookie) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, "https://console.test"+path, strings.NewReader(body))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func message(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var st struct{ Message string }
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("answer %d is not a Status: %v: %s", w.Code, err, w.Body)
	}
	return st.Message
}

func sessionCookieOf(t *testing.T, w *httptest.ResponseRecorder) *http.Cookie {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == CookieName && c.Value != "" {
			return c
		}
	}
	return nil
}

func TestLoginRefusedWithReason(t *testing.T) {
	s := newTestServer(t, newUpstream(t))
	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"expired token", `{"token":"stale"}`, 401, "token has expired"},
		{"no credential", `{}`, 400, "give a token or a kubeconfig"},
		{"not JSON", `token=x`, 400, "want JSON"},
		{"blank inside token", `{"token":"a b"}`, 400, "blanks inside"},
		{"kubeconfig that does not parse", `{"kubeconfig":"apiVersion: [v1"}`, 400, "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, s.Handler(), "POST", "/cci/login", tt.body, nil)
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.code, w.Body)
			}
			if msg := message(t, w); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not say %q", msg, tt.want)
			}
			if c := sessionCookieOf(t, w); c != nil {
				t.Errorf("a refused login set a session cookie")
			}
		})
	}
}

func TestLoginSetsSealedStrictCookie(t *testing.T) {
	s := newTestServer(t, newUpstream(t))
	w := do(t, s.Handler(), "POST", "/cci/login", `{"token":"Bearer `+goodToken+`\n"}`, nil)
	if w.Code != 200 {
		t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	var me Me
	if err := json.Unmarshal(w.Body.Bytes(), &me); err != nil {
		t.Fatal(err)
	}
	if me.User != "system:serviceaccount:acme:tenant" || me.Namespace != "acme" || me.Operator {
		t.Errorf("login answered %+v", me)
	}
	c := sessionCookieOf(t, w)
	if c == nil {
		t.Fatal("no session cookie")
	}
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("cookie flags: HttpOnly=%v Secure=%v SameSite=%v Path=%q", c.HttpOnly, c.Secure, c.SameSite, c.Path)
	}
	if strings.Contains(c.Value, goodToken) || strings.Contains(w.Body.String(), goodToken) {
		t.Error("the token is readable in the cookie or the answer")
	}
	if w := do(t, s.Handler(), "GET", "/cci/session", "", nil, c); w.Code != 200 {
		t.Errorf("session with the cookie: %d %s", w.Code, w.Body)
	}

	// A cookie changed by one byte, or sealed by another console, is no session.
	tampered := *c
	b := []byte(tampered.Value)
	b[len(b)/2] ^= 1
	tampered.Value = string(b)
	other := newTestServer(t, newUpstream(t))
	for name, h := range map[string]http.Handler{"tampered": s.Handler(), "other key": other.Handler()} {
		cookie := &tampered
		if name == "other key" {
			cookie = c
		}
		if w := do(t, h, "GET", "/api/v1/pods", "", nil, cookie); w.Code != 401 {
			t.Errorf("%s cookie: status %d, want 401", name, w.Code)
		}
	}

	// Logout clears the cookie.
	w = do(t, s.Handler(), "POST", "/cci/logout", "", nil, c)
	var cleared bool
	for _, k := range w.Result().Cookies() {
		cleared = cleared || (k.Name == CookieName && k.MaxAge < 0)
	}
	if !cleared {
		t.Error("logout did not clear the cookie")
	}
}

func TestExpiredSession(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, up)
	c := sessionCookieOf(t, do(t, s.Handler(), "POST", "/cci/login", `{"token":"`+goodToken+`"}`, nil))
	s.cfg.Now = func() time.Time { return time.Now().Add(sessionTTL + time.Minute) }
	n := up.count()
	w := do(t, s.Handler(), "GET", "/api/v1/pods", "", nil, c)
	if w.Code != 401 || !strings.Contains(message(t, w), "log in again") {
		t.Errorf("expired session: %d %s", w.Code, w.Body)
	}
	if up.count() != n {
		t.Error("an expired session's request reached the API")
	}
}

// TestRevokedCredential: once the API refuses a session's token, the
// proxied request and the session check answer 401 saying so, and the
// cookie is cleared.
func TestRevokedCredential(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, up)
	c := sessionCookieOf(t, do(t, s.Handler(), "POST", "/cci/login", `{"token":"`+goodToken+`"}`, nil))
	up.revoked.Store(true)
	for _, path := range []string{"/api/v1/namespaces/acme/pods", "/cci/usage", "/cci/session"} {
		w := do(t, s.Handler(), "GET", path, "", nil, c)
		if w.Code != 401 || !strings.Contains(message(t, w), "no longer accepts this session's credential (expired or revoked); log in again") {
			t.Errorf("GET %s with a revoked token: %d %s", path, w.Code, w.Body)
		}
		cleared := false
		for _, k := range w.Result().Cookies() {
			cleared = cleared || (k.Name == CookieName && k.MaxAge < 0)
		}
		if !cleared {
			t.Errorf("GET %s with a revoked token left the cookie: %q", path, w.Result().Header.Values("Set-Cookie"))
		}
	}
	if w := do(t, s.Handler(), "GET", "/api/v1/namespaces/acme/pods", "", nil, c); !strings.Contains(message(t, w), "the API said: Unauthorized") {
		t.Errorf("the API's own word is lost: %s", w.Body)
	}
}

func TestProxyReplacesCredential(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, up)
	c := sessionCookieOf(t, do(t, s.Handler(), "POST", "/cci/login", `{"token":"`+goodToken+`"}`, nil))

	w := do(t, s.Handler(), "GET", "/api/v1/namespaces/acme/pods?limit=5", "", map[string]string{"Authorization": "Bearer forged"}, c)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"/api/v1/namespaces/acme/pods"`) {
		t.Fatalf("proxied list: %d %s", w.Code, w.Body)
	}
	r := up.last()
	if got := r.Header.Get("Authorization"); got != "Bearer "+goodToken {
		t.Errorf("the API got Authorization %q, want the session's token", got)
	}
	if r.Header.Get("Cookie") != "" {
		t.Error("the session cookie was forwarded to the API")
	}
	if r.URL.RawQuery != "limit=5" {
		t.Errorf("query %q not passed on", r.URL.RawQuery)
	}

	// Without a session nothing reaches the API, whatever the browser sends.
	n := up.count()
	w = do(t, s.Handler(), "GET", "/api/v1/pods", "", map[string]string{"Authorization": "Bearer " + goodToken})
	if w.Code != 401 || up.count() != n {
		t.Errorf("no session: status %d, API called %d times", w.Code, up.count()-n)
	}

	// Usage goes to the metering endpoint's path, as the user.
	do(t, s.Handler(), "GET", "/cci/usage?since=2026-01-01", "", nil, c)
	if r := up.last(); r.URL.Path != metering.UsagePath || r.URL.RawQuery != "since=2026-01-01" || r.Header.Get("Authorization") != "Bearer "+goodToken {
		t.Errorf("usage proxied as %s?%s with %q", r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"))
	}
}

func TestCrossSiteRefused(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, up)
	c := sessionCookieOf(t, do(t, s.Handler(), "POST", "/cci/login", `{"token":"`+goodToken+`"}`, nil))
	n := up.count()
	w := do(t, s.Handler(), "DELETE", "/api/v1/namespaces/acme/pods/p", "", map[string]string{"Origin": "https://evil.example"}, c)
	if w.Code != 403 || up.count() != n {
		t.Errorf("cross-site DELETE: status %d, API called %d times", w.Code, up.count()-n)
	}
	w = do(t, s.Handler(), "DELETE", "/api/v1/namespaces/acme/pods/p", "", map[string]string{"Origin": "https://console.test"}, c)
	if w.Code != 200 {
		t.Errorf("same-origin DELETE: status %d %s", w.Code, w.Body)
	}
}

// TestExecUpgradePassesThrough: a WebSocket upgrade (exec) reaches the API
// with the user's token, and bytes flow both ways after the 101.
func TestExecUpgradePassesThrough(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, up)
	c := sessionCookieOf(t, do(t, s.Handler(), "POST", "/cci/login", `{"token":"`+goodToken+`"}`, nil))
	srv := httptest.NewTLSServer(s.Handler())
	defer srv.Close()
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/namespaces/acme/pods/p/exec?command=sh HTTP/1.1\r\nHost: %s\r\nOrigin: https://%s\r\nCookie: %s=%s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
		srv.Listener.Addr(), srv.Listener.Addr(), CookieName, c.Value)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade answered %s: %s", resp.Status, b)
	}
	fmt.Fprint(conn, "hi\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo:hi\n" {
		t.Errorf("after the upgrade read %q, %v", line, err)
	}
	if got := up.last().Header.Get("Authorization"); got != "Bearer "+goodToken {
		t.Errorf("upgrade reached the API with Authorization %q", got)
	}
}

func TestCredentialFromKubeconfig(t *testing.T) {
	kc := func(user string) string {
		return `apiVersion: v1
kind: Config
clusters: [{name: cci, cluster: {server: "https://10.0.0.1:6443"}}]
contexts: [{name: acme, context: {cluster: cci, user: acme, namespace: acme}}]
current-context: acme
users: [{name: acme, user: ` + user + `}]
`
	}
	tests := []struct {
		name, user string
		token      string
		cert       bool
		ns, err    string
	}{
		{"token", `{token: tok123}`, "tok123", false, "acme", ""},
		{"client certificate", `{client-certificate-data: Y2VydA==, client-key-data: a2V5}`, "", true, "acme", ""},
		{"files", `{client-certificate: /etc/cert.pem, client-key: /etc/key.pem}`, "", false, "", "names files"},
		{"nothing", `{username: bob}`, "", false, "", "neither a token nor a client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, ns, err := credentialFrom(loginRequest{Kubeconfig: kc(tt.user)})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cred.Token != tt.token || (len(cred.CertPEM) > 0) != tt.cert || ns != tt.ns {
				t.Errorf("got token %q cert %v ns %q", cred.Token, len(cred.CertPEM) > 0, ns)
			}
		})
	}
}

func TestFlavorTable(t *testing.T) {
	ft := flavorTable(metering.DefaultPrices())
	if ft.Currency != "USD" || len(ft.Flavors) < 10 {
		t.Fatalf("table: %s, %d flavors", ft.Currency, len(ft.Flavors))
	}
	if f := ft.Flavors[0]; f.CPU != 0.25 || f.Memory != 0.5 {
		t.Errorf("smallest flavor %+v, want 0.25 CPU / 0.5 GiB", f)
	}
	for _, f := range ft.Flavors {
		pf := policy.Flavor{MilliCPU: int64(f.CPU * 1000), Memory: int64(f.Memory * float64(policy.GiB))}
		if why := pf.Check(); len(why) > 0 {
			t.Errorf("offered flavor %s is refused by admission: %v", f.Name, why)
		}
		want := 3600 * (f.CPU*0.000011244 + f.Memory*0.0000012347)
		if f.PricePerHour <= 0 || f.PricePerHour-want > 1e-6 || want-f.PricePerHour > 1e-6 {
			t.Errorf("%s costs %v an hour, want %v", f.Name, f.PricePerHour, want)
		}
	}
}

func TestAppRoutes(t *testing.T) {
	s := newTestServer(t, newUpstream(t))
	for path, want := range map[string]string{
		"/":                  "<html>app</html>",
		"/workloads":         "<html>app</html>",
		"/pods/acme/web-1":   "<html>app</html>",
		"/assets/app-1.js":   "js",
		"/cci/no-such-thing": "no console endpoint",
	} {
		w := do(t, s.Handler(), "GET", path, "", nil)
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET %s: %d %q, want %q", path, w.Code, w.Body, want)
		}
		if w.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", path)
		}
	}
}

func TestPlaceholderWithoutBuild(t *testing.T) {
	a := Assets()
	b, err := fs.ReadFile(a, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	// Either the built app or the placeholder: a page, never nothing.
	if !strings.Contains(string(b), "<html") {
		t.Errorf("index.html: %.80q", b)
	}
}

// TestWatchStreamsThroughProxy: a watch's events reach the browser as the
// API sends them, not when the stream ends (which a watch never does).
func TestWatchStreamsThroughProxy(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, up)
	c := sessionCookieOf(t, do(t, s.Handler(), "POST", "/cci/login", `{"token":"`+goodToken+`"}`, nil))
	srv := httptest.NewTLSServer(s.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/namespaces/acme/pods?watch=1&resourceVersion=42", nil)
	req.AddCookie(c)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"type":"ADDED"`) || !strings.Contains(line, `"resourceVersion":"42"`) {
		t.Fatalf("first watch event %q, %v", line, err)
	}
	if got := up.last().Header.Get("Authorization"); got != "Bearer "+goodToken {
		t.Errorf("the watch reached the API with Authorization %q", got)
	}
}

// TestDailyUsage: the month so far, one usage report by day, the
// namespace asked picked out of each day.
func TestDailyUsage(t *testing.T) {
	up := newUpstream(t)
	s := newTestServer(t, up)
	s.cfg.Now = func() time.Time { return time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC) }
	c := sessionCookieOf(t, do(t, s.Handler(), "POST", "/cci/login", `{"token":"`+goodToken+`"}`, nil))
	before := up.count()
	w := do(t, s.Handler(), "GET", "/cci/usage/daily?namespace=acme", "", nil, c)
	if w.Code != 200 {
		t.Fatalf("daily usage: %d %s", w.Code, w.Body)
	}
	var d Daily
	if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, day := range d.Days {
		got = append(got, fmt.Sprintf("%s=%g", day.Date, day.Cost))
	}
	if want := "2026-03-01=1 2026-03-02=2 2026-03-03=3"; strings.Join(got, " ") != want {
		t.Errorf("days %v, want %s", got, want)
	}
	if d.Total.Cost != 6 || d.Total.CoreSeconds != 30 || d.Currency != "CNY" {
		t.Errorf("total %+v currency %q", d.Total, d.Currency)
	}
	if r := up.last(); r.Header.Get("Authorization") != "Bearer "+goodToken {
		t.Errorf("usage asked with Authorization %q, want the user's", r.Header.Get("Authorization"))
	}
	if n := up.count() - before; n != 1 {
		t.Errorf("the usage endpoint was asked %d times, want once", n)
	}
}
