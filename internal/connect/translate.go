package connect

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/kubernetes/pkg/fieldpath"
)

// The labels and annotations that tie a pod copy in B (and the objects
// copied for it) to its pod in A. A restarted `cci connect` finds its
// copies by the node and cluster labels alone; the A pod's name is in
// annotations since a namespace/name pair may be longer than a label value.
const (
	LabelNode       = "connect.cci.io/node"
	LabelCluster    = "connect.cci.io/cluster"
	LabelPodUID     = "connect.cci.io/pod-uid"
	AnnotNamespace  = "connect.cci.io/namespace"
	AnnotName       = "connect.cci.io/name"
	AnnotSource     = "connect.cci.io/source"
	connectPrefix   = "connect.cci.io/"
	podDataKeyToken = "token"
)

// target is what a pod copy depends on beyond the A pod itself.
type target struct {
	// Namespace is the tenant's namespace in B.
	Namespace string
	// Node and Cluster label the copies (the virtual node's name, A's
	// kube-system namespace UID).
	Node, Cluster string
	// NodeIP is the virtual node's address: status.hostIP of the pods.
	NodeIP string
	// DNS is what a ClusterFirst pod of A gets as its resolv.conf; nil to
	// leave the pod's DNS to B.
	DNS *v1.PodDNSConfig
	// APIHost and APIPort are where the pods reach A's apiserver: pods
	// with a service-account token get them as KUBERNETES_SERVICE_HOST and
	// _PORT, so that in-cluster clients call A as the pod's own account
	// (B's kubelet would point them at B). Empty: left to B.
	APIHost, APIPort string
}

// refused is a pod that cannot pass through the virtual node; Field names
// the part of the pod at fault.
type refused struct{ Field, Why string }

func (r *refused) Error() string {
	if r.Field == "admission" {
		return r.Why
	}
	return fmt.Sprintf("%s: %s; the pod cannot run on a virtual node of `cci connect`", r.Field, r.Why)
}

// plan is a translated pod: the copy for B and what must exist beside it.
type plan struct {
	Pod *v1.Pod
	// ConfigMaps and Secrets map the names of A's objects the pod uses
	// to the names of their copies in B.
	ConfigMaps, Secrets map[string]string
	// Optional are the A objects ("ConfigMap/x", "Secret/y") whose absence
	// does not stop the pod.
	Optional map[string]bool
	// PodData is the name of the Secret in B holding what only A can
	// compute for the pod: service-account tokens and downward API values.
	PodData string
	// Tokens are the service-account tokens to mint (key in PodData → request).
	Tokens map[string]tokenSource
	// Downward are the downward API values (key in PodData → value).
	Downward map[string]string
}

// tokenSource is one projected service-account token of the A pod.
type tokenSource struct {
	Audience          string
	ExpirationSeconds int64
}

// copyName is the name of the copy of A's pod namespace/name in B: the
// pod's own name and a hash of where it comes from, so that pods of several
// namespaces (and clusters) share the tenant's one namespace.
func copyName(cluster, namespace, name string) string {
	h := shortHash(cluster + "/" + namespace + "/" + name)
	if len(name) > 200 {
		name = name[:200]
	}
	return strings.TrimRight(name, "-.") + "-" + h
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:10]
}

// objectName is the name of the copy in B of A's object kind/name used by
// the pod copy podCopy ("cm" or "sec").
func objectName(podCopy, kind, name string) string {
	return podCopy + "-" + kind + "-" + shortHash(name)
}

// translate makes the copy of A's pod for B, or says why it cannot pass.
// It does not touch its argument.
func translate(a *v1.Pod, t target) (*plan, error) {
	if err := passable(a); err != nil {
		return nil, err
	}
	name := copyName(t.Cluster, a.Namespace, a.Name)
	p := &plan{
		ConfigMaps: map[string]string{},
		Secrets:    map[string]string{},
		Optional:   map[string]bool{},
		PodData:    name + "-a",
		Tokens:     map[string]tokenSource{},
		Downward:   map[string]string{},
	}
	spec := a.Spec.DeepCopy()
	cm := func(n string, optional *bool) string {
		c := objectName(name, "cm", n)
		p.ConfigMaps[n] = c
		if optional != nil && *optional {
			p.Optional["ConfigMap/"+n] = true
		}
		return c
	}
	sec := func(n string, optional *bool) string {
		c := objectName(name, "sec", n)
		p.Secrets[n] = c
		if optional != nil && *optional {
			p.Optional["Secret/"+n] = true
		}
		return c
	}

	// Volumes: ConfigMaps and Secrets point at their copies; what only A
	// knows (tokens, downward API values) goes into the pod's data Secret.
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		switch {
		case v.ConfigMap != nil:
			v.ConfigMap.Name = cm(v.ConfigMap.Name, v.ConfigMap.Optional)
		case v.Secret != nil:
			v.Secret.SecretName = sec(v.Secret.SecretName, v.Secret.Optional)
		case v.DownwardAPI != nil:
			// As a projection, so that its field values can come from the
			// pod data Secret and its resource values stay B's own.
			srcs, err := p.downward(a, t, i, 0, v.DownwardAPI.Items)
			if err != nil {
				return nil, err
			}
			v.Projected = &v1.ProjectedVolumeSource{Sources: srcs, DefaultMode: v.DownwardAPI.DefaultMode}
			v.DownwardAPI = nil
		case v.Projected != nil:
			var out []v1.VolumeProjection
			for j, s := range v.Projected.Sources {
				switch {
				case s.ConfigMap != nil:
					s.ConfigMap.Name = cm(s.ConfigMap.Name, s.ConfigMap.Optional)
					out = append(out, s)
				case s.Secret != nil:
					s.Secret.Name = sec(s.Secret.Name, s.Secret.Optional)
					out = append(out, s)
				case s.DownwardAPI != nil:
					srcs, err := p.downward(a, t, i, j, s.DownwardAPI.Items)
					if err != nil {
						return nil, err
					}
					out = append(out, srcs...)
				case s.ServiceAccountToken != nil:
					key := fmt.Sprintf("%s-%d-%d", podDataKeyToken, i, j)
					exp := int64(3600)
					if s.ServiceAccountToken.ExpirationSeconds != nil {
						exp = *s.ServiceAccountToken.ExpirationSeconds
					}
					p.Tokens[key] = tokenSource{Audience: s.ServiceAccountToken.Audience, ExpirationSeconds: exp}
					out = append(out, v1.VolumeProjection{Secret: &v1.SecretProjection{
						LocalObjectReference: v1.LocalObjectReference{Name: p.PodData},
						Items:                []v1.KeyToPath{{Key: key, Path: s.ServiceAccountToken.Path}},
					}})
				default:
					return nil, &refused{Field: fmt.Sprintf("spec.volumes[%d].projected.sources[%d]", i, j), Why: "only configMap, secret, downwardAPI and serviceAccountToken projections pass through"}
				}
			}
			v.Projected.Sources = out
		}
	}
	containers := func(list []v1.Container, field string) error {
		for i := range list {
			c := &list[i]
			for j := range c.EnvFrom {
				e := &c.EnvFrom[j]
				if e.ConfigMapRef != nil {
					e.ConfigMapRef.Name = cm(e.ConfigMapRef.Name, e.ConfigMapRef.Optional)
				}
				if e.SecretRef != nil {
					e.SecretRef.Name = sec(e.SecretRef.Name, e.SecretRef.Optional)
				}
			}
			for j := range c.Env {
				e := &c.Env[j]
				if e.ValueFrom == nil {
					continue
				}
				switch {
				case e.ValueFrom.ConfigMapKeyRef != nil:
					e.ValueFrom.ConfigMapKeyRef.Name = cm(e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Optional)
				case e.ValueFrom.SecretKeyRef != nil:
					e.ValueFrom.SecretKeyRef.Name = sec(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Optional)
				case e.ValueFrom.FieldRef != nil:
					v, local, err := fieldValue(a, t, e.ValueFrom.FieldRef.FieldPath)
					if err != nil {
						return &refused{Field: fmt.Sprintf("%s[%d].env[%d].valueFrom.fieldRef", field, i, j), Why: err.Error()}
					}
					if local {
						e.Value, e.ValueFrom = v, nil
					}
				}
			}
		}
		return nil
	}
	if err := containers(spec.InitContainers, "spec.initContainers"); err != nil {
		return nil, err
	}
	if err := containers(spec.Containers, "spec.containers"); err != nil {
		return nil, err
	}
	if len(p.Tokens) > 0 && t.APIHost != "" {
		api := []v1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: t.APIHost}, {Name: "KUBERNETES_SERVICE_PORT", Value: t.APIPort}}
		for _, list := range [][]v1.Container{spec.InitContainers, spec.Containers} {
			for i := range list {
				c := &list[i]
				for _, e := range api {
					if !slices.ContainsFunc(c.Env, func(x v1.EnvVar) bool { return x.Name == e.Name }) {
						c.Env = append(c.Env, e)
					}
				}
			}
		}
	}
	for i := range spec.ImagePullSecrets {
		spec.ImagePullSecrets[i].Name = sec(spec.ImagePullSecrets[i].Name, nil)
		// A pull secret that is missing in A does not stop a kubelet either.
		p.Optional["Secret/"+a.Spec.ImagePullSecrets[i].Name] = true
	}

	// What names A's nodes, scheduler and identities means nothing in B.
	spec.NodeName = ""
	spec.NodeSelector = nil
	spec.Affinity = nil
	spec.Tolerations = nil
	spec.TopologySpreadConstraints = nil
	spec.SchedulerName = ""
	spec.Priority = nil
	spec.PriorityClassName = ""
	spec.PreemptionPolicy = nil
	spec.SchedulingGates = nil
	spec.Overhead = nil
	spec.EphemeralContainers = nil
	// The pod talks to A as A's service account through the minted
	// tokens; B's own service account must not be handed to it.
	spec.ServiceAccountName = ""
	spec.DeprecatedServiceAccount = ""
	spec.AutomountServiceAccountToken = new(bool)
	// B's Services are not the pod's: A's are (through DNS).
	spec.EnableServiceLinks = new(bool)
	// The pod keeps its own host name, as it would on a node of A.
	if spec.Hostname == "" && len(validation.IsDNS1123Label(a.Name)) == 0 {
		spec.Hostname = a.Name
	}
	spec.Subdomain = ""
	spec.SetHostnameAsFQDN = nil
	if t.DNS != nil && (spec.DNSPolicy == "" || spec.DNSPolicy == v1.DNSClusterFirst || spec.DNSPolicy == v1.DNSClusterFirstWithHostNet) {
		spec.DNSConfig = mergeDNS(t.DNS, a.Namespace, spec.DNSConfig)
		spec.DNSPolicy = v1.DNSNone
	}

	labels := map[string]string{}
	for k, v := range a.Labels {
		labels[k] = v
	}
	labels[LabelNode] = t.Node
	labels[LabelCluster] = t.Cluster
	labels[LabelPodUID] = string(a.UID)
	annotations := map[string]string{}
	for k, v := range a.Annotations {
		if !strings.HasPrefix(k, connectPrefix) {
			annotations[k] = v
		}
	}
	annotations[AnnotNamespace] = a.Namespace
	annotations[AnnotName] = a.Name
	p.Pod = &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: t.Namespace, Labels: labels, Annotations: annotations},
		Spec:       *spec,
	}
	return p, nil
}

// passable refuses what cannot run in B: the host's namespaces and disks,
// and volumes whose storage lives in A.
func passable(a *v1.Pod) error {
	switch {
	case a.Spec.HostNetwork:
		return &refused{Field: "spec.hostNetwork", Why: "the pod would share the network of a host it does not run on"}
	case a.Spec.HostPID:
		return &refused{Field: "spec.hostPID", Why: "the pod would share the processes of a host it does not run on"}
	case a.Spec.HostIPC:
		return &refused{Field: "spec.hostIPC", Why: "the pod would share the IPC namespace of a host it does not run on"}
	case len(a.Spec.ResourceClaims) > 0:
		return &refused{Field: "spec.resourceClaims", Why: "dynamic resources are allocated in this cluster, not where the pod runs"}
	}
	for i, v := range a.Spec.Volumes {
		field := fmt.Sprintf("spec.volumes[%d]", i)
		switch {
		case v.HostPath != nil:
			return &refused{Field: field + ".hostPath", Why: fmt.Sprintf("volume %q is a folder of a host the pod does not run on", v.Name)}
		case v.PersistentVolumeClaim != nil:
			return &refused{Field: field + ".persistentVolumeClaim", Why: fmt.Sprintf("volume %q is a claim of this cluster's storage, which the virtual node cannot reach yet", v.Name)}
		case v.Ephemeral != nil:
			return &refused{Field: field + ".ephemeral", Why: fmt.Sprintf("volume %q is a claim of this cluster's storage, which the virtual node cannot reach yet", v.Name)}
		case v.EmptyDir != nil, v.ConfigMap != nil, v.Secret != nil, v.Projected != nil, v.DownwardAPI != nil, v.Image != nil:
		default:
			return &refused{Field: field, Why: fmt.Sprintf("volume %q is of a type that cannot pass through (emptyDir, configMap, secret, projected, downwardAPI and image do)", v.Name)}
		}
	}
	return nil
}

// downward turns the items of a downward API volume (or projection) at
// volume i, source j into projections: field values come from the pod
// data Secret, resource values stay downward API items (B runs the same
// containers with the same resources).
func (p *plan) downward(a *v1.Pod, t target, i, j int, items []v1.DownwardAPIVolumeFile) ([]v1.VolumeProjection, error) {
	var fromData []v1.KeyToPath
	var resources []v1.DownwardAPIVolumeFile
	for k, it := range items {
		if it.FieldRef == nil {
			resources = append(resources, it)
			continue
		}
		v, local, err := fieldValue(a, t, it.FieldRef.FieldPath)
		if err != nil || !local {
			why := "only metadata and spec fields pass through a downward API volume"
			if err != nil {
				why = err.Error()
			}
			return nil, &refused{Field: fmt.Sprintf("spec.volumes[%d] item %d (%s)", i, k, it.FieldRef.FieldPath), Why: why}
		}
		key := "downward-" + strconv.Itoa(i) + "-" + strconv.Itoa(j) + "-" + strconv.Itoa(k)
		p.Downward[key] = v
		fromData = append(fromData, v1.KeyToPath{Key: key, Path: it.Path, Mode: it.Mode})
	}
	var out []v1.VolumeProjection
	if len(fromData) > 0 {
		out = append(out, v1.VolumeProjection{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: p.PodData}, Items: fromData}})
	}
	if len(resources) > 0 {
		out = append(out, v1.VolumeProjection{DownwardAPI: &v1.DownwardAPIProjection{Items: resources}})
	}
	return out, nil
}

// fieldValue is the value of a downward API field of A's pod. local is
// false for the fields B knows better (the pod's IPs, which A mirrors
// from B).
func fieldValue(a *v1.Pod, t target, path string) (value string, local bool, err error) {
	switch path {
	case "status.podIP", "status.podIPs":
		return "", false, nil
	case "spec.nodeName":
		return t.Node, true, nil
	case "spec.serviceAccountName":
		return a.Spec.ServiceAccountName, true, nil
	case "status.hostIP", "status.hostIPs":
		return t.NodeIP, true, nil
	}
	v, err := fieldpath.ExtractFieldPathAsString(a, path)
	if err != nil {
		return "", false, fmt.Errorf("downward API field %q: %w", path, err)
	}
	return v, true, nil
}

// mergeDNS is the DNS configuration of a ClusterFirst pod of A in
// namespace ns (A's resolver and search path), with the pod's own
// dnsConfig added as a kubelet adds it.
func mergeDNS(cluster *v1.PodDNSConfig, ns string, own *v1.PodDNSConfig) *v1.PodDNSConfig {
	out := cluster.DeepCopy()
	var domain string
	for _, s := range out.Searches {
		if strings.HasPrefix(s, "svc.") {
			domain = strings.TrimPrefix(s, "svc.")
		}
	}
	if domain != "" {
		out.Searches = append([]string{ns + ".svc." + domain}, out.Searches...)
	}
	if own != nil {
		out.Nameservers = append(out.Nameservers, own.Nameservers...)
		out.Searches = append(out.Searches, own.Searches...)
		seen := map[string]int{}
		for i, o := range out.Options {
			seen[o.Name] = i
		}
		for _, o := range own.Options {
			if i, ok := seen[o.Name]; ok {
				out.Options[i] = o
			} else {
				out.Options = append(out.Options, o)
			}
		}
	}
	return out
}

// clusterDNS is the resolver settings of A's ClusterFirst pods with the
// given servers and cluster domain (the namespace's search entry is added
// per pod).
func clusterDNS(servers []string, domain string) *v1.PodDNSConfig {
	ndots := "5"
	return &v1.PodDNSConfig{
		Nameservers: servers,
		Searches:    []string{"svc." + domain, domain},
		Options:     []v1.PodDNSConfigOption{{Name: "ndots", Value: &ndots}},
	}
}

// statusFor is the status of A's pod given its copy's in B: the same, but
// for the host's address, which is the virtual node's.
func statusFor(a *v1.Pod, b *v1.Pod, nodeIP string) v1.PodStatus {
	s := *b.Status.DeepCopy()
	if nodeIP != "" {
		s.HostIP = nodeIP
		s.HostIPs = []v1.HostIP{{IP: nodeIP}}
	}
	s.NominatedNodeName = ""
	// A pod's QoS class never changes; B's admission may have made the
	// copy's requests its limits (a flavor), which would make it another.
	if a.Status.QOSClass != "" {
		s.QOSClass = a.Status.QOSClass
	}
	s.ObservedGeneration = a.Generation
	for i := range s.Conditions {
		if s.Conditions[i].ObservedGeneration != 0 {
			s.Conditions[i].ObservedGeneration = a.Generation
		}
	}
	return s
}

// goneStatus is the status of A's pod once its copy is gone from B: every
// container that had not finished is reported ended, as a kubelet reports
// containers it lost track of.
func goneStatus(last v1.PodStatus, deleting bool, message string) v1.PodStatus {
	s := *last.DeepCopy()
	now := metav1.Now()
	end := func(list []v1.ContainerStatus) {
		for i := range list {
			c := &list[i]
			if c.State.Terminated != nil {
				continue
			}
			started := now
			if c.State.Running != nil {
				started = c.State.Running.StartedAt
			}
			c.LastTerminationState = v1.ContainerState{}
			c.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
				ExitCode: 137, Reason: "ContainerStatusUnknown", Message: message, StartedAt: started, FinishedAt: now,
			}}
			c.Ready = false
			f := false
			c.Started = &f
		}
	}
	end(s.InitContainerStatuses)
	end(s.ContainerStatuses)
	if s.Phase != v1.PodSucceeded && s.Phase != v1.PodFailed {
		s.Phase = v1.PodFailed
		if !deleting {
			s.Reason, s.Message = "Evicted", message
		}
	}
	for i := range s.Conditions {
		if s.Conditions[i].Type == v1.PodReady || s.Conditions[i].Type == v1.ContainersReady {
			s.Conditions[i].Status = v1.ConditionFalse
			s.Conditions[i].LastTransitionTime = now
		}
	}
	return s
}

// sortedKeys is the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
