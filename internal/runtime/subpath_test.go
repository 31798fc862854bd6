package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
)

// subPathVolume makes a volume folder as a pod's containers could leave it,
// symlinks planted included, and returns its real path.
func subPathVolume(t *testing.T) string {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "data", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(root, "data", "file"), []byte("inside\n"), 0o644))
	for link, target := range map[string]string{
		"inside":    "data",
		"filelink":  "data/file",
		"deep":      "data/sub/../sub",
		"chain":     "inside/sub",
		"escape":    "/",
		"etc":       "/etc",
		"abs":       filepath.Join(root, "data"),
		"up":        "../..",
		"sneaky":    "data/../../x",
		"dangling":  "missing/dir",
		"loop":      "loop",
		"viaescape": "escape/tmp",
	} {
		must(os.Symlink(target, filepath.Join(root, link)))
	}
	return root
}

func TestOpenSubPath(t *testing.T) {
	for _, tc := range []struct {
		subPath string
		want    string // the handle's path below the volume; "" when refused
		created bool   // want did not exist before
		err     string // part of the refusal
	}{
		{subPath: "data", want: "data"},
		{subPath: "data/file", want: "data/file"},
		{subPath: "./data//sub/", want: "data/sub"},
		{subPath: "inside", want: "data"},
		{subPath: "inside/file", want: "data/file"},
		{subPath: "filelink", want: "data/file"},
		{subPath: "deep", want: "data/sub"},
		{subPath: "chain", want: "data/sub"},
		{subPath: "new/dir", want: "new/dir", created: true},
		{subPath: "inside/made", want: "data/made", created: true},
		{subPath: "escape", err: `"escape" in the volume is a symlink to "/", outside the volume`},
		{subPath: "escape/tmp", err: "outside the volume"},
		{subPath: "etc", err: "outside the volume"},
		{subPath: "abs", err: "outside the volume"},
		{subPath: "up", err: `"up" in the volume is a symlink to "../..", outside the volume`},
		{subPath: "sneaky", err: "outside the volume"},
		{subPath: "viaescape", err: "outside the volume"},
		{subPath: "dangling", err: "does not exist in the volume"},
		{subPath: "dangling/more", err: "does not exist in the volume"},
		{subPath: "loop", err: "crosses more than"},
		{subPath: "/etc", err: "must be a relative path"},
		{subPath: "data/../..", err: "must not contain '..'"},
		{subPath: "..", err: "must not contain '..'"},
	} {
		t.Run(tc.subPath, func(t *testing.T) {
			root := subPathVolume(t)
			h, err := openSubPath(root, tc.subPath)
			if tc.err != "" {
				if err == nil {
					h.Close()
					t.Fatalf("openSubPath(%q) = handle, want an error with %q", tc.subPath, tc.err)
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("openSubPath(%q): %v, want an error with %q", tc.subPath, err, tc.err)
				}
				// Nothing may have been created outside the volume or in it
				// (escape/tmp must not become <volume>/tmp).
				for _, p := range []string{"tmp", "x", "missing"} {
					if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
						t.Errorf("refused subPath %q created %q in the volume", tc.subPath, p)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("openSubPath(%q): %v", tc.subPath, err)
			}
			defer h.Close()
			got, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(h.Fd())))
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(root, tc.want); got != want {
				t.Fatalf("openSubPath(%q) opened %q, want %q", tc.subPath, got, want)
			}
			if tc.created {
				fi, err := os.Lstat(got)
				if err != nil || !fi.IsDir() {
					t.Fatalf("subPath %q: %q was not created as a folder: %v", tc.subPath, got, err)
				}
			}
		})
	}
}

// TestContainerMountsSubPath mounts subPaths as a container start does:
// the escape is a CreateContainerConfigError naming the mount, the symlink
// inside the volume is bound and shows its file, and the pod's removal
// unmounts it. It bind-mounts, so it needs root.
func TestContainerMountsSubPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	r := &Runtime{cfg: Config{StateDir: t.TempDir()}}
	pod := testPod()
	pod.Spec.Volumes = []v1.Volume{{Name: "shared", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
	dir := r.volumeDir(pod, "shared")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", "file"), []byte("inside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"escape": "/", "inside": "data"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := r.unmountVolumes(pod); err != nil {
			t.Errorf("unmount volumes: %v", err)
		}
	})

	c := &v1.Container{Name: "main", VolumeMounts: []v1.VolumeMount{{Name: "shared", MountPath: "/x", SubPath: "escape"}}}
	_, err := r.containerMounts(pod, c, nil)
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("containerMounts with subPath escape: %v, want a configError", err)
	}
	if want := `failed to prepare subPath for volumeMount "shared" of container "main": "escape" in the volume is a symlink to "/"`; !strings.Contains(err.Error(), want) {
		t.Fatalf("containerMounts with subPath escape: %q, want it to hold %q", err, want)
	}

	c.VolumeMounts[0].SubPath = "inside"
	mounts, err := r.containerMounts(pod, c, nil)
	if err != nil {
		t.Fatalf("containerMounts with subPath inside: %v", err)
	}
	src := mounts[0].Source
	if want := r.subPathDir(pod, "shared", "main", 0); src != want {
		t.Fatalf("mount source %q, want the subPath bind %q", src, want)
	}
	if b, err := os.ReadFile(filepath.Join(src, "file")); err != nil || string(b) != "inside\n" {
		t.Fatalf("subPath bind shows file %q, %v; want %q", b, err, "inside\n")
	}
	// A second start binds again over the first.
	if _, err := r.containerMounts(pod, c, nil); err != nil {
		t.Fatalf("containerMounts again: %v", err)
	}
	if err := r.unmountVolumes(pod); err != nil {
		t.Fatalf("unmount volumes: %v", err)
	}
	if mounted(src) {
		t.Fatalf("%q is still mounted after unmountVolumes", src)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "file")); err != nil {
		t.Fatalf("unmounting the subPath touched the volume: %v", err)
	}
}

// A subPathExpr expands with the container's environment and fails as the
// kubelet's makeMounts fails it.
func TestMountSubPath(t *testing.T) {
	envs := []kubecontainer.EnvVar{{Name: "POD_NAME", Value: "pod-1"}, {Name: "UP", Value: ".."}, {Name: "ABS", Value: "/tmp"}, {Name: "EMPTY", Value: ""}}
	for _, tc := range []struct {
		vm      v1.VolumeMount
		want    string
		wantErr string
	}{
		{vm: v1.VolumeMount{}, want: ""},
		{vm: v1.VolumeMount{SubPath: "a/b"}, want: "a/b"},
		{vm: v1.VolumeMount{SubPathExpr: "$(POD_NAME)"}, want: "pod-1"},
		{vm: v1.VolumeMount{SubPathExpr: "logs/$(POD_NAME)/x"}, want: "logs/pod-1/x"},
		{vm: v1.VolumeMount{SubPathExpr: "$$(POD_NAME)"}, want: "$(POD_NAME)"},
		{vm: v1.VolumeMount{SubPathExpr: "$(UP)"}, wantErr: "unable to provision SubPath `..`: must not contain '..'"},
		{vm: v1.VolumeMount{SubPathExpr: "$(ABS)"}, wantErr: "error SubPath `/tmp` must not be an absolute path"},
		{vm: v1.VolumeMount{SubPathExpr: "$(MISSING)/$(EMPTY)"}, wantErr: "missing value for EMPTY, MISSING"},
	} {
		got, err := mountSubPath(tc.vm, envs)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%+v: %q, %v; want error %q", tc.vm, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.vm, got, err, tc.want)
		}
	}
}
