package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"strconv"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cci-project/cci/internal/metering"
	"github.com/cci-project/cci/internal/pki"
)

// meteringParts are the control plane's billing components, ready to run.
type meteringParts struct {
	meter    *metering.Meter
	endpoint metering.EndpointConfig
	url      string
}

// setupMetering installs the UsageRecord CRD, loads the price table and
// issues the usage endpoint's certificate from the cluster CA (in memory,
// at every start: clients trust the CA, not the leaf).
func setupMetering(ctx context.Context, cfg *Config, p *pki.PKI, kubeconfig string, hosts []string) (*meteringParts, error) {
	prices, err := metering.LoadPrices(cfg.PriceTable)
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %q: %w", kubeconfig, err)
	}
	ext, err := apiextensions.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if err := metering.InstallCRD(ctx, ext); err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}

	ca, caKey, err := p.LoadCA()
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := pki.Issue(ca, caKey, "cci-usage", nil, true, hosts)
	if err != nil {
		return nil, fmt.Errorf("issue usage endpoint certificate: %w", err)
	}
	certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("usage endpoint certificate: %w", err)
	}
	caPEM, err := os.ReadFile(p.CACert)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)

	m := metering.New(metering.Config{Kube: kube, Store: metering.NewAPIStore(dyn), Prices: &prices, Log: cfg.Log})
	return &meteringParts{
		meter:    m,
		endpoint: metering.EndpointConfig{Addr: net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.UsagePort)), Cert: cert, ClientCAs: pool},
		url:      "https://127.0.0.1:" + strconv.Itoa(cfg.UsagePort),
	}, nil
}
