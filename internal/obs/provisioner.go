package obs

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cci-project/cci/internal/evs"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

const (
	// Driver is the provisioner of cci-obs and the CSI driver name its
	// PersistentVolumes carry.
	Driver = "obs.cci.io"
	// ClassName is the StorageClass of cci-obs.
	ClassName = "cci-obs"
	// SecretName is the Secret in each tenant namespace that holds the
	// tenant's S3 keys and the store's address, in the environment
	// variables the AWS SDKs and CLIs read (envFrom it in a pod).
	SecretName = "cci-obs-credentials"

	// The volume attributes the agent mounts a bucket from.
	EndpointAttribute = "cci.io/endpoint"
	BucketAttribute   = "cci.io/bucket"
)

// Provisioner makes a bucket per claim in the control plane's store.
type Provisioner struct {
	Store *Store
	Kube  kubernetes.Interface
	Log   *slog.Logger
}

var _ controller.Provisioner = (*Provisioner)(nil)

// Provision makes the claim's bucket, owned by the claim's namespace, and
// makes sure the namespace has its keys.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	pvc := opts.PVC
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s gives files, not block devices: use volumeMode Filesystem, or StorageClass cci-evs for a block device", ClassName)
	}
	if err := EnsureSecret(ctx, p.Kube, p.Store, pvc.Namespace); err != nil {
		return nil, controller.ProvisioningInBackground, err
	}
	// The volume's name is a valid bucket name: "pvc-" and a UUID.
	bucket := opts.PVName
	if err := p.Store.CreateBucket(ctx, bucket, pvc.Namespace); err != nil {
		return nil, controller.ProvisioningInBackground, err
	}
	p.Log.Info("bucket made", "bucket", bucket, "claim", pvc.Namespace+"/"+pvc.Name)
	reclaim := v1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	mode := v1.PersistentVolumeFilesystem
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   pvc.Spec.AccessModes,
			VolumeMode:                    &mode,
			// A bucket has no size; the claim's is what is billed.
			Capacity:     v1.ResourceList{v1.ResourceStorage: pvc.Spec.Resources.Requests[v1.ResourceStorage]},
			MountOptions: opts.StorageClass.MountOptions,
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:       Driver,
				VolumeHandle: bucket,
				VolumeAttributes: map[string]string{
					EndpointAttribute: p.Store.Endpoint,
					BucketAttribute:   bucket,
				},
				// The agent mounts with the tenant's own keys.
				NodePublishSecretRef: &v1.SecretReference{Namespace: pvc.Namespace, Name: SecretName},
			}},
		},
	}, controller.ProvisioningFinished, nil
}

// EnsureSecret puts the keys of the tenant namespace ns (issued the first
// time) in its Secret SecretName; a Secret the tenant changed or removed
// is put back. cci-sfs volumes take the same keys.
func EnsureSecret(ctx context.Context, kube kubernetes.Interface, store *Store, ns string) error {
	c, err := store.TenantCredentials(ns)
	if err != nil {
		return err
	}
	want := map[string][]byte{
		"AWS_ACCESS_KEY_ID":     []byte(c.AccessKeyID),
		"AWS_SECRET_ACCESS_KEY": []byte(c.SecretAccessKey),
		"AWS_ENDPOINT_URL":      []byte(store.Endpoint),
		"AWS_REGION":            []byte(Region),
	}
	s, err := kube.CoreV1().Secrets(ns).Get(ctx, SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s = &v1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/managed-by": "cci"}},
			Data:       want,
		}
		_, err = kube.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Secret %s/%s: %w", ns, SecretName, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get Secret %s/%s: %w", ns, SecretName, err)
	}
	same := true
	for k, v := range want {
		if string(s.Data[k]) != string(v) {
			same = false
		}
	}
	if same {
		return nil
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range want {
		s.Data[k] = v
	}
	if _, err := kube.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update Secret %s/%s: %w", ns, SecretName, err)
	}
	return nil
}

// Delete removes the volume's bucket and what it holds.
func (p *Provisioner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver {
		return &controller.IgnoredError{Reason: "not a " + ClassName + " volume"}
	}
	if err := p.Store.DeleteBucket(pv.Spec.CSI.VolumeHandle); err != nil {
		return err
	}
	p.Log.Info("bucket removed", "bucket", pv.Spec.CSI.VolumeHandle)
	return nil
}

// Run provisions cci-obs claims until ctx ends.
func Run(ctx context.Context, kube kubernetes.Interface, store *Store, log *slog.Logger) error {
	pc := evs.NewProvisionController(ctx, kube, Driver, &Provisioner{Store: store, Kube: kube, Log: log},
		controller.LeaderElection(false),
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
	)
	pc.Run(ctx)
	return nil
}
