package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// seeds adds every file of testdata/<dir> to the fuzz corpus (Go's own
// corpus format lives in testdata/fuzz; these are plain inputs, easier
// to read and extend).
func seeds(f *testing.F, dir string) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed inputs in testdata/%s: %v", dir, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzFlavorAnnotation: any annotation value is read or refused with an
// error naming the annotation, and what Annotation writes reads back the same.
func FuzzFlavorAnnotation(f *testing.F) {
	seeds(f, "flavor")
	f.Fuzz(func(t *testing.T, raw []byte) {
		fl, err := ParseAnnotation(string(raw))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "flavor annotation ") {
				t.Fatalf("error %q does not name the flavor annotation", err)
			}
			return
		}
		_ = fl.Check()
		_ = fl.String()
		_ = Nearest(fl)
		if fl.MilliCPU < 0 || fl.Memory < 0 {
			return // negative flavors are refused by Check, not round-tripped
		}
		back, err := ParseAnnotation(fl.Annotation())
		if err != nil {
			t.Fatalf("Annotation() of %+v = %q does not parse: %v", fl, fl.Annotation(), err)
		}
		if back != fl {
			t.Fatalf("round trip of %q: %+v, then %+v", raw, fl, back)
		}
	})
}

// FuzzAdmitPod: a pod decoded from any JSON is admitted or refused with a
// Refusal, never a panic; a pod AdmitPod admitted passes CheckAdmitted (the
// validating webhook must not refuse what the mutating one made).
func FuzzAdmitPod(f *testing.F) {
	seeds(f, "pods")
	rules := []Rules{
		{Tenant: "fuzz", PullSecret: "cci-registry"},
		{Tenant: "fuzz", AllowRunc: true, Pools: []string{"general", "gpu"}, ExistingPools: []string{"gpu"}},
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var pod corev1.Pod
		if err := json.Unmarshal(raw, &pod); err != nil {
			return
		}
		for _, r := range rules {
			p := pod.DeepCopy()
			err := AdmitPod(p, r)
			if err != nil {
				if _, ok := err.(*Refusal); !ok {
					t.Fatalf("AdmitPod error %T %v, want a *Refusal", err, err)
				}
				if err.Error() == "" {
					t.Fatal("empty refusal")
				}
				continue
			}
			if err := CheckAdmitted(p, r); err != nil {
				t.Fatalf("CheckAdmitted refused what AdmitPod admitted: %v\npod: %s", err, raw)
			}
			tmpl := &corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}
			_ = CheckTemplate(tmpl, r)
		}
	})
}
