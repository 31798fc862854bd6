package runtime

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodResolvConf(t *testing.T) {
	host := parseResolvConf("# host\nnameserver 10.255.255.53\nnameserver 1.1.1.1\nsearch example.org corp.example\noptions edns0 ndots:2\n")
	two := "2"
	for _, tc := range []struct {
		name       string
		spec       v1.PodSpec
		clusterDNS []string
		want       string
	}{
		{"ClusterFirst by default", v1.PodSpec{}, []string{"10.43.0.10"},
			"search ns1.svc.cluster.local svc.cluster.local cluster.local example.org corp.example\nnameserver 10.43.0.10\noptions ndots:5\n"},
		{"ClusterFirst without cluster DNS falls back to the host", v1.PodSpec{DNSPolicy: v1.DNSClusterFirst}, nil,
			"search example.org corp.example\nnameserver 10.255.255.53\nnameserver 1.1.1.1\noptions edns0 ndots:2\n"},
		{"ClusterFirst on the host network is Default", v1.PodSpec{DNSPolicy: v1.DNSClusterFirst, HostNetwork: true}, []string{"10.43.0.10"},
			"search example.org corp.example\nnameserver 10.255.255.53\nnameserver 1.1.1.1\noptions edns0 ndots:2\n"},
		{"ClusterFirstWithHostNet", v1.PodSpec{DNSPolicy: v1.DNSClusterFirstWithHostNet, HostNetwork: true}, []string{"10.43.0.10"},
			"search ns1.svc.cluster.local svc.cluster.local cluster.local example.org corp.example\nnameserver 10.43.0.10\noptions ndots:5\n"},
		{"Default", v1.PodSpec{DNSPolicy: v1.DNSDefault}, []string{"10.43.0.10"},
			"search example.org corp.example\nnameserver 10.255.255.53\nnameserver 1.1.1.1\noptions edns0 ndots:2\n"},
		{"None with dnsConfig", v1.PodSpec{DNSPolicy: v1.DNSNone, DNSConfig: &v1.PodDNSConfig{
			Nameservers: []string{"192.0.2.53"}, Searches: []string{"a.example"}, Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "rotate"}}}},
			[]string{"10.43.0.10"},
			"search a.example\nnameserver 192.0.2.53\noptions ndots:2 rotate\n"},
		{"dnsConfig merged into ClusterFirst", v1.PodSpec{DNSConfig: &v1.PodDNSConfig{
			Nameservers: []string{"192.0.2.53", "10.43.0.10", "192.0.2.54", "192.0.2.55"}, Searches: []string{"svc.cluster.local", "b.example"}, Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &two}}}},
			[]string{"10.43.0.10"},
			"search ns1.svc.cluster.local svc.cluster.local cluster.local example.org corp.example b.example\nnameserver 10.43.0.10\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions ndots:2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "p"}, Spec: tc.spec}
			got := string(renderResolvConf(podResolver(pod, host, tc.clusterDNS, "cluster.local")))
			if got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
