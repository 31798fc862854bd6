package runtime

import (
	"strings"
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

// A pod's hostname is its name or spec.hostname, cut to 63 characters
// without a trailing '-' or '.', as the kubelet makes it (the kernel refuses
// longer ones, and pod names may have 253).
func TestPodHostname(t *testing.T) {
	long := "pod-update-activedeadlineseconds-cec4327c-afef-4c2d-9d15-0f1e2e0123a9"
	for _, tc := range []struct {
		name, hostname, want string
	}{
		{"web-0", "", "web-0"},
		{"web-0", "db", "db"},
		{long, "", "pod-update-activedeadlineseconds-cec4327c-afef-4c2d-9d15-0f1e2e"},
		{strings.Repeat("a", 62) + "-b", "", strings.Repeat("a", 62)},
		{strings.Repeat("a", 61) + ".-b", "", strings.Repeat("a", 61)},
	} {
		pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tc.name}, Spec: v1.PodSpec{Hostname: tc.hostname}}
		if got := podHostname(pod); got != tc.want {
			t.Errorf("podHostname(%q, %q) = %q, want %q", tc.name, tc.hostname, got, tc.want)
		}
	}
}
