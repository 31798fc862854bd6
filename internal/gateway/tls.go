package gateway

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ListenerCerts are the certificates of one HTTPS listener.
type ListenerCerts struct {
	// Hostname is the listener's hostname ("" for none: the default of
	// its port, "*.example" for a wildcard).
	Hostname string
	Certs    []tls.Certificate
}

// Certs chooses the certificate of a TLS handshake on one proxy port by
// the server name the client sent (SNI), among the HTTPS listeners of
// that port: the listener of that exact hostname, else of the longest
// wildcard that matches, else the listener without hostname. It is never
// changed once built; a renewed certificate comes with a new Certs in a
// new Table.
type Certs struct {
	exact    map[string][]tls.Certificate
	wildcard []wildCerts
	def      []tls.Certificate
}

type wildCerts struct {
	suffix string // ".example" for "*.example"
	certs  []tls.Certificate
}

// NewCerts builds the SNI choice of one port. A listener without
// certificates (its refs did not resolve) is left out, so a client asking
// for its name gets the default listener's certificate or none.
func NewCerts(listeners []ListenerCerts) *Certs {
	c := &Certs{exact: map[string][]tls.Certificate{}}
	for _, l := range listeners {
		if len(l.Certs) == 0 {
			continue
		}
		h := strings.ToLower(l.Hostname)
		switch {
		case h == "":
			c.def = l.Certs
		case strings.HasPrefix(h, "*."):
			c.wildcard = append(c.wildcard, wildCerts{suffix: h[1:], certs: l.Certs})
		default:
			c.exact[h] = l.Certs
		}
	}
	slices.SortFunc(c.wildcard, func(a, b wildCerts) int {
		return cmp.Or(cmp.Compare(len(b.suffix), len(a.suffix)), strings.Compare(a.suffix, b.suffix))
	})
	return c
}

// certificate answers tls.Config.GetCertificate.
func (c *Certs) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	certs := c.exact[name]
	if certs == nil && name != "" {
		for _, w := range c.wildcard {
			if strings.HasSuffix(name, w.suffix) && len(name) > len(w.suffix) {
				certs = w.certs
				break
			}
		}
	}
	if certs == nil {
		certs = c.def
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no HTTPS listener with a valid certificate serves server name %q on this port", hello.ServerName)
	}
	// A listener may hold several certificates (an RSA and an ECDSA one):
	// the first the client supports.
	for i := range certs {
		if hello.SupportsCertificate(&certs[i]) == nil {
			return &certs[i], nil
		}
	}
	return &certs[0], nil
}

// tlsListener terminates TLS on the connections of a proxy port whose
// table asks for it (an HTTPS listener), with the certificates of the
// table current at each handshake; the http.Server behind it sees
// *tls.Conn and serves HTTP/1.1 or h2 as ALPN chose. A port whose table
// has no TLS serves plain HTTP: the choice is per connection, so a
// listener's change of protocol needs no new socket.
type tlsListener struct {
	net.Listener
	l   *listener
	cfg *tls.Config
}

func newTLSListener(ln net.Listener, l *listener) *tlsListener {
	tl := &tlsListener{Listener: ln, l: l}
	tl.cfg = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			t := l.table.Load()
			if t == nil || t.TLS == nil {
				return nil, errors.New("this port has no HTTPS listener")
			}
			return t.TLS.certificate(hello)
		},
	}
	return tl
}

func (tl *tlsListener) Accept() (net.Conn, error) {
	c, err := tl.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if t := tl.l.table.Load(); t != nil && t.TLS != nil {
		return tls.Server(c, tl.cfg), nil
	}
	return c, nil
}

// parseTLSSecret reads a kubernetes.io/tls Secret's certificate and key;
// the error says what is wrong with it, for the listener's status.
func parseTLSSecret(s *corev1.Secret) (tls.Certificate, error) {
	if s.Type != corev1.SecretTypeTLS {
		return tls.Certificate{}, fmt.Errorf("Secret %s/%s is of type %q, not %q; make one with `kubectl create secret tls`", s.Namespace, s.Name, s.Type, corev1.SecretTypeTLS)
	}
	cert, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("Secret %s/%s: %s and %s are not a valid certificate and key: %w", s.Namespace, s.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, err)
	}
	return cert, nil
}
