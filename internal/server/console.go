package server

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cci-project/cci/internal/console"
	"github.com/cci-project/cci/internal/metering"
	"github.com/cci-project/cci/internal/pki"
)

// runConsole serves the web console (internal/console) on its own HTTPS
// port; it is ready once it listens. Its certificate is issued from the
// cluster CA at every start, like the usage endpoint's; the key that seals
// its session cookies is kept in the PKI folder, so that users stay logged
// in across restarts.
func (cp *controlPlane) runConsole(ctx context.Context, ready func()) error {
	if cp.cfg.ConsolePort < 0 {
		ready()
		<-ctx.Done()
		return nil
	}
	ca, caKey, err := cp.pki.LoadCA()
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := pki.Issue(ca, caKey, "cci-console", nil, true, []string{"localhost", "127.0.0.1", cp.cfg.AdvertiseAddress, cp.hostname})
	if err != nil {
		return fmt.Errorf("issue the console's certificate: %w", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	cert, err := tls.X509KeyPair(append(certPEM, caPEM...), keyPEM)
	if err != nil {
		return fmt.Errorf("console certificate: %w", err)
	}
	key, err := console.LoadOrCreateKey(filepath.Join(cp.pki.Dir, "console-session.key"))
	if err != nil {
		return err
	}
	prices, err := metering.LoadPrices(cp.cfg.PriceTable)
	if err != nil {
		return err
	}
	clusterCA, err := os.ReadFile(cp.pki.CACert)
	if err != nil {
		return fmt.Errorf("read the cluster CA: %w", err)
	}
	var regPassword string
	var regPublic func(string) bool
	if cp.registryAuth != nil {
		regPassword, regPublic = cp.registryAuth.Keys.Operator(), cp.registryAuth.Public.Match
	}
	srv, err := console.New(console.Config{
		Addr:             net.JoinHostPort(cp.cfg.BindAddress, strconv.Itoa(cp.cfg.ConsolePort)),
		APIServer:        cp.info.APIServerURL,
		CAPEM:            clusterCA,
		UsageURL:         cp.info.UsageURL,
		RegistryAddr:     cp.info.RegistryAddr,
		RegistryPassword: regPassword,
		RegistryPublic:   regPublic,
		Prices:           prices,
		Cert:             cert,
		SessionKey:       key,
		Admin:            cp.admin,
		Log:              cp.log.With("component", "console"),
	})
	if err != nil {
		return err
	}
	cp.info.ConsoleURL = "https://127.0.0.1:" + strconv.Itoa(cp.cfg.ConsolePort) + "/"
	return srv.Run(ctx, ready)
}
