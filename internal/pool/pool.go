// Package pool is CCI's host pools: groups of hosts that tenant pods choose
// between (general-purpose hosts, GPU hosts, Ascend hosts …). A host joins
// one pool (`cci agent --pool NAME`) and carries its name as the node label
// Label; every pool but Default also taints its hosts (Taint), so that only
// pods admitted to that pool land there. Admission (package policy) gives
// each tenant pod the pool's nodeSelector and toleration.
//
// Besides the names, the package holds what the control plane tells about
// pools: their hosts, capacity and use (Summarize, for `cci pool list` and
// the Prometheus gauges of Collector) and the events on pods that wait for
// a pool without a Ready host (CapacityController).
package pool

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	resourcehelper "k8s.io/component-helpers/resource"
)

const (
	// Label names a host's pool on its node; a tenant pod gets it as its
	// nodeSelector.
	Label = "cci.io/pool"
	// Annotation is where a tenant pod names its pool; admission writes the
	// chosen pool there.
	Annotation = "cci.io/pool"
	// TaintKey is the key of the NoSchedule taint of every pool but Default.
	TaintKey = "cci.io/pool"
	// Default is the pool of hosts that name none, and of pods that ask
	// for nothing a special pool has. It has no taint.
	Default = "general"
	// GPU and Ascend are the pools pods asking for those devices go to.
	GPU    = "gpu"
	Ascend = "ascend"
)

// Validate refuses a pool name that cannot be a label value and a taint
// value: pool names are DNS-1123 labels.
func Validate(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("pool name %q: %s (e.g. general, gpu, ascend)", name, strings.Join(errs, "; "))
	}
	return nil
}

// Taint is the taint of the pool's hosts, nil for Default.
func Taint(name string) *corev1.Taint {
	if name == Default {
		return nil
	}
	return &corev1.Taint{Key: TaintKey, Value: name, Effect: corev1.TaintEffectNoSchedule}
}

// Toleration tolerates the pool's taint, nil for Default.
func Toleration(name string) *corev1.Toleration {
	if name == Default {
		return nil
	}
	return &corev1.Toleration{Key: TaintKey, Operator: corev1.TolerationOpEqual, Value: name, Effect: corev1.TaintEffectNoSchedule}
}

// SetTaint makes taints carry exactly the pool's taint: any other value of
// TaintKey goes, the pool's own is added unless the pool is Default.
func SetTaint(taints []corev1.Taint, name string) []corev1.Taint {
	out := slices.DeleteFunc(slices.Clone(taints), func(t corev1.Taint) bool { return t.Key == TaintKey })
	if t := Taint(name); t != nil {
		out = append(out, *t)
	}
	return out
}

// Of is the pool of a node, "" for a node without the label.
func Of(n *corev1.Node) string { return n.Labels[Label] }

// Ready says whether a host takes pods now: its Ready condition is True
// and it is not cordoned.
func Ready(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Summary is one pool's hosts and what its pods take of them.
type Summary struct {
	Name string
	// Hosts and ReadyHosts count the pool's nodes, and those of them that
	// take pods now (see Ready).
	Hosts, ReadyHosts int
	// Allocatable is the sum of every host's allocatable resources (Ready
	// or not: a host that is down for a minute still counts as the pool's
	// size); Requested is the sum of the requests of the pods bound to the
	// pool's hosts that have not finished, counted as the scheduler counts
	// them, with "pods" the number of those pods.
	Allocatable, Requested corev1.ResourceList
}

// Resources are the resource names Summarize reports: CPU, memory, pods,
// then the devices (extended resources such as nvidia.com/gpu) in name
// order.
func (s Summary) Resources() []corev1.ResourceName {
	out := []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods}
	return append(out, s.Devices()...)
}

// Devices are the extended resources the pool's hosts offer or its pods
// ask for, in name order.
func (s Summary) Devices() []corev1.ResourceName {
	var out []corev1.ResourceName
	for _, l := range []corev1.ResourceList{s.Allocatable, s.Requested} {
		for name := range l {
			if Device(name) && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Device says whether a resource name is a device: an extended resource
// of a vendor's domain (nvidia.com/gpu, huawei.com/ascend-910), not one of
// Kubernetes' own (kubernetes.io/…, hugepages-…, requests.…).
func Device(name corev1.ResourceName) bool {
	n := string(name)
	return strings.Contains(n, "/") && !strings.HasPrefix(n, "requests.") &&
		!strings.Contains(strings.SplitN(n, "/", 2)[0], "kubernetes.io")
}

// Summarize adds up the pools of nodes and the pods bound to them, in pool
// name order. Nodes without a pool label belong to no pool and are left
// out; so are pods that are not bound or have finished.
func Summarize(nodes []*corev1.Node, pods []*corev1.Pod) []Summary {
	byPool := map[string]*Summary{}
	nodePool := map[string]string{}
	for _, n := range nodes {
		name := Of(n)
		if name == "" {
			continue
		}
		s := byPool[name]
		if s == nil {
			s = &Summary{Name: name, Allocatable: corev1.ResourceList{}, Requested: corev1.ResourceList{}}
			byPool[name] = s
		}
		nodePool[n.Name] = name
		s.Hosts++
		if Ready(n) {
			s.ReadyHosts++
		}
		add(s.Allocatable, n.Status.Allocatable)
	}
	for _, p := range pods {
		name, ok := nodePool[p.Spec.NodeName]
		if !ok || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		s := byPool[name]
		add(s.Requested, resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}))
		add(s.Requested, corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(1, resource.DecimalSI)})
	}
	out := make([]Summary, 0, len(byPool))
	for _, s := range byPool {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func add(sum, l corev1.ResourceList) {
	for name, q := range l {
		v := sum[name]
		v.Add(q)
		sum[name] = v
	}
}
