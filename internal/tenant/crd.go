package tenant

import (
	"context"
	"fmt"
	"time"

	"github.com/cci-project/cci/internal/crdutil"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// quantityPattern is the schema of a resource.Quantity, as upstream CRDs have it.
const quantityPattern = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`

// CRD is the Tenant CustomResourceDefinition.
func CRD() *apiextensionsv1.CustomResourceDefinition {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	quantity := apiextensionsv1.JSONSchemaProps{
		XIntOrString: true,
		AnyOf:        []apiextensionsv1.JSONSchemaProps{{Type: "integer"}, {Type: "string"}},
		Pattern:      quantityPattern,
	}
	condition := apiextensionsv1.JSONSchemaProps{
		Type:     "object",
		Required: []string{"type", "status"},
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"type": str, "status": str, "reason": str, "message": str,
			"lastTransitionTime": {Type: "string", Format: "date-time"},
			"observedGeneration": {Type: "integer", Format: "int64"},
		},
	}
	schema := &apiextensionsv1.JSONSchemaProps{
		Type: "object",
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"apiVersion": str,
			"kind":       str,
			"metadata":   {Type: "object"},
			"spec": {
				Type: "object",
				Properties: map[string]apiextensionsv1.JSONSchemaProps{
					"quota": {
						Type:                 "object",
						Description:          "cpu, memory, pods and nvidia.com/gpu for the tenant's namespace; missing keys take the defaults",
						AdditionalProperties: &apiextensionsv1.JSONSchemaPropsOrBool{Allows: true, Schema: &quantity},
					},
					"allowRunc":        {Type: "boolean", Description: "lets the tenant's pods use the runc runtime class (no sandbox)"},
					"runtimeClassName": {Type: "string", Description: "runtime class for pods that name none; default gvisor"},
					"pools": {
						Type:        "array",
						Description: "host pools the tenant's pods may run in (a pod picks one with the annotation cci.io/pool, or by asking for nvidia.com/gpu or huawei.com/ascend-*); default [general]",
						Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &apiextensionsv1.JSONSchemaProps{
							Type: "string", MaxLength: ptr(int64(63)), Pattern: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`,
						}},
						Default: &apiextensionsv1.JSON{Raw: []byte(`["general"]`)},
					},
				},
			},
			"status": {
				Type: "object",
				Properties: map[string]apiextensionsv1.JSONSchemaProps{
					"namespace":          str,
					"phase":              str,
					"tokenSecret":        str,
					"observedGeneration": {Type: "integer", Format: "int64"},
					"conditions":         {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &condition}},
				},
			},
		},
	}
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: CRDName},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: Group,
			Scope: apiextensionsv1.ClusterScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Plural: Resource, Singular: "tenant", Kind: Kind, ListKind: Kind + "List",
			},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: Version, Served: true, Storage: true,
				Schema:       &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: schema},
				Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
				AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
					{Name: "Namespace", Type: "string", JSONPath: ".status.namespace"},
					{Name: "Phase", Type: "string", JSONPath: ".status.phase"},
					{Name: "Runc", Type: "boolean", JSONPath: ".spec.allowRunc"},
					{Name: "Pools", Type: "string", JSONPath: ".spec.pools"},
					{Name: "Age", Type: "date", JSONPath: ".metadata.creationTimestamp"},
				},
			}},
		},
	}
}

func ptr[T any](v T) *T { return &v }

// InstallCRD creates or updates the Tenant CRD and waits until the
// apiserver serves it.
func InstallCRD(ctx context.Context, rc *rest.Config) error {
	c, err := apiextensions.NewForConfig(rc)
	if err != nil {
		return err
	}
	crds := c.ApiextensionsV1().CustomResourceDefinitions()
	want := CRD()
	cur, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = crds.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		want.ResourceVersion = cur.ResourceVersion
		_, err = crds.Update(ctx, want, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("install CRD %q: %w", want.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return crdutil.WaitEstablished(ctx, crds, want.Name)
}
