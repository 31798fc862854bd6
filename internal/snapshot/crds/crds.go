// Package crds installs the VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1)
// of the github.com/kubernetes-csi/external-snapshotter/client/v8 version
// go.mod requires. The YAML is copied from that module by `go generate`
// (gen/), never by hand, and embedded; a checkout that has not run it
// builds, and the control plane then says what to run.
package crds

import (
	"context"
	"embed"

	"github.com/cci-project/cci/internal/crdutil"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
)

//go:generate go run ./gen

//go:embed all:v1
var embedded embed.FS

// Load returns the embedded CRDs.
func Load() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	return crdutil.Load(embedded, "v1/*.yaml", "this cci binary was built without the VolumeSnapshot CRDs: run `go generate ./internal/snapshot/crds` (make build does) and build again")
}

// Install creates or updates every CRD and waits until each is served.
func Install(ctx context.Context, rc *rest.Config) error {
	want, err := Load()
	if err != nil {
		return err
	}
	return crdutil.Install(ctx, rc, want)
}
