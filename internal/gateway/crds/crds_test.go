package crds

import (
	"testing"

	"sigs.k8s.io/gateway-api/pkg/consts"
)

// The embedded CRDs parse strictly and are the module's version; run `go
// generate ./internal/gateway/crds` first (make test-unit does).
func TestLoad(t *testing.T) {
	crds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range crds {
		got[c.Name] = true
		if v := c.Annotations[consts.BundleVersionAnnotation]; v != consts.BundleVersion {
			t.Errorf("%s: bundle version %q, want %q", c.Name, v, consts.BundleVersion)
		}
	}
	for _, want := range []string{"gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants"} {
		if !got[want+".gateway.networking.k8s.io"] {
			t.Errorf("CRD %s.gateway.networking.k8s.io missing from %v", want, got)
		}
	}
}
