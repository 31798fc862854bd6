package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// flaky is a real backend that answers 503 to its first fails requests,
// then 200 with the body it got.
type flaky struct {
	fails int64
	seen  atomic.Int64
	srv   *httptest.Server
}

func newFlaky(t *testing.T, fails int64) *flaky {
	f := &flaky{fails: fails}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if f.seen.Add(1) <= f.fails {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok %s", b)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *flaky) endpoint() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// TestRetry sends requests through a real proxy port to backends that
// fail: retried on the listed codes up to the attempts, to another
// endpoint after a connection error, with a small body sent again whole,
// and never for a POST or a body of unknown length.
func TestRetry(t *testing.T) {
	dp := NewDataplane("127.0.0.1", testLogger(t), nil)
	defer dp.Close()
	port, err := dp.Reserve(0)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(retry *RetryPolicy, endpoints ...string) {
		t.Helper()
		tbl, err := Compile(80, []RouteSpec{route("r", nil, RuleSpec{Retry: retry, Backends: []*Backend{{Name: "b", Weight: 1, Endpoints: endpoints}}})})
		if err != nil {
			t.Fatal(err)
		}
		if err := dp.Set(map[int]*Table{port: tbl}); err != nil {
			t.Fatal(err)
		}
	}
	send := func(method string, body io.Reader) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://127.0.0.1:"+strconv.Itoa(port)+"/", body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	policy := &RetryPolicy{Codes: []int{503}, Attempts: 3, Backoff: time.Millisecond}

	for _, tc := range []struct {
		name     string
		fails    int64
		retry    *RetryPolicy
		method   string
		body     io.Reader
		wantCode int
		wantBody string
		wantSeen int64
	}{
		{"two failures, three retries", 2, policy, "GET", nil, 200, "ok", 3},
		{"three failures, three retries", 3, policy, "GET", nil, 200, "ok", 4},
		{"four failures, three retries", 4, policy, "GET", nil, 503, "not yet", 4},
		{"without a retry", 1, nil, "GET", nil, 503, "not yet", 1},
		{"a code not listed", 1, &RetryPolicy{Codes: []int{502}, Attempts: 3}, "GET", nil, 503, "not yet", 1},
		{"a small body is sent again", 2, policy, "PUT", strings.NewReader("payload"), 200, "ok payload", 3},
		{"POST is not idempotent", 1, policy, "POST", strings.NewReader("payload"), 503, "not yet", 1},
		{"a body of unknown length", 1, policy, "PUT", io.MultiReader(strings.NewReader("stream")), 503, "not yet", 1},
		{"a body too large to keep", 1, policy, "PUT", strings.NewReader(strings.Repeat("x", maxReplayBody+1)), 503, "not yet", 1},
	} {
		f := newFlaky(t, tc.fails)
		serve(tc.retry, f.endpoint())
		code, body := send(tc.method, tc.body)
		if code != tc.wantCode || body != tc.wantBody || f.seen.Load() != tc.wantSeen {
			t.Errorf("%s: %d %q after %d tries, want %d %q after %d", tc.name, code, body, f.seen.Load(), tc.wantCode, tc.wantBody, tc.wantSeen)
		}
	}

	// A connection error goes to the other endpoint: every request
	// succeeds, whichever endpoint it tried first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	good := newFlaky(t, 0)
	serve(&RetryPolicy{Attempts: 1, Backoff: time.Millisecond}, dead, good.endpoint())
	for i := range 6 {
		if code, body := send("GET", nil); code != 200 || body != "ok" {
			t.Errorf("request %d with a dead endpoint and a retry: %d %q, want 200 from the other endpoint", i, code, body)
		}
	}
	serve(nil, dead, good.endpoint())
	failed := 0
	for range 6 {
		if code, _ := send("GET", nil); code == http.StatusBadGateway {
			failed++
		}
	}
	if failed != 3 {
		t.Errorf("without a retry, %d of 6 requests failed on the dead endpoint; want 3 (round robin)", failed)
	}
}
