package gateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

const (
	// ControllerName is the spec.controllerName of the GatewayClasses
	// this controller serves.
	ControllerName gatewayv1.GatewayController = "cci.io/gateway-controller"
	// ClassName is the GatewayClass the control plane creates.
	ClassName = "cci"
	// Namespace holds the gateways' load-balancer Services: out of the
	// tenants' reach, so that no tenant edits where its address sends
	// traffic.
	Namespace = "cci-gateways"

	labelManaged = "gateway.cci.io/managed"
	annoGateway  = "gateway.cci.io/gateway"
	group        = gatewayv1.GroupName
)

// Controller writes the status of GatewayClasses, Gateways and HTTPRoutes
// of class cci, keeps one load-balancer Service per Gateway (its address
// comes from the ELB pool, internal/loadbalancer) and programs the data
// plane. Every change recomputes the whole state in one worker: the
// objects are few and one pass keeps routes, listeners and addresses
// consistent with each other.
type Controller struct {
	kube kubernetes.Interface
	gw   gatewayclient.Interface
	dp   *Dataplane
	log  *slog.Logger
	kf   informers.SharedInformerFactory
	gf   gatewayinformers.SharedInformerFactory
	// sf watches Secrets of type kubernetes.io/tls only: the
	// listeners' certificates, without holding every Secret of the
	// cluster in memory.
	sf       informers.SharedInformerFactory
	classes  gatewaylisters.GatewayClassLister
	gateways gatewaylisters.GatewayLister
	routes   gatewaylisters.HTTPRouteLister
	grants   gatewaylisters.ReferenceGrantLister
	synced   []cache.InformerSynced
	svcs     cache.Indexer
	slices   cache.Indexer
	nss      cache.Indexer
	secrets  cache.Indexer
	queue    workqueue.TypedRateLimitingInterface[string]
	// certs caches parsed certificates by Secret (namespace/name) and
	// resourceVersion; only the worker uses it.
	certs map[string]cachedCert
}

type cachedCert struct {
	rv   string
	cert tls.Certificate
	err  error
}

// NewController builds the controller; Run starts it.
func NewController(kube kubernetes.Interface, gw gatewayclient.Interface, dp *Dataplane, log *slog.Logger) *Controller {
	c := &Controller{
		kube: kube, gw: gw, dp: dp, log: log,
		kf: informers.NewSharedInformerFactory(kube, 10*time.Minute),
		gf: gatewayinformers.NewSharedInformerFactory(gw, 10*time.Minute),
		sf: informers.NewSharedInformerFactoryWithOptions(kube, 10*time.Minute, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "type=" + string(corev1.SecretTypeTLS)
		})),
		certs: map[string]cachedCert{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "gateway"}),
	}
	v1 := c.gf.Gateway().V1()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add("all") },
		UpdateFunc: func(any, any) { c.queue.Add("all") },
		DeleteFunc: func(any) { c.queue.Add("all") },
	}
	for _, inf := range []cache.SharedIndexInformer{
		v1.GatewayClasses().Informer(), v1.Gateways().Informer(), v1.HTTPRoutes().Informer(), v1.ReferenceGrants().Informer(),
		c.kf.Core().V1().Services().Informer(), c.kf.Discovery().V1().EndpointSlices().Informer(), c.kf.Core().V1().Namespaces().Informer(),
		c.sf.Core().V1().Secrets().Informer(),
	} {
		_, _ = inf.AddEventHandler(handler)
		c.synced = append(c.synced, inf.HasSynced)
	}
	c.classes = v1.GatewayClasses().Lister()
	c.gateways = v1.Gateways().Lister()
	c.routes = v1.HTTPRoutes().Lister()
	c.grants = v1.ReferenceGrants().Lister()
	c.svcs = c.kf.Core().V1().Services().Informer().GetIndexer()
	c.slices = c.kf.Discovery().V1().EndpointSlices().Informer().GetIndexer()
	c.nss = c.kf.Core().V1().Namespaces().Informer().GetIndexer()
	c.secrets = c.sf.Core().V1().Secrets().Informer().GetIndexer()
	return c
}

// EnsureClass creates the GatewayClass cci and the namespace of the
// gateways' Services.
func EnsureClass(ctx context.Context, kube kubernetes.Interface, gw gatewayclient.Interface) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %q: %w", Namespace, err)
	}
	gc := &gatewayv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: ClassName},
		Spec: gatewayv1.GatewayClassSpec{
			ControllerName: ControllerName,
			Description:    ptr.To("CCI: pool addresses, HTTP and HTTPS proxy in the control plane"),
		},
	}
	if _, err := gw.GatewayV1().GatewayClasses().Create(ctx, gc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create GatewayClass %q: %w", ClassName, err)
	}
	return nil
}

// Run serves until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	defer c.dp.Close()
	c.kf.Start(ctx.Done())
	c.gf.Start(ctx.Done())
	c.sf.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	c.log.Info("gateway controller running", "proxy address", c.dp.Addr())
	c.queue.Add("all")
	go func() {
		for {
			k, quit := c.queue.Get()
			if quit {
				return
			}
			if err := c.sync(ctx); err != nil {
				utilruntime.HandleErrorWithContext(ctx, err, "gateway sync")
				c.queue.AddRateLimited(k)
			} else {
				c.queue.Forget(k)
			}
			c.queue.Done(k)
		}
	}()
	<-ctx.Done()
	return nil
}

// gwState is one Gateway as a sync pass sees it.
type gwState struct {
	gw        *gatewayv1.Gateway
	status    gatewayv1.GatewayStatus
	listeners map[gatewayv1.SectionName]*lstate
	// routes per listener port
	routes map[int32][]RouteSpec
	proxy  map[int32]int // listener port → proxy port
	// https: the ports of HTTPS listeners; certs: their certificates
	https    map[int32]bool
	certs    map[int32][]ListenerCerts
	address  string
	addrWhy  string
	accepted bool
	// conflict, when set, says which other Gateway holds the address and
	// ports this one asks for (Programmed=False, AddressNotUsable);
	// conflictPorts are those ports (their listeners are Conflicted).
	conflict      string
	conflictPorts map[int32]bool
}

// ListenerReasonAddressConflict is the reason of a listener's
// Conflicted=True when another Gateway holds (or asked first for) the
// address and port it asks for. The spec's reasons are about listeners of
// one Gateway; it lets implementations add their own.
const ListenerReasonAddressConflict = "AddressConflict"

type lstate struct {
	l  gatewayv1.Listener
	ok bool
	// refsOK: the listener's certificateRefs resolve (always true for
	// HTTP); a listener whose refs do not is not programmed.
	refsOK   bool
	attached int32
	status   *gatewayv1.ListenerStatus
}

func gwKey(ns, name string) string { return ns + "/" + name }

// ServiceName is the name of a Gateway's load-balancer Service in
// Namespace.
func ServiceName(ns, name string) string {
	h := sha256.Sum256([]byte(gwKey(ns, name)))
	return "gw-" + hex.EncodeToString(h[:8])
}

func (c *Controller) sync(ctx context.Context) error {
	var errs []error
	ours := map[string]bool{}
	classes, _ := c.classes.List(labels.Everything())
	for _, gc := range classes {
		if gc.Spec.ControllerName != ControllerName {
			continue
		}
		ours[gc.Name] = true
		st := gc.Status.DeepCopy()
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: string(gatewayv1.GatewayClassConditionStatusAccepted), Status: metav1.ConditionTrue,
			Reason: string(gatewayv1.GatewayClassReasonAccepted), Message: "served by CCI's gateway controller", ObservedGeneration: gc.Generation})
		if !apiequality.Semantic.DeepEqual(st, &gc.Status) {
			cp := gc.DeepCopy()
			cp.Status = *st
			if _, err := c.gw.GatewayV1().GatewayClasses().UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("GatewayClass %s status: %w", gc.Name, err))
			}
		}
	}

	gws := map[string]*gwState{}
	all, _ := c.gateways.List(labels.Everything())
	for _, g := range all {
		if !ours[string(g.Spec.GatewayClassName)] {
			continue
		}
		gws[gwKey(g.Namespace, g.Name)] = c.gatewayState(ctx, g)
	}
	markConflicts(gws)
	c.pruneCerts(gws)

	// Routes attach to listeners; their status is written below.
	routes, _ := c.routes.List(labels.Everything())
	sort.Slice(routes, func(i, j int) bool {
		return gwKey(routes[i].Namespace, routes[i].Name) < gwKey(routes[j].Namespace, routes[j].Name)
	})
	type routeStatus struct {
		r       *gatewayv1.HTTPRoute
		parents []gatewayv1.RouteParentStatus
	}
	var rstats []routeStatus
	for _, r := range routes {
		parents := c.attach(r, gws)
		rstats = append(rstats, routeStatus{r, parents})
	}

	// Services (addresses), then the data plane, then status.
	tables := map[int]*Table{}
	for _, st := range gws {
		if !st.accepted {
			continue
		}
		if err := c.ensureService(ctx, st); err != nil {
			errs = append(errs, err)
		}
		for port, proxyPort := range st.proxy {
			if proxyPort == 0 {
				continue // ensureService failed before it opened the port
			}
			t, err := Compile(port, st.routes[port])
			if err != nil {
				// attach compiled each route alone, so this does not happen.
				errs = append(errs, err)
				continue
			}
			if st.https[port] {
				// Set even without a valid certificate: an HTTPS port
				// never falls back to plain HTTP.
				t.TLS = NewCerts(st.certs[port])
			}
			tables[proxyPort] = t
		}
	}
	if err := c.dp.Set(tables); err != nil {
		errs = append(errs, err)
	}
	// A Gateway whose address is this host's is served on it directly.
	direct := map[string]int{}
	local := localAddrs()
	for _, st := range gws {
		svc := c.service(ServiceName(st.gw.Namespace, st.gw.Name))
		if !st.accepted || svc == nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
			continue
		}
		ip, err := netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
		if err != nil || !local[ip] {
			continue
		}
		for port, proxyPort := range st.proxy {
			if proxyPort != 0 {
				direct[netip.AddrPortFrom(ip, uint16(port)).String()] = proxyPort
			}
		}
	}
	c.dp.SetDirect(direct)
	c.pruneServices(ctx, gws)

	for _, st := range gws {
		if err := c.writeGatewayStatus(ctx, st); err != nil {
			errs = append(errs, err)
		}
	}
	for _, rs := range rstats {
		if err := c.writeRouteStatus(ctx, rs.r, rs.parents); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// gatewayState validates a Gateway's listeners and picks their proxy ports.
func (c *Controller) gatewayState(ctx context.Context, g *gatewayv1.Gateway) *gwState {
	st := &gwState{gw: g, listeners: map[gatewayv1.SectionName]*lstate{}, routes: map[int32][]RouteSpec{}, proxy: map[int32]int{},
		https: map[int32]bool{}, certs: map[int32][]ListenerCerts{}, accepted: true}
	svc := c.service(ServiceName(g.Namespace, g.Name))
	existing := map[int32]int{}
	if svc != nil {
		for _, p := range svc.Spec.Ports {
			existing[p.Port] = p.TargetPort.IntValue()
		}
		if len(svc.Status.LoadBalancer.Ingress) > 0 {
			st.address = svc.Status.LoadBalancer.Ingress[0].IP
		}
	}
	for _, a := range g.Spec.Addresses {
		if a.Type != nil && *a.Type != gatewayv1.IPAddressType {
			st.accepted = false
			st.addrWhy = fmt.Sprintf("address type %q is not supported: CCI's gateways take IP addresses of the load-balancer pool", *a.Type)
		} else if _, err := netip.ParseAddr(a.Value); err != nil {
			st.accepted = false
			st.addrWhy = fmt.Sprintf("address %q is not an IP address", a.Value)
		}
	}
	if len(g.Spec.Addresses) > 1 {
		st.accepted = false
		st.addrWhy = "CCI gives a Gateway one address; list at most one in spec.addresses"
	}
	hostsOnPort := map[int32]map[string]int{}
	// The protocol of a port is its first listener's: one socket serves
	// either plain HTTP or TLS.
	protoOfPort := map[int32]gatewayv1.ProtocolType{}
	for _, l := range g.Spec.Listeners {
		if _, ok := protoOfPort[l.Port]; !ok && supported(l.Protocol) {
			protoOfPort[l.Port] = l.Protocol
		}
		h := ""
		if l.Hostname != nil {
			h = string(*l.Hostname)
		}
		if hostsOnPort[l.Port] == nil {
			hostsOnPort[l.Port] = map[string]int{}
		}
		hostsOnPort[l.Port][h]++
	}
	for _, l := range g.Spec.Listeners {
		ls := &lstate{l: l, ok: true, refsOK: true, status: &gatewayv1.ListenerStatus{Name: l.Name, Conditions: []metav1.Condition{}}}
		st.listeners[l.Name] = ls
		gen := g.Generation
		cond := func(t string, ok bool, reason, msg string) {
			s := metav1.ConditionTrue
			if !ok {
				s = metav1.ConditionFalse
			}
			meta.SetStatusCondition(&ls.status.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
		}
		h := ""
		if l.Hostname != nil {
			h = string(*l.Hostname)
		}
		kindsOK := true
		var kinds []gatewayv1.RouteGroupKind
		if l.AllowedRoutes != nil {
			kinds = l.AllowedRoutes.Kinds
		}
		for _, k := range kinds {
			if (k.Group == nil || *k.Group == group) && k.Kind == "HTTPRoute" {
				ls.status.SupportedKinds = append(ls.status.SupportedKinds, gatewayv1.RouteGroupKind{Group: ptr.To(gatewayv1.Group(group)), Kind: "HTTPRoute"})
			} else {
				kindsOK = false
			}
		}
		if len(kinds) == 0 {
			ls.status.SupportedKinds = []gatewayv1.RouteGroupKind{{Group: ptr.To(gatewayv1.Group(group)), Kind: "HTTPRoute"}}
		}
		switch {
		case !supported(l.Protocol):
			ls.ok = false
			ls.status.SupportedKinds = []gatewayv1.RouteGroupKind{}
			cond(string(gatewayv1.ListenerConditionAccepted), false, string(gatewayv1.ListenerReasonUnsupportedProtocol),
				fmt.Sprintf("protocol %q is not supported yet: CCI's gateway serves HTTP and HTTPS listeners (TLS terminated at the gateway; no TLS passthrough)", l.Protocol))
			cond(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "the listener is not accepted")
			cond(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "")
			cond(string(gatewayv1.ListenerConditionConflicted), false, string(gatewayv1.ListenerReasonNoConflicts), "")
			continue
		case hostsOnPort[l.Port][h] > 1:
			ls.ok = false
			cond(string(gatewayv1.ListenerConditionConflicted), true, string(gatewayv1.ListenerReasonHostnameConflict),
				fmt.Sprintf("another listener of this Gateway has port %d and the same hostname; give each a distinct hostname", l.Port))
			cond(string(gatewayv1.ListenerConditionAccepted), false, string(gatewayv1.ListenerReasonHostnameConflict), "the listener conflicts with another")
			cond(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "the listener conflicts with another")
			cond(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "")
			continue
		case protoOfPort[l.Port] != l.Protocol:
			ls.ok = false
			cond(string(gatewayv1.ListenerConditionConflicted), true, string(gatewayv1.ListenerReasonProtocolConflict),
				fmt.Sprintf("port %d is %s by an earlier listener of this Gateway; give this %s listener another port", l.Port, protoOfPort[l.Port], l.Protocol))
			cond(string(gatewayv1.ListenerConditionAccepted), false, string(gatewayv1.ListenerReasonProtocolConflict), "the listener conflicts with another")
			cond(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "the listener conflicts with another")
			cond(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "")
			continue
		case l.Protocol == gatewayv1.HTTPSProtocolType && l.TLS != nil && l.TLS.Mode != nil && *l.TLS.Mode != gatewayv1.TLSModeTerminate:
			ls.ok = false
			cond(string(gatewayv1.ListenerConditionAccepted), false, string(gatewayv1.ListenerReasonUnsupportedValue),
				fmt.Sprintf("tls.mode %q: an HTTPS listener terminates TLS; use mode Terminate (or leave it out)", *l.TLS.Mode))
			cond(string(gatewayv1.ListenerConditionProgrammed), false, string(gatewayv1.ListenerReasonInvalid), "the listener is not accepted")
			cond(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "")
			cond(string(gatewayv1.ListenerConditionConflicted), false, string(gatewayv1.ListenerReasonNoConflicts), "")
			continue
		}
		cond(string(gatewayv1.ListenerConditionConflicted), false, string(gatewayv1.ListenerReasonNoConflicts), "")
		cond(string(gatewayv1.ListenerConditionAccepted), true, string(gatewayv1.ListenerReasonAccepted), "")
		var certs []tls.Certificate
		refReason, refMsg := gatewayv1.ListenerReasonResolvedRefs, ""
		if l.Protocol == gatewayv1.HTTPSProtocolType {
			st.https[l.Port] = true
			certs, refReason, refMsg = c.listenerCerts(ctx, g, l)
			if refReason != gatewayv1.ListenerReasonResolvedRefs {
				ls.refsOK, certs = false, nil
			}
			st.certs[l.Port] = append(st.certs[l.Port], ListenerCerts{Hostname: h, Certs: certs})
		}
		switch {
		case !kindsOK:
			cond(string(gatewayv1.ListenerConditionResolvedRefs), false, string(gatewayv1.ListenerReasonInvalidRouteKinds), "CCI's gateway serves HTTPRoutes only")
		case !ls.refsOK:
			cond(string(gatewayv1.ListenerConditionResolvedRefs), false, string(refReason), refMsg)
		default:
			cond(string(gatewayv1.ListenerConditionResolvedRefs), true, string(gatewayv1.ListenerReasonResolvedRefs), "")
		}
		if _, ok := st.proxy[l.Port]; !ok {
			st.proxy[l.Port] = existing[l.Port]
		}
	}
	return st
}

func (c *Controller) service(name string) *corev1.Service {
	obj, ok, _ := c.svcs.GetByKey(Namespace + "/" + name)
	if !ok {
		return nil
	}
	return obj.(*corev1.Service)
}

// attach attaches a route to the listeners its parentRefs name and
// returns its parents' status.
func (c *Controller) attach(r *gatewayv1.HTTPRoute, gws map[string]*gwState) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	backends, resolved := c.resolve(r)
	for _, ref := range r.Spec.ParentRefs {
		if ref.Group != nil && *ref.Group != group || ref.Kind != nil && *ref.Kind != "Gateway" {
			continue
		}
		ns := r.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		st := gws[gwKey(ns, string(ref.Name))]
		if st == nil {
			// Not a Gateway of ours (or none): its controller answers.
			continue
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName, Conditions: []metav1.Condition{}}
		set := func(t gatewayv1.RouteConditionType, ok bool, reason gatewayv1.RouteConditionReason, msg string) {
			s := metav1.ConditionTrue
			if !ok {
				s = metav1.ConditionFalse
			}
			meta.SetStatusCondition(&ps.Conditions, metav1.Condition{Type: string(t), Status: s, Reason: string(reason), Message: msg, ObservedGeneration: r.Generation})
		}
		set(gatewayv1.RouteConditionResolvedRefs, resolved.ok, resolved.reason, resolved.msg)
		reason, msg := c.attachTo(r, ref, st, backends)
		set(gatewayv1.RouteConditionAccepted, reason == gatewayv1.RouteReasonAccepted, reason, msg)
		out = append(out, ps)
	}
	return out
}

// attachTo adds the route to the matching listeners of one Gateway; it
// returns the Accepted reason.
func (c *Controller) attachTo(r *gatewayv1.HTTPRoute, ref gatewayv1.ParentReference, st *gwState, backends [][]*Backend) (gatewayv1.RouteConditionReason, string) {
	if !st.accepted {
		return gatewayv1.RouteReasonPending, "the Gateway is not accepted"
	}
	matched, allowed, hostOK := 0, 0, 0
	attachedPorts := map[int32]bool{}
	var spec *RouteSpec
	names := make([]gatewayv1.SectionName, 0, len(st.listeners))
	for n := range st.listeners {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		ls := st.listeners[n]
		if ref.SectionName != nil && *ref.SectionName != ls.l.Name || ref.Port != nil && *ref.Port != ls.l.Port {
			continue
		}
		matched++
		if !ls.ok || !c.allows(ls.l, st.gw.Namespace, r.Namespace) {
			continue
		}
		allowed++
		hosts, ok := intersect(ls.l.Hostname, r.Spec.Hostnames)
		if !ok {
			continue
		}
		hostOK++
		if spec == nil {
			s := routeSpec(r, backends)
			// Compile the route alone: an invalid regular expression
			// refuses this route and leaves the others in service.
			if _, err := Compile(0, []RouteSpec{s}); err != nil {
				return gatewayv1.RouteReasonUnsupportedValue, err.Error() + "; fix the route"
			}
			spec = &s
		}
		s := *spec
		s.Hostnames = hosts
		st.routes[ls.l.Port] = append(st.routes[ls.l.Port], s)
		ls.attached++
		attachedPorts[ls.l.Port] = true
	}
	switch {
	case matched == 0:
		return gatewayv1.RouteReasonNoMatchingParent, "no listener of the Gateway has the parentRef's sectionName and port"
	case allowed == 0:
		return gatewayv1.RouteReasonNotAllowedByListeners, "no listener of the Gateway allows HTTPRoutes of namespace " + r.Namespace
	case hostOK == 0:
		return gatewayv1.RouteReasonNoMatchingListenerHostname, "no hostname of the route matches a listener's hostname"
	}
	return gatewayv1.RouteReasonAccepted, ""
}

// allows says whether a listener takes routes of namespace routeNS.
func (c *Controller) allows(l gatewayv1.Listener, gwNS, routeNS string) bool {
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if l.AllowedRoutes != nil && l.AllowedRoutes.Namespaces != nil {
		if l.AllowedRoutes.Namespaces.From != nil {
			from = *l.AllowedRoutes.Namespaces.From
		}
		sel = l.AllowedRoutes.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSame:
		return gwNS == routeNS
	case gatewayv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		obj, ok, _ := c.nss.GetByKey(routeNS)
		return ok && s.Matches(labels.Set(obj.(*corev1.Namespace).Labels))
	}
	return false
}

// intersect is the hostnames a route serves on a listener; false when
// none match.
func intersect(listener *gatewayv1.Hostname, route []gatewayv1.Hostname) ([]string, bool) {
	if listener == nil || *listener == "" {
		out := make([]string, 0, len(route))
		for _, h := range route {
			out = append(out, string(h))
		}
		return out, true
	}
	l := strings.ToLower(string(*listener))
	if len(route) == 0 {
		return []string{l}, true
	}
	var out []string
	for _, rh := range route {
		h := strings.ToLower(string(rh))
		switch {
		case h == l:
			out = append(out, h)
		case strings.HasPrefix(l, "*.") && !strings.HasPrefix(h, "*.") && strings.HasSuffix(h, l[1:]):
			out = append(out, h)
		case strings.HasPrefix(h, "*.") && !strings.HasPrefix(l, "*.") && strings.HasSuffix(l, h[1:]):
			out = append(out, l)
		case strings.HasPrefix(l, "*.") && strings.HasPrefix(h, "*.") && strings.HasSuffix(h, l[1:]):
			out = append(out, h)
		case strings.HasPrefix(l, "*.") && strings.HasPrefix(h, "*.") && strings.HasSuffix(l, h[1:]):
			out = append(out, l)
		}
	}
	return out, len(out) > 0
}

func routeSpec(r *gatewayv1.HTTPRoute, backends [][]*Backend) RouteSpec {
	s := RouteSpec{Namespace: r.Namespace, Name: r.Name, Created: r.CreationTimestamp.Time}
	for i, rule := range r.Spec.Rules {
		rs := RuleSpec{Matches: rule.Matches, Filters: rule.Filters, Backends: backends[i]}
		if rule.Timeouts != nil && rule.Timeouts.Request != nil {
			if d, err := time.ParseDuration(string(*rule.Timeouts.Request)); err == nil {
				rs.Timeout = d
			}
		}
		if rt := rule.Retry; rt != nil {
			// Defaults the spec leaves to implementations: one retry
			// after 25 ms (Envoy's base interval).
			p := &RetryPolicy{Attempts: ptr.Deref(rt.Attempts, 1), Backoff: 25 * time.Millisecond}
			for _, code := range rt.Codes {
				p.Codes = append(p.Codes, int(code))
			}
			if rt.Backoff != nil {
				if d, err := time.ParseDuration(string(*rt.Backoff)); err == nil {
					p.Backoff = d
				}
			}
			rs.Retry = p
		}
		s.Rules = append(s.Rules, rs)
	}
	return s
}

type resolution struct {
	ok     bool
	reason gatewayv1.RouteConditionReason
	msg    string
}

// resolve resolves every backendRef of a route. A ref that does not
// resolve stays in the rule with Status 500, so that its share of the
// traffic fails as the spec says and the other backends keep theirs.
func (c *Controller) resolve(r *gatewayv1.HTTPRoute) ([][]*Backend, resolution) {
	res := resolution{ok: true, reason: gatewayv1.RouteReasonResolvedRefs}
	var problems []string
	out := make([][]*Backend, len(r.Spec.Rules))
	for i, rule := range r.Spec.Rules {
		for _, br := range rule.BackendRefs {
			b, reason, why := c.backend(r, br.BackendObjectReference)
			if br.Weight != nil {
				b.Weight = *br.Weight
			} else {
				b.Weight = 1
			}
			if why != "" {
				b.Status = 500
				if res.ok {
					res.ok, res.reason = false, reason
				}
				problems = append(problems, why)
			}
			out[i] = append(out[i], b)
		}
	}
	if len(problems) > 0 {
		res.msg = strings.Join(problems, "; ")
	}
	return out, res
}

func (c *Controller) backend(r *gatewayv1.HTTPRoute, ref gatewayv1.BackendObjectReference) (*Backend, gatewayv1.RouteConditionReason, string) {
	ns := r.Namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	port := int32(0)
	if ref.Port != nil {
		port = int32(*ref.Port)
	}
	b := &Backend{Name: fmt.Sprintf("%s/%s:%d", ns, ref.Name, port)}
	if ref.Group != nil && *ref.Group != "" || ref.Kind != nil && *ref.Kind != "Service" {
		return b, gatewayv1.RouteReasonInvalidKind, fmt.Sprintf("backendRef %s: only Services (group \"\", kind Service) are supported", ref.Name)
	}
	if ns != r.Namespace && !c.granted("HTTPRoute", r.Namespace, ns, "Service", string(ref.Name)) {
		return b, gatewayv1.RouteReasonRefNotPermitted, fmt.Sprintf("backendRef %s/%s: no ReferenceGrant in namespace %s lets HTTPRoutes of namespace %s reach it; its owner may create one", ns, ref.Name, ns, r.Namespace)
	}
	obj, ok, _ := c.svcs.GetByKey(ns + "/" + string(ref.Name))
	if !ok {
		return b, gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("backendRef %s/%s: Service not found", ns, ref.Name)
	}
	svc := obj.(*corev1.Service)
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return b, gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("backendRef %s/%s: the Service has no port %d", ns, ref.Name, port)
	}
	b.H2C = sp.AppProtocol != nil && *sp.AppProtocol == "kubernetes.io/h2c"
	sliceObjs, _ := c.slices.ByIndex(cache.NamespaceIndex, ns)
	for _, o := range sliceObjs {
		es := o.(*discoveryv1.EndpointSlice)
		if es.Labels[discoveryv1.LabelServiceName] != svc.Name || es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var epPort int32
		for _, p := range es.Ports {
			if ptr.Deref(p.Name, "") == sp.Name && ptr.Deref(p.Protocol, corev1.ProtocolTCP) == corev1.ProtocolTCP && p.Port != nil {
				epPort = *p.Port
			}
		}
		if epPort == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					b.Endpoints = append(b.Endpoints, netip.AddrPortFrom(ip, uint16(epPort)).String())
				}
			}
		}
	}
	slices.Sort(b.Endpoints)
	b.Endpoints = slices.Compact(b.Endpoints)
	return b, "", ""
}

// granted says whether a ReferenceGrant in toNS lets objects of kind
// fromKind (of the Gateway API group) in fromNS reach the core object
// toKind/name: HTTPRoute → Service, Gateway → Secret.
func (c *Controller) granted(fromKind, fromNS, toNS, toKind, name string) bool {
	grants, _ := c.grants.ReferenceGrants(toNS).List(labels.Everything())
	for _, g := range grants {
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return f.Group == group && string(f.Kind) == fromKind && string(f.Namespace) == fromNS
		})
		to := slices.ContainsFunc(g.Spec.To, func(t gatewayv1.ReferenceGrantTo) bool {
			return t.Group == "" && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == name)
		})
		if from && to {
			return true
		}
	}
	return false
}

// ensureService keeps a Gateway's load-balancer Service and its
// EndpointSlice: the ELB gives the Service an address of the pool and the
// service proxy of every host sends its ports to the data plane's proxy
// ports. Proxy ports are opened here first, so the Service never points
// at a closed port.
func (c *Controller) ensureService(ctx context.Context, st *gwState) error {
	g := st.gw
	name := ServiceName(g.Namespace, g.Name)
	ports := make([]int32, 0, len(st.proxy))
	for p := range st.proxy {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	var svcPorts []corev1.ServicePort
	var epPorts []discoveryv1.EndpointPort
	for _, p := range ports {
		pp, err := c.dp.Reserve(st.proxy[p])
		if err != nil {
			return fmt.Errorf("Gateway %s/%s port %d: %w", g.Namespace, g.Name, p, err)
		}
		st.proxy[p] = pp
		pn := fmt.Sprintf("p%d", p)
		svcPorts = append(svcPorts, corev1.ServicePort{Name: pn, Port: p, TargetPort: intstr.FromInt32(int32(pp)), Protocol: corev1.ProtocolTCP})
		epPorts = append(epPorts, discoveryv1.EndpointPort{Name: ptr.To(pn), Port: ptr.To(int32(pp)), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	if len(svcPorts) == 0 {
		return nil
	}
	want := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace,
			Labels:      map[string]string{labelManaged: "true"},
			Annotations: map[string]string{annoGateway: gwKey(g.Namespace, g.Name)}},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			Ports:                         svcPorts,
			AllocateLoadBalancerNodePorts: ptr.To(false),
		},
	}
	if len(g.Spec.Addresses) == 1 {
		want.Spec.LoadBalancerIP = g.Spec.Addresses[0].Value
	}
	cur := c.service(name)
	switch {
	case cur == nil:
		if _, err := c.kube.CoreV1().Services(Namespace).Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create load-balancer Service of Gateway %s/%s: %w", g.Namespace, g.Name, err)
		}
	case !apiequality.Semantic.DeepEqual(cur.Spec.Ports, want.Spec.Ports) || cur.Spec.LoadBalancerIP != want.Spec.LoadBalancerIP || cur.Annotations[annoGateway] != want.Annotations[annoGateway]:
		cp := cur.DeepCopy()
		cp.Spec.Ports, cp.Spec.LoadBalancerIP, cp.Annotations = want.Spec.Ports, want.Spec.LoadBalancerIP, want.Annotations
		if _, err := c.kube.CoreV1().Services(Namespace).Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update load-balancer Service of Gateway %s/%s: %w", g.Namespace, g.Name, err)
		}
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "cci-gateway", labelManaged: "true"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{c.dp.Addr()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       epPorts,
	}
	if ip, err := netip.ParseAddr(c.dp.Addr()); err == nil && ip.Is6() {
		es.AddressType = discoveryv1.AddressTypeIPv6
	}
	obj, ok, _ := c.slices.GetByKey(Namespace + "/" + name)
	switch {
	case !ok:
		if _, err := c.kube.DiscoveryV1().EndpointSlices(Namespace).Create(ctx, es, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create EndpointSlice of Gateway %s/%s: %w", g.Namespace, g.Name, err)
		}
	default:
		cur := obj.(*discoveryv1.EndpointSlice)
		if !apiequality.Semantic.DeepEqual(cur.Endpoints, es.Endpoints) || !apiequality.Semantic.DeepEqual(cur.Ports, es.Ports) {
			cp := cur.DeepCopy()
			cp.Endpoints, cp.Ports = es.Endpoints, es.Ports
			if _, err := c.kube.DiscoveryV1().EndpointSlices(Namespace).Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("update EndpointSlice of Gateway %s/%s: %w", g.Namespace, g.Name, err)
			}
		}
	}
	return nil
}

// pruneServices deletes the Services of Gateways that are gone (a
// cross-namespace owner reference is not allowed, so the garbage
// collector cannot).
func (c *Controller) pruneServices(ctx context.Context, gws map[string]*gwState) {
	objs, _ := c.svcs.ByIndex(cache.NamespaceIndex, Namespace)
	for _, o := range objs {
		s := o.(*corev1.Service)
		if s.Labels[labelManaged] != "true" {
			continue
		}
		if st := gws[s.Annotations[annoGateway]]; st != nil && st.accepted {
			continue
		}
		err := c.kube.CoreV1().Services(Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			_ = c.kube.DiscoveryV1().EndpointSlices(Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
			c.log.Info("gateway load-balancer Service removed", "gateway", s.Annotations[annoGateway])
		}
	}
}

func (c *Controller) writeGatewayStatus(ctx context.Context, st *gwState) error {
	g := st.gw
	s := c.gatewayStatus(st)
	if apiequality.Semantic.DeepEqual(s, &g.Status) {
		return nil
	}
	cp := g.DeepCopy()
	cp.Status = *s
	if _, err := c.gw.GatewayV1().Gateways(g.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("Gateway %s/%s status: %w", g.Namespace, g.Name, err)
	}
	return nil
}

// gatewayStatus is the status a Gateway should have.
func (c *Controller) gatewayStatus(st *gwState) *gatewayv1.GatewayStatus {
	g := st.gw
	s := g.Status.DeepCopy()
	set := func(t gatewayv1.GatewayConditionType, ok bool, reason gatewayv1.GatewayConditionReason, msg string) {
		v := metav1.ConditionTrue
		if !ok {
			v = metav1.ConditionFalse
		}
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: string(t), Status: v, Reason: string(reason), Message: msg, ObservedGeneration: g.Generation})
	}
	if !st.accepted {
		set(gatewayv1.GatewayConditionAccepted, false, gatewayv1.GatewayReasonUnsupportedAddress, st.addrWhy)
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "the Gateway is not accepted")
	} else if ok, reason, msg := listenersAccepted(st); !ok {
		set(gatewayv1.GatewayConditionAccepted, false, reason, msg)
		set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "the Gateway is not accepted")
		s.Addresses = nil
	} else {
		set(gatewayv1.GatewayConditionAccepted, true, reason, msg)
		svc := c.service(ServiceName(g.Namespace, g.Name))
		addr := ""
		if svc != nil && len(svc.Status.LoadBalancer.Ingress) > 0 {
			addr = svc.Status.LoadBalancer.Ingress[0].IP
		}
		switch {
		case addr == "" && st.conflict != "":
			set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonAddressNotUsable, st.conflict)
			s.Addresses = nil
		case addr == "":
			set(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonAddressNotAssigned,
				fmt.Sprintf("waiting for an address of the load-balancer pool with the listeners' ports free (see the events of Service %s/%s)", Namespace, ServiceName(g.Namespace, g.Name)))
			s.Addresses = nil
		default:
			set(gatewayv1.GatewayConditionProgrammed, true, gatewayv1.GatewayReasonProgrammed, "")
			s.Addresses = []gatewayv1.GatewayStatusAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: addr}}
		}
		st.address = addr
	}
	s.Listeners = nil
	for _, l := range g.Spec.Listeners {
		ls := st.listeners[l.Name]
		if ls == nil {
			continue
		}
		ls.status.AttachedRoutes = ls.attached
		if ls.ok {
			prog, reason, msg := st.address != "", gatewayv1.ListenerReasonProgrammed, ""
			switch {
			case !ls.refsOK:
				prog, reason, msg = false, gatewayv1.ListenerReasonInvalid, "the listener's certificateRefs do not resolve (see its ResolvedRefs condition); it serves no certificate"
			case !prog && st.conflict != "":
				reason, msg = gatewayv1.ListenerReasonPending, "the Gateway's address is not usable (see its Programmed condition)"
				if st.conflictPorts[int32(l.Port)] {
					meta.SetStatusCondition(&ls.status.Conditions, metav1.Condition{Type: string(gatewayv1.ListenerConditionConflicted), Status: metav1.ConditionTrue,
						Reason: ListenerReasonAddressConflict, Message: st.conflict, ObservedGeneration: g.Generation})
				}
			case !prog:
				reason, msg = gatewayv1.ListenerReasonPending, "the Gateway has no address yet"
			}
			v := metav1.ConditionTrue
			if !prog {
				v = metav1.ConditionFalse
			}
			meta.SetStatusCondition(&ls.status.Conditions, metav1.Condition{Type: string(gatewayv1.ListenerConditionProgrammed), Status: v, Reason: string(reason), Message: msg, ObservedGeneration: g.Generation})
		}
		// Keep transition times of conditions that did not change.
		for _, old := range g.Status.Listeners {
			if old.Name != l.Name {
				continue
			}
			for i, cnd := range ls.status.Conditions {
				if o := meta.FindStatusCondition(old.Conditions, cnd.Type); o != nil && o.Status == cnd.Status {
					ls.status.Conditions[i].LastTransitionTime = o.LastTransitionTime
				}
			}
		}
		s.Listeners = append(s.Listeners, *ls.status)
	}
	return s
}

func (c *Controller) writeRouteStatus(ctx context.Context, r *gatewayv1.HTTPRoute, parents []gatewayv1.RouteParentStatus) error {
	// Other controllers' entries stay; ours are replaced.
	var next []gatewayv1.RouteParentStatus
	for _, p := range r.Status.Parents {
		if p.ControllerName != ControllerName {
			next = append(next, p)
		}
	}
	for _, p := range parents {
		for _, old := range r.Status.Parents {
			if old.ControllerName == ControllerName && apiequality.Semantic.DeepEqual(old.ParentRef, p.ParentRef) {
				for i, cnd := range p.Conditions {
					if o := meta.FindStatusCondition(old.Conditions, cnd.Type); o != nil && o.Status == cnd.Status {
						p.Conditions[i].LastTransitionTime = o.LastTransitionTime
					}
				}
			}
		}
		next = append(next, p)
	}
	if next == nil {
		next = []gatewayv1.RouteParentStatus{}
	}
	if apiequality.Semantic.DeepEqual(next, r.Status.Parents) || len(next) == 0 && len(r.Status.Parents) == 0 {
		return nil
	}
	cp := r.DeepCopy()
	cp.Status.Parents = next
	if _, err := c.gw.GatewayV1().HTTPRoutes(r.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("HTTPRoute %s/%s status: %w", r.Namespace, r.Name, err)
	}
	return nil
}

// localAddrs are this host's addresses.
func localAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}

func supported(p gatewayv1.ProtocolType) bool {
	return p == gatewayv1.HTTPProtocolType || p == gatewayv1.HTTPSProtocolType
}

// listenerCerts resolves an HTTPS listener's certificateRefs. The reason
// is ResolvedRefs when every ref gives a certificate, RefNotPermitted when
// one names another namespace's Secret without a ReferenceGrant there
// (the spec puts it before every other reason), else
// InvalidCertificateRef; the message names each ref that failed and why.
func (c *Controller) listenerCerts(ctx context.Context, g *gatewayv1.Gateway, l gatewayv1.Listener) ([]tls.Certificate, gatewayv1.ListenerConditionReason, string) {
	if l.TLS == nil || len(l.TLS.CertificateRefs) == 0 {
		return nil, gatewayv1.ListenerReasonInvalidCertificateRef, "an HTTPS listener needs tls.certificateRefs naming a Secret of type kubernetes.io/tls"
	}
	var certs []tls.Certificate
	var problems []string
	notPermitted := false
	for _, ref := range l.TLS.CertificateRefs {
		ns := g.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if ref.Group != nil && *ref.Group != "" || ref.Kind != nil && *ref.Kind != "Secret" {
			problems = append(problems, fmt.Sprintf("certificateRef %s/%s: only Secrets (group \"\", kind Secret) are supported", ns, ref.Name))
			continue
		}
		if ns != g.Namespace && !c.granted("Gateway", g.Namespace, ns, "Secret", string(ref.Name)) {
			notPermitted = true
			problems = append(problems, fmt.Sprintf("certificateRef %s/%s: no ReferenceGrant in namespace %s lets Gateways of namespace %s use it; its owner may create one", ns, ref.Name, ns, g.Namespace))
			continue
		}
		cert, err := c.secretCert(ctx, ns, string(ref.Name))
		if err != nil {
			problems = append(problems, "certificateRef "+ns+"/"+string(ref.Name)+": "+err.Error())
			continue
		}
		certs = append(certs, cert)
	}
	switch {
	case notPermitted:
		return nil, gatewayv1.ListenerReasonRefNotPermitted, strings.Join(problems, "; ")
	case len(problems) > 0:
		return nil, gatewayv1.ListenerReasonInvalidCertificateRef, strings.Join(problems, "; ")
	}
	return certs, gatewayv1.ListenerReasonResolvedRefs, ""
}

// secretCert is the certificate of Secret ns/name, parsed once per
// resourceVersion: a renewed Secret is read again on the next sync, which
// its change triggers.
func (c *Controller) secretCert(ctx context.Context, ns, name string) (tls.Certificate, error) {
	k := ns + "/" + name
	obj, ok, _ := c.secrets.GetByKey(k)
	if !ok {
		// The informer holds kubernetes.io/tls Secrets only: ask the API
		// what the Secret is, to say what is wrong with it.
		s, err := c.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return tls.Certificate{}, fmt.Errorf("Secret %s not found; create it with `kubectl create secret tls %s -n %s --cert=… --key=…`", k, name, ns)
		case err != nil:
			return tls.Certificate{}, fmt.Errorf("read Secret %s: %w", k, err)
		}
		return parseTLSSecret(s)
	}
	s := obj.(*corev1.Secret)
	if cc, ok := c.certs[k]; ok && cc.rv == s.ResourceVersion {
		return cc.cert, cc.err
	}
	cert, err := parseTLSSecret(s)
	c.certs[k] = cachedCert{rv: s.ResourceVersion, cert: cert, err: err}
	return cert, err
}

// pruneCerts forgets the cached certificates no HTTPS listener names.
func (c *Controller) pruneCerts(gws map[string]*gwState) {
	used := map[string]bool{}
	for _, st := range gws {
		for _, l := range st.gw.Spec.Listeners {
			if l.TLS == nil {
				continue
			}
			for _, ref := range l.TLS.CertificateRefs {
				ns := st.gw.Namespace
				if ref.Namespace != nil {
					ns = string(*ref.Namespace)
				}
				used[ns+"/"+string(ref.Name)] = true
			}
		}
	}
	for k := range c.certs {
		if !used[k] {
			delete(c.certs, k)
		}
	}
}

// markConflicts finds Gateways that ask (spec.addresses) for an address
// another Gateway holds, or asks for too and is older, on a shared port:
// the ELB gives that address and port to one Service only, so the later
// one would wait without a word. It is not programmed, with
// AddressNotUsable naming the other Gateway. Its Service stays, so the
// ELB gives it the address once the other lets go of it. A Gateway that
// holds its address is never the one in conflict.
func markConflicts(gws map[string]*gwState) {
	norm := func(a string) string {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return a
		}
		return ip.Unmap().String()
	}
	keys := make([]string, 0, len(gws))
	for k := range gws {
		keys = append(keys, k)
	}
	// By creation time, then namespace/name: the older wins a tie.
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(gws[a].gw.CreationTimestamp.Time.Compare(gws[b].gw.CreationTimestamp.Time), strings.Compare(a, b))
	})
	rank := map[string]int{}
	for i, k := range keys {
		rank[k] = i
	}
	for _, k := range keys {
		st := gws[k]
		if !st.accepted || len(st.gw.Spec.Addresses) != 1 {
			continue
		}
		want := norm(st.gw.Spec.Addresses[0].Value)
		if st.address != "" && norm(st.address) == want {
			continue
		}
		for _, ok := range keys {
			o := gws[ok]
			if ok == k || !o.accepted {
				continue
			}
			holds := o.address != "" && norm(o.address) == want
			asks := o.address == "" && len(o.gw.Spec.Addresses) == 1 && norm(o.gw.Spec.Addresses[0].Value) == want && rank[ok] < rank[k]
			if !holds && !asks {
				continue
			}
			var shared []string
			ports := map[int32]bool{}
			for p := range st.proxy {
				if _, ok := o.proxy[p]; ok {
					shared = append(shared, strconv.Itoa(int(p)))
					ports[p] = true
				}
			}
			if len(shared) == 0 {
				continue
			}
			slices.Sort(shared)
			verb := "is held"
			if !holds {
				verb = "is asked for"
			}
			st.conflict = fmt.Sprintf("address %s %s with port %s by Gateway %s/%s; choose another address or other ports, or remove that Gateway (this one gets the address when it is free)",
				want, verb, strings.Join(shared, ", "), o.gw.Namespace, o.gw.Name)
			st.conflictPorts = ports
			break
		}
	}
}
