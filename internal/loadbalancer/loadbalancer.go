// Package loadbalancer is CCI's ELB: a controller of the control plane that
// gives each Service of type LoadBalancer an address from a configured pool
// and writes it to the Service's status.loadBalancer.ingress. The service
// proxy on every host (the upstream kube-proxy) then balances traffic to that
// address across the Service's Ready endpoints.
//
// One pool address serves many Services as long as their ports differ, so
// the default pool, the control-plane host's own address, works on one
// machine: `kubectl expose --type=LoadBalancer --port=80` makes
// http://<host>:80/ reach the pods. A port is free on an address when no
// other load-balanced Service uses it there, no Service holds it as a
// NodePort, and, for an address of this host, no process listens on it.
//
// Service lifecycle as this controller sees it:
//
//	created/updated ──► ports free on an address? ──yes──► ingress written, "IPAllocated"
//	       ▲                    │ no
//	       │                    ▼
//	       └── retried ◄── "AllocationFailed" event (which port, taken by whom)
//	deleted or no longer LoadBalancer ──► address released, ingress cleared
package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
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
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Class is the spec.loadBalancerClass this controller serves. Services
// without a class are served too; those naming another class are left to
// their own controller.
const Class = "cci.io/elb"

// Config of the controller.
type Config struct {
	// Pool is the addresses handed out, in order of preference.
	Pool []netip.Addr
	// Log receives the controller's messages.
	Log *slog.Logger
	// PortInUse says whether a process of this host listens on addr:port;
	// default: a bind test for addresses of this host, false for others.
	PortInUse func(addr netip.Addr, proto v1.Protocol, port int32) bool
}

// ParsePool reads pool entries: single addresses ("192.0.2.10") or
// prefixes ("192.0.2.16/28", whose usable host addresses are taken).
func ParsePool(entries []string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if !strings.Contains(e, "/") {
			a, err := netip.ParseAddr(e)
			if err != nil {
				return nil, fmt.Errorf("load-balancer pool entry %q: not an IP address or prefix (e.g. 192.0.2.10 or 192.0.2.16/28)", e)
			}
			add(a.Unmap())
			continue
		}
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("load-balancer pool entry %q: not an IP address or prefix (e.g. 192.0.2.10 or 192.0.2.16/28)", e)
		}
		p = p.Masked()
		hostBits := p.Addr().BitLen() - p.Bits()
		if hostBits > 16 {
			return nil, fmt.Errorf("load-balancer pool entry %q: more than 65536 addresses; use a smaller prefix", e)
		}
		a := p.Addr()
		n := 1 << hostBits
		for i := 0; i < n; i++ {
			// The network and broadcast addresses of an IPv4 subnet are
			// no host's.
			if p.Addr().Is4() && hostBits >= 2 && (i == 0 || i == n-1) {
				a = a.Next()
				continue
			}
			add(a)
			a = a.Next()
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the load-balancer pool is empty; give at least one address")
	}
	return out, nil
}

// portKey is one protocol and port.
type portKey struct {
	proto v1.Protocol
	port  int32
}

func (k portKey) String() string { return fmt.Sprintf("%d/%s", k.port, k.proto) }

// Controller hands out pool addresses.
type Controller struct {
	cfg      Config
	kube     kubernetes.Interface
	factory  informers.SharedInformerFactory
	lister   corelisters.ServiceLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	inPool   map[netip.Addr]bool

	mu sync.Mutex
	// owner of each port of each pool address, and each Service's address.
	owner map[netip.Addr]map[portKey]string
	addr  map[string]netip.Addr
}

// New builds a controller; Run starts it.
func New(kube kubernetes.Interface, cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.PortInUse == nil {
		cfg.PortInUse = hostPortInUse
	}
	factory := informers.NewSharedInformerFactory(kube, 10*time.Minute)
	svcInformer := factory.Core().V1().Services()
	c := &Controller{
		cfg:     cfg,
		kube:    kube,
		factory: factory,
		lister:  svcInformer.Lister(),
		synced:  svcInformer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "loadbalancer"}),
		inPool: map[netip.Addr]bool{},
		owner:  map[netip.Addr]map[portKey]string{},
		addr:   map[string]netip.Addr{},
	}
	for _, a := range cfg.Pool {
		c.inPool[a] = true
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	_, _ = svcInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	return c
}

// Run serves Services until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer c.queue.ShutDown()
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "cci-elb"})

	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return ctx.Err()
	}
	// Keep the addresses Services already hold, so that a restart moves none.
	svcs, err := c.lister.List(labels.Everything())
	if err != nil {
		return err
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].CreationTimestamp.Before(&svcs[j].CreationTimestamp) })
	for _, s := range svcs {
		if !c.serves(s) {
			continue
		}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil && c.inPool[a] && c.free(a, key(s), wanted(s), nil) == "" {
				c.take(key(s), a, wanted(s))
				break
			}
		}
	}
	c.cfg.Log.Info("load-balancer controller running", "pool", poolString(c.cfg.Pool))
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) worker(ctx context.Context) {
	for {
		k, quit := c.queue.Get()
		if quit {
			return
		}
		err := c.sync(ctx, k)
		if err != nil {
			utilruntime.HandleErrorWithContext(ctx, err, "load-balancer sync", "service", k)
			c.queue.AddRateLimited(k)
		} else {
			c.queue.Forget(k)
		}
		c.queue.Done(k)
	}
}

func key(s *v1.Service) string { return s.Namespace + "/" + s.Name }

// serves says whether the Service is this controller's.
func (c *Controller) serves(s *v1.Service) bool {
	if s.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	return s.Spec.LoadBalancerClass == nil || *s.Spec.LoadBalancerClass == Class
}

// wanted is the ports a Service needs on its address.
func wanted(s *v1.Service) []portKey {
	var out []portKey
	for _, p := range s.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = v1.ProtocolTCP
		}
		out = append(out, portKey{proto, p.Port})
	}
	return out
}

// nodePorts is every NodePort held by a Service other than self: kube-proxy
// serves those on the host addresses, which may be pool addresses.
func (c *Controller) nodePorts(self string) map[portKey]string {
	out := map[portKey]string{}
	svcs, _ := c.lister.List(labels.Everything())
	for _, s := range svcs {
		if key(s) == self {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.NodePort != 0 {
				proto := p.Protocol
				if proto == "" {
					proto = v1.ProtocolTCP
				}
				out[portKey{proto, p.NodePort}] = key(s)
			}
		}
	}
	return out
}

// free returns "" when every port is free for svc on a, else why not.
// Callers hold no lock; nodePorts may be nil.
func (c *Controller) free(a netip.Addr, svc string, ports []portKey, nodePorts map[portKey]string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	owned := c.addr[svc] == a
	for _, p := range ports {
		if o, ok := c.owner[a][p]; ok && o != svc {
			return fmt.Sprintf("port %s is taken on %s by Service %s", p, a, o)
		}
		if o, ok := nodePorts[p]; ok {
			return fmt.Sprintf("port %s is a NodePort of Service %s", p, o)
		}
		if !owned && c.cfg.PortInUse(a, p.proto, p.port) {
			return fmt.Sprintf("port %s is in use on %s by a process of the host", p, a)
		}
	}
	return ""
}

func (c *Controller) take(svc string, a netip.Addr, ports []portKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(svc)
	if c.owner[a] == nil {
		c.owner[a] = map[portKey]string{}
	}
	for _, p := range ports {
		c.owner[a][p] = svc
	}
	c.addr[svc] = a
}

func (c *Controller) release(svc string) (netip.Addr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.releaseLocked(svc)
}

func (c *Controller) releaseLocked(svc string) (netip.Addr, bool) {
	a, ok := c.addr[svc]
	if !ok {
		return netip.Addr{}, false
	}
	for p, o := range c.owner[a] {
		if o == svc {
			delete(c.owner[a], p)
		}
	}
	delete(c.addr, svc)
	return a, true
}

// sync brings one Service's address and status in line.
func (c *Controller) sync(ctx context.Context, k string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(k)
	if err != nil {
		return nil
	}
	s, err := c.lister.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		if a, ok := c.release(k); ok {
			c.cfg.Log.Info("load-balancer address released", "service", k, "address", a)
			c.requeueWaiting()
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !c.serves(s) {
		a, released := c.release(k)
		if released {
			c.cfg.Log.Info("load-balancer address released", "service", k, "address", a)
			c.requeueWaiting()
		}
		if released && s.Spec.LoadBalancerClass == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			return c.writeStatus(ctx, s, nil)
		}
		return nil
	}
	ports := wanted(s)
	if len(ports) == 0 {
		return nil
	}
	nodePorts := c.nodePorts(k)
	candidates := c.cfg.Pool
	if ip := s.Spec.LoadBalancerIP; ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil || !c.inPool[a.Unmap()] {
			c.failed(ctx, s, fmt.Sprintf("spec.loadBalancerIP %q is not an address of the load-balancer pool (%s); remove it or choose one of the pool", ip, poolString(c.cfg.Pool)))
			return nil
		}
		candidates = []netip.Addr{a.Unmap()}
	}
	// The address held now comes first, so that an update moves nothing.
	c.mu.Lock()
	cur, held := c.addr[k]
	c.mu.Unlock()
	if held && slices.Contains(candidates, cur) {
		candidates = append([]netip.Addr{cur}, slices.DeleteFunc(slices.Clone(candidates), func(a netip.Addr) bool { return a == cur })...)
	}
	var reasons []string
	for _, a := range candidates {
		why := c.free(a, k, ports, nodePorts)
		if why != "" {
			reasons = append(reasons, why)
			continue
		}
		c.take(k, a, ports)
		if !held || cur != a {
			c.recorder.Eventf(s, v1.EventTypeNormal, "IPAllocated", "Load-balancer address %s allocated for ports %s", a, portsString(ports))
			c.cfg.Log.Info("load-balancer address allocated", "service", k, "address", a, "ports", portsString(ports))
		}
		return c.writeStatus(ctx, s, ingress(a, ports))
	}
	if a, ok := c.release(k); ok {
		c.cfg.Log.Info("load-balancer address released", "service", k, "address", a)
	}
	msg := fmt.Sprintf("no address of the load-balancer pool (%s) has ports %s free: %s; use other ports, or add addresses to the pool (cci server --lb-pool)",
		poolString(candidates), portsString(ports), strings.Join(dedupe(reasons), "; "))
	c.failed(ctx, s, msg)
	return nil
}

// failed reports a Service that gets no address, and clears a stale one.
func (c *Controller) failed(ctx context.Context, s *v1.Service, msg string) {
	c.recorder.Event(s, v1.EventTypeWarning, "AllocationFailed", msg)
	c.cfg.Log.Warn("load-balancer address not allocated", "service", key(s), "reason", msg)
	if len(s.Status.LoadBalancer.Ingress) > 0 {
		if err := c.writeStatus(ctx, s, nil); err != nil {
			c.cfg.Log.Warn("clear load-balancer status", "service", key(s), "err", err)
		}
	}
}

// requeueWaiting retries the Services still waiting for an address after
// one was released.
func (c *Controller) requeueWaiting() {
	svcs, _ := c.lister.List(labels.Everything())
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range svcs {
		if _, ok := c.addr[key(s)]; !ok && c.serves(s) {
			c.queue.Add(key(s))
		}
	}
}

func ingress(a netip.Addr, ports []portKey) []v1.LoadBalancerIngress {
	vip := v1.LoadBalancerIPModeVIP
	in := v1.LoadBalancerIngress{IP: a.String(), IPMode: &vip}
	for _, p := range ports {
		in.Ports = append(in.Ports, v1.PortStatus{Port: p.port, Protocol: p.proto})
	}
	return []v1.LoadBalancerIngress{in}
}

func (c *Controller) writeStatus(ctx context.Context, s *v1.Service, in []v1.LoadBalancerIngress) error {
	if ingressEqual(s.Status.LoadBalancer.Ingress, in) {
		return nil
	}
	cp := s.DeepCopy()
	cp.Status.LoadBalancer.Ingress = in
	_, err := c.kube.CoreV1().Services(s.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("write load-balancer status of %s: %w", key(s), err)
	}
	return nil
}

func ingressEqual(a, b []v1.LoadBalancerIngress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].IP != b[i].IP || a[i].Hostname != b[i].Hostname || len(a[i].Ports) != len(b[i].Ports) {
			return false
		}
		for j := range a[i].Ports {
			if a[i].Ports[j].Port != b[i].Ports[j].Port || a[i].Ports[j].Protocol != b[i].Ports[j].Protocol {
				return false
			}
		}
		if (a[i].IPMode == nil) != (b[i].IPMode == nil) || a[i].IPMode != nil && *a[i].IPMode != *b[i].IPMode {
			return false
		}
	}
	return true
}

func portsString(ports []portKey) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func poolString(pool []netip.Addr) string {
	const show = 4
	s := make([]string, 0, show)
	for i, a := range pool {
		if i == show {
			s = append(s, fmt.Sprintf("and %d more", len(pool)-show))
			break
		}
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// hostPortInUse tries to bind addr:port when addr is one of this host's.
func hostPortInUse(a netip.Addr, proto v1.Protocol, port int32) bool {
	if !isLocal(a) {
		return false
	}
	hp := net.JoinHostPort(a.String(), strconv.Itoa(int(port)))
	switch proto {
	case v1.ProtocolUDP:
		pc, err := net.ListenPacket("udp", hp)
		if err != nil {
			return isAddrInUse(err)
		}
		pc.Close()
	case v1.ProtocolTCP:
		l, err := net.Listen("tcp", hp)
		if err != nil {
			return isAddrInUse(err)
		}
		l.Close()
	}
	return false
}

func isAddrInUse(err error) bool {
	return strings.Contains(err.Error(), "address already in use")
}

func isLocal(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}
