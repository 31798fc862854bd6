// Package crds installs the VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1)
// of the github.com/kubernetes-csi/external-snapshotter/client/v8 version
// go.mod requires. The YAML is copied from that module by `go generate`
// (gen/), never by hand, and embedded; a checkout that has not run it
// builds, and the control plane then says what to run.
package crds

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/cci-project/cci/internal/crdutil"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

//go:generate go run ./gen

//go:embed all:v1
var embedded embed.FS

// Load returns the embedded CRDs.
func Load() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := fs.Glob(embedded, "v1/*.yaml")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("this cci binary was built without the VolumeSnapshot CRDs: run `go generate ./internal/snapshot/crds` (make build does) and build again")
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		b, err := embedded.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			return nil, fmt.Errorf("embedded CRD %s: %w", f, err)
		}
		out = append(out, crd)
	}
	return out, nil
}

// Install creates or updates every CRD and waits until each is served.
func Install(ctx context.Context, rc *rest.Config) error {
	want, err := Load()
	if err != nil {
		return err
	}
	c, err := apiextensions.NewForConfig(rc)
	if err != nil {
		return err
	}
	api := c.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range want {
		cur, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(ctx, crd, metav1.CreateOptions{})
		case err == nil:
			crd.ResourceVersion = cur.ResourceVersion
			_, err = api.Update(ctx, crd, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("install CRD %q: %w", crd.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, crd := range want {
		if err := crdutil.WaitEstablished(ctx, api, crd.Name); err != nil {
			return err
		}
	}
	return nil
}
