// Package vknode holds what the agent and the simulated hosts set alike on
// their virtual-kubelet nodes.
package vknode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"time"

	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/cci-project/cci/internal/pki"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// PodQueueLimiter is the rate limiter of a node's pod queues: a key that
// fails waits 5 ms, doubling up to 5 minutes, as on a kubelet's pod
// workers, and nothing else. virtual-kubelet's default, client-go's
// controller limiter, adds one bucket of 10 items a second (burst 100)
// shared by all the node's pods: past 100 pods at once, pods waited for it
// before they were created, deleted or had their status sent (a 200-pod
// burst, churn at 8 pods/s: seconds).
func PodQueueLimiter() workqueue.TypedRateLimiter[any] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[any](5*time.Millisecond, 5*time.Minute)
}

// UnthrottledPodQueues gives the node's three pod queues (pods from the
// API, deletions, statuses from the runtime) PodQueueLimiter.
func UnthrottledPodQueues() nodeutil.NodeOpt {
	return nodeutil.WithPodControllerConfigOverrides(func(c *node.PodControllerConfig) error {
		c.SyncPodsFromKubernetesRateLimiter = PodQueueLimiter()
		c.DeletePodsFromKubernetesRateLimiter = PodQueueLimiter()
		c.SyncPodStatusFromProviderRateLimiter = PodQueueLimiter()
		return nil
	})
}

// providerSuccess are the events virtual-kubelet's pod controller records
// on every pod it hands to its provider. A kubelet records none of them
// (its pods get Scheduled, Pulled, Created, Started), and they were a
// quarter of the events of a 200-pod burst: one more API write per pod.
// Their failures (ProviderCreateFailed, …) stay.
var providerSuccess = map[string]bool{
	"ProviderCreateSuccess": true,
	"ProviderUpdateSuccess": true,
	"ProviderDeleteSuccess": true,
}

// KubeletEvents wraps the recorder given to a node's pod controller so
// that its pods' events are a kubelet's: it drops virtual-kubelet's own
// success events.
func KubeletEvents(r record.EventRecorder) record.EventRecorder {
	return kubeletEvents{r}
}

type kubeletEvents struct{ record.EventRecorder }

func (k kubeletEvents) Event(obj runtime.Object, eventtype, reason, message string) {
	if !providerSuccess[reason] {
		k.EventRecorder.Event(obj, eventtype, reason, message)
	}
}

func (k kubeletEvents) Eventf(obj runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	if !providerSuccess[reason] {
		k.EventRecorder.Eventf(obj, eventtype, reason, messageFmt, args...)
	}
}

func (k kubeletEvents) AnnotatedEventf(obj runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	if !providerSuccess[reason] {
		k.EventRecorder.AnnotatedEventf(obj, annotations, eventtype, reason, messageFmt, args...)
	}
}

// Protobuf is c for the built-in API types in protobuf, as the kubelet, the
// scheduler and the controller manager talk: cheaper to encode and decode
// than JSON on both ends, and the apiserver encodes each watch event once
// per format its watchers use. Custom resources need JSON: keep c for them.
func Protobuf(c *rest.Config) *rest.Config {
	c = rest.CopyConfig(c)
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return c
}

// NodeIP is the address a node reports for itself: the local address of
// the route to the API server's host, or, when the server is on loopback,
// that of the default route (a pod cannot reach the node's loopback).
func NodeIP(server string) string {
	u, err := url.Parse(server)
	if err == nil {
		host := u.Hostname()
		if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
			if conn, err := net.Dial("udp", net.JoinHostPort(host, "9")); err == nil {
				defer conn.Close()
				return conn.LocalAddr().(*net.UDPAddr).IP.String()
			}
		}
	}
	if conn, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		defer conn.Close()
		if a := conn.LocalAddr().(*net.UDPAddr); !a.IP.IsLoopback() {
			return a.IP.String()
		}
	}
	return "127.0.0.1"
}

// KubeletAPI is a node's kubelet API TLS and authentication: a serving
// certificate of its own (the apiserver does not verify kubelet
// certificates by default) and client certificates checked against the
// cluster CA caPEM (none checked when it is empty), then the apiserver's
// TokenReview and SubjectAccessReview, as the kubelet's webhook mode.
func KubeletAPI(kube kubernetes.Interface, nodeName, nodeIP string, caPEM []byte) (*tls.Config, nodeutil.Auth, error) {
	certPEM, keyPEM, err := pki.SelfSigned(nodeName, []string{nodeIP, nodeName, "localhost", "127.0.0.1"})
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet serving certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	var caContent dynamiccertificates.CAContentProvider
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		tlsCfg.ClientCAs = pool
		if caContent, err = dynamiccertificates.NewStaticCAContent("cluster-ca", caPEM); err != nil {
			return nil, nil, err
		}
	}
	auth, err := nodeutil.WebhookAuth(kube, nodeName, func(c *nodeutil.WebhookAuthConfig) error {
		if caContent != nil {
			c.AuthnConfig.ClientCertificateCAContentProvider = caContent
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet API auth: %w", err)
	}
	return tlsCfg, auth, nil
}

// RunEvents records events as the node's kubelet until ctx ends: it hands
// the recorder to use before it calls ready.
func RunEvents(ctx context.Context, kube kubernetes.Interface, nodeName string, use func(record.EventRecorder), ready func()) error {
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	use(broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: nodeName}))
	ready()
	<-ctx.Done()
	return nil
}
