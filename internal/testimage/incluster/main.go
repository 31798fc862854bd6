// Command incluster is a test program run inside a pod: it reaches the
// Kubernetes API the way in-cluster workloads do (client-go's in-cluster
// configuration: the kubernetes Service from the pod's environment and the
// projected service-account token) and prints who the API says it is.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "incluster:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := kube.Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("server version from %s: %w", cfg.Host, err)
	}
	review, err := kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("self subject review at %s: %w", cfg.Host, err)
	}
	fmt.Printf("host=%s version=%s user=%s\n", cfg.Host, v.GitVersion, review.Status.UserInfo.Username)
	// With the downward API's POD_NAMESPACE and POD_NAME, the pod also
	// reads its own object: the API it reached is the one that scheduled
	// it (a burst pod's copy must reach its home cluster, not the one it
	// runs in).
	if name, ns := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE"); name != "" && ns != "" {
		pod, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get own pod %s/%s at %s: %w", ns, name, cfg.Host, err)
		}
		fmt.Printf("pod=%s/%s node=%s uid=%s\n", ns, name, pod.Spec.NodeName, pod.UID)
	}
	return nil
}
