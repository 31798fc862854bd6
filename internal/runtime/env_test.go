package runtime

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Keys of a configMap become variables whatever their form, prefixed, as
// on a kubelet with relaxed environment variable validation: a name may
// start with a digit or hold a '-'.
func TestEnvFromKeepsRelaxedNames(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	if err := idx.Add(&v1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cm"},
		Data:       map[string]string{"data-1": "value-1", "data_2": "value-2"},
	}); err != nil {
		t.Fatal(err)
	}
	r := &Runtime{cfg: Config{ConfigMaps: corev1listers.NewConfigMapLister(idx)}}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"data-1=value-1", "data_2=value-2"}},
		{"1-", []string{"1-data-1=value-1", "1-data_2=value-2"}},
		{"p_", []string{"p_data-1=value-1", "p_data_2=value-2"}},
	} {
		c := &v1.Container{Name: "c", EnvFrom: []v1.EnvFromSource{{Prefix: tc.prefix, ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}}}}
		env, err := r.containerEnv(pod, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, e := range env {
			got[e.Name+"="+e.Value] = true
		}
		for _, w := range tc.want {
			if !got[w] {
				t.Errorf("prefix %q: %s missing from %v", tc.prefix, w, env)
			}
		}
	}
}
