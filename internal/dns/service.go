package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1apply "k8s.io/client-go/applyconfigurations/discovery/v1"
	rbacv1apply "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/cci-project/cci/internal/pki"
)

const (
	// Namespace and ServiceName name the Service pods' resolv.conf points at.
	Namespace   = "kube-system"
	ServiceName = "kube-dns"
	// ManagedBy marks the EndpointSlice as ours, so that the EndpointSlice
	// controllers leave it alone. (A label value cannot hold a '/'.)
	ManagedBy = "cci.io-dns"
	// User is the apiserver identity of the kubernetes plugin; its rights
	// are what CoreDNS's own deployment grants it.
	User = pki.DNSUser

	fieldManager = "cci-dns"
)

// ClusterIP is the kube-dns Service's address: the 10th address of the
// Service range (10.43.0.10 for 10.43.0.0/16), as in kubeadm and k3s.
func ClusterIP(serviceCIDR string) (net.IP, error) {
	_, n, err := net.ParseCIDR(serviceCIDR)
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q: %w", serviceCIDR, err)
	}
	base := n.IP
	if v4 := base.To4(); v4 != nil {
		base = v4
	}
	ones, bits := n.Mask.Size()
	if bits-ones < 4 {
		return nil, fmt.Errorf("service CIDR %q is too small for a DNS address (its 10th)", serviceCIDR)
	}
	ip := new(big.Int).Add(new(big.Int).SetBytes(base), big.NewInt(10)).Bytes()
	out := make(net.IP, len(base))
	copy(out[len(out)-len(ip):], ip)
	return out, nil
}

// EnsureRBAC lets User read what the kubernetes plugin watches.
func EnsureRBAC(ctx context.Context, c kubernetes.Interface) error {
	apply := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	_, err := c.RbacV1().ClusterRoles().Apply(ctx, rbacv1apply.ClusterRole(User).WithRules(
		rbacv1apply.PolicyRule().WithAPIGroups("").WithResources("endpoints", "services", "pods", "namespaces").WithVerbs("list", "watch"),
		rbacv1apply.PolicyRule().WithAPIGroups("discovery.k8s.io").WithResources("endpointslices").WithVerbs("list", "watch"),
	), apply)
	if err != nil {
		return fmt.Errorf("dns: cluster role %q: %w", User, err)
	}
	_, err = c.RbacV1().ClusterRoleBindings().Apply(ctx, rbacv1apply.ClusterRoleBinding(User).
		WithRoleRef(rbacv1apply.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName(User)).
		WithSubjects(rbacv1apply.Subject().WithAPIGroup("rbac.authorization.k8s.io").WithKind("User").WithName(User)), apply)
	if err != nil {
		return fmt.Errorf("dns: cluster role binding %q: %w", User, err)
	}
	return nil
}

// EnsureService creates or updates the kube-dns Service with clusterIP. It
// has no selector: its endpoints are the EndpointSlice PublishEndpoints
// writes. A kube-dns Service on another address is replaced, since a
// Service's clusterIP cannot change.
func EnsureService(ctx context.Context, c kubernetes.Interface, clusterIP net.IP) error {
	svc := corev1apply.Service(ServiceName, Namespace).
		WithLabels(map[string]string{
			"k8s-app":                       "kube-dns",
			"kubernetes.io/name":            "CoreDNS",
			"kubernetes.io/cluster-service": "true",
		}).
		WithSpec(corev1apply.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithClusterIP(clusterIP.String()).
			WithPorts(
				corev1apply.ServicePort().WithName("dns").WithProtocol(corev1.ProtocolUDP).WithPort(53).WithTargetPort(intstr.FromInt32(53)),
				corev1apply.ServicePort().WithName("dns-tcp").WithProtocol(corev1.ProtocolTCP).WithPort(53).WithTargetPort(intstr.FromInt32(53)),
			))
	apply := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	old, err := c.CoreV1().Services(Namespace).Get(ctx, ServiceName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("dns: get Service %s/%s: %w", Namespace, ServiceName, err)
	case old.Spec.ClusterIP != clusterIP.String():
		if err := c.CoreV1().Services(Namespace).Delete(ctx, ServiceName, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &old.UID},
		}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("dns: replace Service %s/%s on %s: %w", Namespace, ServiceName, old.Spec.ClusterIP, err)
		}
	}
	if _, err := c.CoreV1().Services(Namespace).Apply(ctx, svc, apply); err != nil {
		return fmt.Errorf("dns: Service %s/%s with cluster IP %s (is the address taken by another Service?): %w", Namespace, ServiceName, clusterIP, err)
	}
	return nil
}

// PublishEndpoints points the kube-dns Service at ip:port (UDP and TCP)
// through an EndpointSlice of its own.
func PublishEndpoints(ctx context.Context, c kubernetes.Interface, ip string, port int) error {
	parsed := net.ParseIP(ip)
	if parsed == nil || parsed.IsLoopback() || parsed.IsUnspecified() {
		return fmt.Errorf("dns: %q cannot be a Service endpoint: listen on the host's address with --dns-address", ip)
	}
	addrType := discoveryv1.AddressTypeIPv4
	if parsed.To4() == nil {
		addrType = discoveryv1.AddressTypeIPv6
	}
	p := int32(port)
	_, err := c.DiscoveryV1().EndpointSlices(Namespace).Apply(ctx, discoveryv1apply.EndpointSlice(ServiceName, Namespace).
		WithLabels(map[string]string{
			discoveryv1.LabelServiceName: ServiceName,
			discoveryv1.LabelManagedBy:   ManagedBy,
		}).
		WithAddressType(addrType).
		WithPorts(
			discoveryv1apply.EndpointPort().WithName("dns").WithProtocol(corev1.ProtocolUDP).WithPort(p),
			discoveryv1apply.EndpointPort().WithName("dns-tcp").WithProtocol(corev1.ProtocolTCP).WithPort(p),
		).
		WithEndpoints(discoveryv1apply.Endpoint().WithAddresses(ip).
			WithConditions(discoveryv1apply.EndpointConditions().WithReady(true))),
		metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("dns: EndpointSlice %s/%s: %w", Namespace, ServiceName, err)
	}
	return nil
}

// Keep puts the kube-dns Service and its EndpointSlice back whenever they
// are deleted or changed, until ctx ends. It applies both once at start.
func Keep(ctx context.Context, c kubernetes.Interface, clusterIP net.IP, ip string, port int, log *slog.Logger) error {
	factory := informers.NewSharedInformerFactoryWithOptions(c, 10*time.Minute,
		informers.WithNamespace(Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ServiceName).String()
		}))
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	if _, err := factory.Core().V1().Services().Informer().AddEventHandler(handler); err != nil {
		return err
	}
	if _, err := factory.Discovery().V1().EndpointSlices().Informer().AddEventHandler(handler); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	poke()
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		}
		// Server-side apply of an unchanged object changes nothing and
		// sends no event, so this settles.
		err := errors.Join(EnsureService(ctx, c, clusterIP), PublishEndpoints(ctx, c, ip, port))
		if err == nil {
			backoff = time.Second
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("dns: restore the kube-dns Service", "err", err, "retry", backoff)
		time.AfterFunc(backoff, poke)
		backoff = min(2*backoff, time.Minute)
	}
}
