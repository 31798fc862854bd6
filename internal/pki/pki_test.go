package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	first, err := Ensure(dir, Options{Hosts: []string{"10.0.0.5", "node-a"}, ServiceIP: net.ParseIP("10.43.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	ca1, _ := os.ReadFile(first.CACert)
	api1, _ := os.ReadFile(first.APIServerCert)
	second, err := Ensure(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ca2, _ := os.ReadFile(second.CACert)
	api2, _ := os.ReadFile(second.APIServerCert)
	if string(ca1) != string(ca2) || string(api1) != string(api2) || first.Token != second.Token {
		t.Fatal("a second Ensure changed existing credentials")
	}

	// The apiserver certificate covers its names, is signed by the CA and
	// carries the CA in its chain (for token-pinned joins).
	ca, _, err := second.LoadCA()
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for rest := api1; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) != 2 || !chain[1].Equal(ca) {
		t.Fatalf("apiserver chain has %d certificates; want leaf + CA", len(chain))
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, name := range []string{"10.0.0.5", "node-a", "10.43.0.1", "kubernetes.default.svc", "127.0.0.1"} {
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("apiserver certificate for %q: %v", name, err)
		}
	}

	// The join token pins this CA and the apiserver's token file knows its secret.
	tok, err := ParseToken(second.Token)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != CAHash(ca.Raw) {
		t.Error("token does not pin the CA")
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "tokens.csv"))
	if want := tok.Secret + "," + AgentUser; string(raw[:len(want)]) != want {
		t.Errorf("token auth file %q", raw)
	}
}

func TestParseToken(t *testing.T) {
	hash := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"CCI1." + hash + ".secret", true},
		{" CCI1." + hash + ".secret\n", true},
		{"CCI1." + hash + ".", false},
		{"CCI2." + hash + ".secret", false},
		{"CCI1.abc.secret", false},
		{"secret", false},
	} {
		_, err := ParseToken(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseToken(%q) error %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}
