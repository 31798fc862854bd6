package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

// selfSigned makes a certificate for names (the first is its common
// name) and returns it as PEM, with its key.
func selfSigned(t *testing.T, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func keyPair(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	c, k := selfSigned(t, names...)
	kp, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestCertsChoice(t *testing.T) {
	certs := NewCerts([]ListenerCerts{
		{Hostname: "shop.example", Certs: []tls.Certificate{keyPair(t, "shop.example")}},
		{Hostname: "*.example", Certs: []tls.Certificate{keyPair(t, "wild.example")}},
		{Hostname: "*.api.example", Certs: []tls.Certificate{keyPair(t, "wild.api.example")}},
		{Hostname: "broken.test"}, // refs did not resolve
		{Hostname: "", Certs: []tls.Certificate{keyPair(t, "default")}},
	})
	for _, tc := range []struct{ sni, want string }{
		{"shop.example", "shop.example"},
		{"SHOP.example.", "shop.example"},
		{"a.example", "wild.example"},
		{"a.b.example", "wild.example"},
		{"v1.api.example", "wild.api.example"}, // the longest wildcard
		{"api.example", "wild.example"},
		{"broken.test", "default"},
		{"other.test", "default"},
		{"", "default"}, // no SNI: a client that dialled the address
	} {
		c, err := certs.certificate(&tls.ClientHelloInfo{ServerName: tc.sni})
		if err != nil {
			t.Errorf("SNI %q: %v, want %s", tc.sni, err, tc.want)
			continue
		}
		if got := c.Leaf.Subject.CommonName; got != tc.want {
			t.Errorf("SNI %q: certificate %s, want %s", tc.sni, got, tc.want)
		}
	}
	// Without a listener for the name and none without hostname, no
	// certificate: the handshake fails rather than show another host's.
	only := NewCerts([]ListenerCerts{{Hostname: "shop.example", Certs: []tls.Certificate{keyPair(t, "shop.example")}}})
	if c, err := only.certificate(&tls.ClientHelloInfo{ServerName: "other.test"}); err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Errorf("SNI other.test without a default listener: %v %v, want an error naming the name", c, err)
	}
}

// TestProxyHTTPS serves two HTTPS listeners on one real proxy port and
// checks, with real TLS clients, that each name gets its own certificate
// over HTTP/1.1 and h2, that a table with a renewed certificate serves it
// on the next handshake, and that the port never falls back to plain
// HTTP.
func TestProxyHTTPS(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Host + " " + r.Header.Get("X-Forwarded-Proto")))
	}))
	defer backend.Close()
	ep := []string{strings.TrimPrefix(backend.URL, "http://")}
	dp := NewDataplane("127.0.0.1", testLogger(t), nil)
	defer dp.Close()
	port, err := dp.Reserve(0)
	if err != nil {
		t.Fatal(err)
	}
	shop, api := keyPair(t, "shop.example"), keyPair(t, "api.example")
	table := func(shop tls.Certificate) *Table {
		tbl, err := Compile(443, []RouteSpec{route("r", nil, RuleSpec{Backends: []*Backend{{Name: "b", Weight: 1, Endpoints: ep}}})})
		if err != nil {
			t.Fatal(err)
		}
		tbl.TLS = NewCerts([]ListenerCerts{{Hostname: "shop.example", Certs: []tls.Certificate{shop}}, {Hostname: "api.example", Certs: []tls.Certificate{api}}})
		return tbl
	}
	if err := dp.Set(map[int]*Table{port: table(shop)}); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	get := func(host string, h2 bool) (string, *x509.Certificate, string, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, InsecureSkipVerify: true}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
		req.Host = host
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return "", nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.TLS.PeerCertificates[0], resp.Proto, nil
	}
	for _, host := range []string{"shop.example", "api.example"} {
		for _, h2 := range []bool{false, true} {
			body, cert, proto, err := get(host, h2)
			wantProto := "HTTP/1.1"
			if h2 {
				wantProto = "HTTP/2.0"
			}
			if err != nil || cert.Subject.CommonName != host || body != host+" https" || proto != wantProto {
				t.Errorf("%s (h2 %v): %q, certificate %v, %s, %v; want its own certificate, %s and the backend's answer", host, h2, body, cert, proto, err, wantProto)
			}
		}
	}
	if _, _, _, err := get("other.test", false); err == nil {
		t.Errorf("a name no HTTPS listener serves got a certificate")
	}
	if resp, err := http.Get("http://" + addr + "/"); err == nil && resp.StatusCode == 200 {
		t.Errorf("plain HTTP on an HTTPS port answered 200")
	}

	renewed := keyPair(t, "shop.example")
	if err := dp.Set(map[int]*Table{port: table(renewed)}); err != nil {
		t.Fatal(err)
	}
	_, cert, _, err := get("shop.example", false)
	if err != nil || !cert.Equal(renewed.Leaf) {
		t.Errorf("after the renewal: certificate serial %v (%v), want the renewed one's %v", cert.SerialNumber, err, renewed.Leaf.SerialNumber)
	}
}

func tlsSecret(ns, name string, cert, key []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}
}

// testController is a Controller over indexers filled by the test, and
// an API (client-go's fake clientset) that holds the objects the
// informers would not: Secrets of other types.
func testController(t *testing.T, objs ...runtime.Object) *Controller {
	t.Helper()
	c := &Controller{certs: map[string]cachedCert{}, log: testLogger(t)}
	idx := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	c.secrets, c.svcs, c.slices, c.nss = idx(), idx(), idx(), idx()
	grants := idx()
	c.grants = gatewaylisters.NewReferenceGrantLister(grants)
	var api []runtime.Object
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Secret:
			if o.Type == corev1.SecretTypeTLS {
				c.secrets.Add(o)
			}
			api = append(api, o)
		case *gatewayv1.ReferenceGrant:
			grants.Add(o)
		}
	}
	c.kube = fake.NewClientset(api...)
	return c
}

// TestListenerStatus checks the listeners' conditions: valid and invalid
// certificates side by side, cross-namespace refs with and without a
// ReferenceGrant, an unsupported TLS listener and a protocol conflict.
func TestListenerStatus(t *testing.T) {
	shopCrt, shopKey := selfSigned(t, "shop.example")
	_, otherKey := selfSigned(t, "other.example")
	grant := &gatewayv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "let-web-in"},
		Spec: gatewayv1.ReferenceGrantSpec{
			From: []gatewayv1.ReferenceGrantFrom{{Group: group, Kind: "Gateway", Namespace: "web"}},
			To:   []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Secret", Name: ptr.To(gatewayv1.ObjectName("granted"))}},
		},
	}
	c := testController(t,
		tlsSecret("web", "shop", shopCrt, shopKey),
		tlsSecret("web", "garbage", []byte("not a certificate"), []byte("not a key")),
		tlsSecret("web", "mismatch", shopCrt, otherKey),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "opaque"}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"a": []byte("b")}},
		tlsSecret("certs", "granted", shopCrt, shopKey),
		tlsSecret("other-tenant", "theirs", shopCrt, shopKey),
		grant,
	)
	ref := func(ns, name string) gatewayv1.SecretObjectReference {
		r := gatewayv1.SecretObjectReference{Name: gatewayv1.ObjectName(name)}
		if ns != "" {
			r.Namespace = ptr.To(gatewayv1.Namespace(ns))
		}
		return r
	}
	https := func(name string, port int32, host string, refs ...gatewayv1.SecretObjectReference) gatewayv1.Listener {
		l := gatewayv1.Listener{Name: gatewayv1.SectionName(name), Protocol: gatewayv1.HTTPSProtocolType, Port: port,
			TLS: &gatewayv1.ListenerTLSConfig{CertificateRefs: refs}}
		if host != "" {
			l.Hostname = ptr.To(gatewayv1.Hostname(host))
		}
		return l
	}
	g := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "gw", Generation: 1}, Spec: gatewayv1.GatewaySpec{
		Listeners: []gatewayv1.Listener{
			https("good", 443, "shop.example", ref("", "shop")),
			https("garbage", 443, "a.example", ref("", "garbage")),
			https("mismatch", 443, "b.example", ref("", "mismatch")),
			https("opaque", 443, "c.example", ref("", "opaque")),
			https("missing", 443, "d.example", ref("", "nope")),
			https("granted", 443, "e.example", ref("certs", "granted")),
			https("not-granted", 443, "f.example", ref("other-tenant", "theirs")),
			https("no-refs", 443, "g.example"),
			{Name: "tls", Protocol: gatewayv1.TLSProtocolType, Port: 8443},
			{Name: "http-on-https-port", Protocol: gatewayv1.HTTPProtocolType, Port: 443, Hostname: ptr.To(gatewayv1.Hostname("h.example"))},
		},
	}}
	st := c.gatewayState(t.Context(), g)
	for _, tc := range []struct {
		listener, typ, status, reason, msg string
	}{
		{"good", "ResolvedRefs", "True", "ResolvedRefs", ""},
		{"garbage", "ResolvedRefs", "False", "InvalidCertificateRef", "web/garbage: tls.crt and tls.key are not a valid certificate and key"},
		{"mismatch", "ResolvedRefs", "False", "InvalidCertificateRef", "private key does not match public key"},
		{"opaque", "ResolvedRefs", "False", "InvalidCertificateRef", `is of type "Opaque", not "kubernetes.io/tls"`},
		{"missing", "ResolvedRefs", "False", "InvalidCertificateRef", "Secret web/nope not found"},
		{"granted", "ResolvedRefs", "True", "ResolvedRefs", ""},
		{"not-granted", "ResolvedRefs", "False", "RefNotPermitted", "no ReferenceGrant in namespace other-tenant"},
		{"no-refs", "ResolvedRefs", "False", "InvalidCertificateRef", "needs tls.certificateRefs"},
		{"tls", "Accepted", "False", "UnsupportedProtocol", "no TLS passthrough"},
		{"http-on-https-port", "Conflicted", "True", "ProtocolConflict", "port 443 is HTTPS"},
		{"http-on-https-port", "Accepted", "False", "ProtocolConflict", ""},
	} {
		ls := st.listeners[gatewayv1.SectionName(tc.listener)]
		var got *metav1.Condition
		for i := range ls.status.Conditions {
			if ls.status.Conditions[i].Type == tc.typ {
				got = &ls.status.Conditions[i]
			}
		}
		if got == nil || string(got.Status) != tc.status || got.Reason != tc.reason || !strings.Contains(got.Message, tc.msg) {
			t.Errorf("listener %s: %s %+v, want %s %s with %q", tc.listener, tc.typ, got, tc.status, tc.reason, tc.msg)
		}
	}
	// A listener with a bad certificate is not programmed; the good one
	// is, and the SNI choice has its certificate only.
	c.svcs.Add(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: ServiceName("web", "gw")},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}}}})
	status := c.gatewayStatus(st)
	programmed := sets.New[string]()
	for _, l := range status.Listeners {
		for _, cnd := range l.Conditions {
			if cnd.Type == "Programmed" && cnd.Status == metav1.ConditionTrue {
				programmed.Insert(string(l.Name))
			}
		}
	}
	if want := sets.New("good", "granted"); !programmed.Equal(want) {
		t.Errorf("programmed listeners %v, want %v", sets.List(programmed), sets.List(want))
	}
	certs := NewCerts(st.certs[443])
	if cert, err := certs.certificate(&tls.ClientHelloInfo{ServerName: "shop.example"}); err != nil || cert.Leaf.Subject.CommonName != "shop.example" {
		t.Errorf("shop.example: %v %v", cert, err)
	}
	if cert, err := certs.certificate(&tls.ClientHelloInfo{ServerName: "a.example"}); err == nil {
		t.Errorf("a.example, whose Secret is garbage, got certificate %s", cert.Leaf.Subject.CommonName)
	}
}
