package serviceproxy

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/cci-project/cci/internal/network"
)

// sweepDeletedServices removes the tracked connections of a Service once it
// is gone, or of a load-balancer address it no longer has. The proxy clears
// UDP entries itself but leaves TCP ones to time out, and until then a
// connection keeps its translation to an endpoint of a Service that no
// longer exists.
func sweepDeletedServices(ctx context.Context, kube kubernetes.Interface, log *slog.Logger) {
	factory := informers.NewSharedInformerFactory(kube, 30*time.Minute)
	inf := factory.Core().V1().Services().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*v1.Service)
			n, ok2 := newObj.(*v1.Service)
			if !ok1 || !ok2 {
				return
			}
			gone := map[string]bool{}
			for _, in := range o.Status.LoadBalancer.Ingress {
				gone[in.IP] = true
			}
			for _, in := range n.Status.LoadBalancer.Ingress {
				delete(gone, in.IP)
			}
			if len(gone) > 0 {
				sweep(log, o, nil, gone)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			s, ok := obj.(*v1.Service)
			if !ok {
				return
			}
			lb := map[string]bool{}
			for _, in := range s.Status.LoadBalancer.Ingress {
				lb[in.IP] = true
			}
			sweep(log, s, s.Spec.ClusterIPs, lb)
		},
	})
	factory.Start(ctx.Done())
}

func sweep(log *slog.Logger, s *v1.Service, clusterIPs []string, lbIPs map[string]bool) {
	var vips []net.IP
	for _, ip := range clusterIPs {
		if p := net.ParseIP(ip); p != nil {
			vips = append(vips, p)
		}
	}
	ports := map[uint16]bool{}
	for _, p := range s.Spec.Ports {
		ports[uint16(p.Port)] = true
	}
	n, err := network.FlushConntrack(func(f *netlink.ConntrackFlow) bool {
		for _, ip := range vips {
			if f.Forward.DstIP.Equal(ip) {
				return true
			}
		}
		return lbIPs[f.Forward.DstIP.String()] && ports[f.Forward.DstPort]
	})
	if err != nil {
		log.Warn("flush connection tracking of a deleted service", "service", s.Namespace+"/"+s.Name, "err", err)
		return
	}
	if n > 0 {
		log.Info("tracked connections of a deleted service removed", "service", s.Namespace+"/"+s.Name, "entries", n)
	}
}
