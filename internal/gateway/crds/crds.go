// Package crds installs the Gateway API's standard-channel CRDs
// (GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant, …) of the
// sigs.k8s.io/gateway-api version go.mod requires. The YAML is copied from
// that module by `go generate` (gen/), never by hand, and embedded; a
// checkout that has not run it builds, and the control plane then says
// what to run.
package crds

import (
	"context"
	"embed"

	"github.com/cci-project/cci/internal/crdutil"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
)

//go:generate go run ./gen

//go:embed all:standard
var embedded embed.FS

// Load returns the embedded CRDs.
func Load() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	return crdutil.Load(embedded, "standard/*.yaml", "this cci binary was built without the Gateway API CRDs: run `go generate ./internal/gateway/crds` (make build does) and build again")
}

// Install creates or updates every CRD and waits until each is served.
func Install(ctx context.Context, rc *rest.Config) error {
	want, err := Load()
	if err != nil {
		return err
	}
	return crdutil.Install(ctx, rc, want)
}
