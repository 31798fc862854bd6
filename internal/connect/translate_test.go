package connect

import (
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var testTarget = target{Namespace: "acme", Node: "cci-burst", Cluster: "c1", NodeIP: "10.0.0.9", DNS: clusterDNS([]string{"10.96.0.10"}, "cluster.local"), APIHost: "10.0.0.1", APIPort: "6443"}

func basePod() *v1.Pod {
	yes := true
	exp := int64(3607)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "uid-1", Labels: map[string]string{"app": "web"}},
		Spec: v1.PodSpec{
			NodeName:           "cci-burst",
			ServiceAccountName: "shopper",
			Tolerations:        []v1.Toleration{{Key: Taint.Key, Operator: v1.TolerationOpExists}},
			PriorityClassName:  "high",
			RuntimeClassName:   new("gvisor"),
			HostAliases:        []v1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"db"}}},
			InitContainers:     []v1.Container{{Name: "init", Image: "busybox", EnvFrom: []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}}}}}},
			Containers: []v1.Container{{
				Name: "web", Image: "httpd",
				StartupProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"true"}}}},
				Env: []v1.EnvVar{
					{Name: "POD", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "HOST", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
					{Name: "K", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "conf"}, Key: "k", Optional: &yes}}},
				},
			}},
			Volumes: []v1.Volume{
				{Name: "conf", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "conf"}}}},
				{Name: "kube-api-access", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
					{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
					{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
				}}}},
			},
		},
	}
}

func TestTranslate(t *testing.T) {
	a := basePod()
	pl, err := translate(a, testTarget)
	if err != nil {
		t.Fatal(err)
	}
	b := pl.Pod
	if b.Namespace != "acme" || !strings.HasPrefix(b.Name, "web-1-") || b.Name == copyName("c2", "shop", "web-1") {
		t.Errorf("copy %s/%s: want in acme, named after the pod and its cluster", b.Namespace, b.Name)
	}
	if b.Labels[LabelNode] != "cci-burst" || b.Labels[LabelCluster] != "c1" || b.Labels[LabelPodUID] != "uid-1" || b.Labels["app"] != "web" {
		t.Errorf("labels %v", b.Labels)
	}
	if b.Annotations[AnnotNamespace] != "shop" || b.Annotations[AnnotName] != "web-1" {
		t.Errorf("annotations %v", b.Annotations)
	}
	s := b.Spec
	if s.NodeName != "" || s.Tolerations != nil || s.PriorityClassName != "" || s.ServiceAccountName != "" || *s.AutomountServiceAccountToken {
		t.Errorf("A's scheduling and identity left in the copy: %+v", s)
	}
	if s.RuntimeClassName == nil || *s.RuntimeClassName != "gvisor" || len(s.HostAliases) != 1 || s.Containers[0].StartupProbe == nil || s.Hostname != "web-1" {
		t.Errorf("the pod's own fields did not pass: %+v", s)
	}
	if s.DNSPolicy != v1.DNSNone || s.DNSConfig.Nameservers[0] != "10.96.0.10" || s.DNSConfig.Searches[0] != "shop.svc.cluster.local" {
		t.Errorf("DNS %v %+v: want A's resolver and search path", s.DNSPolicy, s.DNSConfig)
	}
	env := s.Containers[0].Env
	if env[0].ValueFrom != nil || env[0].Value != "web-1" {
		t.Errorf("metadata.name: %+v", env[0])
	}
	if env[1].ValueFrom == nil || env[1].ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("status.podIP should stay B's: %+v", env[1])
	}
	if env[2].Value != "10.0.0.9" {
		t.Errorf("status.hostIP: %+v, want the virtual node's", env[2])
	}
	if got := env[3].ValueFrom.ConfigMapKeyRef.Name; got != pl.ConfigMaps["conf"] || s.Volumes[0].ConfigMap.Name != got {
		t.Errorf("ConfigMap conf copied as %q, used as %q and %q", pl.ConfigMaps["conf"], got, s.Volumes[0].ConfigMap.Name)
	}
	if n := len(env); n != 6 || env[4].Name != "KUBERNETES_SERVICE_HOST" || env[4].Value != "10.0.0.1" || env[5].Value != "6443" {
		t.Errorf("a pod with a token is not pointed at A's apiserver: %+v", env)
	}
	if s.InitContainers[0].EnvFrom[0].SecretRef.Name != pl.Secrets["creds"] {
		t.Errorf("init container's Secret not renamed: %+v", s.InitContainers[0].EnvFrom)
	}
	src := s.Volumes[1].Projected.Sources
	if len(src) != 3 || src[0].Secret == nil || src[0].Secret.Name != pl.PodData || src[0].Secret.Items[0].Path != "token" {
		t.Fatalf("token projection: %+v", src)
	}
	if tok := pl.Tokens[src[0].Secret.Items[0].Key]; tok.ExpirationSeconds != 3607 {
		t.Errorf("token request %+v", tok)
	}
	if src[1].ConfigMap.Name != pl.ConfigMaps["kube-root-ca.crt"] {
		t.Errorf("kube-root-ca.crt not the copy of A's: %+v", src[1])
	}
	if src[2].Secret == nil || pl.Downward[src[2].Secret.Items[0].Key] != "shop" {
		t.Errorf("downward namespace: %+v %v", src[2], pl.Downward)
	}
	if !pl.Optional["ConfigMap/conf"] || pl.Optional["Secret/creds"] {
		t.Errorf("optional %v", pl.Optional)
	}
	if a.Spec.NodeName != "cci-burst" || a.Spec.Volumes[0].ConfigMap.Name != "conf" {
		t.Error("translate changed A's pod")
	}
}

func TestTranslateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*v1.Pod)
		field string
	}{
		{"hostNetwork", func(p *v1.Pod) { p.Spec.HostNetwork = true }, "spec.hostNetwork"},
		{"hostPID", func(p *v1.Pod) { p.Spec.HostPID = true }, "spec.hostPID"},
		{"hostPath", func(p *v1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: "h", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/"}}})
		}, "spec.volumes[2].hostPath"},
		{"pvc", func(p *v1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: "d", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "x"}}})
		}, "spec.volumes[2].persistentVolumeClaim"},
		{"nfs", func(p *v1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: "n", VolumeSource: v1.VolumeSource{NFS: &v1.NFSVolumeSource{Server: "s", Path: "/"}}})
		}, "spec.volumes[2]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := basePod()
			tc.edit(p)
			_, err := translate(p, testTarget)
			var r *refused
			if !errors.As(err, &r) || r.Field != tc.field || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want a refusal naming %s", err, tc.field)
			}
		})
	}
}

func TestCapacityFrom(t *testing.T) {
	q := func(hard, used v1.ResourceList) *v1.ResourceQuota {
		return &v1.ResourceQuota{Status: v1.ResourceQuotaStatus{Hard: hard, Used: used}}
	}
	rl := func(kv ...string) v1.ResourceList {
		out := v1.ResourceList{}
		for i := 0; i+1 < len(kv); i += 2 {
			out[v1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
		}
		return out
	}
	ours := &v1.Pod{Spec: v1.PodSpec{Containers: []v1.Container{{Resources: v1.ResourceRequirements{Requests: rl("cpu", "1", "memory", "1Gi")}}}}}
	defaults := rl("cpu", "1000", "memory", "4Ti", "pods", "1000")
	for _, tc := range []struct {
		name   string
		quotas []*v1.ResourceQuota
		ours   []*v1.Pod
		want   v1.ResourceList
		short  int
	}{
		{"no quota", nil, nil, defaults, 0},
		{"free part", []*v1.ResourceQuota{q(rl("requests.cpu", "8", "requests.memory", "32Gi", "pods", "50", "requests.nvidia.com/gpu", "0"), rl("requests.cpu", "3", "requests.memory", "2Gi", "pods", "3"))},
			nil, rl("cpu", "5", "memory", "30Gi", "pods", "47", "nvidia.com/gpu", "0"), 0},
		{"own pods count as free", []*v1.ResourceQuota{q(rl("requests.cpu", "8", "pods", "50"), rl("requests.cpu", "3", "pods", "3"))},
			[]*v1.Pod{ours}, rl("cpu", "6", "memory", "4Ti", "pods", "48"), 0},
		{"used up", []*v1.ResourceQuota{q(rl("requests.cpu", "2"), rl("requests.cpu", "3"))}, nil, rl("cpu", "0", "memory", "4Ti", "pods", "1000"), 1},
		{"none given", []*v1.ResourceQuota{q(rl("requests.cpu", "0", "requests.nvidia.com/gpu", "0"), rl("requests.cpu", "0"))}, nil, rl("cpu", "0", "nvidia.com/gpu", "0"), 1},
		{"least of two", []*v1.ResourceQuota{q(rl("requests.cpu", "8"), rl("requests.cpu", "1")), q(rl("cpu", "4"), rl("cpu", "1"))}, nil, rl("cpu", "3", "memory", "4Ti", "pods", "1000"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, short := capacityFrom(defaults, tc.quotas, tc.ours)
			for k, w := range tc.want {
				if g := got[k]; g.Cmp(w) != 0 {
					t.Errorf("%s = %s, want %s", k, g.String(), w.String())
				}
			}
			if len(short) != tc.short {
				t.Errorf("short %v, want %d entries", short, tc.short)
			}
		})
	}
}

func TestStatusFor(t *testing.T) {
	a := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Generation: 3}, Status: v1.PodStatus{QOSClass: v1.PodQOSBurstable}}
	b := &v1.Pod{Status: v1.PodStatus{
		Phase: v1.PodRunning, QOSClass: v1.PodQOSGuaranteed, HostIP: "10.1.1.1", PodIP: "10.137.0.2", PodIPs: []v1.PodIP{{IP: "10.137.0.2"}},
		Conditions:        []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue, ObservedGeneration: 1}},
		ContainerStatuses: []v1.ContainerStatus{{Name: "c", RestartCount: 2, ContainerID: "containerd://x"}},
	}}
	s := statusFor(a, b, "10.0.0.9")
	if s.QOSClass != v1.PodQOSBurstable {
		t.Errorf("qosClass %s: A's may not change", s.QOSClass)
	}
	if s.HostIP != "10.0.0.9" || s.HostIPs[0].IP != "10.0.0.9" || s.PodIP != "10.137.0.2" {
		t.Errorf("addresses %s %v %s", s.HostIP, s.HostIPs, s.PodIP)
	}
	if s.Conditions[0].ObservedGeneration != 3 || s.ObservedGeneration != 3 || s.ContainerStatuses[0].RestartCount != 2 {
		t.Errorf("status %+v", s)
	}
	g := goneStatus(s, false, "gone")
	if g.Phase != v1.PodFailed || g.Reason != "Evicted" || g.ContainerStatuses[0].State.Terminated == nil || g.Conditions[0].Status != v1.ConditionFalse {
		t.Errorf("gone status %+v", g)
	}
}

func TestDrifted(t *testing.T) {
	pod := func(ready v1.ConditionStatus) *v1.Pod {
		return &v1.Pod{Status: v1.PodStatus{Phase: v1.PodRunning,
			Conditions:        []v1.PodCondition{{Type: v1.PodReady, Status: ready}},
			ContainerStatuses: []v1.ContainerStatus{{Name: "c", Ready: ready == v1.ConditionTrue}}}}
	}
	if drifted(pod(v1.ConditionTrue), pod(v1.ConditionTrue)) {
		t.Error("the same status drifted")
	}
	// A's node controller marked the pod NotReady while connect was down.
	if !drifted(pod(v1.ConditionFalse), pod(v1.ConditionTrue)) {
		t.Error("a Ready condition another writer changed did not count")
	}
}

func TestBurstPatch(t *testing.T) {
	for _, mode := range []string{"enforce", "prefer", "auto"} {
		t.Run(mode, func(t *testing.T) {
			p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{BurstLabel: mode}},
				Spec: v1.PodSpec{Tolerations: []v1.Toleration{{Key: "x", Operator: v1.TolerationOpExists}}}}
			patch, err := burstPatch(p)
			if err != nil {
				t.Fatal(err)
			}
			aff := patch[0]["value"].(*v1.Affinity).NodeAffinity
			tol := patch[1]["value"].([]v1.Toleration)
			if len(tol) != 2 || tol[1].Key != Taint.Key {
				t.Errorf("tolerations %v", tol)
			}
			switch mode {
			case "enforce":
				if aff.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Operator != v1.NodeSelectorOpIn {
					t.Errorf("affinity %+v", aff)
				}
			case "prefer", "auto":
				want := map[string]v1.NodeSelectorOperator{"prefer": v1.NodeSelectorOpIn, "auto": v1.NodeSelectorOpNotIn}[mode]
				if aff.RequiredDuringSchedulingIgnoredDuringExecution != nil || aff.PreferredDuringSchedulingIgnoredDuringExecution[0].Preference.MatchExpressions[0].Operator != want {
					t.Errorf("affinity %+v", aff)
				}
			}
		})
	}
	if _, err := burstPatch(&v1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{BurstLabel: "always"}}}); err == nil || !strings.Contains(err.Error(), "enforce, prefer or auto") {
		t.Errorf("an unknown mode: %v", err)
	}
}
