package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/webhook"
)

// endpoint is one HTTP server CCI runs itself (not an upstream one).
type endpoint struct {
	name string
	// base is scheme://host:port.
	base string
	tls  *tls.Config
	// path takes a POST body (for the oversized one).
	postPath string
	// malformed are requests that must get a 4xx with a message.
	malformed []malformed
}

type malformed struct {
	method, path, body string
	header             map[string]string
	want               int
}

// TestEndpointsRefuseBadInput sends every HTTP endpoint CCI owns (the
// registry, the usage and metrics endpoint, the admission webhook)
// malformed requests, a 100 MiB body and a slow client trickling its
// headers: each answers 4xx with a message, refuses the big body without
// reading it, closes the slow connection by itself, and keeps serving.
func TestEndpointsRefuseBadInput(t *testing.T) {
	rc, err := clientcmd.BuildConfigFromFlags("", cci.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rc.TLSClientConfig.CAData) {
		t.Fatal("no CA in the admin kubeconfig")
	}
	tlsCfg := &tls.Config{RootCAs: pool}
	api, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatal(err)
	}
	apiPort, _ := strconv.Atoi(api.Port())
	wh, err := client(t).AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), webhook.ConfigurationName, metav1.GetOptions{})
	if err != nil || len(wh.Webhooks) == 0 || wh.Webhooks[0].ClientConfig.URL == nil {
		t.Fatalf("webhook configuration %s: %v", webhook.ConfigurationName, err)
	}
	whURL, err := url.Parse(*wh.Webhooks[0].ClientConfig.URL)
	if err != nil {
		t.Fatal(err)
	}

	endpoints := []endpoint{
		{
			name: "registry", base: "http://" + cci.Registry, postPath: "/v2/x/y/blobs/uploads/",
			malformed: []malformed{
				{method: "GET", path: "/v2/%zz", want: 400},
				{method: "GET", path: "/v2/", want: 401},
				{method: "GET", path: "/v2/_catalog", header: map[string]string{"Authorization": "Basic !!!"}, want: 401},
				{method: "PUT", path: "/v2/x/y/manifests/1", body: "{not json", want: 401},
				{method: "GET", path: "/v2/", header: map[string]string{"X-Big": strings.Repeat("a", 2<<20)}, want: 431},
			},
		},
		{
			name: "usage endpoint", base: fmt.Sprintf("https://127.0.0.1:%d", apiPort+1), tls: tlsCfg, postPath: "/v1/usage",
			malformed: []malformed{
				{method: "GET", path: "/v1/usage?since=yesterday-ish", want: 401},
				{method: "GET", path: "/metrics", header: map[string]string{"Authorization": "Bearer nonsense"}, want: 401},
				{method: "DELETE", path: "/v1/usage", want: 405},
				{method: "GET", path: "/%zz", want: 400},
			},
		},
		{
			name: "admission webhook", base: "https://" + whURL.Host, tls: tlsCfg, postPath: "/mutate",
			malformed: []malformed{
				{method: "POST", path: "/mutate", body: "{\"request\": 7", want: 400},
				{method: "POST", path: "/validate", body: "", want: 400},
				{method: "POST", path: "/mutate", body: `{"kind":"AdmissionReview","request":{"uid":"1","resource":{"resource":"pods"},"operation":"CREATE","object":"not a pod"}}`, want: 0},
			},
		},
	}
	for _, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ep.tls}, Timeout: time.Minute}
			for _, m := range ep.malformed {
				req, err := http.NewRequest(m.method, ep.base+"/", strings.NewReader(m.body))
				if err != nil {
					t.Fatal(err)
				}
				// Set as given, not re-escaped.
				req.URL.Opaque = m.path
				if i := strings.IndexByte(m.path, '?'); i >= 0 {
					req.URL.Opaque, req.URL.RawQuery = m.path[:i], m.path[i+1:]
				}
				for k, v := range m.header {
					req.Header.Set(k, v)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("%s %s: %v", m.method, m.path, err)
					continue
				}
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				switch {
				case m.want == 0 && resp.StatusCode != 200:
					// An AdmissionReview with a bad object is answered
					// with a refusal inside a 200, as the apiserver expects.
					t.Errorf("%s %s: %s %s, want 200 with a refusal", m.method, m.path, resp.Status, body)
				case m.want == 0 && !strings.Contains(string(body), `"allowed":false`):
					t.Errorf("%s %s: %s, want a refusal", m.method, m.path, body)
				case m.want != 0 && resp.StatusCode != m.want:
					t.Errorf("%s %s: %s %s, want %d", m.method, m.path, resp.Status, body, m.want)
				case m.want != 0 && len(strings.TrimSpace(string(body))) == 0:
					t.Errorf("%s %s: %s without a message", m.method, m.path, resp.Status)
				}
			}

			// 100 MiB announced and streamed: the answer comes before the
			// body is through, so the server never holds it.
			const big = 100 << 20
			status, sent := postHuge(t, ep, big)
			if status < 400 || status >= 500 {
				t.Errorf("POST %s with %d bytes: status %d, want 4xx", ep.postPath, big, status)
			}
			if sent >= big {
				t.Errorf("POST %s: the server read all %d bytes before answering", ep.postPath, sent)
			}
			t.Logf("POST %s of 100 MiB: %d after %d bytes sent", ep.postPath, status, sent)

			// Slowloris: one header line every second, forever. The server
			// must close the connection itself (ReadHeaderTimeout).
			conn := dial(t, ep)
			defer conn.Close()
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n")
			closed := make(chan error, 1)
			go func() { _, err := io.Copy(io.Discard, conn); closed <- err }()
			lines := 0
		trickle:
			for {
				select {
				case <-closed:
					break trickle
				case <-time.After(time.Second):
					if _, err := fmt.Fprintf(conn, "X-Slow-%d: 1\r\n", lines); err != nil {
						break trickle
					}
					lines++
				}
				if lines > 120 {
					t.Fatalf("the server kept a connection open through %d trickled header lines", lines)
				}
			}
			t.Logf("slow client cut off after %d header lines", lines)

			// Still serving.
			resp, err := hc.Get(ep.base + "/healthz")
			if err != nil {
				t.Fatalf("after the abuse: %v", err)
			}
			resp.Body.Close()
		})
	}
}

func dial(t *testing.T, ep endpoint) net.Conn {
	t.Helper()
	host := strings.TrimPrefix(strings.TrimPrefix(ep.base, "http://"), "https://")
	if ep.tls == nil {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c, err := tls.Dial("tcp", host, ep.tls)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// postHuge announces n bytes and sends them until the server answers or
// closes; it returns the status and how much was sent.
func postHuge(t *testing.T, ep endpoint, n int) (status, sent int) {
	t.Helper()
	conn := dial(t, ep)
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", ep.postPath, n)
	answered := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	chunk := make([]byte, 64<<10)
	for sent < n {
		select {
		case status = <-answered:
			return status, sent
		default:
		}
		w, err := conn.Write(chunk)
		sent += w
		if err != nil {
			break // closed by the server: its answer is waiting
		}
	}
	return <-answered, sent
}
