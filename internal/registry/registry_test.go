package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "no root dir", cfg: Config{Addr: "127.0.0.1:0"}, wantErr: "root directory is required"},
		{name: "bad address", cfg: Config{Addr: "127.0.0.1:notaport", RootDir: t.TempDir()}, wantErr: `listen on "127.0.0.1:notaport"`},
		{name: "root dir is a file", cfg: Config{Addr: "127.0.0.1:0", RootDir: "/dev/null/x"}, wantErr: `create root directory "/dev/null/x"`},
		{name: "free port", cfg: Config{Addr: "127.0.0.1:0", RootDir: filepath.Join(t.TempDir(), "a", "b")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(context.Background(), tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			if strings.HasSuffix(r.Addr(), ":0") {
				t.Errorf("Addr() = %q, want the port actually bound", r.Addr())
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := r.Run(ctx); err != nil {
				t.Errorf("Run() with a cancelled context = %v, want nil", err)
			}
		})
	}
}

func TestPushPullSurvivesRestart(t *testing.T) {
	root := t.TempDir()
	addr := start(t, root, testLog(t))

	resp, err := http.Get("http://" + addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ = %d, want 200", resp.StatusCode)
	}

	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(addr+"/test/random:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	assertDigest(t, ref, want.String())

	// A second registry on the same root (a restart) still has the image.
	addr2 := start(t, root, testLog(t))
	ref2, err := name.ParseReference(addr2+"/test/random:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	assertDigest(t, ref2, want.String())

	// The catalog lists it (the console's image picker reads it with n=1000).
	resp, err = http.Get("http://" + addr2 + "/v2/_catalog?n=1000")
	if err != nil {
		t.Fatal(err)
	}
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	err = json.NewDecoder(resp.Body).Decode(&cat)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || len(cat.Repositories) != 1 || cat.Repositories[0] != "test/random" {
		t.Fatalf("GET /v2/_catalog?n=1000 = %d %v (decode: %v), want 200 [test/random]", resp.StatusCode, cat.Repositories, err)
	}

	// Deletes are enabled.
	if err := remote.Delete(ref2.Context().Digest(want.String())); err != nil {
		t.Fatalf("delete %s: %v", want, err)
	}
	if _, err := remote.Get(ref2); err == nil {
		t.Fatalf("pull %s after delete succeeded, want an error", ref2)
	}
}

func TestLogGoesToConfiguredWriter(t *testing.T) {
	var buf syncBuffer
	addr := start(t, t.TempDir(), &buf)
	resp, err := http.Get("http://" + addr + "/v2/nosuch/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET unknown manifest = %d, want 404", resp.StatusCode)
	}
	// The request logger is derived from the context; finding its lines here
	// proves distribution's logs do not go to logrus's standard logger.
	if got := buf.String(); !strings.Contains(got, "nosuch") {
		t.Fatalf("registry log does not mention the request; log:\n%s", got)
	}
}

// start runs a registry on root with a free port until the test ends.
func start(t *testing.T, root string, log io.Writer) string {
	t.Helper()
	return startWith(t, Config{Addr: "127.0.0.1:0", RootDir: root, Log: log})
}

// startWith runs a registry of cfg until the test ends and returns its address.
func startWith(t *testing.T, cfg Config) string {
	t.Helper()
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	return r.Addr()
}

func assertDigest(t *testing.T, ref name.Reference, want string) {
	t.Helper()
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	got, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != want {
		t.Fatalf("pulled %s has digest %s, want %s", ref, got, want)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("fetch layer of %s: %v", ref, err)
		}
		rc.Close()
	}
}

// syncBuffer collects log lines from the registry's goroutines and, when t
// is set, also passes them to t.Log while the test runs.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	t    *testing.T
	done bool
}

func testLog(t *testing.T) *syncBuffer {
	b := &syncBuffer{t: t}
	t.Cleanup(func() {
		b.mu.Lock()
		b.done = true
		b.mu.Unlock()
	})
	return b
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.t != nil && !b.done {
		b.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
