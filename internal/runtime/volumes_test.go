package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// An emptyDir on the default medium is mode 0777 whatever the agent's umask,
// as the kubelet makes it, and a mode a container set later stays.
func TestEmptyDirMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	r := &Runtime{cfg: Config{StateDir: t.TempDir()}}
	pod := testPod()
	vol := v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}
	pod.Spec.Volumes = []v1.Volume{vol}
	if err := r.prepareVolume(context.Background(), pod, vol); err != nil {
		t.Fatal(err)
	}
	dir := r.volumeDir(pod, "scratch")
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o777 {
		t.Fatalf("emptyDir mode %v, want -rwxrwxrwx", fi.Mode().Perm())
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := r.prepareVolume(context.Background(), pod, vol); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("emptyDir prepared again changed mode to %v", fi.Mode().Perm())
	}
}

// The downward API reads a limit the container does not set as the node's
// allocatable (or the pod's limit with pod-level resources), as the
// kubelet does; requests and set limits read as they are.
func TestResourceFieldDefaults(t *testing.T) {
	alloc := v1.ResourceList{v1.ResourceCPU: resource.MustParse("2"), v1.ResourceMemory: resource.MustParse("4Gi")}
	limited := v1.Container{Name: "limited", Resources: v1.ResourceRequirements{
		Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("1250m"), v1.ResourceMemory: resource.MustParse("64Mi")},
		Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m"), v1.ResourceMemory: resource.MustParse("32Mi")},
	}}
	free := v1.Container{Name: "free"}
	pod := &v1.Pod{Spec: v1.PodSpec{Containers: []v1.Container{limited, free}}}
	podLevel := pod.DeepCopy()
	podLevel.Spec.Resources = &v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceMemory: resource.MustParse("1Gi")}}
	for _, tc := range []struct {
		pod       *v1.Pod
		container string
		res       string
		divisor   string
		want      string
	}{
		{pod, "limited", "limits.cpu", "", "2"},
		{pod, "limited", "limits.cpu", "1m", "1250"},
		{pod, "limited", "limits.memory", "", "67108864"},
		{pod, "limited", "requests.cpu", "1m", "250"},
		{pod, "limited", "requests.memory", "1Mi", "32"},
		{pod, "free", "limits.cpu", "", "2"},
		{pod, "free", "limits.cpu", "1m", "2000"},
		{pod, "free", "limits.memory", "", "4294967296"},
		{pod, "free", "limits.memory", "1Mi", "4096"},
		{pod, "free", "requests.cpu", "", "0"},
		{pod, "", "limits.cpu", "1m", "1250"},
		{podLevel, "free", "limits.memory", "1Mi", "1024"},
		{podLevel, "free", "limits.cpu", "", "2"},
	} {
		ref := &v1.ResourceFieldSelector{ContainerName: tc.container, Resource: tc.res}
		if tc.divisor != "" {
			ref.Divisor = resource.MustParse(tc.divisor)
		}
		got, err := resourceField(tc.pod, ref, alloc)
		if err != nil || got != tc.want {
			t.Errorf("%s of %q (divisor %q): %q, %v; want %q", tc.res, tc.container, tc.divisor, got, err, tc.want)
		}
	}
	if _, err := resourceField(pod, &v1.ResourceFieldSelector{ContainerName: "none", Resource: "limits.cpu"}, alloc); err == nil {
		t.Errorf("an unknown container gave no error")
	}
}

func TestParseOOMKill(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want int64
	}{
		{"oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", 2},
		{"oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", 0},
		{"low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n", 1},
		{"oom_kill_disable 0\nunder_oom 0\n", 0},
	} {
		if got := parseOOMKill([]byte(tc.raw)); got != tc.want {
			t.Errorf("parseOOMKill(%q) = %d, want %d", tc.raw, got, tc.want)
		}
	}
}

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
