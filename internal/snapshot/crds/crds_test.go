package crds

import "testing"

// The embedded CRDs parse strictly and are the three of
// snapshot.storage.k8s.io, each serving v1; run `go generate
// ./internal/snapshot/crds` first (make test-unit does).
func TestLoad(t *testing.T) {
	crds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range crds {
		served := false
		for _, v := range c.Spec.Versions {
			served = served || (v.Name == "v1" && v.Served && v.Storage)
		}
		if !served {
			t.Errorf("%s does not serve and store v1", c.Name)
		}
		got[c.Name] = true
	}
	for _, want := range []string{"volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"} {
		if !got[want+".snapshot.storage.k8s.io"] {
			t.Errorf("CRD %s.snapshot.storage.k8s.io missing from %v", want, got)
		}
	}
	if len(crds) != 3 {
		t.Errorf("%d CRDs embedded, want 3", len(crds))
	}
}
