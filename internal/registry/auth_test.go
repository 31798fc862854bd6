package registry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestAuthorize(t *testing.T) {
	public := func(repo string) bool { return repo == "library/pause" || strings.HasPrefix(repo, "cci-test/") }
	a, b, anon, op := Identity{Tenant: "a"}, Identity{Tenant: "b"}, Identity{}, Identity{Operator: true}
	tests := []struct {
		id     Identity
		repo   string
		action string
		want   string // "" allowed, else a part of the refusal
	}{
		{a, "a/app", ActionPush, ""},
		{a, "a/app", ActionPull, ""},
		{a, "a/deep/app", ActionDelete, ""},
		{a, "b/app", ActionPush, `tenant "a" may push only under its own prefix "a/", not to "b/app"`},
		{a, "b/app", ActionDelete, "may delete only under its own prefix"},
		{a, "b/app", ActionPull, `tenant "a" may pull only its own repositories (a/…) and public ones; "b/app" is neither`},
		// A tenant whose name is a prefix of another's is not that tenant.
		{a, "ab/app", ActionPull, "is neither"},
		{a, "a", ActionPush, "only under its own prefix"},
		{a, "cci-test/httpd", ActionPull, ""},
		{a, "cci-test/httpd", ActionPush, "only under its own prefix"},
		{a, "library/pause", ActionPull, ""},
		{b, "a/app", ActionPull, "is neither"},
		{anon, "cci-test/httpd", ActionPull, ""},
		{anon, "a/app", ActionPull, `an anonymous client may only pull public repositories, and "a/app" is not public`},
		{anon, "cci-test/httpd", ActionPush, "not public"},
		{Identity{Node: true}, "a/app", ActionPull, ""},
		{Identity{Node: true}, "a/app", ActionPush, "may only pull"},
		{op, "a/app", ActionPush, ""},
		{op, "anything/at/all", ActionDelete, ""},
	}
	for _, tt := range tests {
		err := Authorize(tt.id, tt.repo, tt.action, public)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s %s %q: refused: %v", tt.id, tt.action, tt.repo, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s %s %q: error %v, want one containing %q", tt.id, tt.action, tt.repo, err, tt.want)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	k, err := LoadKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{"a": "uid-a", "b": "uid-b"}
	tenants := func(n string) (string, bool) { u, ok := uids[n]; return u, ok }
	tests := []struct {
		user, pass string
		want       Identity
		wantErr    bool
	}{
		{"", "", Identity{}, false},
		{OperatorUser, k.Operator(), Identity{Operator: true}, false},
		{OperatorUser, "guess", Identity{}, true},
		{"a", k.Tenant("a", "uid-a"), Identity{Tenant: "a"}, false},
		// b's password does not open a, nor a password of a former tenant a.
		{"a", k.Tenant("b", "uid-b"), Identity{}, true},
		{"a", k.Tenant("a", "old-uid"), Identity{}, true},
		{"gone", k.Tenant("gone", "uid"), Identity{}, true},
		{"a", "", Identity{}, true},
		{NodeUser, "join-token", Identity{Node: true}, false},
		{NodeUser, "other", Identity{}, true},
	}
	for _, tt := range tests {
		got, err := k.Authenticate(tt.user, tt.pass, tenants, "join-token")
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Authenticate(%q, …) = %v, %v; want %v, error %v", tt.user, got, err, tt.want, tt.wantErr)
		}
	}
	// The key is kept: the same folder gives the same passwords.
	again, err := LoadKeys(filepath.Dir(filepath.Join(t.TempDir(), "x")))
	if err != nil {
		t.Fatal(err)
	}
	if again.Operator() == k.Operator() {
		t.Error("two new key folders gave the same operator password")
	}
}

func TestPublicFile(t *testing.T) {
	dir := t.TempDir()
	p, err := NewPublic(dir, []string{"cci-test/*"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Match("cci-test/httpd") || p.Match("cci-testx/httpd") || p.Match("library/web") {
		t.Fatal("fixed pattern cci-test/* matched wrongly")
	}
	if err := SetPublic(dir, "library/web", true); err != nil {
		t.Fatal(err)
	}
	if !p.Match("library/web") || p.Match("library/web2") {
		t.Fatal("library/web made public: not seen, or matched library/web2")
	}
	if err := SetPublic(dir, "library/web", false); err != nil {
		t.Fatal(err)
	}
	if p.Match("library/web") {
		t.Fatal("library/web still public after removal")
	}
	for _, bad := range []string{"", "*", "UPPER/x", "a/*/b", "/x"} {
		if err := SetPublic(dir, bad, true); err == nil {
			t.Errorf("SetPublic(%q) accepted a bad pattern", bad)
		}
	}
	if _, err := NewPublic(dir, []string{"no spaces"}); err == nil {
		t.Error("NewPublic accepted a bad fixed pattern")
	}
}

// TestRegistryAuth runs the registry with its access check and drives it
// with go-containerregistry (crane's library) as each identity.
func TestRegistryAuth(t *testing.T) {
	dir := t.TempDir()
	keys, err := LoadKeys(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	public, err := NewPublic(filepath.Join(dir, "auth"), []string{"cci-test/*"})
	if err != nil {
		t.Fatal(err)
	}
	auth := &Auth{Keys: keys, Public: public}
	auth.SetTenants(func(n string) (string, bool) { return "uid-" + n, n == "a" || n == "b" })
	addr := startWith(t, Config{Addr: "127.0.0.1:0", RootDir: filepath.Join(dir, "root"), Auth: auth})

	op := &authn.Basic{Username: OperatorUser, Password: keys.Operator()}
	a := &authn.Basic{Username: "a", Password: keys.Tenant("a", "uid-a")}
	b := &authn.Basic{Username: "b", Password: keys.Tenant("b", "uid-b")}
	push := func(who authn.Authenticator, repo string) error {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		return crane.Push(img, addr+"/"+repo, crane.Insecure, crane.WithAuth(who))
	}
	pull := func(who authn.Authenticator, repo string) error {
		_, err := crane.Pull(addr+"/"+repo, crane.Insecure, crane.WithAuth(who))
		return err
	}
	status := func(err error) int {
		var te *transport.Error
		if errors.As(err, &te) {
			return te.StatusCode
		}
		return 0
	}

	for _, step := range []struct {
		what       string
		err        error
		wantStatus int // 0: success
		wantMsg    string
	}{
		{"operator pushes a public test image", push(op, "cci-test/img:1"), 0, ""},
		{"operator pushes a private image", push(op, "ops/secret:1"), 0, ""},
		{"tenant a pushes its own", push(a, "a/app:1"), 0, ""},
		{"tenant a overwrites its own", push(a, "a/app:1"), 0, ""},
		{"tenant a pushes under b's prefix", push(a, "b/app:1"), http.StatusForbidden, ""},
		{"tenant a pushes a public repository", push(a, "cci-test/img:1"), http.StatusForbidden, ""},
		{"anonymous push", push(authn.Anonymous, "a/app:2"), http.StatusUnauthorized, ""},
		{"tenant a pulls its own", pull(a, "a/app:1"), 0, ""},
		{"tenant b pulls a's", pull(b, "a/app:1"), http.StatusForbidden, `tenant "b" may pull only its own repositories`},
		{"tenant b pulls the operator's private image", pull(b, "ops/secret:1"), http.StatusForbidden, "is neither"},
		{"tenant b pulls a public image", pull(b, "cci-test/img:1"), 0, ""},
		{"anonymous pulls a public image", pull(authn.Anonymous, "cci-test/img:1"), 0, ""},
		{"anonymous pulls a's", pull(authn.Anonymous, "a/app:1"), http.StatusUnauthorized, ""},
		{"operator pulls a's", pull(op, "a/app:1"), 0, ""},
		{"wrong password", pull(&authn.Basic{Username: "a", Password: keys.Tenant("b", "uid-b")}, "a/app:1"), http.StatusUnauthorized, ""},
		{"unknown tenant", push(&authn.Basic{Username: "c", Password: keys.Tenant("c", "uid-c")}, "c/app:1"), http.StatusUnauthorized, ""},
	} {
		switch {
		case step.wantStatus == 0 && step.err != nil:
			t.Errorf("%s: %v", step.what, step.err)
		case step.wantStatus != 0 && status(step.err) != step.wantStatus:
			t.Errorf("%s: error %v (status %d), want status %d", step.what, step.err, status(step.err), step.wantStatus)
		case step.wantMsg != "" && !strings.Contains(step.err.Error(), step.wantMsg):
			t.Errorf("%s: error %v, want one saying %q", step.what, step.err, step.wantMsg)
		}
	}

	// The refusal's body says why (HEAD answers, which clients try
	// first, have no body).
	if resp, body := do(t, a, http.MethodPost, "http://"+addr+"/v2/b/app/blobs/uploads/"); resp.StatusCode != http.StatusForbidden ||
		!strings.Contains(body, `"DENIED"`) || !strings.Contains(body, `may push only under its own prefix \"a/\"`) {
		t.Errorf("tenant a starting an upload to b/app: %d %s, want 403 DENIED saying why", resp.StatusCode, body)
	}
	// A blob mount from b's repository into a's needs pull access on b's.
	if resp, body := do(t, a, http.MethodPost, "http://"+addr+"/v2/a/app/blobs/uploads/?mount=sha256:"+strings.Repeat("0", 64)+"&from=b/app"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("tenant a mounting from b/app: %d %s, want 403", resp.StatusCode, body)
	}
	// The catalog names every tenant's repositories: the operator's only.
	if resp, body := do(t, a, http.MethodGet, "http://"+addr+"/v2/_catalog"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("tenant a listing the catalog: %d %s, want 403", resp.StatusCode, body)
	}
	if resp, body := do(t, op, http.MethodGet, "http://"+addr+"/v2/_catalog"); resp.StatusCode != http.StatusOK || strings.Count(body, "/") != 3 {
		t.Errorf("operator's catalog: %d %s, want 200 and 3 repositories", resp.StatusCode, body)
	}
	// Unauthenticated /v2/ is challenged, so that clients send what they have.
	resp, _ := do(t, authn.Anonymous, http.MethodGet, "http://"+addr+"/v2/")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("anonymous GET /v2/: %d %q, want 401 with a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := do(t, authn.Anonymous, http.MethodGet, "http://"+addr+"/v2/x/y/tags/list", "Authorization", "Bearer abc"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a Bearer token: status %d, want 401", resp.StatusCode)
	}
}

// TestOperatorConfigWorksWithDockerConfig checks that the operator's
// config.json is what Docker-config clients read (DOCKER_CONFIG).
func TestOperatorConfigWorksWithDockerConfig(t *testing.T) {
	dir := t.TempDir()
	keys, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteOperatorConfig(dir, []string{"127.0.0.1:5000", "10.0.0.1:5000"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, DockerConfigFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config.json: %v, mode %v; want 0600", err, fi.Mode())
	}
	t.Setenv("DOCKER_CONFIG", dir)
	reg, err := name.NewRegistry("10.0.0.1:5000", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	who, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := who.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Username != OperatorUser || cfg.Password != keys.Operator() {
		t.Errorf("DOCKER_CONFIG gave %q / %q, want the operator's credentials", cfg.Username, cfg.Password)
	}
	var parsed struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	raw, _ := os.ReadFile(filepath.Join(dir, DockerConfigFile))
	if err := json.Unmarshal(raw, &parsed); err != nil || len(parsed.Auths) != 2 {
		t.Errorf("config.json = %s (%v), want two hosts", raw, err)
	}
}

// do sends one request as who and returns the answer and its body.
func do(t *testing.T, who authn.Authenticator, method, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := who.Authorization(); err == nil && cfg.Username != "" {
		req.SetBasicAuth(cfg.Username, cfg.Password)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}
