package server

import (
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/evs"
	"github.com/cci-project/cci/internal/obs"
	"github.com/cci-project/cci/internal/sfs"
)

// evsAccessPolicy is the ValidatingAdmissionPolicy that refuses a claim of
// cci-evs for an access mode a disk of one host cannot give, when the
// claim is made rather than when its pod is placed: an ordinary
// admission policy (CEL) of the apiserver, after the DefaultStorageClass
// plugin has named the class of a claim that names none.
const evsAccessPolicy = "cci-evs-access-modes"

// ensureStorage creates the StorageClasses, the CSIDriver and the
// admission policy of the storage CCI offers; ones that exist are left as
// they are (an admin may have changed them, e.g. the default class).
func ensureStorage(ctx context.Context, c kubernetes.Interface) error {
	expand := true
	reclaim := v1.PersistentVolumeReclaimDelete
	wait := storagev1.VolumeBindingWaitForFirstConsumer
	class := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        evs.ClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:          evs.Driver,
		Parameters:           map[string]string{evs.FSTypeParameter: evs.DefaultFSType},
		ReclaimPolicy:        &reclaim,
		AllowVolumeExpansion: &expand,
		// The disk is made on the host of the claim's first pod.
		VolumeBindingMode: &wait,
	}
	// Shared classes: a bucket or file system is served by the control
	// plane and reached from every host, so it is made at once.
	now := storagev1.VolumeBindingImmediate
	shared := []*storagev1.StorageClass{
		{ObjectMeta: metav1.ObjectMeta{Name: obs.ClassName}, Provisioner: obs.Driver, ReclaimPolicy: &reclaim, VolumeBindingMode: &now},
		// A cci-sfs volume is a disk of the control plane's host, grown
		// online as a cci-evs disk is.
		{ObjectMeta: metav1.ObjectMeta{Name: sfs.ClassName}, Provisioner: sfs.Driver, ReclaimPolicy: &reclaim, VolumeBindingMode: &now, AllowVolumeExpansion: &expand},
	}
	for _, class := range append([]*storagev1.StorageClass{class}, shared...) {
		_, err := c.StorageV1().StorageClasses().Create(ctx, class, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) && class.AllowVolumeExpansion != nil {
			err = allowExpansion(ctx, c, class.Name)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create StorageClass %q: %w", class.Name, err)
		}
	}
	no := false
	for _, name := range []string{evs.Driver, obs.Driver, sfs.Driver} {
		driver := &storagev1.CSIDriver{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: storagev1.CSIDriverSpec{
				// Nothing to attach: the agent of the pod's host mounts
				// it. Without this the attach/detach controller would
				// wait on VolumeAttachments that no attacher serves.
				AttachRequired:       &no,
				PodInfoOnMount:       &no,
				VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent},
			},
		}
		if _, err := c.StorageV1().CSIDrivers().Create(ctx, driver, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CSIDriver %q: %w", driver.Name, err)
		}
	}
	fail := admissionregistrationv1.Fail
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: evsAccessPolicy},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"persistentvolumeclaims"}},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: `!has(object.spec.storageClassName) || object.spec.storageClassName != '` + evs.ClassName + `' || object.spec.accessModes.all(m, m == 'ReadWriteOnce' || m == 'ReadWriteOncePod')`,
				Message:    evs.AccessModesMessage,
				Reason:     ptr(metav1.StatusReasonInvalid),
			}},
		},
	}
	if _, err := c.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ValidatingAdmissionPolicy %q: %w", policy.Name, err)
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: evsAccessPolicy},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        evsAccessPolicy,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	if _, err := c.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ValidatingAdmissionPolicyBinding %q: %w", binding.Name, err)
	}
	return nil
}

// allowExpansion sets allowVolumeExpansion on a class of CCI made by an
// older version that did not set it (cci-sfs before its volumes grew).
// A class whose field is set, true or false, is left as an admin left it.
func allowExpansion(ctx context.Context, c kubernetes.Interface, name string) error {
	have, err := c.StorageV1().StorageClasses().Get(ctx, name, metav1.GetOptions{})
	if err != nil || have.AllowVolumeExpansion != nil {
		return err
	}
	yes := true
	have.AllowVolumeExpansion = &yes
	_, err = c.StorageV1().StorageClasses().Update(ctx, have, metav1.UpdateOptions{})
	return err
}

func ptr[T any](v T) *T { return &v }
