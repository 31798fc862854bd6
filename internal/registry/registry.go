// Package registry runs CCI's built-in OCI registry: CNCF Distribution
// embedded as a library, storing blobs and manifests on the local filesystem
// and serving the OCI distribution API over plain HTTP.
//
// Images pushed by `cci image import` and the test images live here, and the
// node's containerd pulls from it. Clients treat 127.0.0.1 and localhost
// registries as insecure on their own, so no TLS is set up.
package registry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	// Registers the "filesystem" storage driver with distribution's factory.
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/sirupsen/logrus"
)

// DefaultAddr is the address listened on when Config.Addr is empty.
const DefaultAddr = "127.0.0.1:5000"

// shutdownTimeout bounds how long Run waits for in-flight requests (an image
// upload, typically) once its context is cancelled.
const shutdownTimeout = 10 * time.Second

// Config configures the registry.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:5000"; port 0
	// picks a free one. Default is DefaultAddr.
	Addr string
	// ExtraAddrs are further addresses serving the same registry, e.g. the
	// machine's address on the network of hosts that `cci up --hosts` runs
	// in their own namespaces, where its loopback address is not theirs.
	ExtraAddrs []string
	// RootDir is where blobs and manifests are stored; content survives
	// restarts. Required.
	RootDir string
	// Log receives the registry's own log lines; nil discards them.
	Log io.Writer
	// Auth checks every request (see auth.go). Nil: every client may do
	// everything, which only tests of the registry itself want.
	Auth *Auth
}

// Registry is a running registry bound to its listener. Create it with New,
// serve with Run; Run must be called once.
type Registry struct {
	ln     net.Listener
	extra  []net.Listener
	server *http.Server
	app    *handlers.App
	log    *logrus.Entry
}

// New validates the config, creates RootDir and binds the listener (so Addr()
// is known before Run).
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.RootDir == "" {
		return nil, errors.New("registry: root directory is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	root, err := filepath.Abs(cfg.RootDir)
	if err != nil {
		return nil, fmt.Errorf("registry: resolve root directory %q: %w", cfg.RootDir, err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("registry: create root directory %q: %w", root, err)
	}

	log := newLogger(cfg.Log)
	// Distribution's background work (upload purging) lives as long as the
	// process, so it gets a context that outlives ctx's cancellation.
	appCtx := withLogger(context.WithoutCancel(ctx), log)
	app, err := newApp(appCtx, distributionConfig(root))
	if err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("registry: listen on %q: %w", cfg.Addr, err)
	}
	r := &Registry{ln: ln, app: app, log: log}
	for _, a := range cfg.ExtraAddrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			_ = ln.Close()
			for _, l := range r.extra {
				_ = l.Close()
			}
			return nil, fmt.Errorf("registry: listen on %q: %w", a, err)
		}
		r.extra = append(r.extra, l)
	}
	var handler http.Handler = app
	if cfg.Auth != nil {
		handler = cfg.Auth.Handler(app)
	}
	r.server = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		// Requests get the configured logger too; distribution derives its
		// per-request loggers from the request context, not the app's.
		BaseContext: func(net.Listener) context.Context { return appCtx },
		ErrorLog:    stdlog.New(logWriter(cfg.Log), "registry: http: ", stdlog.LstdFlags),
	}
	return r, nil
}

// Addr returns host:port actually listened on.
func (r *Registry) Addr() string {
	return r.ln.Addr().String()
}

// Run serves plain HTTP until ctx is cancelled, then shuts down gracefully
// and returns nil; other errors are returned.
func (r *Registry) Run(ctx context.Context) error {
	r.log.Infof("serving OCI registry on %s", r.Addr())
	served := make(chan error, 1+len(r.extra))
	go func() { served <- r.server.Serve(r.ln) }()
	for _, l := range r.extra {
		r.log.Infof("serving OCI registry on %s too", l.Addr())
		go func() { served <- r.server.Serve(l) }()
	}

	select {
	case err := <-served:
		// Serve only returns on its own when the listener fails.
		_ = r.app.Shutdown()
		return fmt.Errorf("registry: serve on %q: %w", r.Addr(), err)
	case <-ctx.Done():
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := r.server.Shutdown(sctx); err != nil {
		// Requests still running after the drain timeout are cut off: the
		// caller asked to stop, so that is not an error to report.
		r.log.Warnf("closing connections still open after %s: %v", shutdownTimeout, err)
		_ = r.server.Close()
	}
	for range 1 + len(r.extra) {
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("registry: serve on %q: %w", r.Addr(), err)
		}
	}
	if err := r.app.Shutdown(); err != nil {
		return fmt.Errorf("registry: shut down: %w", err)
	}
	return nil
}

// distributionConfig is the embedded registry's configuration: filesystem
// storage under root, deletes allowed, and nothing that reaches the network
// (no redirects to storage backends, notifications, redis or health checks).
func distributionConfig(root string) *configuration.Configuration {
	cfg := &configuration.Configuration{}
	cfg.Version = configuration.MajorMinorVersion(0, 1)
	cfg.Storage = configuration.Storage{
		"filesystem": configuration.Parameters{"rootdirectory": root},
		"delete":     configuration.Parameters{"enabled": true},
		"redirect":   configuration.Parameters{"disable": true},
		"cache":      configuration.Parameters{"blobdescriptor": "inmemory"},
	}
	// Parsing a YAML config would set this default; without it the
	// catalog answers nothing.
	cfg.Catalog.MaxEntries = 1000
	// Upload state is HMAC-signed with this secret; without one distribution
	// generates it anyway and logs a warning about load balancers.
	cfg.HTTP.Secret = rand.Text()
	return cfg
}

// newApp builds distribution's HTTP application. NewApp reports bad
// configuration and storage failures by panicking; they become errors here.
func newApp(ctx context.Context, cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("registry: start distribution: %v", p)
		}
	}()
	return handlers.NewApp(ctx, cfg), nil
}

func logWriter(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// newLogger returns a logrus logger of its own (not logrus's process-wide
// standard logger) writing to w.
func newLogger(w io.Writer) *logrus.Entry {
	l := logrus.New()
	l.Out = logWriter(w)
	l.Formatter = &logrus.TextFormatter{TimestampFormat: time.RFC3339Nano, DisableColors: true}
	l.Level = logrus.InfoLevel
	// Distribution never calls Fatal on the serving path, but if it did a
	// registry failure must not end the whole cci process.
	l.ExitFunc = func(code int) { panic(fmt.Sprintf("registry: fatal log (exit code %d)", code)) }
	return logrus.NewEntry(l).WithField("component", "registry")
}

// dcontextPkg is distribution's internal package that owns the logger
// context key.
const dcontextPkg = "github.com/distribution/distribution/v3/internal/dcontext"

// loggerContext answers distribution's logger lookups with our logger.
// Distribution looks its logger up in the context under a key whose type is
// in an internal package, so the key is recognised by its type's name. If
// upstream renames it, lookups fall through to logrus's standard logger;
// TestLogGoesToConfiguredWriter catches that.
type loggerContext struct {
	context.Context
	log *logrus.Entry
}

func withLogger(ctx context.Context, log *logrus.Entry) context.Context {
	return loggerContext{Context: ctx, log: log}
}

func (c loggerContext) Value(key any) any {
	if t := reflect.TypeOf(key); t != nil && t.Name() == "loggerKey" && t.PkgPath() == dcontextPkg {
		return c.log
	}
	return c.Context.Value(key)
}
