package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s: not PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The aggregation layer's and the metrics API's credentials chain to the
// right CA, carry the right names, and survive a second Ensure unchanged.
func TestEnsureAggregationAndMetricsCredentials(t *testing.T) {
	dir := t.TempDir()
	p, err := Ensure(dir, Options{Hosts: []string{"10.1.2.3"}})
	if err != nil {
		t.Fatal(err)
	}
	ca, fpCA := readCert(t, p.CACert), readCert(t, p.FrontProxyCACert)
	tests := []struct {
		name   string
		cert   string
		signer *x509.Certificate
		cn     string
		usage  x509.ExtKeyUsage
		dns    string
		ip     string
	}{
		{"front-proxy client", p.FrontProxyClientCert, fpCA, FrontProxyClient, x509.ExtKeyUsageClientAuth, "", ""},
		{"metrics-server client", p.MetricsClientCert, ca, MetricsServer, x509.ExtKeyUsageClientAuth, "", ""},
		{"metrics-server serving", p.MetricsServingCert, ca, MetricsServerService, x509.ExtKeyUsageServerAuth, "metrics-server.kube-system.svc", "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := readCert(t, tt.cert)
			if err := c.CheckSignatureFrom(tt.signer); err != nil {
				t.Errorf("not signed by %s: %v", tt.signer.Subject.CommonName, err)
			}
			if c.Subject.CommonName != tt.cn {
				t.Errorf("CN %q, want %q", c.Subject.CommonName, tt.cn)
			}
			if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != tt.usage {
				t.Errorf("extended key usage %v, want %v", c.ExtKeyUsage, tt.usage)
			}
			if tt.dns != "" {
				if err := c.VerifyHostname(tt.dns); err != nil {
					t.Error(err)
				}
			}
			if tt.ip != "" {
				if err := c.VerifyHostname(net.ParseIP(tt.ip).String()); err != nil {
					t.Error(err)
				}
			}
		})
	}
	if fpCA.Equal(ca) {
		t.Error("the front-proxy CA is the cluster CA")
	}

	before := map[string]*x509.Certificate{}
	kept := []string{p.FrontProxyCACert, p.FrontProxyClientCert, p.MetricsServingCert, p.MetricsClientCert}
	for _, path := range kept {
		before[path] = readCert(t, path)
	}
	if _, err := Ensure(dir, Options{Hosts: []string{"10.1.2.3"}}); err != nil {
		t.Fatal(err)
	}
	for _, path := range kept {
		if !readCert(t, path).Equal(before[path]) {
			t.Errorf("%s changed on the second Ensure", path)
		}
	}
}
