package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// certFor makes a self-signed certificate for host: its PEM, its key's
// PEM and the parsed certificate.
func certFor(t *testing.T, host string) ([]byte, []byte, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), cert
}

func tlsSecret(name string, crt, key []byte) *v1.Secret {
	return &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: v1.SecretTypeTLS,
		Data: map[string][]byte{v1.TLSCertKey: crt, v1.TLSPrivateKeyKey: key}}
}

// askTLS sends GET / to addr with SNI and Host host, trusting only want,
// and returns the status, the body and the certificate the gateway
// showed (curl --resolve host:port:addr --cacert want https://host/).
func askTLS(addr, host string, want *x509.Certificate) (int, string, *x509.Certificate, error) {
	roots := x509.NewCertPool()
	roots.AddCert(want)
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: host, RootCAs: roots}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		return 0, "", nil, err
	}
	req.Host = host
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.TLS.PeerCertificates[0], err
}

// HTTPS listeners: a Gateway with one HTTPS listener for shop.example and
// one for api.example, each with its own self-signed certificate in a
// Secret, serves each host its own certificate and the HTTPD pods' page;
// a third listener whose Secret is not a certificate says
// ResolvedRefs=False InvalidCertificateRef and is not programmed while
// the others serve; a renewed Secret is served without a restart.
func TestGatewayHTTPS(t *testing.T) {
	ns := testNamespace(t)
	gc := gatewayClient(t, cci.Kubeconfig)
	kc := client(t)
	ctx := context.Background()

	labels := map[string]string{"app": "httpd"}
	one, grace := int32(1), int64(1)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "httpd"}, Spec: appsv1.DeploymentSpec{
		Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []v1.Container{{Name: "httpd", Image: image(testimage.HTTPD),
				Ports: []v1.ContainerPort{{Name: "http", ContainerPort: testimage.HTTPDPort}}}},
		}},
	}}
	if _, err := kc.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "httpd"}, Spec: v1.ServiceSpec{Selector: labels,
		Ports: []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	shopCrt, shopKey, shopCert := certFor(t, "shop.example")
	apiCrt, apiKey, apiCert := certFor(t, "api.example")
	for _, s := range []*v1.Secret{
		tlsSecret("shop", shopCrt, shopKey),
		tlsSecret("api", apiCrt, apiKey),
		tlsSecret("bad", []byte("this is not a certificate"), []byte("nor a key")),
	} {
		if _, err := kc.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	port := cluster.PickPort(func(p int) bool { return cluster.TCPFree("0.0.0.0", p) })
	mustTenantKubectl(t, cci.Kubeconfig, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secure, namespace: %[1]s}
spec:
  gatewayClassName: cci
  listeners:
  - {name: shop, protocol: HTTPS, port: %[2]d, hostname: shop.example, tls: {certificateRefs: [{name: shop}]}}
  - {name: api, protocol: HTTPS, port: %[2]d, hostname: api.example, tls: {mode: Terminate, certificateRefs: [{name: api}]}}
  - {name: broken, protocol: HTTPS, port: %[2]d, hostname: bad.example, tls: {certificateRefs: [{name: bad}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: %[1]s}
spec:
  parentRefs: [{name: secure}]
  rules: [{backendRefs: [{name: httpd, port: 80}]}]
`, ns, port), "apply", "-f", "-")
	addr := net.JoinHostPort(waitGateway(t, gc, ns, "secure"), strconv.Itoa(port))

	waitFor(t, 60*time.Second, "listener broken ResolvedRefs=False InvalidCertificateRef, the others Programmed", func() (bool, string) {
		g, err := gc.GatewayV1().Gateways(ns).Get(ctx, "secure", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got := map[string]string{}
		for _, l := range g.Status.Listeners {
			rr := meta.FindStatusCondition(l.Conditions, string(gatewayv1.ListenerConditionResolvedRefs))
			pg := meta.FindStatusCondition(l.Conditions, string(gatewayv1.ListenerConditionProgrammed))
			if rr != nil && pg != nil {
				got[string(l.Name)] = fmt.Sprintf("%s/%s/%s", rr.Reason, pg.Status, rr.Message)
			}
		}
		ok := strings.HasPrefix(got["shop"], "ResolvedRefs/True/") && strings.HasPrefix(got["api"], "ResolvedRefs/True/") &&
			strings.HasPrefix(got["broken"], "InvalidCertificateRef/False/") && strings.Contains(got["broken"], "not a valid certificate and key")
		return ok, fmt.Sprint(got)
	})

	waitRunning(t, ns, "app=httpd", 1, 3*time.Minute)
	for _, tc := range []struct {
		host string
		cert *x509.Certificate
	}{{"shop.example", shopCert}, {"api.example", apiCert}} {
		waitFor(t, 90*time.Second, tc.host+" answers over HTTPS with its own certificate", func() (bool, string) {
			code, body, got, err := askTLS(addr, tc.host, tc.cert)
			if err != nil {
				return false, err.Error()
			}
			return code == 200 && body == testimage.IndexHTML && got.Equal(tc.cert), fmt.Sprintf("%d %q %s", code, body, got.Subject)
		})
	}
	// The host of the broken listener gets no certificate at all (there
	// is no listener without hostname to fall back to).
	if conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "bad.example", InsecureSkipVerify: true}); err == nil {
		t.Errorf("bad.example, whose Secret is not a certificate, was served certificate %s", conn.ConnectionState().PeerCertificates[0].Subject)
		conn.Close()
	}
	// Plain HTTP on the HTTPS port is refused.
	if code, _, err := ask(addr, "shop.example", "/"); err == nil && code == 200 {
		t.Errorf("plain HTTP on the HTTPS port answered 200")
	}

	// Renew shop's certificate: the next handshake shows the new one.
	newCrt, newKey, newCert := certFor(t, "shop.example")
	sec, err := kc.CoreV1().Secrets(ns).Get(ctx, "shop", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data[v1.TLSCertKey], sec.Data[v1.TLSPrivateKeyKey] = newCrt, newKey
	if _, err := kc.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "shop.example serves the renewed certificate", func() (bool, string) {
		code, _, got, err := askTLS(addr, "shop.example", newCert)
		if err != nil {
			return false, err.Error()
		}
		return code == 200 && got.Equal(newCert), fmt.Sprintf("%d serial %v", code, got.SerialNumber)
	})
	if code, _, got, err := askTLS(addr, "api.example", apiCert); err != nil || code != 200 || !got.Equal(apiCert) {
		t.Errorf("api.example after shop's renewal: %d %v %v", code, got, err)
	}
}
