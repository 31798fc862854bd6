package server

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/overlay"
)

// NetworkConfigMap is kube-system's ConfigMap in which the control plane
// tells every host the cluster-wide network settings they must share: the
// pod and Service ranges (each host masquerades only what leaves both) and
// the overlay's net-conf.json.
const NetworkConfigMap = "cci-network"

// Keys of NetworkConfigMap.
const (
	NetworkKeyClusterCIDR = "clusterCIDR"
	NetworkKeyServiceCIDR = "serviceCIDR"
	NetworkKeyNetConf     = "net-conf.json"
)

// ensureNetworkConfig writes NetworkConfigMap from the server's flags; a
// restart with other flags rewrites it (hosts read it when they start).
func ensureNetworkConfig(ctx context.Context, c kubernetes.Interface, cfg Config) error {
	netConf, err := overlay.BuildNetConf(cfg.ClusterCIDR, cfg.FlannelBackend, cfg.VXLANVNI, cfg.VXLANPort)
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: NetworkConfigMap, Namespace: metav1.NamespaceSystem},
		Data: map[string]string{
			NetworkKeyClusterCIDR: cfg.ClusterCIDR,
			NetworkKeyServiceCIDR: cfg.ServiceCIDR,
			NetworkKeyNetConf:     string(netConf),
		},
	}
	cms := c.CoreV1().ConfigMaps(metav1.NamespaceSystem)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
		}
	} else if err != nil {
		return fmt.Errorf("update ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return nil
}
