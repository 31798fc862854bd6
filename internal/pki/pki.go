// Package pki creates, once, the certificate authority and every credential
// the control plane and its agents need, and reuses them on later starts.
//
// Everything lives in one folder; files are written only when missing, so a
// restart keeps the same CA, serving certificates, service-account keys and
// join token, and every kubeconfig written before stays valid.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// validity of every certificate the CA issues; the CA itself lives longer.
const (
	leafValidity = 10 * 365 * 24 * time.Hour
	caValidity   = 20 * 365 * 24 * time.Hour
)

// Identities the control plane components and tools authenticate as.
const (
	AdminUser          = "cci-admin"
	MastersGroup       = "system:masters"
	ControllerManager  = "system:kube-controller-manager"
	Scheduler          = "system:kube-scheduler"
	APIServerKubelet   = "kube-apiserver-kubelet-client"
	AgentUser          = "cci-agent"
	AgentGroup         = "cci:agents"
	NodesGroup         = "system:nodes"
	tokenPrefix        = "CCI1"
	tokenSecretBytes   = 24
	tokenAuthFileName  = "tokens.csv"
	caCertFileName     = "ca.crt"
	caKeyFileName      = "ca.key"
	serviceAccountKey  = "sa.key"
	serviceAccountPub  = "sa.pub"
	joinTokenFileName  = "token"
	apiServerCertName  = "apiserver"
	kubeletClientName  = "apiserver-kubelet-client"
	adminCertName      = "admin"
	controllerCertName = "controller-manager"
	schedulerCertName  = "scheduler"
)

// Identities and files of the aggregation layer and the metrics API.
const (
	// FrontProxyClient is the name the apiserver's aggregation layer
	// presents to extension API servers (--requestheader-allowed-names).
	FrontProxyClient = "front-proxy-client"
	// MetricsServer is the metrics API server's user, for the apiserver and
	// the nodes' kubelet API.
	MetricsServer = "system:metrics-server"
	// MetricsServerService names the Service (in kube-system) behind the
	// metrics API; its serving certificate covers <name>.kube-system.svc.
	MetricsServerService = "metrics-server"
	frontProxyCAName     = "front-proxy-ca"
	metricsClientName    = "metrics-server-client"
)

// DNSUser is the cluster DNS server's (CoreDNS's kubernetes plugin's) user.
const (
	DNSUser       = "system:coredns"
	dnsClientName = "coredns-client"
)

// Options says what the serving certificates must cover.
type Options struct {
	// Hosts are extra DNS names and IP addresses for the apiserver certificate.
	Hosts []string
	// ServiceIP is the first address of the service range (the `kubernetes` Service).
	ServiceIP net.IP
}

// PKI holds the paths of every credential in Dir.
type PKI struct {
	Dir string

	CACert, CAKey                        string
	APIServerCert, APIServerKey          string
	KubeletClientCert, KubeletClientKey  string
	AdminCert, AdminKey                  string
	ControllerCert, ControllerKey        string
	SchedulerCert, SchedulerKey          string
	ServiceAccountKey, ServiceAccountPub string
	TokenAuthFile                        string

	// FrontProxyCACert signs FrontProxyClientCert, the certificate the
	// aggregation layer presents to extension API servers; it is their
	// --requestheader-client-ca-file.
	FrontProxyCACert, FrontProxyCAKey         string
	FrontProxyClientCert, FrontProxyClientKey string
	// MetricsServing* is the metrics API's serving pair, MetricsClient* its
	// client identity (MetricsServer), both from the cluster CA.
	MetricsServingCert, MetricsServingKey string
	MetricsClientCert, MetricsClientKey   string
	// DNSClient* is the cluster DNS server's client identity (DNSUser).
	DNSClientCert, DNSClientKey string
	// Token is the join token agents present (see ParseToken).
	Token string
}

// Ensure creates whatever is missing in dir and returns the paths of all of it.
func Ensure(dir string, opts Options) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki folder %q: %w", dir, err)
	}
	p := &PKI{
		Dir:               dir,
		CACert:            filepath.Join(dir, caCertFileName),
		CAKey:             filepath.Join(dir, caKeyFileName),
		ServiceAccountKey: filepath.Join(dir, serviceAccountKey),
		ServiceAccountPub: filepath.Join(dir, serviceAccountPub),
		TokenAuthFile:     filepath.Join(dir, tokenAuthFileName),
	}
	ca, caKey, err := ensureCA(p.CACert, p.CAKey, "cci-ca")
	if err != nil {
		return nil, err
	}

	hosts := append([]string{"localhost", "127.0.0.1", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, opts.Hosts...)
	if opts.ServiceIP != nil {
		hosts = append(hosts, opts.ServiceIP.String())
	}
	leaves := []struct {
		name        string
		cert, key   *string
		cn          string
		orgs        []string
		server      bool
		hosts       []string
		chainWithCA bool
	}{
		// The apiserver presents the CA in its chain so that an agent holding
		// only the join token (which pins the CA's hash) can learn and check it.
		{apiServerCertName, &p.APIServerCert, &p.APIServerKey, "kube-apiserver", nil, true, hosts, true},
		{kubeletClientName, &p.KubeletClientCert, &p.KubeletClientKey, APIServerKubelet, []string{MastersGroup}, false, nil, false},
		{adminCertName, &p.AdminCert, &p.AdminKey, AdminUser, []string{MastersGroup}, false, nil, false},
		{controllerCertName, &p.ControllerCert, &p.ControllerKey, ControllerManager, nil, false, nil, false},
		{schedulerCertName, &p.SchedulerCert, &p.SchedulerKey, Scheduler, nil, false, nil, false},
		{MetricsServerService, &p.MetricsServingCert, &p.MetricsServingKey, MetricsServerService, nil, true, append([]string{
			MetricsServerService + ".kube-system.svc", MetricsServerService + ".kube-system", "localhost", "127.0.0.1"}, opts.Hosts...), false},
		{metricsClientName, &p.MetricsClientCert, &p.MetricsClientKey, MetricsServer, nil, false, nil, false},
		{dnsClientName, &p.DNSClientCert, &p.DNSClientKey, DNSUser, nil, false, nil, false},
	}
	for _, l := range leaves {
		*l.cert = filepath.Join(dir, l.name+".crt")
		*l.key = filepath.Join(dir, l.name+".key")
		if exists(*l.cert) && exists(*l.key) {
			continue
		}
		certPEM, keyPEM, err := Issue(ca, caKey, l.cn, l.orgs, l.server, l.hosts)
		if err != nil {
			return nil, fmt.Errorf("issue %s certificate: %w", l.name, err)
		}
		if l.chainWithCA {
			certPEM = append(certPEM, encodeCert(ca)...)
		}
		if err := writeFiles(*l.key, keyPEM, *l.cert, certPEM); err != nil {
			return nil, err
		}
	}

	// The aggregation layer's identity has a CA of its own, so that no
	// client certificate of the cluster CA can pass for it.
	p.FrontProxyCACert = filepath.Join(dir, frontProxyCAName+".crt")
	p.FrontProxyCAKey = filepath.Join(dir, frontProxyCAName+".key")
	p.FrontProxyClientCert = filepath.Join(dir, FrontProxyClient+".crt")
	p.FrontProxyClientKey = filepath.Join(dir, FrontProxyClient+".key")
	fpCA, fpKey, err := ensureCA(p.FrontProxyCACert, p.FrontProxyCAKey, frontProxyCAName)
	if err != nil {
		return nil, err
	}
	if !exists(p.FrontProxyClientCert) || !exists(p.FrontProxyClientKey) {
		certPEM, keyPEM, err := Issue(fpCA, fpKey, FrontProxyClient, nil, false, nil)
		if err != nil {
			return nil, fmt.Errorf("issue %s certificate: %w", FrontProxyClient, err)
		}
		if err := writeFiles(p.FrontProxyClientKey, keyPEM, p.FrontProxyClientCert, certPEM); err != nil {
			return nil, err
		}
	}

	if !exists(p.ServiceAccountKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate service-account key: %w", err)
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return nil, fmt.Errorf("encode service-account public key: %w", err)
		}
		pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
		if err := writeFiles(p.ServiceAccountKey, keyPEM, p.ServiceAccountPub, pubPEM); err != nil {
			return nil, err
		}
	}

	tokenPath := filepath.Join(dir, joinTokenFileName)
	if !exists(tokenPath) {
		secret := make([]byte, tokenSecretBytes)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("generate join token: %w", err)
		}
		token := fmt.Sprintf("%s.%s.%s", tokenPrefix, CAHash(ca.Raw), hex.EncodeToString(secret))
		if err := os.WriteFile(tokenPath, []byte(token+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write join token: %w", err)
		}
	}
	raw, err := os.ReadFile(tokenPath)
	if err != nil {
		return nil, fmt.Errorf("read join token: %w", err)
	}
	p.Token = strings.TrimSpace(string(raw))
	parsed, err := ParseToken(p.Token)
	if err != nil {
		return nil, fmt.Errorf("join token in %q: %w", tokenPath, err)
	}
	// The apiserver's static token file: the secret part authenticates agents.
	line := fmt.Sprintf("%s,%s,%s,\"%s,%s\"\n", parsed.Secret, AgentUser, AgentUser, NodesGroup, AgentGroup)
	if err := os.WriteFile(p.TokenAuthFile, []byte(line), 0o600); err != nil {
		return nil, fmt.Errorf("write token auth file: %w", err)
	}
	return p, nil
}

// Token is a parsed join token: CCI1.<sha256 of the CA certificate>.<secret>.
type Token struct {
	CAHash string
	Secret string
}

// ParseToken splits a join token and checks its shape.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 || parts[0] != tokenPrefix || len(parts[1]) != 64 || parts[2] == "" {
		return Token{}, errors.New("malformed join token: expected CCI1.<ca-sha256>.<secret> as printed by `cci server` in <data>/pki/token")
	}
	return Token{CAHash: parts[1], Secret: parts[2]}, nil
}

// CAHash is the hex SHA-256 of a DER certificate, as carried in join tokens.
func CAHash(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// LoadCA reads the CA certificate and key from the folder.
func (p *PKI) LoadCA() (*x509.Certificate, crypto.Signer, error) {
	return loadCA(p.CACert, p.CAKey)
}

// WriteKubeconfig writes a kubeconfig for server authenticated by the client
// certificate pair, trusting the CA.
func (p *PKI) WriteKubeconfig(path, server, certFile, keyFile string) error {
	caPEM, err := os.ReadFile(p.CACert)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return fmt.Errorf("read client certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("read client key: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cci"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["cci"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["cci"] = &clientcmdapi.Context{Cluster: "cci", AuthInfo: "cci"}
	cfg.CurrentContext = "cci"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %q: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

// Issue signs a new leaf certificate. Server certificates cover hosts (DNS
// names or IP addresses); client certificates carry cn and orgs as the
// Kubernetes user and groups.
func Issue(ca *x509.Certificate, caKey crypto.Signer, cn string, orgs []string, server bool, hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		addHosts(tmpl, hosts)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate %q: %w", cn, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// SelfSigned makes a throwaway serving certificate, for listeners whose
// clients do not verify the server (the agent's kubelet API, as upstream).
func SelfSigned(cn string, hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := selfSignedTemplate(cn, time.Now(), leafValidity)
	tmpl.IsCA = false
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	addHosts(tmpl, hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// addHosts puts each host in the certificate as an IP address or DNS name.
func addHosts(tmpl *x509.Certificate, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
}

func selfSignedTemplate(cn string, now time.Time, validity time.Duration) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func ensureCA(certPath, keyPath, cn string) (*x509.Certificate, crypto.Signer, error) {
	if exists(certPath) && exists(keyPath) {
		return loadCA(certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := selfSignedTemplate(cn, time.Now(), caValidity)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFiles(keyPath, keyPEM, certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return nil, nil, err
	}
	return loadCA(certPath, keyPath)
}

func loadCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA certificate: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, nil, fmt.Errorf("CA certificate %q is not PEM", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate %q: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA key: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("CA key %q is not PEM", keyPath)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA key %q: %w", keyPath, err)
	}
	return cert, key, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// writeFiles writes the key first and the certificate last, so that a crash
// in between leaves a state that Ensure regenerates rather than a cert
// without its key.
func writeFiles(keyPath string, keyPEM []byte, certPath string, certPEM []byte) error {
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write %q: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("write %q: %w", certPath, err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
