// Package isolation makes namespaces "isolated by default" by label: a
// namespace labelled
//
//	cci.io/isolation=default-deny
//
// gets a NetworkPolicy named cci-isolation, kept by this controller, that
// selects every pod of the namespace and admits ingress only from
//
//   - pods of the same namespace, and
//   - the hosts: every node's addresses and its pod bridge's gateway, the
//     sources of traffic a host or its service proxy sends on behalf of
//     others (NodePort and load-balancer traffic masqueraded to a host
//     address, possibly on another host).
//
// Traffic a host sends to its own pods is allowed by the agent's dataplane
// anyway (see package netpol). Egress is not restricted. Other policies in
// the namespace add to this one as NetworkPolicies do: a tenant can open
// its namespace further, never close it less than its own policies say.
//
// The controller recreates the policy when it is deleted or changed, keeps
// its host addresses in step with the nodes, and deletes it when the label
// goes. Any other value of the label is refused with a Warning event on
// the namespace, and the namespace is not isolated.
package isolation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

const (
	// Label on a namespace asks for its isolation.
	Label = "cci.io/isolation"
	// DefaultDeny is the one value of Label: ingress only from the same
	// namespace and the hosts.
	DefaultDeny = "default-deny"
	// PolicyName is the managed NetworkPolicy's name in an isolated namespace.
	PolicyName = "cci-isolation"
	// ManagedByLabel and ManagedBy mark the policy as this controller's.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "cci-isolation-controller"
)

// Policy is the managed policy for namespace ns; hostCIDRs are the hosts'
// addresses as single-address prefixes.
func Policy(ns string, hostCIDRs []string) *networkingv1.NetworkPolicy {
	peers := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}
	for _, c := range hostCIDRs {
		peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c}})
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name:      PolicyName,
			Namespace: ns,
			Labels:    map[string]string{ManagedByLabel: ManagedBy},
			Annotations: map[string]string{
				"cci.io/description": "kept by CCI because the namespace is labelled " + Label + "=" + DefaultDeny +
					": ingress only from this namespace and the hosts; changes are undone, remove the label to remove it",
			},
		},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: peers}},
		},
	}
}

// HostCIDRs are the addresses traffic from the hosts comes from: each
// node's InternalIP and ExternalIP, its pod bridge's gateway (the first
// address of each pod CIDR) and its overlay device's address (the pod
// CIDR's own, which flannel's VXLAN device takes: a Service's traffic that
// a host forwards to a pod on another host is masqueraded to it), sorted
// and without duplicates, each as a single-address prefix. Unparsable
// addresses are skipped.
func HostCIDRs(nodes []*corev1.Node) []string {
	var out []string
	add := func(a netip.Addr) {
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()).String())
	}
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && !ip.IsLoopback() {
				add(ip)
			}
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			if p, err := netip.ParsePrefix(c); err == nil {
				add(p.Masked().Addr())
				add(p.Masked().Addr().Next())
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Controller keeps the managed policy of every namespace in step with its
// label. Create it with NewController and Run it once.
type Controller struct {
	kube       kubernetes.Interface
	factory    informers.SharedInformerFactory
	namespaces corelisters.NamespaceLister
	nodes      corelisters.NodeLister
	policies   networkinglisters.NetworkPolicyLister
	queue      workqueue.TypedRateLimitingInterface[string]
	recorder   record.EventRecorder
	broadcast  record.EventBroadcaster
	log        *slog.Logger
}

// NewController builds the controller over kube; nothing runs until Run.
func NewController(kube kubernetes.Interface, log *slog.Logger) *Controller {
	if log == nil {
		log = slog.Default()
	}
	f := informers.NewSharedInformerFactory(kube, 10*time.Minute)
	broadcast := record.NewBroadcaster()
	c := &Controller{
		kube:       kube,
		factory:    f,
		namespaces: f.Core().V1().Namespaces().Lister(),
		nodes:      f.Core().V1().Nodes().Lister(),
		policies:   f.Networking().V1().NetworkPolicies().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "isolation"}),
		broadcast: broadcast,
		recorder:  broadcast.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "cci-isolation-controller"}),
		log:       log.With("controller", "isolation"),
	}
	_, _ = f.Core().V1().Namespaces().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.enqueueObject(obj) },
		UpdateFunc: func(_, obj any) { c.enqueueObject(obj) },
	})
	_, _ = f.Networking().V1().NetworkPolicies().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.enqueuePolicy(obj) },
		UpdateFunc: func(_, obj any) { c.enqueuePolicy(obj) },
		DeleteFunc: func(obj any) { c.enqueuePolicy(obj) },
	})
	nodeChanged := func(any) { c.enqueueIsolated() }
	_, _ = f.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: nodeChanged,
		UpdateFunc: func(old, cur any) {
			o, n := old.(*corev1.Node), cur.(*corev1.Node)
			if !slices.Equal(HostCIDRs([]*corev1.Node{o}), HostCIDRs([]*corev1.Node{n})) {
				c.enqueueIsolated()
			}
		},
		DeleteFunc: nodeChanged,
	})
	return c
}

func (c *Controller) enqueueObject(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

func (c *Controller) enqueuePolicy(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if p, ok := obj.(*networkingv1.NetworkPolicy); ok && p.Name == PolicyName {
		c.queue.Add(p.Namespace)
	}
}

func (c *Controller) enqueueIsolated() {
	nss, err := c.namespaces.List(labels.SelectorFromSet(labels.Set{Label: DefaultDeny}))
	if err != nil {
		return
	}
	for _, ns := range nss {
		c.queue.Add(ns.Name)
	}
}

// Run reconciles with the given number of workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	c.broadcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer c.broadcast.Shutdown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("isolation controller: informer for %v did not sync", typ)
		}
	}
	c.log.Info("namespace isolation controller started", "label", Label+"="+DefaultDeny)
	for range max(workers, 1) {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) worker(ctx context.Context) {
	for {
		key, quit := c.queue.Get()
		if quit {
			return
		}
		err := c.reconcile(ctx, key)
		switch {
		case err == nil:
			c.queue.Forget(key)
		case ctx.Err() == nil:
			c.log.Warn("reconcile namespace isolation", "namespace", key, "err", err)
			c.queue.AddRateLimited(key)
		}
		c.queue.Done(key)
	}
}

// reconcile makes namespace name's managed policy what its label asks for.
func (c *Controller) reconcile(ctx context.Context, name string) error {
	ns, err := c.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil // the namespace's policies go with it
	}
	if err != nil {
		return err
	}
	if ns.DeletionTimestamp != nil {
		return nil
	}
	cur, err := c.policies.NetworkPolicies(name).Get(PolicyName)
	if apierrors.IsNotFound(err) {
		cur, err = nil, nil
	}
	if err != nil {
		return err
	}
	api := c.kube.NetworkingV1().NetworkPolicies(name)

	value, labelled := ns.Labels[Label]
	if labelled && value != DefaultDeny {
		c.recorder.Eventf(ns, corev1.EventTypeWarning, "UnknownIsolation",
			"label %s=%q is not understood (the one value is %q): the namespace is not isolated", Label, value, DefaultDeny)
	}
	if value != DefaultDeny {
		if cur == nil || cur.Labels[ManagedByLabel] != ManagedBy {
			return nil
		}
		err := api.Delete(ctx, PolicyName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete network policy %s/%s: %w", name, PolicyName, err)
		}
		c.log.Info("namespace no longer isolated", "namespace", name)
		return nil
	}

	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	want := Policy(name, HostCIDRs(nodes))
	if cur == nil {
		if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return errors.New("policy appeared meanwhile; retrying")
			}
			return fmt.Errorf("create network policy %s/%s: %w", name, PolicyName, err)
		}
		c.log.Info("namespace isolated", "namespace", name)
		return nil
	}
	if equality.Semantic.DeepEqual(cur.Spec, want.Spec) && cur.Labels[ManagedByLabel] == ManagedBy {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Spec = want.Spec
	if upd.Labels == nil {
		upd.Labels = map[string]string{}
	}
	upd.Labels[ManagedByLabel] = ManagedBy
	if upd.Annotations == nil {
		upd.Annotations = map[string]string{}
	}
	for k, v := range want.Annotations {
		upd.Annotations[k] = v
	}
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("restore network policy %s/%s: %w", name, PolicyName, err)
	}
	c.log.Info("isolation policy restored", "namespace", name)
	return nil
}
