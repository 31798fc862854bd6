package runtime

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Runtime handlers: what a RuntimeClass's `handler` selects on this node.
const (
	// handlerRunc runs each container in its own runc container, joined to
	// the pod's network namespace. Pods without a runtimeClassName use it.
	handlerRunc = "runc"
	// handlerGVisor runs the whole pod in one runsc (gVisor) sandbox.
	handlerGVisor = "gvisor"
)

// Handlers lists the RuntimeClass handlers this node serves, with the names
// they are also known by.
var handlers = map[string]string{
	handlerRunc:   handlerRunc,
	handlerGVisor: handlerGVisor,
	"runsc":       handlerGVisor,
}

// resolveHandler maps a pod's runtimeClassName to a handler of this node, as
// the kubelet does through the RuntimeClass object. The error says what the
// user can do; it is shown as the pod's FailedCreatePodSandBox event.
func resolveHandler(ctx context.Context, kube kubernetes.Interface, runtimeClassName *string) (string, error) {
	if runtimeClassName == nil || *runtimeClassName == "" {
		return handlerRunc, nil
	}
	name := *runtimeClassName
	rc, err := kube.NodeV1().RuntimeClasses().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("RuntimeClass %q not found: create it or use one of %q, %q", name, handlerRunc, handlerGVisor)
	}
	if err != nil {
		return "", fmt.Errorf("look up RuntimeClass %q: %w", name, err)
	}
	h, ok := handlers[rc.Handler]
	if !ok {
		return "", fmt.Errorf("RuntimeClass %q names handler %q, which this node does not serve (it serves %q and %q)", name, rc.Handler, handlerRunc, handlerGVisor)
	}
	return h, nil
}
