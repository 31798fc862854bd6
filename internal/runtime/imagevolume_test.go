package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestImageVolumesOf(t *testing.T) {
	pod := &v1.Pod{Spec: v1.PodSpec{Volumes: []v1.Volume{
		{Name: "a", VolumeSource: v1.VolumeSource{Image: &v1.ImageVolumeSource{Reference: "reg/a:1"}}},
		{Name: "b", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
		{Name: "c", VolumeSource: v1.VolumeSource{Image: &v1.ImageVolumeSource{Reference: "reg/c:1"}}},
	}}}
	for _, tc := range []struct {
		name   string
		mounts []string
		want   []string
	}{
		{"none", nil, nil},
		{"not an image volume", []string{"b"}, nil},
		{"in mount order, each once", []string{"c", "b", "a", "c"}, []string{"c", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &v1.Container{}
			for _, m := range tc.mounts {
				c.VolumeMounts = append(c.VolumeMounts, v1.VolumeMount{Name: m, MountPath: "/" + m})
			}
			var got []string
			for _, v := range imageVolumesOf(pod, c) {
				got = append(got, v.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("imageVolumesOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCheckImageSubPath(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc", "ssl"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "passwd"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		subPath string
		wantErr string // "" for none
	}{
		{"etc", ""},
		{"etc/ssl", ""},
		{"etc/passwd", "it is a file"},
		{"missing", "must be a folder of the image"},
		{"escape", "must be a folder of the image"},
	} {
		t.Run(tc.subPath, func(t *testing.T) {
			err := checkImageSubPath(root, tc.subPath)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("checkImageSubPath(%q) = %v, want error containing %q", tc.subPath, err, tc.wantErr)
			}
		})
	}
}
