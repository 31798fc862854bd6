package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/kubernetes/test/utils/hermeticpodcertificatesigner"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

// caPEM is a fresh self-signed CA certificate.
func caPEM(t *testing.T, cn string) string {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func createCTB(t *testing.T, name, signer string, labels map[string]string, bundle string) {
	t.Helper()
	ctb := &certificatesv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: signer, TrustBundle: bundle},
	}
	c := client(t).CertificatesV1().ClusterTrustBundles()
	if _, err := c.Create(context.Background(), ctb, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterTrustBundle %s: %v", name, err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// TestClusterTrustBundleProjection: clusterTrustBundle projections are
// filled as the kubelet fills them (by name, by signer and label
// selector, optional ones empty), and a pod whose required bundle does
// not exist waits, not ready, until it does.
func TestClusterTrustBundleProjection(t *testing.T) {
	ns := testNamespace(t)
	id := utilrand.String(5)
	signer := "e2e.cci.io/" + id
	named := "e2e-ctb-" + id
	one, two, other := caPEM(t, "named"), caPEM(t, "alive"), caPEM(t, "dead")
	createCTB(t, named, "", nil, one)
	createCTB(t, "e2e.cci.io:"+id+":alive", signer, map[string]string{"alive": "true"}, two)
	createCTB(t, "e2e.cci.io:"+id+":dead", signer, map[string]string{"alive": "false"}, other)
	signer2 := "e2e.cci.io/" + id + "-2"
	createCTB(t, "e2e.cci.io:"+id+"-2:one", signer2, nil, other)

	p := shellPod("ctb", "", "sleep 3600")
	p.Spec.Volumes = []v1.Volume{{Name: "ctb", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
		{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{Name: &named, Path: "named.pem"}},
		{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{SignerName: &signer, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"alive": "true"}}, Path: "alive.pem"}},
		{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{SignerName: &signer, LabelSelector: &metav1.LabelSelector{}, Path: "all.pem"}},
		{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{Name: ptr.To("does-not-exist"), Optional: ptr.To(true), Path: "missing.pem"}},
		// Another signer: the kubelet's manager caches a signer's
		// bundles under the selector's string, which is "" for both nil
		// (nothing) and {} (everything).
		{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{SignerName: &signer2, Optional: ptr.To(true), Path: "nil-selector.pem"}},
	}}}}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "ctb", MountPath: "/ctb"}}
	createPod(t, ns, p)
	waitRunning(t, ns, "app=ctb", 1, 90*time.Second)
	for file, want := range map[string][]string{
		"named.pem":        {one},
		"alive.pem":        {two},
		"all.pem":          {two, other},
		"missing.pem":      nil,
		"nil-selector.pem": nil,
	} {
		got := execOut(t, ns, "ctb", "cat", "/ctb/"+file)
		if len(want) == 0 && got != "" {
			t.Errorf("%s = %q, want empty", file, got)
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s = %q, want it to hold %q", file, got, w)
			}
		}
		if strings.Count(got, "BEGIN CERTIFICATE") != len(want) {
			t.Errorf("%s holds %d certificates, want %d", file, strings.Count(got, "BEGIN CERTIFICATE"), len(want))
		}
	}

	// A required bundle that does not exist: the pod does not start.
	missing := "e2e-ctb-late-" + id
	w := shellPod("ctb-wait", "", "sleep 3600")
	w.Spec.Volumes = []v1.Volume{{Name: "ctb", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
		{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{Name: &missing, Optional: ptr.To(false), Path: "ca.pem"}},
	}}}}}
	w.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "ctb", MountPath: "/ctb"}}
	createPod(t, ns, w)
	waitFor(t, 30*time.Second, "a FailedMount event", func() (bool, string) {
		evs, err := client(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=ctb-wait"})
		if err != nil {
			return false, err.Error()
		}
		var all []string
		for _, e := range evs.Items {
			all = append(all, e.Reason+": "+e.Message)
			if e.Reason == "FailedMount" && strings.Contains(e.Message, "not found") {
				return true, ""
			}
		}
		return false, strings.Join(all, "\n")
	})
	// The event may reach the API before the pod's status does.
	waitFor(t, 30*time.Second, "Pending with Ready False (ContainersNotReady)", func() (bool, string) {
		got, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "ctb-wait", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range got.Status.Conditions {
			if c.Type == v1.PodReady && c.Status == v1.ConditionFalse && c.Reason == "ContainersNotReady" && c.Message == "containers with unready status: [main]" {
				return got.Status.Phase == v1.PodPending, fmt.Sprintf("phase %s", got.Status.Phase)
			}
		}
		return false, fmt.Sprintf("phase %s, conditions %+v", got.Status.Phase, got.Status.Conditions)
	})
	createCTB(t, missing, "", nil, one)
	waitRunning(t, ns, "app=ctb-wait", 1, 60*time.Second)
	if out := execOut(t, ns, "ctb-wait", "cat", "/ctb/ca.pem"); !strings.Contains(out, one) {
		t.Errorf("ca.pem = %q, want the bundle", out)
	}
}

// TestPodCertificateProjection: a podCertificate projection gets its key
// and certificate chain from a PodCertificateRequest the agent files and
// a signer issues (upstream's hermetic test signer, run here).
func TestPodCertificateProjection(t *testing.T) {
	ns := testNamespace(t)
	signer := "e2e.cci.io/" + utilrand.String(6)
	keys, certs, err := hermeticpodcertificatesigner.GenerateCAHierarchy(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go hermeticpodcertificatesigner.New(clock.RealClock{}, signer, "cluster.local", keys, certs, client(t)).Run(ctx)

	p := shellPod("cert", "", "sleep 3600")
	p.Spec.Volumes = []v1.Volume{{Name: "tls", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
		{PodCertificate: &v1.PodCertificateProjection{
			SignerName: signer, KeyType: "ED25519", MaxExpirationSeconds: ptr.To[int32](3600),
			CredentialBundlePath: "bundle.pem", KeyPath: "key.pem", CertificateChainPath: "chain.pem",
			UserAnnotations: map[string]string{hermeticpodcertificatesigner.SpiffePathKey: "/custom"},
		}},
		{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{SignerName: &signer, LabelSelector: &metav1.LabelSelector{}, Path: "trust.pem"}},
	}}}}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "tls", MountPath: "/tls"}}
	createPod(t, ns, p)
	waitRunning(t, ns, "app=cert", 1, 120*time.Second)

	key := execOut(t, ns, "cert", "cat", "/tls/key.pem")
	chain := execOut(t, ns, "cert", "cat", "/tls/chain.pem")
	bundle := execOut(t, ns, "cert", "cat", "/tls/bundle.pem")
	trust := execOut(t, ns, "cert", "cat", "/tls/trust.pem")
	if !strings.Contains(key, "PRIVATE KEY") || bundle != key+chain {
		t.Fatalf("key %q, bundle %q: want the key, and the key followed by the chain", key, bundle)
	}
	block, _ := pem.Decode([]byte(chain))
	if block == nil {
		t.Fatalf("chain.pem %q holds no certificate", chain)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != time.Hour {
		t.Errorf("certificate lives %s, want the 1h asked for", life)
	}
	uris := fmt.Sprint(leaf.URIs)
	if !strings.Contains(uris, "spiffe://") || !strings.Contains(uris, "/custom") {
		t.Errorf("certificate URIs %s: want the SPIFFE ID with the path of the user annotation", uris)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(trust)) {
		t.Fatalf("trust.pem %q holds no certificate", trust)
	}
	inter := x509.NewCertPool()
	inter.AppendCertsFromPEM([]byte(chain))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the issued certificate does not verify against the signer's trust bundle: %v", err)
	}
	pcrs, err := client(t).CertificatesV1().PodCertificateRequests(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pcrs.Items) == 0 {
		t.Fatalf("PodCertificateRequests %v (%v): want the agent's", pcrs, err)
	}
	if r := pcrs.Items[0].Spec; r.PodName != "cert" || r.NodeName == "" || r.ServiceAccountName != "default" {
		t.Errorf("request spec %+v", r)
	}
}
