// Package policy is the admission policy for tenant workloads, as pure
// functions on Kubernetes objects: pod flavors and their normalisation, the
// secure runtime by default, the host access tenants are refused, and the
// addresses their Services and hand-made endpoints may not lead to. The
// admission webhook (package webhook) applies it to requests in tenant
// namespaces; admin namespaces are never checked.
package policy

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/cci-project/cci/internal/flavor"
	"github.com/cci-project/cci/internal/pool"
)

// Runtime classes CCI knows by name.
const (
	RuntimeGVisor = "gvisor"
	RuntimeRunc   = "runc"
)

// ResourceGPU is the GPU resource tenants may ask for.
const ResourceGPU = flavor.GPUResource

// Default container size, for containers that name no CPU or memory.
var (
	DefaultCPU    = flavor.DefaultCPU
	DefaultMemory = flavor.DefaultMemory
)

// Rules are what differs between tenants.
type Rules struct {
	// DefaultRuntimeClass is set on pods that name none. Default "gvisor".
	DefaultRuntimeClass string
	// AllowRunc lets the tenant's pods name the "runc" class (no sandbox).
	AllowRunc bool
	// Tenant names the tenant in refusals. Default "this tenant".
	Tenant string
	// Pools are the host pools the tenant's pods may run in. Default
	// [general].
	Pools []string
	// ExistingPools are the pools some host is in; a pod of another pool
	// is refused. The default pool always exists (its pods wait for a
	// host). Nil: not checked.
	ExistingPools []string
	// PullSecret is a Secret of the namespace every pod gets as an
	// imagePullSecret: the tenant's credentials for the built-in
	// registry. Empty: none added.
	PullSecret string
}

func (r Rules) pools() []string {
	if len(r.Pools) == 0 {
		return []string{pool.Default}
	}
	return r.Pools
}

func (r Rules) tenant() string {
	if r.Tenant == "" {
		return "this tenant"
	}
	return "tenant " + r.Tenant
}

func (r Rules) defaultClass() string {
	if r.DefaultRuntimeClass == "" {
		return RuntimeGVisor
	}
	return r.DefaultRuntimeClass
}

// runtimeAllowed: gvisor always, the tenant's default (an admin chose it),
// runc only where allowed; nothing else.
func (r Rules) runtimeAllowed(class string) bool {
	return class == RuntimeGVisor || class == r.defaultClass() || (class == RuntimeRunc && r.AllowRunc)
}

// RefusalPrefix starts the message of every refusal the webhook answers.
const RefusalPrefix = "CCI tenant policy: "

// Refusal is a request the policy turns down; its message lists every reason.
type Refusal struct {
	Reasons []string
}

func (r *Refusal) Error() string {
	return strings.Join(r.Reasons, "; ")
}

func refuse(why []string) error {
	if len(why) == 0 {
		return nil
	}
	return &Refusal{Reasons: why}
}

// AdmitPod normalises a tenant pod in place and returns a *Refusal when the
// pod may not run:
//
//   - every container (init containers too) gets requests == limits for CPU,
//     memory and GPU: a value given only as a limit or only as a request is
//     used for both, a limit wins over a differing request, and CPU or
//     memory not given at all take DefaultCPU / DefaultMemory;
//   - the pod's flavor (what the pod as a whole reserves, counted as the
//     scheduler does) must be in the flavor table and is written to the
//     FlavorAnnotation;
//   - runtimeClassName defaults to the tenant's class (gvisor);
//   - host access is refused (see CheckPodSpec);
//   - the pod runs in one host pool (see ChoosePool), which the tenant must
//     be allowed and which must have hosts: it gets the pool's nodeSelector
//     and toleration, and the pool's name in the annotation cci.io/pool;
//   - the pod gets the tenant's registry credentials (Rules.PullSecret) as
//     an imagePullSecret.
func AdmitPod(pod *corev1.Pod, r Rules) error {
	why := CheckPodSpec(&pod.Spec, r)
	poolName := ChoosePool(pod.Annotations, &pod.Spec)
	why = append(why, CheckPool(poolName, &pod.Spec, r)...)
	if pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName == "" {
		class := r.defaultClass()
		pod.Spec.RuntimeClassName = &class
	}
	Normalize(&pod.Spec)
	f := PodFlavor(&pod.Spec)
	if fw := f.Check(); len(fw) > 0 {
		why = append(why, flavorRefusal(f, fw))
	}
	if len(why) > 0 {
		return refuse(why)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[FlavorAnnotation] = f.Annotation()
	setPool(pod, poolName)
	addPullSecret(&pod.Spec, r.PullSecret)
	return nil
}

// addPullSecret gives the pod the tenant's registry credentials, after any
// the pod names itself.
func addPullSecret(spec *corev1.PodSpec, name string) {
	if name == "" {
		return
	}
	for _, s := range spec.ImagePullSecrets {
		if s.Name == name {
			return
		}
	}
	spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
}

// setPool binds an admitted pod to its pool: annotation, nodeSelector and
// (for every pool but the default) the toleration of the pool's taint.
func setPool(pod *corev1.Pod, name string) {
	pod.Annotations[pool.Annotation] = name
	if pod.Spec.NodeSelector == nil {
		pod.Spec.NodeSelector = map[string]string{}
	}
	pod.Spec.NodeSelector[pool.Label] = name
	if t := pool.Toleration(name); t != nil && !hasToleration(pod.Spec.Tolerations, *t) {
		pod.Spec.Tolerations = append(pod.Spec.Tolerations, *t)
	}
}

func hasToleration(ts []corev1.Toleration, want corev1.Toleration) bool {
	return slices.ContainsFunc(ts, func(t corev1.Toleration) bool {
		return t.Key == want.Key && t.Operator == want.Operator && t.Value == want.Value && t.Effect == want.Effect
	})
}

// ChoosePool is the host pool a pod asks for: the one its annotation
// cci.io/pool names, else the one its devices need (nvidia.com/gpu: gpu;
// huawei.com/ascend-*: ascend), else the default pool.
func ChoosePool(annotations map[string]string, spec *corev1.PodSpec) string {
	if name := annotations[pool.Annotation]; name != "" {
		return name
	}
	var lists []corev1.ResourceList
	for _, c := range spec.InitContainers {
		lists = append(lists, c.Resources.Requests, c.Resources.Limits)
	}
	for _, c := range spec.Containers {
		lists = append(lists, c.Resources.Requests, c.Resources.Limits)
	}
	for _, l := range lists {
		for name := range l {
			switch {
			case name == ResourceGPU:
				return pool.GPU
			case strings.HasPrefix(string(name), "huawei.com/ascend-"):
				return pool.Ascend
			}
		}
	}
	return pool.Default
}

// CheckPool lists why a pod of pool name may not run: a pool that is not
// a valid name, that the tenant may not use or that has no host, and a
// nodeSelector, node affinity or toleration of the pod's own on the pool
// label or taint that contradicts it.
func CheckPool(name string, spec *corev1.PodSpec, r Rules) []string {
	if err := pool.Validate(name); err != nil {
		return []string{fmt.Sprintf("annotation %s: %v", pool.Annotation, err)}
	}
	var why []string
	if !slices.Contains(r.pools(), name) {
		why = append(why, fmt.Sprintf("pool %q is not allowed for %s; allowed pools: %s", name, r.tenant(), strings.Join(r.pools(), ", ")))
	} else if r.ExistingPools != nil && name != pool.Default && !slices.Contains(r.ExistingPools, name) {
		existing := slices.Clone(r.ExistingPools)
		if !slices.Contains(existing, pool.Default) {
			existing = append(existing, pool.Default)
		}
		slices.Sort(existing)
		why = append(why, fmt.Sprintf("pool %q does not exist: no host is in it; pools with hosts: %s", name, strings.Join(existing, ", ")))
	}
	contradicts := func(what string) string {
		return fmt.Sprintf("%s contradicts the pod's pool %q: name the pool with the annotation %s only", what, name, pool.Annotation)
	}
	if v, ok := spec.NodeSelector[pool.Label]; ok && v != name {
		why = append(why, contradicts(fmt.Sprintf("nodeSelector %s=%s", pool.Label, v)))
	}
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil {
		var terms []corev1.NodeSelectorTerm
		if req := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution; req != nil {
			terms = append(terms, req.NodeSelectorTerms...)
		}
		for _, p := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			terms = append(terms, p.Preference)
		}
		for _, t := range terms {
			for _, e := range t.MatchExpressions {
				if e.Key == pool.Label && !admitsValue(e, name) {
					why = append(why, contradicts(fmt.Sprintf("node affinity %s %s %v", e.Key, e.Operator, e.Values)))
				}
			}
		}
	}
	for _, t := range spec.Tolerations {
		if t.Key == pool.TaintKey && t.Operator != corev1.TolerationOpExists && t.Value != name {
			why = append(why, contradicts(fmt.Sprintf("toleration %s=%s", t.Key, t.Value)))
		}
	}
	return why
}

// admitsValue says whether a node selector requirement holds for a node
// whose label has the value v.
func admitsValue(e corev1.NodeSelectorRequirement, v string) bool {
	switch e.Operator {
	case corev1.NodeSelectorOpIn:
		return slices.Contains(e.Values, v)
	case corev1.NodeSelectorOpNotIn:
		return !slices.Contains(e.Values, v)
	case corev1.NodeSelectorOpExists:
		return true
	default: // DoesNotExist, Gt, Lt
		return false
	}
}

// CheckTemplate checks a pod template (of a Deployment, Job …) as AdmitPod
// would check its pods, without changing it, so that a workload whose pods
// would all be refused is refused itself.
func CheckTemplate(tmpl *corev1.PodTemplateSpec, r Rules) error {
	pod := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	return AdmitPod(pod, r)
}

// CheckAdmitted refuses a pod that is not what AdmitPod makes of it: the
// last word, after every mutation of the request.
func CheckAdmitted(pod *corev1.Pod, r Rules) error {
	again := pod.DeepCopy()
	if err := AdmitPod(again, r); err != nil {
		return err
	}
	var why []string
	for i := range pod.Spec.InitContainers {
		if !equalResources(pod.Spec.InitContainers[i].Resources, again.Spec.InitContainers[i].Resources) {
			why = append(why, fmt.Sprintf("init container %q: requests and limits must be equal", pod.Spec.InitContainers[i].Name))
		}
	}
	for i := range pod.Spec.Containers {
		if !equalResources(pod.Spec.Containers[i].Resources, again.Spec.Containers[i].Resources) {
			why = append(why, fmt.Sprintf("container %q: requests and limits must be equal", pod.Spec.Containers[i].Name))
		}
	}
	if got, want := pod.Annotations[FlavorAnnotation], again.Annotations[FlavorAnnotation]; got != want {
		why = append(why, fmt.Sprintf("annotation %s must be %s", FlavorAnnotation, want))
	}
	name := again.Annotations[pool.Annotation]
	if got := pod.Annotations[pool.Annotation]; got != name {
		why = append(why, fmt.Sprintf("annotation %s must be %s", pool.Annotation, name))
	}
	if got := pod.Spec.NodeSelector[pool.Label]; got != name {
		why = append(why, fmt.Sprintf("nodeSelector %s must be %s", pool.Label, name))
	}
	if t := pool.Toleration(name); t != nil && !hasToleration(pod.Spec.Tolerations, *t) {
		why = append(why, fmt.Sprintf("the toleration of the taint %s=%s:%s is missing", t.Key, t.Value, t.Effect))
	}
	return refuse(why)
}

// CheckPodUpdate refuses changes of the flavor and pool annotations after
// admission.
func CheckPodUpdate(old, pod *corev1.Pod) error {
	var why []string
	for _, a := range []string{FlavorAnnotation, pool.Annotation} {
		if old.Annotations[a] != pod.Annotations[a] {
			why = append(why, fmt.Sprintf("annotation %s is set by CCI and cannot be changed", a))
		}
	}
	return refuse(why)
}

func equalResources(a, b corev1.ResourceRequirements) bool {
	eq := func(x, y corev1.ResourceList) bool {
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || v.Cmp(w) != 0 {
				return false
			}
		}
		return true
	}
	return eq(a.Requests, b.Requests) && eq(a.Limits, b.Limits)
}

// Normalize sets requests == limits on every container (see AdmitPod).
func Normalize(spec *corev1.PodSpec) {
	for i := range spec.InitContainers {
		normalizeContainer(&spec.InitContainers[i].Resources)
	}
	for i := range spec.Containers {
		normalizeContainer(&spec.Containers[i].Resources)
	}
}

func normalizeContainer(res *corev1.ResourceRequirements) {
	if res.Requests == nil {
		res.Requests = corev1.ResourceList{}
	}
	if res.Limits == nil {
		res.Limits = corev1.ResourceList{}
	}
	defaults := map[corev1.ResourceName]resource.Quantity{
		corev1.ResourceCPU:    DefaultCPU,
		corev1.ResourceMemory: DefaultMemory,
		ResourceGPU:           {},
	}
	for name, def := range defaults {
		limit, hasLimit := res.Limits[name]
		request, hasRequest := res.Requests[name]
		switch {
		case hasLimit:
			res.Requests[name] = limit.DeepCopy()
		case hasRequest:
			res.Limits[name] = request.DeepCopy()
		case name != ResourceGPU:
			res.Requests[name] = def.DeepCopy()
			res.Limits[name] = def.DeepCopy()
		}
	}
}

// PodFlavor is what the pod reserves, counted as the scheduler counts it
// (flavor.Of), from its requests: Normalize makes them equal to limits.
func PodFlavor(spec *corev1.PodSpec) Flavor {
	return flavor.Of(spec, flavor.Requested)
}

// defaultCapabilities are those a container runtime grants by default
// (containerd's and Docker's set); adding one of them changes nothing.
var defaultCapabilities = []corev1.Capability{
	"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
}

// PoolLabels are the node label keys tenants may select nodes by: the
// pool CCI publishes (cci.io/pool, which must agree with the pod's pool:
// see CheckPool), zones, architecture, instance types and accelerators.
// Every other key (kubernetes.io/hostname above all) may single out a host
// and is refused.
var PoolLabels = []string{
	pool.Label,
	"topology.kubernetes.io/zone",
	"topology.kubernetes.io/region",
	"kubernetes.io/arch",
	"kubernetes.io/os",
	"node.kubernetes.io/instance-type",
	"accelerator",
	"*/accelerator",
	"nvidia.com/gpu.product",
}

func poolLabel(key string) bool {
	for _, p := range PoolLabels {
		switch {
		case strings.HasSuffix(p, "/*"):
			if strings.HasPrefix(key, strings.TrimSuffix(p, "*")) {
				return true
			}
		case strings.HasPrefix(p, "*/"):
			if strings.HasSuffix(key, p[1:]) {
				return true
			}
		case key == p:
			return true
		}
	}
	return false
}

func hostLabelRefusal(where, key string) string {
	return fmt.Sprintf("%s on node label %q is not allowed: tenants never choose a host, only a pool (%s)", where, key, strings.Join(PoolLabels, ", "))
}

// CheckPodSpec lists what in spec a tenant may not use.
func CheckPodSpec(spec *corev1.PodSpec, r Rules) []string {
	var why []string
	if spec.HostNetwork {
		why = append(why, "hostNetwork is not allowed")
	}
	if spec.HostPID {
		why = append(why, "hostPID is not allowed")
	}
	if spec.HostIPC {
		why = append(why, "hostIPC is not allowed")
	}
	if spec.NodeName != "" {
		why = append(why, "nodeName is not allowed: CCI chooses the host")
	}
	if spec.Resources != nil {
		why = append(why, "pod-level resources are not supported: set resources per container")
	}
	if spec.RuntimeClassName != nil && *spec.RuntimeClassName != "" && !r.runtimeAllowed(*spec.RuntimeClassName) {
		msg := fmt.Sprintf("runtimeClassName %q is not allowed for this tenant (allowed: %s", *spec.RuntimeClassName, RuntimeGVisor)
		if c := r.defaultClass(); c != RuntimeGVisor {
			msg += ", " + c
		}
		if r.AllowRunc {
			msg += ", " + RuntimeRunc
		}
		why = append(why, msg+")")
	}
	keys := make([]string, 0, len(spec.NodeSelector))
	for k := range spec.NodeSelector {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !poolLabel(k) {
			why = append(why, hostLabelRefusal("nodeSelector", k))
		}
	}
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil {
		var terms []corev1.NodeSelectorTerm
		if req := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution; req != nil {
			terms = append(terms, req.NodeSelectorTerms...)
		}
		for _, p := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			terms = append(terms, p.Preference)
		}
		for _, t := range terms {
			for _, e := range t.MatchExpressions {
				if !poolLabel(e.Key) {
					why = append(why, hostLabelRefusal("node affinity", e.Key))
				}
			}
			for _, f := range t.MatchFields {
				why = append(why, fmt.Sprintf("node affinity on field %q is not allowed: tenants never choose a host", f.Key))
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			why = append(why, fmt.Sprintf("volume %q: hostPath volumes are not allowed", v.Name))
		}
	}
	check := func(kind, name string, sc *corev1.SecurityContext, ports []corev1.ContainerPort) {
		if sc != nil && sc.Privileged != nil && *sc.Privileged {
			why = append(why, fmt.Sprintf("%s %q: privileged is not allowed", kind, name))
		}
		if sc != nil && sc.Capabilities != nil {
			for _, c := range sc.Capabilities.Add {
				if !slices.Contains(defaultCapabilities, corev1.Capability(strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_"))) {
					why = append(why, fmt.Sprintf("%s %q: adding capability %s is not allowed (only the default set)", kind, name, c))
				}
			}
		}
		for _, p := range ports {
			if p.HostPort != 0 {
				why = append(why, fmt.Sprintf("%s %q: hostPort %d is not allowed", kind, name, p.HostPort))
			}
		}
	}
	for _, c := range spec.InitContainers {
		check("init container", c.Name, c.SecurityContext, c.Ports)
	}
	for _, c := range spec.Containers {
		check("container", c.Name, c.SecurityContext, c.Ports)
	}
	for _, c := range spec.EphemeralContainers {
		check("ephemeral container", c.Name, c.SecurityContext, c.Ports)
	}
	return why
}

// AdmitService prepares a tenant Service in place before it is stored; old
// is the stored Service on an update, nil on a create. A LoadBalancer gets
// spec.allocateLoadBalancerNodePorts=false: the service proxy serves its
// load-balancer address without node ports, and a node port is a port on
// every host's own address. Node ports the old Service holds were allocated
// by the apiserver (before this rule, or while the type allowed them), not
// chosen: they are cleared, so that the update releases them instead of
// being refused by CheckService.
func AdmitService(svc, old *corev1.Service) {
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		no := false
		svc.Spec.AllocateLoadBalancerNodePorts = &no
	}
	if old == nil {
		return
	}
	held := map[int32]bool{}
	for _, p := range old.Spec.Ports {
		held[p.NodePort] = true
	}
	for i, p := range svc.Spec.Ports {
		if p.NodePort != 0 && held[p.NodePort] {
			svc.Spec.Ports[i].NodePort = 0
		}
	}
}

// CheckService refuses what lets a tenant Service reach past its tenant:
// NodePort services and node ports (a port on every host's own address),
// a LoadBalancer that would get node ports or a health-check node port
// (externalTrafficPolicy Local), and external IPs
// (CVE-2020-8554: the service proxy captures traffic to any IP:port named
// there, from every pod and host).
func CheckService(svc *corev1.Service) error {
	var why []string
	if svc.Spec.Type == corev1.ServiceTypeNodePort {
		why = append(why, "Service type NodePort is not allowed: it opens a port on every host; use ClusterIP or LoadBalancer")
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 && svc.Spec.Type != corev1.ServiceTypeNodePort {
			why = append(why, fmt.Sprintf("port %q: nodePort %d is not allowed: it opens a port on every host; a LoadBalancer Service is reached at its load-balancer address without one", p.Name, p.NodePort))
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && (svc.Spec.AllocateLoadBalancerNodePorts == nil || *svc.Spec.AllocateLoadBalancerNodePorts) {
		why = append(why, "allocateLoadBalancerNodePorts must be false: node ports open a port on every host")
	}
	if svc.Spec.HealthCheckNodePort != 0 {
		why = append(why, fmt.Sprintf("healthCheckNodePort %d is not allowed: it opens a port on every host", svc.Spec.HealthCheckNodePort))
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		why = append(why, "externalTrafficPolicy Local is not allowed: it gives the Service a health-check node port (healthCheckNodePort), a port on every host; leave it Cluster")
	}
	if len(svc.Spec.ExternalIPs) > 0 {
		why = append(why, fmt.Sprintf("spec.externalIPs %v is not allowed: external IPs capture the traffic of every pod and host to those addresses (CVE-2020-8554); use type LoadBalancer for an address outside the cluster", svc.Spec.ExternalIPs))
	}
	return refuse(why)
}

// CheckDaemonSet refuses every DaemonSet: it places a pod on every host.
func CheckDaemonSet(*appsv1.DaemonSet) error {
	return refuse([]string{"DaemonSets are not allowed: they place a pod on every host, and tenants never see hosts"})
}
