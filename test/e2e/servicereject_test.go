package e2e

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestServiceUnservedPortRefused: a TCP connection to a ClusterIP on a port
// no Service serves there, or to an address of the Service range no Service
// has, is refused at once, from a pod and from the host, as kube-proxy's
// nftables mode refuses it, instead of leaving by the default route (where
// a network that answers for every address would accept it). The served
// port still works beside it.
func TestServiceUnservedPortRefused(t *testing.T) {
	ctx := context.Background()
	ns := testNamespace(t)
	createPod(t, ns, &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}}, Spec: whoamiPodSpec(true)})
	svc, err := client(t).CoreV1().Services(ns).Create(ctx, &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: v1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := svc.Spec.ClusterIP
	waitRunning(t, ns, "app=web", 1, 90*time.Second)
	waitFor(t, 60*time.Second, "the Service answering from the host", func() (bool, string) {
		body, err := askHTTP(net.JoinHostPort(ip, "80"))
		return body == "web", body + " " + errString(err)
	})

	// From the host (the output hook), on the Service's address and on one
	// of the range that no Service has (the range's last but one).
	for _, addr := range []string{net.JoinHostPort(ip, "81"), net.JoinHostPort(unallocated(t), "80")} {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("host to %s: %v, want connection refused", addr, err)
		}
	}

	// From pods (the forward hook), under every runtime class.
	forEachRuntime(t, func(t *testing.T, rc string) {
		name := "client-" + rc
		if rc == "" {
			name = "client"
		}
		createPod(t, ns, shellPod(name, rc, "sleep 3600"))
		waitRunning(t, ns, "app="+name, 1, 90*time.Second)
		if got := podHTTP(t, ns, name, ip, 80); got != "web" {
			t.Errorf("pod %s to the served port %s:80: %q, want web", name, ip, got)
		}
		out := execOut(t, ns, name, "sh", "-c", "nc -w 10 "+ip+" 81 </dev/null 2>&1; echo rc=$?")
		if !strings.Contains(out, "refused") || strings.Contains(out, "rc=0") {
			t.Errorf("pod %s to the unserved port %s:81: %q, want connection refused", name, ip, out)
		}
	})
}

// unallocated is the last but one address of the cluster's Service range,
// which the allocator hands out last, if ever.
func unallocated(t *testing.T) string {
	t.Helper()
	sc, err := client(t).NetworkingV1().ServiceCIDRs().Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil || len(sc.Spec.CIDRs) == 0 {
		t.Fatalf("the kubernetes ServiceCIDR: %v %v", err, sc)
	}
	p := netip.MustParsePrefix(sc.Spec.CIDRs[0]).Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return last.Prev().String()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
