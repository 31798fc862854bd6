// Package console serves CCI's web console: a single-page app (built from
// console/ with Vite and embedded here) and a thin backend on its own
// HTTPS listener of the control plane.
//
// The browser talks to the real Kubernetes API through the console: /api
// and /apis (WebSocket upgrades for exec included) are proxied to the
// kube-apiserver with the logged-in user's own credential, so RBAC decides
// everything a page shows. The console adds only what is CCI's own, under
// /cci/: login and logout (the credential sealed in an HttpOnly cookie),
// the session, usage (the metering endpoint, as the user), the flavor
// table with prices, and the built-in registry's repositories.
package console

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/metering"
)

// Config is the console's configuration.
type Config struct {
	// Addr is host:port the console listens on (HTTPS).
	Addr string
	// APIServer is the kube-apiserver's URL, e.g. https://127.0.0.1:6443.
	APIServer string
	// CAPEM is the cluster CA: the apiserver's and the usage endpoint's
	// serving certificates are checked against it.
	CAPEM []byte
	// UsageURL is the metering endpoint's base URL (metering.UsagePath is added).
	UsageURL string
	// RegistryAddr is host:port of the built-in registry (plain HTTP); pods
	// name images there as RegistryAddr/REPOSITORY:TAG.
	RegistryAddr string
	// RegistryPassword is the operator's registry password: the console
	// reads the catalog with it. Empty: anonymously.
	RegistryPassword string
	// RegistryPublic says whether a repository is public (pulled by
	// everyone); nil: none is.
	RegistryPublic func(repo string) bool
	// Prices price the flavor table.
	Prices metering.Prices
	// Cert is the console's serving certificate.
	Cert tls.Certificate
	// SessionKey seals session cookies (32 bytes; see LoadOrCreateKey).
	SessionKey []byte
	// Admin, when set, explains refused tokens with a TokenReview (the
	// API itself only says "Unauthorized").
	Admin kubernetes.Interface
	// Assets is the app; default Assets().
	Assets fs.FS
	// Log receives the console's messages. Default slog.Default().
	Log *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Server is the console. Its handler is safe for concurrent use.
type Server struct {
	cfg    Config
	api    *url.URL
	usage  *url.URL
	roots  *x509.CertPool
	seal   *sealer
	log    *slog.Logger
	mux    *http.ServeMux
	plain  *http.Transport // to the apiserver, for bearer tokens
	mu     sync.Mutex
	byCert map[[32]byte]*http.Transport // to the apiserver, per client certificate
}

// New checks cfg and builds the console's handler.
func New(cfg Config) (*Server, error) {
	api, err := url.Parse(cfg.APIServer)
	if err != nil || api.Scheme != "https" || api.Host == "" {
		return nil, fmt.Errorf("console: apiserver URL %q: want https://HOST:PORT", cfg.APIServer)
	}
	var usage *url.URL
	if cfg.UsageURL != "" {
		if usage, err = url.Parse(cfg.UsageURL); err != nil {
			return nil, fmt.Errorf("console: usage URL %q: %w", cfg.UsageURL, err)
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cfg.CAPEM) {
		return nil, errors.New("console: no certificate in the cluster CA PEM")
	}
	seal, err := newSealer(cfg.SessionKey)
	if err != nil {
		return nil, err
	}
	if cfg.Assets == nil {
		cfg.Assets = Assets()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, api: api, usage: usage, roots: roots, seal: seal, log: cfg.Log,
		byCert: map[[32]byte]*http.Transport{}}
	s.plain = s.newTransport(nil)
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /cci/login", s.login)
	s.mux.HandleFunc("POST /cci/logout", s.logout)
	s.mux.HandleFunc("GET /cci/session", s.session)
	s.mux.HandleFunc("GET /cci/usage", s.withSession(s.proxyUsage))
	s.mux.HandleFunc("GET /cci/usage/daily", s.withSession(s.dailyUsage))
	s.mux.HandleFunc("GET /cci/pools", s.withSession(s.pools))
	s.mux.HandleFunc("GET /cci/flavors", s.flavors)
	s.mux.HandleFunc("GET /cci/registry", s.withSession(s.registry))
	s.mux.HandleFunc("/cci/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no console endpoint %s %s", r.Method, r.URL.Path))
	})
	s.mux.HandleFunc("/api/", s.withSession(s.proxyAPI))
	s.mux.HandleFunc("/api", s.withSession(s.proxyAPI))
	s.mux.HandleFunc("/apis/", s.withSession(s.proxyAPI))
	s.mux.HandleFunc("/apis", s.withSession(s.proxyAPI))
	s.mux.Handle("/", serveApp(cfg.Assets))
	return s, nil
}

// Handler is the console's HTTP handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// xterm.js and the charts set inline styles; no inline scripts.
		h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
		if !sameOrigin(r) {
			writeError(w, http.StatusForbidden, "request from another site refused (its Origin is "+r.Header.Get("Origin")+")")
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// sameOrigin refuses requests a page of another site makes with the
// user's cookie: changes and WebSocket upgrades whose Origin is not the
// console's own. SameSite=Strict already keeps the cookie off them in
// current browsers; this does not rely on it.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	safe := (r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions) && r.Header.Get("Upgrade") == ""
	if origin == "" || safe {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

// Run serves the console on cfg.Addr until ctx ends; ready, when set, is
// called once it listens.
func (s *Server) Run(ctx context.Context, ready func()) error {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("console: listen on %q (is the port in use? choose another with --console-port): %w", s.cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{s.cfg.Cert}},
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("console listening", "addr", l.Addr().String())
	if ready != nil {
		ready()
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("console: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		// Exec sessions and watches are hijacked or long: cut them.
		_ = srv.Close()
		return nil
	}
}

// newTransport is a transport to the apiserver and the usage endpoint,
// presenting cert when given.
func (s *Server) newTransport(cert *tls.Certificate) *http.Transport {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.roots}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   false, // WebSocket upgrades need HTTP/1.1
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}

// transportFor is the transport that carries c's client certificate, or
// the shared one for a bearer token.
func (s *Server) transportFor(c credential) (*http.Transport, error) {
	if len(c.CertPEM) == 0 {
		return s.plain, nil
	}
	key := sha256.Sum256(append(append([]byte{}, c.CertPEM...), c.KeyPEM...))
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.byCert[key]; ok {
		return t, nil
	}
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	t := s.newTransport(&cert)
	s.byCert[key] = t
	return t, nil
}

type ctxKey struct{}

// withSession passes only requests with a valid session cookie.
func (s *Server) withSession(next func(http.ResponseWriter, *http.Request, session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.seal.sessionFrom(r, s.cfg.Now())
		if err != nil {
			http.SetCookie(w, clearCookie())
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		next(w, r, sess)
	}
}

// writeError answers in the shape of a Kubernetes Status, which the app
// reads for the API's own errors too.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": msg,
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// trimBearer cuts "Bearer " and blanks off a pasted token.
func trimBearer(s string) string {
	s = strings.TrimSpace(s)
	if t, ok := strings.CutPrefix(s, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return s
}
