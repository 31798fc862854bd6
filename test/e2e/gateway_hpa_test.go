package e2e

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// burnCGI serves /cgi-bin/burn on port 8080: every request spins the
// shell a while, then answers with the pod's name.
const burnCGI = `mkdir -p /tmp/www/cgi-bin && ` +
	`printf '#!/bin/sh\ni=0; while [ $i -lt 2000 ]; do i=$((i+1)); done\nprintf "Content-Type: text/plain\\r\\n\\r\\n%%s\\n" "$(hostname)"\n' > /tmp/www/cgi-bin/burn && ` +
	`chmod +x /tmp/www/cgi-bin/burn && trap 'exit 0' TERM; httpd -f -p 8080 -h /tmp/www & wait`

// Elastic traffic: an HPA on CPU scales a Deployment behind a Gateway from
// 1 to 3 while a load generator sends requests through the Gateway, the
// new pods take requests once Ready, no request fails, and the Deployment
// goes back to 1 when the load stops.
func TestGatewayHPAUnderLoad(t *testing.T) {
	ns := testNamespace(t)
	ctx := context.Background()
	c := client(t)
	gc := gatewayClient(t, cci.Kubeconfig)
	labels := map[string]string{"app": "burn"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "burn"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: v1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []v1.Container{{
					Name: "web", Image: image(testimage.Shell), Command: []string{"sh", "-c", burnCGI},
					Ports: []v1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					// Ready only once httpd answers: the Gateway sends
					// nothing to a pod before that.
					ReadinessProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
					Resources: v1.ResourceRequirements{
						Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("100m"), v1.ResourceMemory: resource.MustParse("32Mi")},
						Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("300m"), v1.ResourceMemory: resource.MustParse("64Mi")},
					},
				}},
			}},
		},
	}
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "burn"}, Spec: v1.ServiceSpec{Selector: labels,
		Ports: []v1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	port := cluster.PickPort(func(p int) bool { return cluster.TCPFree("0.0.0.0", p) })
	mustTenantKubectl(t, cci.Kubeconfig, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: burn, namespace: %[1]s}
spec:
  gatewayClassName: cci
  listeners: [{name: http, protocol: HTTP, port: %[2]d}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: burn, namespace: %[1]s}
spec:
  parentRefs: [{name: burn}]
  hostnames: [burn.example]
  rules: [{backendRefs: [{name: burn, port: 80}]}]
`, ns, port), "apply", "-f", "-")
	addr := net.JoinHostPort(waitGateway(t, gc, ns, "burn"), strconv.Itoa(port))
	waitFor(t, 2*time.Minute, "burn.example answers through "+addr, func() (bool, string) {
		code, body, err := ask(addr, "burn.example", "/cgi-bin/burn")
		return err == nil && code == 200 && strings.HasPrefix(body, "burn-"), fmt.Sprint(code, " ", body, " ", err)
	})

	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "burn"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "burn"},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   v1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](50)},
				},
			}},
			// The default holds a scale-down for 5 minutes.
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](5)},
			},
		},
	}
	if _, err := c.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	replicas := func() (int32, string) {
		d, err := c.AppsV1().Deployments(ns).Get(ctx, "burn", metav1.GetOptions{})
		if err != nil {
			return 0, err.Error()
		}
		h, err := c.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, "burn", metav1.GetOptions{})
		if err != nil {
			return 0, err.Error()
		}
		util := "-"
		for _, m := range h.Status.CurrentMetrics {
			if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
				util = fmt.Sprintf("%d%%", *m.Resource.Current.AverageUtilization)
			}
		}
		return *d.Spec.Replicas, fmt.Sprintf("spec %d, ready %d, HPA %d→%d at cpu %s", *d.Spec.Replicas, d.Status.ReadyReplicas, h.Status.CurrentReplicas, h.Status.DesiredReplicas, util)
	}

	// The load: four clients in a loop through the Gateway.
	var sent, failed atomic.Int64
	var mu sync.Mutex
	served := map[string]int{}
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := ask(addr, "burn.example", "/cgi-bin/burn")
				sent.Add(1)
				mu.Lock()
				if err != nil || code != 200 {
					failed.Add(1)
					if len(failures) < 10 {
						failures = append(failures, fmt.Sprintf("%d %q %v", code, body, err))
					}
				} else {
					served[body]++
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	defer stopLoad()
	waitFor(t, 4*time.Minute, "the HPA to scale burn to 3 under load", func() (bool, string) {
		n, s := replicas()
		return n == 3, s
	})
	up := time.Since(start)
	// Every pod takes requests once Ready: three pods answer.
	waitFor(t, 2*time.Minute, "requests answered by all three pods", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(served) >= 3, fmt.Sprint(served)
	})
	stopLoad()
	mu.Lock()
	pods := make([]string, 0, len(served))
	for p, n := range served {
		pods = append(pods, fmt.Sprintf("%s:%d", p, n))
	}
	sort.Strings(pods)
	mu.Unlock()
	t.Logf("scaled 1→3 in %s under load; %d requests, %d failed; per pod %s", up.Round(time.Second), sent.Load(), failed.Load(), strings.Join(pods, " "))
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed while the Deployment scaled: %s", failed.Load(), sent.Load(), strings.Join(failures, "; "))
	}

	stopped := time.Now()
	waitFor(t, 4*time.Minute, "the HPA to scale burn back to 1 without load", func() (bool, string) {
		n, s := replicas()
		return n == 1, s
	})
	t.Logf("back to 1 replica %s after the load stopped", time.Since(stopped).Round(time.Second))
}
