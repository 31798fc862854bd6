// Package claimcheck tells a user when a PersistentVolumeClaim names a
// StorageClass that does not exist. Upstream Kubernetes keeps such a claim
// Pending, and the PersistentVolume controller's only word is
// `storageclass.storage.k8s.io "x" not found`, which does not say what to
// use instead. A Warning event "StorageClassNotFound" on the claim names
// the classes that exist and the default.
//
// The claim is not refused: binding a claim to a PersistentVolume made by
// hand by their shared storageClassName, with no StorageClass object of
// that name, is legal upstream, and the volume may be created after the
// claim (one `kubectl apply` of a folder). A class that has such a volume
// gets no event; a class made later provisions the claim as usual.
package claimcheck

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/cci-project/cci/internal/eventloop"
)

// Reason is the event's reason.
const Reason = "StorageClassNotFound"

// Controller reports claims of StorageClasses that do not exist.
type Controller struct {
	kube    kubernetes.Interface
	factory informers.SharedInformerFactory
	log     *slog.Logger
	queue   workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	reported map[string]string // claim key -> the class it was told of
}

// New builds the controller; Run starts it.
func New(kube kubernetes.Interface, log *slog.Logger) *Controller {
	c := &Controller{
		kube:     kube,
		factory:  informers.NewSharedInformerFactory(kube, 10*time.Minute),
		log:      log,
		queue:    workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "claimcheck"}),
		reported: map[string]string{},
	}
	add := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(k)
		}
	}
	_, _ = c.factory.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: add, UpdateFunc: func(_, o any) { add(o) }, DeleteFunc: add,
	})
	// Classes and volumes only need the informers' caches; a claim is
	// looked at again when it changes (the binder updates Pending claims'
	// annotations) and at the informer's resync.
	_ = c.factory.Storage().V1().StorageClasses().Informer()
	_ = c.factory.Core().V1().PersistentVolumes().Informer()
	return c
}

// Run reports until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	return eventloop.Run(ctx, c.kube, c.factory, c.queue, "cci-claim-check", c.check)
}

func (c *Controller) check(k string, recorder record.EventRecorder) {
	ns, name, err := cache.SplitMetaNamespaceKey(k)
	if err != nil {
		return
	}
	pvc, err := c.factory.Core().V1().PersistentVolumeClaims().Lister().PersistentVolumeClaims(ns).Get(name)
	if err != nil {
		c.mu.Lock()
		delete(c.reported, k)
		c.mu.Unlock()
		return
	}
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	if class == "" || pvc.Spec.VolumeName != "" || pvc.Status.Phase != v1.ClaimPending || pvc.DeletionTimestamp != nil {
		return
	}
	if _, err := c.factory.Storage().V1().StorageClasses().Lister().Get(class); err == nil {
		return
	}
	pvs, _ := c.factory.Core().V1().PersistentVolumes().Lister().List(labels.Everything())
	for _, pv := range pvs {
		if pv.Spec.StorageClassName == class {
			// A volume made by hand for this class: the binder's to match.
			return
		}
	}
	c.mu.Lock()
	told := c.reported[k] == class
	c.reported[k] = class
	c.mu.Unlock()
	if told {
		return
	}
	classes, _ := c.factory.Storage().V1().StorageClasses().Lister().List(labels.Everything())
	msg := Message(class, classes)
	recorder.Event(pvc, v1.EventTypeWarning, Reason, msg)
	c.log.Info("claim names a StorageClass that does not exist", "claim", k, "class", class)
}

// Message says that class does not exist and names the classes that do,
// the default marked.
func Message(class string, classes []*storagev1.StorageClass) string {
	var names []string
	for _, sc := range classes {
		n := sc.Name
		if sc.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
			n += " (default)"
		}
		names = append(names, n)
	}
	slices.Sort(names)
	have := "none"
	if len(names) > 0 {
		have = strings.Join(names, ", ")
	}
	return fmt.Sprintf("StorageClass %q does not exist, and no PersistentVolume names it: this claim stays Pending until one of them is made. "+
		"The StorageClasses are: %s (kubectl get storageclass); name one in spec.storageClassName, or leave it out for the default", class, have)
}
