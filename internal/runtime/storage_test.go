package runtime

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestStorageViolation(t *testing.T) {
	q := resource.MustParse
	limited := func(name, limit string) v1.Container {
		return v1.Container{Name: name, Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceEphemeralStorage: q(limit)}}}
	}
	sized := func(name, size string) v1.Volume {
		s := q(size)
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{SizeLimit: &s}}}
	}
	memory := func(name, size string) v1.Volume {
		s := q(size)
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory, SizeLimit: &s}}}
	}
	const mi = 1 << 20
	for _, tc := range []struct {
		name    string
		spec    v1.PodSpec
		use     storageUse
		limits  bool
		message string
	}{
		{name: "no limits", spec: v1.PodSpec{Containers: []v1.Container{{Name: "a"}}},
			use: storageUse{containers: map[string]int64{"a": 100 * mi}}},
		{name: "under the container's limit", spec: v1.PodSpec{Containers: []v1.Container{limited("a", "10Mi")}}, limits: true,
			use: storageUse{containers: map[string]int64{"a": 9 * mi}}},
		{name: "a container past its limit", spec: v1.PodSpec{Containers: []v1.Container{limited("a", "10Mi"), limited("b", "50Mi")}}, limits: true,
			use:     storageUse{containers: map[string]int64{"a": 11 * mi, "b": 0}},
			message: `Container a exceeded its local ephemeral storage limit "10Mi". `},
		{name: "the pod past the sum, with its emptyDir", spec: v1.PodSpec{Containers: []v1.Container{limited("a", "10Mi")}, Volumes: []v1.Volume{{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}}, limits: true,
			use:     storageUse{containers: map[string]int64{"a": 5 * mi}, emptyDirs: map[string]int64{"scratch": 6 * mi}},
			message: "Pod ephemeral local storage usage exceeds the total limit of containers 10Mi. "},
		{name: "an emptyDir past its sizeLimit", spec: v1.PodSpec{Containers: []v1.Container{{Name: "a"}}, Volumes: []v1.Volume{sized("scratch", "1Mi")}}, limits: true,
			use:     storageUse{containers: map[string]int64{"a": 0}, emptyDirs: map[string]int64{"scratch": 2 * mi}},
			message: `Usage of EmptyDir volume "scratch" exceeds the limit "1Mi". `},
		{name: "a memory emptyDir is not disk", spec: v1.PodSpec{Containers: []v1.Container{{Name: "a"}}, Volumes: []v1.Volume{memory("m", "1Mi")}},
			use: storageUse{emptyDirs: map[string]int64{"m": 2 * mi}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &v1.Pod{Spec: tc.spec}
			if got := limitsStorage(pod); got != tc.limits {
				t.Errorf("limitsStorage = %v, want %v", got, tc.limits)
			}
			if got := storageViolation(pod, tc.use); got != tc.message {
				t.Errorf("storageViolation = %q, want %q", got, tc.message)
			}
		})
	}
}
