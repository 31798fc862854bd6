package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// fakeTrustBundles serves fixed bundles by name and by signer (all of a
// signer's bundles match any non-nil selector), with the kubelet
// manager's rules for missing ones.
type fakeTrustBundles struct {
	byName   map[string]string
	bySigner map[string]string
}

func (f fakeTrustBundles) GetTrustAnchorsByName(_ context.Context, name string, allowMissing bool) ([]byte, error) {
	if b, ok := f.byName[name]; ok {
		return []byte(b), nil
	}
	if allowMissing {
		return []byte{}, nil
	}
	return nil, fmt.Errorf("while getting ClusterTrustBundle: clustertrustbundles.certificates.k8s.io %q not found", name)
}

func (f fakeTrustBundles) GetTrustAnchorsBySigner(_ context.Context, signer string, sel *metav1.LabelSelector, allowMissing bool) ([]byte, error) {
	if b, ok := f.bySigner[signer]; ok && sel != nil {
		return []byte(b), nil
	}
	if allowMissing {
		return []byte{}, nil
	}
	return nil, errors.New("combination of signerName and labelSelector matched zero ClusterTrustBundles")
}

// fakePodCertificates has issued credentials for the sources listed in
// issued (by "volume/index").
type fakePodCertificates struct{ issued map[string]bool }

func (fakePodCertificates) TrackPod(context.Context, *v1.Pod)  {}
func (fakePodCertificates) ForgetPod(context.Context, *v1.Pod) {}
func (f fakePodCertificates) GetPodCertificateCredentialBundle(_ context.Context, ns, pod, uid, vol string, i int) ([]byte, []byte, error) {
	if !f.issued[fmt.Sprintf("%s/%d", vol, i)] {
		return nil, nil, fmt.Errorf("no credentials yet for key=%s/%s/%s/%d", ns, pod, vol, i)
	}
	return []byte("KEY\n"), []byte("CHAIN\n"), nil
}

func TestProjectedTrustBundlesAndCertificates(t *testing.T) {
	ctbByName := func(name string, optional *bool) v1.VolumeProjection {
		return v1.VolumeProjection{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{Name: &name, Optional: optional, Path: "ca.pem"}}
	}
	ctbBySigner := func(signer string, sel *metav1.LabelSelector, optional *bool) v1.VolumeProjection {
		return v1.VolumeProjection{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{SignerName: &signer, LabelSelector: sel, Optional: optional, Path: "ca.pem"}}
	}
	cert := v1.VolumeProjection{PodCertificate: &v1.PodCertificateProjection{
		SignerName: "example.com/s", KeyType: "ED25519",
		CredentialBundlePath: "bundle.pem", KeyPath: "key.pem", CertificateChainPath: "chain.pem",
	}}
	for _, tc := range []struct {
		name    string
		sources []v1.VolumeProjection
		want    map[string]string
		wantErr string
	}{
		{name: "by name", sources: []v1.VolumeProjection{ctbByName("one", nil)}, want: map[string]string{"ca.pem": "PEM1"}},
		{name: "missing name", sources: []v1.VolumeProjection{ctbByName("none", nil)}, wantErr: `"none" not found`},
		{name: "missing name, optional", sources: []v1.VolumeProjection{ctbByName("none", ptr.To(true))}, want: map[string]string{"ca.pem": ""}},
		{name: "by signer", sources: []v1.VolumeProjection{ctbBySigner("example.com/s", &metav1.LabelSelector{}, nil)}, want: map[string]string{"ca.pem": "PEMS"}},
		{name: "signer, nil selector matches nothing", sources: []v1.VolumeProjection{ctbBySigner("example.com/s", nil, nil)}, wantErr: "matched zero"},
		{name: "signer, nil selector, optional", sources: []v1.VolumeProjection{ctbBySigner("example.com/s", nil, ptr.To(true))}, want: map[string]string{"ca.pem": ""}},
		{name: "neither name nor signer", sources: []v1.VolumeProjection{{ClusterTrustBundle: &v1.ClusterTrustBundleProjection{Path: "ca.pem"}}}, wantErr: "requires either name or signerName"},
		{name: "certificate issued", sources: []v1.VolumeProjection{ctbByName("one", nil), cert},
			want: map[string]string{"ca.pem": "PEM1", "bundle.pem": "KEY\nCHAIN\n", "key.pem": "KEY\n", "chain.pem": "CHAIN\n"}},
		{name: "certificate not issued yet", sources: []v1.VolumeProjection{cert}, wantErr: "no credentials yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Runtime{cfg: Config{
				TrustBundles:    fakeTrustBundles{byName: map[string]string{"one": "PEM1"}, bySigner: map[string]string{"example.com/s": "PEMS"}},
				PodCertificates: fakePodCertificates{issued: map[string]bool{"tls/1": true}},
			}}
			files, err := r.projectedFiles(context.Background(), testPod(), "tls", &v1.ProjectedVolumeSource{Sources: tc.sources, DefaultMode: ptr.To[int32](0o644)})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for p, f := range files {
				got[p] = string(f.data)
				if f.mode != 0o644 {
					t.Errorf("%s: mode %o, want 644", p, f.mode)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("files %v, want %v", got, tc.want)
			}
		})
	}
}
