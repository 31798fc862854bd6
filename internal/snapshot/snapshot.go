// Package snapshot runs the upstream external-snapshotter's controllers
// for cci-evs VolumeSnapshots (snapshot.storage.k8s.io/v1), in the shape
// upstream calls distributed snapshotting:
//
//   - the control plane runs the snapshot-controller (common-controller,
//     RunController) with --enable-distributed-snapshotting: it binds
//     VolumeSnapshots to VolumeSnapshotContents, reports errors on the
//     VolumeSnapshot, and labels each content with the host its volume's
//     node affinity names (snapshot.storage.kubernetes.io/managed-by);
//   - each agent runs the CSI snapshotter sidecar's controller
//     (sidecar-controller, RunSidecar) as --node-deployment does: it
//     watches only the contents labelled with its host and takes and
//     removes their snapshots through evs.Snapshotter, in-process rather
//     than over a CSI socket.
//
// A cci-evs disk is a file of one host, so the host that mounts it is the
// one that copies it; the control plane needs no path to the hosts' disks,
// as for provisioning (package evs).
package snapshot

import (
	"context"
	"fmt"
	"sync"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapscheme "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/scheme"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	common "github.com/kubernetes-csi/external-snapshotter/v8/pkg/common-controller"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/metrics"
	sidecar "github.com/kubernetes-csi/external-snapshotter/v8/pkg/sidecar-controller"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/snapshotter"
	"github.com/kubernetes-csi/external-snapshotter/v8/pkg/utils"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/workqueue"

	"github.com/cci-project/cci/internal/evs"
)

const (
	// ClassName is the default VolumeSnapshotClass, of cci-evs.
	ClassName = evs.ClassName
	// resync is the controllers' full resync, as upstream's default.
	resync = 15 * time.Minute
	// createTimeout bounds one snapshot's copy (upstream's --timeout is
	// for a CSI call that only starts a cut; here the call copies).
	createTimeout = 10 * time.Minute
)

// The snapshot types go into client-go's global scheme (so that the
// controllers' events name VolumeSnapshots) when the program starts,
// before any goroutine reads the scheme: a registration later, while
// informers run, is a map write beside their reads ("concurrent map read
// and map write", seen at a `cci up` start).
func init() {
	_ = snapscheme.AddToScheme(scheme.Scheme)
}

func retry() workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute)
}

// EnsureClass creates the default VolumeSnapshotClass cci-evs (deletion
// policy Delete: deleting the VolumeSnapshot removes the copy); one that
// exists is left as it is (an admin may have changed it).
func EnsureClass(ctx context.Context, c snapclient.Interface) error {
	class := &snapv1.VolumeSnapshotClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        ClassName,
			Annotations: map[string]string{utils.IsDefaultSnapshotClassAnnotation: "true"},
		},
		Driver:         evs.Driver,
		DeletionPolicy: snapv1.VolumeSnapshotContentDelete,
	}
	if _, err := c.SnapshotV1().VolumeSnapshotClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create VolumeSnapshotClass %q: %w", class.Name, err)
	}
	return nil
}

// contentPolicy is the ValidatingAdmissionPolicy that refuses a dynamic
// VolumeSnapshotContent of cci-evs whose volume names no host: the
// snapshot-controller makes such a content for a claim of another class
// (a bucket, a shared file system) when the VolumeSnapshot names class
// cci-evs, and no host would ever take it. Refused, the controller puts
// the policy's message in the VolumeSnapshot's status.error.
const contentPolicy = "cci-evs-snapshot-source"

// ContentPolicyMessage is the refusal of such a content.
const ContentPolicyMessage = "VolumeSnapshotClass " + ClassName + " snapshots only claims of StorageClass " + evs.ClassName +
	" (a disk of one host); the claim's volume is of another class, which offers no snapshots"

// EnsureAPI creates the default VolumeSnapshotClass and the admission
// policy of snapshot contents.
func EnsureAPI(ctx context.Context, kube kubernetes.Interface, snaps snapclient.Interface) error {
	if err := EnsureClass(ctx, snaps); err != nil {
		return err
	}
	fail := admissionregistrationv1.Fail
	invalid := metav1.StatusReasonInvalid
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: contentPolicy},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{snapv1.GroupName}, APIVersions: []string{"v1"}, Resources: []string{"volumesnapshotcontents"}},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: `object.spec.driver != '` + evs.Driver + `' || !has(object.spec.source.volumeHandle) || ` +
					`(has(object.metadata.labels) && '` + utils.VolumeSnapshotContentManagedByLabel + `' in object.metadata.labels)`,
				Message: ContentPolicyMessage,
				Reason:  &invalid,
			}},
		},
	}
	if _, err := kube.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ValidatingAdmissionPolicy %q: %w", policy.Name, err)
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: contentPolicy},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        contentPolicy,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	if _, err := kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ValidatingAdmissionPolicyBinding %q: %w", binding.Name, err)
	}
	return nil
}

// RunController runs the snapshot-controller until ctx ends. The
// VolumeSnapshot CRDs must be installed.
func RunController(ctx context.Context, kube kubernetes.Interface, snaps snapclient.Interface) error {
	factory := snapinformers.NewSharedInformerFactory(snaps, resync)
	core := informers.NewSharedInformerFactory(kube, resync)
	ctrl := common.NewCSISnapshotCommonController(
		snaps, kube,
		factory.Snapshot().V1().VolumeSnapshots(),
		factory.Snapshot().V1().VolumeSnapshotContents(),
		factory.Snapshot().V1().VolumeSnapshotClasses(),
		nil, nil, nil, // no group snapshots
		core.Core().V1().PersistentVolumeClaims(),
		core.Core().V1().PersistentVolumes(),
		core.Core().V1().Nodes(),
		metrics.NewMetricsManager(),
		resync,
		retry(), retry(), retry(), retry(),
		true,  // distributed snapshotting: each content names its host
		true,  // prevent volume mode conversion, upstream's default
		false, // no group snapshots
	)
	rel := &sourceRelease{kube: kube, pvcs: core.Core().V1().PersistentVolumeClaims().Lister(), snaps: factory.Snapshot().V1().VolumeSnapshots().Lister()}
	rel.register(core.Core().V1().PersistentVolumeClaims().Informer(), factory.Snapshot().V1().VolumeSnapshots().Informer())
	factory.Start(ctx.Done())
	core.Start(ctx.Done())
	// Run returns when ctx ends; wg holds its workers.
	var wg sync.WaitGroup
	ctrl.Run(4, ctx.Done(), &wg)
	wg.Wait()
	factory.Shutdown()
	core.Shutdown()
	return nil
}

// RunSidecar runs the snapshotter sidecar's controller for the contents of
// host node until ctx ends, taking snapshots with s.
func RunSidecar(ctx context.Context, kube kubernetes.Interface, snaps snapclient.Interface, node string, s *evs.Snapshotter) error {
	var _ snapshotter.Snapshotter = s
	factory := snapinformers.NewSharedInformerFactory(snaps, resync)
	// --node-deployment: only the contents the snapshot-controller
	// labelled with this host.
	mine := snapinformers.NewSharedInformerFactoryWithOptions(snaps, resync, snapinformers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.LabelSelector = labels.Set{utils.VolumeSnapshotContentManagedByLabel: node}.AsSelector().String()
	}))
	ctrl := sidecar.NewCSISnapshotSideCarController(
		snaps, kube, evs.Driver,
		mine.Snapshot().V1().VolumeSnapshotContents(),
		factory.Snapshot().V1().VolumeSnapshotClasses(),
		s, nil,
		createTimeout, resync,
		"snapshot", -1, // handles snapshot-<VolumeSnapshot UID>
		"groupsnapshot", -1,
		false, // no extra create metadata
		retry(),
		false, nil, nil, retry(),
	)
	factory.Start(ctx.Done())
	mine.Start(ctx.Done())
	var wg sync.WaitGroup
	ctrl.Run(2, ctx.Done(), &wg)
	wg.Wait()
	factory.Shutdown()
	mine.Shutdown()
	return nil
}
