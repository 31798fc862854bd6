package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func res(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func pod(mut ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "img"}}}}
	for _, m := range mut {
		m(p)
	}
	return p
}

func limits(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Limits = res(kv...) }
}

func requests(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Requests = res(kv...) }
}

func ptr[T any](v T) *T { return &v }

// TestAdmitPod is the policy's table: each pod spec with its verdict, the
// message (substrings) of a refusal, or the flavor annotation of an
// admitted pod.
func TestAdmitPod(t *testing.T) {
	cases := []struct {
		name    string
		pod     *corev1.Pod
		rules   Rules
		want    string   // annotation when admitted
		refused []string // substrings of the refusal
		runtime string   // runtimeClassName after admission, when admitted
	}{
		// defaults and normalisation
		{name: "no resources: default flavor", pod: pod(), want: `{"cpu":"0.25","memory":"512Mi","gpu":0}`, runtime: "gvisor"},
		{name: "two containers, no resources", pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: "img"})
		}), want: `{"cpu":"0.5","memory":"1Gi","gpu":0}`},
		{name: "limits only", pod: pod(limits("cpu", "500m", "memory", "1Gi")), want: `{"cpu":"0.5","memory":"1Gi","gpu":0}`},
		{name: "requests only", pod: pod(requests("cpu", "2", "memory", "4Gi")), want: `{"cpu":"2","memory":"4Gi","gpu":0}`},
		{name: "limit wins over request", pod: pod(requests("cpu", "250m", "memory", "1Gi"), limits("cpu", "1", "memory", "2Gi")), want: `{"cpu":"1","memory":"2Gi","gpu":0}`},
		{name: "cpu only: memory defaults", pod: pod(limits("cpu", "250m")), want: `{"cpu":"0.25","memory":"512Mi","gpu":0}`},
		{name: "gpu counted", pod: pod(limits("cpu", "4", "memory", "16Gi", "nvidia.com/gpu", "1")), rules: Rules{Pools: []string{"gpu"}}, want: `{"cpu":"4","memory":"16Gi","gpu":1}`},
		{name: "largest flavor", pod: pod(limits("cpu", "32", "memory", "256Gi")), want: `{"cpu":"32","memory":"256Gi","gpu":0}`},
		{name: "0.25 CPU with 2 GiB", pod: pod(limits("cpu", "250m", "memory", "2Gi")), want: `{"cpu":"0.25","memory":"2Gi","gpu":0}`},
		{name: "init container larger than app", pod: pod(limits("cpu", "250m", "memory", "512Mi"), func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "img", Resources: corev1.ResourceRequirements{Limits: res("cpu", "1", "memory", "1Gi")}}}
		}), want: `{"cpu":"1","memory":"1Gi","gpu":0}`},
		{name: "sidecar adds up", pod: pod(limits("cpu", "750m", "memory", "1Gi"), func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "side", Image: "img", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways), Resources: corev1.ResourceRequirements{Limits: res("cpu", "250m", "memory", "1Gi")}}}
		}), want: `{"cpu":"1","memory":"2Gi","gpu":0}`},

		// flavors outside the table
		{name: "cpu not a step", pod: pod(limits("cpu", "300m", "memory", "1Gi")), refused: []string{"pod flavor 0.3 CPU / 1 GiB is not offered", "not a multiple of 0.25 cores", "nearest flavor: 0.5 CPU / 1 GiB"}},
		{name: "memory not whole GiB", pod: pod(limits("cpu", "1", "memory", "1536Mi")), refused: []string{"memory 1.5 GiB is not a whole number of GiB", "nearest flavor: 1 CPU / 2 GiB"}},
		{name: "0.5 GiB needs 0.25 CPU", pod: pod(limits("cpu", "500m", "memory", "512Mi")), refused: []string{"not a whole number of GiB", "nearest flavor: 0.5 CPU / 1 GiB"}},
		{name: "ratio too high", pod: pod(limits("cpu", "500m", "memory", "8Gi")), refused: []string{"above 8 GiB per core", "nearest flavor: 1 CPU / 8 GiB"}},
		{name: "ratio too low", pod: pod(limits("cpu", "4", "memory", "2Gi")), refused: []string{"below 1 GiB per core", "nearest flavor: 4 CPU / 4 GiB"}},
		{name: "too much cpu", pod: pod(limits("cpu", "40", "memory", "64Gi")), refused: []string{"CPU 40 is outside 0.25..32 cores", "nearest flavor: 32 CPU / 64 GiB"}},
		{name: "too little cpu", pod: pod(limits("cpu", "100m", "memory", "512Mi")), refused: []string{"not offered", "nearest flavor: 0.25 CPU / 0.5 GiB"}},
		{name: "odd memory", pod: pod(limits("cpu", "1", "memory", "1000Mi")), refused: []string{"memory 1000Mi", "nearest flavor: 1 CPU / 1 GiB"}},

		// runtime class
		{name: "runc refused by default", pod: pod(func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr("runc") }), refused: []string{`runtimeClassName "runc" is not allowed for this tenant (allowed: gvisor)`}},
		{name: "runc allowed", pod: pod(func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr("runc") }), rules: Rules{AllowRunc: true}, want: `{"cpu":"0.25","memory":"512Mi","gpu":0}`, runtime: "runc"},
		{name: "tenant default class", pod: pod(), rules: Rules{DefaultRuntimeClass: "kata"}, want: `{"cpu":"0.25","memory":"512Mi","gpu":0}`, runtime: "kata"},
		{name: "unknown class", pod: pod(func(p *corev1.Pod) { p.Spec.RuntimeClassName = ptr("plain") }), refused: []string{`runtimeClassName "plain" is not allowed`}},

		// host access
		{name: "hostNetwork", pod: pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), refused: []string{"hostNetwork is not allowed"}},
		{name: "hostPID", pod: pod(func(p *corev1.Pod) { p.Spec.HostPID = true }), refused: []string{"hostPID is not allowed"}},
		{name: "hostIPC", pod: pod(func(p *corev1.Pod) { p.Spec.HostIPC = true }), refused: []string{"hostIPC is not allowed"}},
		{name: "privileged", pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
		}), refused: []string{`container "main": privileged is not allowed`}},
		{name: "privileged init container", pod: pod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "img", SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)}}}
		}), refused: []string{`init container "setup": privileged is not allowed`}},
		{name: "hostPath", pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}), refused: []string{`volume "root": hostPath volumes are not allowed`}},
		{name: "hostPort", pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
		}), refused: []string{`container "main": hostPort 8080 is not allowed`}},
		{name: "added capability", pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}}}
		}), refused: []string{`container "main": adding capability NET_ADMIN is not allowed`}},
		{name: "default capability may be added", pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE", "CAP_CHOWN"}, Drop: []corev1.Capability{"ALL"}}}
		}), want: `{"cpu":"0.25","memory":"512Mi","gpu":0}`},
		{name: "nodeName", pod: pod(func(p *corev1.Pod) { p.Spec.NodeName = "host1" }), refused: []string{"nodeName is not allowed"}},
		{name: "nodeSelector on hostname", pod: pod(func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "host1"}
		}), refused: []string{`nodeSelector on node label "kubernetes.io/hostname" is not allowed`}},
		{name: "nodeSelector on pool and accelerator", pod: pod(func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"cci.io/pool": "general", "cci.io/accelerator": "a100", "topology.kubernetes.io/zone": "z1"}
		}), want: `{"cpu":"0.25","memory":"512Mi","gpu":0}`},
		{name: "affinity on hostname", pod: pod(func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
				Weight: 1, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{"h"}}}},
			}}}}
		}), refused: []string{`node affinity on node label "kubernetes.io/hostname" is not allowed`}},
		{name: "affinity on node name field", pod: pod(func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"h"}}},
			}}}}}
		}), refused: []string{`node affinity on field "metadata.name" is not allowed`}},
		{name: "pod anti-affinity by hostname is spreading, allowed", pod: pod(func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname"},
			}}}}
		}), want: `{"cpu":"0.25","memory":"512Mi","gpu":0}`},
		{name: "every reason at once", pod: pod(limits("cpu", "300m", "memory", "1Gi"), func(p *corev1.Pod) { p.Spec.HostNetwork = true; p.Spec.HostPID = true }),
			refused: []string{"hostNetwork is not allowed; hostPID is not allowed; pod flavor 0.3 CPU"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pod.DeepCopy()
			err := AdmitPod(p, tc.rules)
			if len(tc.refused) > 0 {
				if err == nil {
					t.Fatalf("admitted, want refusal with %q", tc.refused)
				}
				if _, ok := err.(*Refusal); !ok {
					t.Errorf("error is %T, want *Refusal", err)
				}
				for _, s := range tc.refused {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("refusal %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := p.Annotations[FlavorAnnotation]; got != tc.want {
				t.Errorf("annotation %s, want %s", got, tc.want)
			}
			if tc.runtime != "" && *p.Spec.RuntimeClassName != tc.runtime {
				t.Errorf("runtimeClassName %q, want %q", *p.Spec.RuntimeClassName, tc.runtime)
			}
			for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
				if !equalResources(corev1.ResourceRequirements{Requests: c.Resources.Requests, Limits: c.Resources.Requests}, c.Resources) {
					t.Errorf("container %q: requests %v != limits %v", c.Name, c.Resources.Requests, c.Resources.Limits)
				}
			}
			// Admission is idempotent and its result passes the final check.
			if err := CheckAdmitted(p, tc.rules); err != nil {
				t.Errorf("admitted pod fails CheckAdmitted: %v", err)
			}
		})
	}
}

func TestCheckAdmittedRefusesChangedPod(t *testing.T) {
	p := pod(limits("cpu", "1", "memory", "2Gi"))
	if err := AdmitPod(p, Rules{}); err != nil {
		t.Fatal(err)
	}
	p.Spec.Containers[0].Resources.Requests = res("cpu", "500m", "memory", "2Gi")
	if err := CheckAdmitted(p, Rules{}); err == nil || !strings.Contains(err.Error(), "requests and limits must be equal") {
		t.Errorf("got %v", err)
	}
	p = pod()
	if err := AdmitPod(p, Rules{}); err != nil {
		t.Fatal(err)
	}
	p.Annotations[FlavorAnnotation] = `{"cpu":"0","memory":"0","gpu":0}`
	if err := CheckAdmitted(p, Rules{}); err == nil || !strings.Contains(err.Error(), "annotation cci.io/flavor must be") {
		t.Errorf("got %v", err)
	}
}

func TestNearestIsOffered(t *testing.T) {
	// Every nearest flavor is in the table and covers what was asked where
	// the table allows.
	for cpu := int64(0); cpu <= 34000; cpu += 125 {
		for mem := int64(0); mem <= 300*GiB; mem += GiB / 4 {
			f := Flavor{MilliCPU: cpu, Memory: mem}
			n := Nearest(f)
			if why := n.Check(); len(why) > 0 {
				t.Fatalf("Nearest(%s) = %s, not offered: %v", f, n, why)
			}
			if cpu <= MaxCPU && mem <= 256*GiB && (n.MilliCPU < cpu || n.Memory < mem) {
				t.Fatalf("Nearest(%s) = %s gives less than asked", f, n)
			}
			if len(f.Check()) == 0 && n != f {
				t.Fatalf("Nearest(%s) = %s for an offered flavor", f, n)
			}
		}
	}
}

func TestAnnotationRoundTrip(t *testing.T) {
	for _, f := range []Flavor{{MilliCPU: 250, Memory: GiB / 2}, {MilliCPU: 1500, Memory: 3 * GiB, GPU: 2}, {MilliCPU: 32000, Memory: 256 * GiB}} {
		got, err := ParseAnnotation(f.Annotation())
		if err != nil || got != f {
			t.Errorf("round trip of %s: %v, %v", f.Annotation(), got, err)
		}
	}
}

func TestCheckService(t *testing.T) {
	no, yes := ptr(false), ptr(true)
	svc := func(typ corev1.ServiceType, mut ...func(*corev1.ServiceSpec)) *corev1.Service {
		s := &corev1.Service{Spec: corev1.ServiceSpec{Type: typ, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		if typ == corev1.ServiceTypeLoadBalancer {
			s.Spec.AllocateLoadBalancerNodePorts = no
		}
		for _, m := range mut {
			m(&s.Spec)
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		svc     *corev1.Service
		refused []string
	}{
		{name: "ClusterIP", svc: svc(corev1.ServiceTypeClusterIP)},
		{name: "no type", svc: svc("")},
		{name: "LoadBalancer without node ports", svc: svc(corev1.ServiceTypeLoadBalancer)},
		{name: "ExternalName", svc: svc(corev1.ServiceTypeExternalName)},
		{name: "NodePort", svc: svc(corev1.ServiceTypeNodePort), refused: []string{"Service type NodePort is not allowed"}},
		{name: "externalIPs on ClusterIP", svc: svc(corev1.ServiceTypeClusterIP, func(s *corev1.ServiceSpec) { s.ExternalIPs = []string{"10.0.0.1"} }),
			refused: []string{"spec.externalIPs [10.0.0.1] is not allowed", "CVE-2020-8554", "use type LoadBalancer"}},
		{name: "externalIPs on LoadBalancer", svc: svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.ServiceSpec) { s.ExternalIPs = []string{"8.8.8.8", "1.1.1.1"} }),
			refused: []string{"spec.externalIPs [8.8.8.8 1.1.1.1] is not allowed"}},
		{name: "empty externalIPs", svc: svc(corev1.ServiceTypeClusterIP, func(s *corev1.ServiceSpec) { s.ExternalIPs = []string{} })},
		{name: "explicit nodePort on LoadBalancer", svc: svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.ServiceSpec) { s.Ports[0].NodePort = 30080 }),
			refused: []string{`port "http": nodePort 30080 is not allowed`}},
		{name: "LoadBalancer allocating node ports", svc: svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.ServiceSpec) { s.AllocateLoadBalancerNodePorts = yes }),
			refused: []string{"allocateLoadBalancerNodePorts must be false"}},
		{name: "LoadBalancer with externalTrafficPolicy Local", svc: svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.ServiceSpec) { s.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }),
			refused: []string{"externalTrafficPolicy Local is not allowed", "healthCheckNodePort"}},
		{name: "LoadBalancer with externalTrafficPolicy Cluster", svc: svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.ServiceSpec) { s.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster })},
		{name: "healthCheckNodePort", svc: svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.ServiceSpec) { s.HealthCheckNodePort = 32000 }),
			refused: []string{"healthCheckNodePort 32000 is not allowed"}},
		{name: "LoadBalancer, allocateLoadBalancerNodePorts unset", svc: svc(corev1.ServiceTypeLoadBalancer, func(s *corev1.ServiceSpec) { s.AllocateLoadBalancerNodePorts = nil }),
			refused: []string{"allocateLoadBalancerNodePorts must be false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckService(tc.svc)
			if len(tc.refused) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("admitted, want refusal with %q", tc.refused)
			}
			for _, s := range tc.refused {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("refusal %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestAdmitService(t *testing.T) {
	lb := func(nodePorts ...int32) *corev1.Service {
		s := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, AllocateLoadBalancerNodePorts: ptr(true)}}
		for i, np := range nodePorts {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprint("p", i), Port: int32(80 + i), NodePort: np})
		}
		return s
	}
	// Create: no node ports allocated, an explicit one left for CheckService to refuse.
	s := lb(0, 30001)
	AdmitService(s, nil)
	if a := s.Spec.AllocateLoadBalancerNodePorts; a == nil || *a {
		t.Errorf("allocateLoadBalancerNodePorts %v, want false", a)
	}
	if s.Spec.Ports[1].NodePort != 30001 || CheckService(s) == nil {
		t.Errorf("explicit nodePort on create: %v, CheckService %v", s.Spec.Ports, CheckService(s))
	}
	// Update of a Service that got node ports before: those it holds are
	// released, a new one is not.
	s = lb(30001, 30002, 30003)
	AdmitService(s, lb(30001, 30002))
	if got := []int32{s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort, s.Spec.Ports[2].NodePort}; got[0] != 0 || got[1] != 0 || got[2] != 30003 {
		t.Errorf("node ports after update %v, want [0 0 30003]", got)
	}
	// ClusterIP is left alone.
	c := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}
	AdmitService(c, nil)
	if c.Spec.AllocateLoadBalancerNodePorts != nil {
		t.Errorf("ClusterIP got allocateLoadBalancerNodePorts %v", *c.Spec.AllocateLoadBalancerNodePorts)
	}
}

func TestCheckEndpoints(t *testing.T) {
	n := Network{
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.43.0.0/16")},
		NodeIPs:      []netip.Addr{netip.MustParseAddr("192.168.1.5")},
		OwnPodIPs:    []netip.Addr{netip.MustParseAddr("10.42.0.7")},
	}
	for _, tc := range []struct {
		addr string
		want string // "" when allowed
	}{
		{"203.0.113.10", ""},
		{"192.168.1.6", ""},
		{"10.42.0.7", ""},
		{"::ffff:10.42.0.7", ""},
		{"10.42.0.8", "endpoint address 10.42.0.8 (%s) is not allowed: it is in the pod range 10.42.0.0/16 and not the IP of a pod in this namespace"},
		{"10.42.0.1", "it is in the pod range 10.42.0.0/16"},
		{"10.43.0.1", "endpoint address 10.43.0.1 (%s) is not allowed: it is in the Service range 10.43.0.0/16"},
		{"127.0.0.1", "it is a loopback address"},
		{"::1", "it is a loopback address"},
		{"169.254.169.254", "it is a link-local address"},
		{"fe80::1", "it is a link-local address"},
		{"0.0.0.0", "it is the unspecified address"},
		{"224.0.0.251", "is a link-local address"},
		{"239.1.2.3", "it is a multicast address"},
		{"192.168.1.5", "endpoint address 192.168.1.5 (%s) is not allowed: it is a node's address"},
		{"::ffff:192.168.1.5", "it is a node's address"},
		{"not-an-ip", "not an IP address"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			ep := &corev1.Endpoints{Subsets: []corev1.EndpointSubset{
				{Addresses: []corev1.EndpointAddress{{IP: "203.0.113.1"}}},
				{NotReadyAddresses: []corev1.EndpointAddress{{IP: tc.addr}}},
			}}
			slice := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"203.0.113.1"}}, {Addresses: []string{tc.addr}},
			}}
			for what, err := range map[string]error{
				"subsets[1].notReadyAddresses[0]": CheckEndpoints(ep, n),
				"endpoints[1].addresses[0]":       CheckEndpointSlice(slice, n),
			} {
				if tc.want == "" {
					if err != nil {
						t.Errorf("%s refused: %v", what, err)
					}
					continue
				}
				want := tc.want
				if strings.Contains(want, "%s") {
					want = fmt.Sprintf(want, what)
				}
				if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "outside the cluster") {
					t.Errorf("%s: got %v, want a refusal with %q", what, err, want)
				} else if _, ok := err.(*Refusal); !ok {
					t.Errorf("%s: error is %T, want *Refusal", what, err)
				}
			}
		})
	}
	// FQDN slices name no address.
	fqdn := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeFQDN, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"db.example.com"}}}}
	if err := CheckEndpointSlice(fqdn, n); err != nil {
		t.Errorf("FQDN slice refused: %v", err)
	}
	// No pods of its own: the whole pod range is refused.
	if err := CheckEndpoints(&corev1.Endpoints{Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.42.0.7"}}}}}, Network{PodCIDRs: n.PodCIDRs}); err == nil {
		t.Error("pod IP of no pod in the namespace allowed")
	}
}

func TestAdmitPodAddsPullSecret(t *testing.T) {
	p := pod(func(p *corev1.Pod) { p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "mine"}} })
	r := Rules{Tenant: "a", PullSecret: "cci-registry"}
	if err := AdmitPod(p, r); err != nil {
		t.Fatal(err)
	}
	want := []corev1.LocalObjectReference{{Name: "mine"}, {Name: "cci-registry"}}
	if !slices.Equal(p.Spec.ImagePullSecrets, want) {
		t.Fatalf("imagePullSecrets = %v, want %v", p.Spec.ImagePullSecrets, want)
	}
	// Admitting again (the validating webhook does) adds nothing.
	if err := CheckAdmitted(p, r); err != nil || len(p.Spec.ImagePullSecrets) != 2 {
		t.Fatalf("second admission: %v, %v", err, p.Spec.ImagePullSecrets)
	}
}
