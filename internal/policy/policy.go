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
)

// Runtime classes CCI knows by name.
const (
	RuntimeGVisor = "gvisor"
	RuntimeRunc   = "runc"
)

// ResourceGPU is the GPU resource tenants may ask for.
const ResourceGPU corev1.ResourceName = "nvidia.com/gpu"

// Default container size, for containers that name no CPU or memory.
var (
	DefaultCPU    = resource.MustParse("250m")
	DefaultMemory = resource.MustParse("512Mi")
)

// Rules are what differs between tenants.
type Rules struct {
	// DefaultRuntimeClass is set on pods that name none. Default "gvisor".
	DefaultRuntimeClass string
	// AllowRunc lets the tenant's pods name the "runc" class (no sandbox).
	AllowRunc bool
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
//   - host access is refused (see CheckPodSpec).
func AdmitPod(pod *corev1.Pod, r Rules) error {
	why := CheckPodSpec(&pod.Spec, r)
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
	return nil
}

// CheckTemplate checks a pod template (of a Deployment, Job …) as AdmitPod
// would check its pods, without changing it, so that a workload whose pods
// would all be refused is refused itself.
func CheckTemplate(spec *corev1.PodSpec, r Rules) error {
	pod := &corev1.Pod{Spec: *spec.DeepCopy()}
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
	return refuse(why)
}

// CheckPodUpdate refuses changes of the flavor annotation after admission.
func CheckPodUpdate(old, pod *corev1.Pod) error {
	if old.Annotations[FlavorAnnotation] != pod.Annotations[FlavorAnnotation] {
		return refuse([]string{fmt.Sprintf("annotation %s is set by CCI and cannot be changed", FlavorAnnotation)})
	}
	return nil
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

// PodFlavor is what the pod reserves, counted as the scheduler counts it:
// the sum of its containers and sidecars (restartable init containers), or
// the largest init container with the sidecars started before it, whichever
// is larger. Requests are read; Normalize makes them equal to limits.
func PodFlavor(spec *corev1.PodSpec) Flavor {
	var app, sidecars, peak Flavor
	add := func(f *Flavor, res corev1.ResourceList) {
		f.MilliCPU += res.Cpu().MilliValue()
		f.Memory += res.Memory().Value()
		if q, ok := res[ResourceGPU]; ok {
			f.GPU += q.Value()
		}
	}
	for _, c := range spec.Containers {
		add(&app, c.Resources.Requests)
	}
	for _, c := range spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(&sidecars, c.Resources.Requests)
			continue
		}
		f := sidecars
		add(&f, c.Resources.Requests)
		peak = maxFlavor(peak, f)
	}
	app.MilliCPU += sidecars.MilliCPU
	app.Memory += sidecars.Memory
	app.GPU += sidecars.GPU
	return maxFlavor(app, peak)
}

func maxFlavor(a, b Flavor) Flavor {
	return Flavor{MilliCPU: max(a.MilliCPU, b.MilliCPU), Memory: max(a.Memory, b.Memory), GPU: max(a.GPU, b.GPU)}
}

// defaultCapabilities are those a container runtime grants by default
// (containerd's and Docker's set); adding one of them changes nothing.
var defaultCapabilities = []corev1.Capability{
	"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
}

// PoolLabels are the node label keys tenants may select nodes by: the
// pools CCI publishes (node.cci.io/…), zones, architecture, instance types
// and accelerators. Every other key (kubernetes.io/hostname above all) may
// single out a host and is refused.
var PoolLabels = []string{
	"node.cci.io/*",
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
// a LoadBalancer that would get node ports, and external IPs
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
	if len(svc.Spec.ExternalIPs) > 0 {
		why = append(why, fmt.Sprintf("spec.externalIPs %v is not allowed: external IPs capture the traffic of every pod and host to those addresses (CVE-2020-8554); use type LoadBalancer for an address outside the cluster", svc.Spec.ExternalIPs))
	}
	return refuse(why)
}

// CheckDaemonSet refuses every DaemonSet: it places a pod on every host.
func CheckDaemonSet(*appsv1.DaemonSet) error {
	return refuse([]string{"DaemonSets are not allowed: they place a pod on every host, and tenants never see hosts"})
}
