package registry

// Who may do what in the built-in registry.
//
//	operator (user OperatorUser)  everything, the catalog included
//	host agent (user NodeUser)    pull every repository (it runs every
//	                              tenant's pods); password: the join token
//	tenant T (user T)             pull, push, delete repositories T/...;
//	                              pull public repositories
//	anonymous                     pull public repositories
//
// Public repositories are the ones the operator marks (Config.Public, the
// file <auth dir>/public that `cci image public` writes). Every other
// request gets 401 with a Basic challenge when it carries no valid
// credentials, and 403 DENIED with the reason when it does.
//
// The check is a handler in front of distribution's rather than one of
// distribution's access controllers: its htpasswd controller grants every
// repository to every user it knows, its token controller needs a token
// server beside it, and the access-controller seam can only answer with a
// 401 challenge (clients then retry with the same credentials, and learn
// nothing) or a bare 400. Requests are matched with distribution's own
// router, so a route it serves cannot slip past the check.
//
// Credentials are derived, not stored: a tenant's password is an HMAC of
// its name and UID under a key kept in the auth folder. Nothing per tenant
// is written anywhere but the tenant's own pull Secret; a deleted tenant's
// password stops working at once (its name no longer resolves to a UID),
// and a new tenant of the same name gets a new one. The passwords are 256
// random-looking bits, so no slow hash (bcrypt) is needed to protect them.

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/gorilla/mux"
)

// OperatorUser is the operator's user name. It is not a DNS label, so no
// tenant can be given it.
const OperatorUser = "operator@cci"

// NodeUser is the host agents' user name; their password is the join
// token they already hold.
const NodeUser = "node@cci"

// Actions on a repository, as distribution names them.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
)

// Files of the auth folder.
const (
	keyFile    = "key"
	publicFile = "public"
	// DockerConfigFile is the operator's credentials in Docker's format:
	// `DOCKER_CONFIG=<auth dir> crane …`, `skopeo --authfile <auth dir>/config.json …`.
	DockerConfigFile = "config.json"
)

// AuthDir is the auth folder of a data folder.
func AuthDir(dataDir string) string { return filepath.Join(dataDir, "registry-auth") }

// Identity is who a request comes from.
type Identity struct {
	// Operator is the cluster's operator: full access.
	Operator bool
	// Node is a host agent: pulls every repository, pushes none.
	Node bool
	// Tenant is the tenant's name; empty with Operator false: anonymous.
	Tenant string
}

func (id Identity) String() string {
	switch {
	case id.Operator:
		return "the operator"
	case id.Node:
		return "a host agent"
	case id.Tenant != "":
		return fmt.Sprintf("tenant %q", id.Tenant)
	default:
		return "an anonymous client"
	}
}

// Authorize says whether id may do action on repository repo; the error
// says why not and what would be allowed. public says whether a
// repository is public.
func Authorize(id Identity, repo, action string, public func(string) bool) error {
	if id.Operator {
		return nil
	}
	if id.Tenant != "" && strings.HasPrefix(repo, id.Tenant+"/") {
		return nil
	}
	if id.Node {
		if action == ActionPull {
			return nil
		}
		return fmt.Errorf("%s may only pull, not %s %q", id, action, repo)
	}
	if action == ActionPull && public(repo) {
		return nil
	}
	switch {
	case id.Tenant == "":
		return fmt.Errorf("%s may only pull public repositories, and %q is not public: log in with credentials CCI issued", id, repo)
	case action == ActionPull:
		return fmt.Errorf("%s may pull only its own repositories (%s/…) and public ones; %q is neither", id, id.Tenant, repo)
	default:
		return fmt.Errorf("%s may %s only under its own prefix %q, not to %q", id, action, id.Tenant+"/", repo)
	}
}

// Keys issues and checks credentials. Safe for concurrent use.
type Keys struct {
	key []byte
}

// LoadKeys reads the auth folder's key, creating the folder and a new
// random key on first use.
func LoadKeys(dir string) (*Keys, error) {
	path := filepath.Join(dir, keyFile)
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("registry auth: create %q: %w", dir, err)
		}
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, key, 0o600); err != nil {
			return nil, fmt.Errorf("registry auth: write key %q: %w", path, err)
		}
		return &Keys{key: key}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry auth: read key %q: %w", path, err)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("registry auth: key %q is %d bytes, want 32; delete it to make a new one (every issued credential changes)", path, len(key))
	}
	return &Keys{key: key}, nil
}

func (k *Keys) derive(parts ...string) string {
	m := hmac.New(sha256.New, k.key)
	for _, p := range parts {
		// Length-prefixed, so that ("ab","c") and ("a","bc") differ.
		fmt.Fprintf(m, "%d:%s;", len(p), p)
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Operator returns the operator's password.
func (k *Keys) Operator() string { return k.derive("operator") }

// Tenant returns the password of the tenant of that name and UID.
func (k *Keys) Tenant(name, uid string) string { return k.derive("tenant", name, uid) }

// TenantUIDs resolves a tenant's name to its UID; ok is false for a
// tenant that does not exist (or is not known yet). Called concurrently.
type TenantUIDs func(name string) (uid string, ok bool)

// Authenticate maps Basic credentials to an identity. No credentials at all
// are anonymous; wrong ones are an error.
func (k *Keys) Authenticate(user, pass string, tenants TenantUIDs, nodeToken string) (Identity, error) {
	eq := func(want string) bool { return subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1 }
	switch {
	case user == "" && pass == "":
		return Identity{}, nil
	case user == NodeUser:
		if nodeToken != "" && eq(nodeToken) {
			return Identity{Node: true}, nil
		}
	case user == OperatorUser:
		if eq(k.Operator()) {
			return Identity{Operator: true}, nil
		}
	case tenants != nil:
		if uid, ok := tenants(user); ok && eq(k.Tenant(user, uid)) {
			return Identity{Tenant: user}, nil
		}
	}
	return Identity{}, fmt.Errorf("wrong user name or password for %q", user)
}

// DockerConfig is the content of a Docker config.json (and of a Secret of
// type kubernetes.io/dockerconfigjson) giving user/pass for every host.
func DockerConfig(hosts []string, user, pass string) []byte {
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	auths := map[string]entry{}
	for _, h := range hosts {
		auths[h] = entry{Username: user, Password: pass, Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
	}
	out, _ := json.Marshal(map[string]any{"auths": auths})
	return out
}

// WriteOperatorConfig writes the operator's credentials for hosts into the
// auth folder's config.json (mode 0600).
func (k *Keys) WriteOperatorConfig(dir string, hosts []string) error {
	path := filepath.Join(dir, DockerConfigFile)
	if err := os.WriteFile(path, DockerConfig(hosts, OperatorUser, k.Operator()), 0o600); err != nil {
		return fmt.Errorf("registry auth: write operator credentials %q: %w", path, err)
	}
	return nil
}

// Public is the set of public repositories: patterns given in code plus
// those in the auth folder's file "public", re-read when it changes. A
// pattern is a repository name ("library/web") or a prefix ending in "/*"
// ("cci-test/*": every repository under cci-test/). Safe for concurrent use.
type Public struct {
	fixed []string
	path  string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	file    []string
}

// NewPublic makes the set from fixed patterns and the auth folder's file.
func NewPublic(dir string, fixed []string) (*Public, error) {
	for _, p := range fixed {
		if err := CheckPattern(p); err != nil {
			return nil, err
		}
	}
	return &Public{fixed: fixed, path: filepath.Join(dir, publicFile)}, nil
}

// repoName is a repository path as the distribution spec defines it
// (lower case; no registry host).
var repoName = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)

// CheckPattern validates a public-repository pattern.
func CheckPattern(p string) error {
	name := strings.TrimSuffix(p, "/*")
	if name == "" || !repoName.MatchString(name) || strings.Contains(name, "*") {
		return fmt.Errorf("public repository %q: want a repository name such as library/web, or a prefix such as cci-test/* (lower-case letters, digits, separators . _ - and /)", p)
	}
	return nil
}

// Match says whether repo is public.
func (p *Public) Match(repo string) bool {
	for _, pat := range append(p.fixed, p.load()...) {
		if prefix, ok := strings.CutSuffix(pat, "/*"); ok {
			if strings.HasPrefix(repo, prefix+"/") {
				return true
			}
		} else if repo == pat {
			return true
		}
	}
	return false
}

// load returns the file's patterns, read again when it changed; a file
// that cannot be read counts as empty (nothing public) and a bad line is
// skipped: access fails closed.
func (p *Public) load() []string {
	fi, err := os.Stat(p.path)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.file, p.modTime, p.size = nil, time.Time{}, 0
		return nil
	}
	if fi.ModTime().Equal(p.modTime) && fi.Size() == p.size {
		return p.file
	}
	lines, err := ReadPublicFile(filepath.Dir(p.path))
	if err != nil {
		return nil
	}
	p.file, p.modTime, p.size = lines, fi.ModTime(), fi.Size()
	return p.file
}

// ReadPublicFile returns the valid patterns of the auth folder's file
// "public" (none when it does not exist).
func ReadPublicFile(dir string) ([]string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, publicFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || CheckPattern(line) != nil {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}

// SetPublic adds (public true) or removes a pattern in the auth folder's
// file "public"; the registry sees the change at its next request.
func SetPublic(dir, pattern string, public bool) error {
	if err := CheckPattern(pattern); err != nil {
		return err
	}
	cur, err := ReadPublicFile(dir)
	if err != nil {
		return fmt.Errorf("read public repositories: %w", err)
	}
	var out []string
	for _, p := range cur {
		if p != pattern {
			out = append(out, p)
		}
	}
	if public {
		out = append(out, pattern)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	body := "# Public repositories of CCI's registry, one per line (name or prefix/*); written by `cci image public`.\n" + strings.Join(out, "\n") + "\n"
	// Written aside and renamed, so that the registry never reads half a file.
	tmp := filepath.Join(dir, publicFile+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, publicFile))
}

// Auth is the registry's access check. Tenants may be set after the
// registry started (the tenant controller runs later); until then only
// the operator and anonymous clients are recognised.
type Auth struct {
	Keys   *Keys
	Public *Public
	// NodeToken is the agents' join token, their password as NodeUser;
	// empty: agents have no identity of their own.
	NodeToken string

	mu      sync.RWMutex
	tenants TenantUIDs
}

// SetTenants gives the check its tenant lookup.
func (a *Auth) SetTenants(t TenantUIDs) {
	a.mu.Lock()
	a.tenants = t
	a.mu.Unlock()
}

func (a *Auth) tenantUIDs() TenantUIDs {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.tenants
}

// realm names the registry in Basic challenges.
const realm = "CCI registry"

// Handler checks every request before next (distribution's app) sees it.
func (a *Auth) Handler(next http.Handler) http.Handler {
	router := v2.Router()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, hasBasic := r.BasicAuth()
		if !hasBasic && r.Header.Get("Authorization") != "" {
			a.challenge(w, "only Basic authentication is accepted: log in with the user name and password CCI issued")
			return
		}
		id, err := a.Keys.Authenticate(user, pass, a.tenantUIDs(), a.NodeToken)
		if err != nil {
			a.challenge(w, err.Error())
			return
		}
		var match mux.RouteMatch
		if !router.Match(r, &match) || match.Route == nil {
			// Not an API route: distribution answers it (404), nothing to guard.
			next.ServeHTTP(w, r)
			return
		}
		if err := a.check(r, id, match); err != nil {
			if id != (Identity{}) {
				serveError(w, http.StatusForbidden, errcode.ErrorCodeDenied.WithMessage(err.Error()))
			} else {
				a.challenge(w, err.Error())
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

// check applies Authorize to what the matched route does.
func (a *Auth) check(r *http.Request, id Identity, match mux.RouteMatch) error {
	switch match.Route.GetName() {
	case v2.RouteNameBase:
		// The version check. Anonymous clients get the challenge here, as
		// from Docker's registries: a client that finds /v2/ open (crane)
		// would never send the credentials it has. Anonymous pulls of
		// public repositories still work; they do not need /v2/.
		if id != (Identity{}) {
			return nil
		}
		return errors.New("log in to use the registry; anonymous clients may pull public repositories")
	case v2.RouteNameCatalog:
		if id.Operator {
			return nil
		}
		return fmt.Errorf("%s may not list the registry's repositories; only the operator may", id)
	}
	repo := match.Vars["name"]
	action := ActionPull
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodDelete:
		action = ActionDelete
	default:
		action = ActionPush
	}
	if err := Authorize(id, repo, action, a.Public.Match); err != nil {
		return err
	}
	// A cross-repository blob mount reads the source repository.
	if from := r.URL.Query().Get("from"); from != "" {
		return Authorize(id, from, ActionPull, a.Public.Match)
	}
	return nil
}

func (a *Auth) challenge(w http.ResponseWriter, why string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", realm))
	serveError(w, http.StatusUnauthorized, errcode.ErrorCodeUnauthorized.WithMessage(why))
}

// serveError writes the distribution-spec error body {"errors": [...]}.
func serveError(w http.ResponseWriter, status int, e errcode.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errcode.Errors{e})
}
