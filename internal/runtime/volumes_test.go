package runtime

import (
	"context"
	"os"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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
