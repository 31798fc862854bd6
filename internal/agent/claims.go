package agent

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/evs"
	"github.com/cci-project/cci/internal/obs"
	"github.com/cci-project/cci/internal/rclone"
	"github.com/cci-project/cci/internal/runtime"
	"github.com/cci-project/cci/internal/sfs"
)

// claimVolumes stages each PersistentVolume with the backend of its
// driver: cci-evs disks of this host, cci-obs buckets and cci-sfs file
// systems mounted with rclone (the runtime's ClaimVolumes).
type claimVolumes struct {
	evs    *evs.Host
	remote *rclone.Mounter
	kube   kubernetes.Interface
}

var _ runtime.ClaimVolumes = (*claimVolumes)(nil)

func driverOf(pv *v1.PersistentVolume) string {
	if pv.Spec.CSI == nil {
		return ""
	}
	return pv.Spec.CSI.Driver
}

func (c *claimVolumes) Stage(ctx context.Context, pv *v1.PersistentVolume) (string, error) {
	switch driverOf(pv) {
	case obs.Driver, sfs.Driver:
		r, err := c.remoteOf(ctx, pv)
		if err != nil {
			return "", err
		}
		return c.remote.Stage(ctx, r)
	}
	return c.evs.Stage(ctx, pv)
}

func (c *claimVolumes) Device(ctx context.Context, pv *v1.PersistentVolume) (string, string, error) {
	if d := driverOf(pv); d == obs.Driver || d == sfs.Driver {
		return "", "", fmt.Errorf("persistentvolume %q of driver %s has no block device: use volumeMode Filesystem", pv.Name, d)
	}
	return c.evs.Device(ctx, pv)
}

func (c *claimVolumes) Unstage(ref string) error {
	if c.remote.Owns(ref) {
		return c.remote.Unstage(ref)
	}
	return c.evs.Unstage(ref)
}

// remoteOf is how rclone reaches a cci-obs bucket or cci-sfs volume, with
// the keys of the volume's tenant.
func (c *claimVolumes) remoteOf(ctx context.Context, pv *v1.PersistentVolume) (rclone.Remote, error) {
	ref := pv.Spec.CSI.NodePublishSecretRef
	if ref == nil {
		return rclone.Remote{}, fmt.Errorf("persistentvolume %q names no Secret of keys (nodePublishSecretRef)", pv.Name)
	}
	sec, err := c.kube.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return rclone.Remote{}, fmt.Errorf("keys of persistentvolume %q (Secret %s/%s; CCI puts it back when a claim of the namespace is made): %w", pv.Name, ref.Namespace, ref.Name, err)
	}
	id, secret := string(sec.Data["AWS_ACCESS_KEY_ID"]), string(sec.Data["AWS_SECRET_ACCESS_KEY"])
	attrs := pv.Spec.CSI.VolumeAttributes
	if driverOf(pv) == obs.Driver {
		return rclone.Remote{
			Name: pv.Name,
			Type: "s3",
			Options: map[string]string{
				"provider":          "Other",
				"endpoint":          attrs[obs.EndpointAttribute],
				"region":            obs.Region,
				"access_key_id":     id,
				"secret_access_key": secret,
				"force_path_style":  "true",
				// CCI made the bucket; the tenant's keys may not make one.
				"no_check_bucket": "true",
			},
			Path:      attrs[obs.BucketAttribute],
			CacheMode: "writes",
		}, nil
	}
	pass, err := c.remote.Obscure(ctx, secret)
	if err != nil {
		return rclone.Remote{}, err
	}
	return rclone.Remote{
		Name:    pv.Name,
		Type:    "webdav",
		Options: map[string]string{"url": attrs[sfs.EndpointAttribute], "vendor": "other", "user": id, "pass": pass},
		// The close of a written file waits for its upload (the
		// cached modes upload after the close): a file past the
		// volume's size fails in the pod, not later in the background.
		CacheMode: "off",
	}, nil
}
