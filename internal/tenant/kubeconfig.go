package tenant

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeconfigPath is where `cci tenant create` writes a tenant's kubeconfig.
func KubeconfigPath(dataDir, name string) string {
	return filepath.Join(dataDir, "tenants", name+".kubeconfig")
}

// WriteKubeconfig writes a kubeconfig for the tenant's service account,
// with the tenant's namespace as its context's default, to path. server is
// the apiserver URL the tenant will use.
func WriteKubeconfig(ctx context.Context, kube kubernetes.Interface, name, server, path string) error {
	sec, err := kube.CoreV1().Secrets(name).Get(ctx, TokenSecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read token of tenant %q: %w", name, err)
	}
	token, ca := sec.Data[corev1.ServiceAccountTokenKey], sec.Data[corev1.ServiceAccountRootCAKey]
	if len(token) == 0 || len(ca) == 0 {
		return fmt.Errorf("tenant %q has no token yet (secret %s/%s is empty); try again once it is Ready", name, name, TokenSecret)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cci"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: string(token)}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "cci", AuthInfo: name, Namespace: name}
	cfg.CurrentContext = name
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %q: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}
