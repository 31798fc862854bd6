package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// imageVolumePod runs the shell image with the image ref mounted at /vol
// and its etc folder (subPath) at /etc-only.
func imageVolumePod(name, rc, ref string) *v1.Pod {
	p := shellPod(name, rc, "sleep 3600")
	p.Spec.Volumes = []v1.Volume{{Name: "img", VolumeSource: v1.VolumeSource{
		Image: &v1.ImageVolumeSource{Reference: ref, PullPolicy: v1.PullAlways},
	}}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{
		{Name: "img", MountPath: "/vol"},
		{Name: "img", MountPath: "/etc-only", SubPath: "etc"},
	}
	return p
}

// imageVolumeViews lists containerd snapshots the agent made for the image
// volumes of the pod with this UID.
func imageVolumeViews(t *testing.T, uid string) []string {
	t.Helper()
	var keys []string
	ctx := namespaces.WithNamespace(context.Background(), "cci")
	err := ctrdClient(t).SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "cci-image-volume/"+uid+"/") {
			keys = append(keys, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestImageVolume: an `image` volume shows the image's files read-only, a
// subPath shows one of its folders, and the mount and its snapshot go with
// the pod; an image that cannot be pulled leaves the container waiting in
// ErrImagePull / ImagePullBackOff naming the image, as the kubelet reports.
func TestImageVolume(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		missing := image("cci-test/no-such-image:1")
		createPod(t, ns, imageVolumePod("vol", rc, image(testimage.HTTPD)))
		createPod(t, ns, imageVolumePod("missing", rc, missing))

		pods := waitRunning(t, ns, "app=vol", 1, 120*time.Second)
		uid := string(pods[0].UID)
		if got := execOut(t, ns, "vol", "cat", "/vol/etc/passwd"); !strings.HasPrefix(got, "root:x:0:0:") {
			t.Errorf("/vol/etc/passwd = %q, want the image's passwd file", got)
		}
		if got := execOut(t, ns, "vol", "cat", "/etc-only/group"); !strings.HasPrefix(got, "root:x:0:") {
			t.Errorf("subPath etc: /etc-only/group = %q, want the image's group file", got)
		}
		got := execOut(t, ns, "vol", "sh", "-c", "touch /vol/written 2>&1; echo rc=$?")
		if !strings.Contains(got, "Read-only file system") || strings.Contains(got, "rc=0") {
			t.Errorf("writing into the image volume: %q, want a read-only file system error", got)
		}
		if views := imageVolumeViews(t, uid); len(views) != 1 {
			t.Errorf("image volume views of the pod: %v, want one", views)
		}

		waitFor(t, 90*time.Second, "missing: ErrImagePull or ImagePullBackOff naming the image", func() (bool, string) {
			p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "missing", metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
				return false, fmt.Sprint(err, p.Status.ContainerStatuses)
			}
			w := p.Status.ContainerStatuses[0].State.Waiting
			return (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && strings.Contains(w.Message, missing), w.Reason + ": " + w.Message
		})
		evs, err := client(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=missing,reason=Failed"})
		if err != nil {
			t.Fatal(err)
		}
		var failed bool
		for _, e := range evs.Items {
			failed = failed || strings.Contains(e.Message, `Failed to pull image "`+missing+`"`)
		}
		if !failed {
			t.Errorf("no Failed event says the image volume's image could not be pulled: %v", evs.Items)
		}

		// The agent finishes with the pod after its API object may be gone.
		mustKubectl(t, "-n", ns, "delete", "pod", "vol", "--wait=true", "--timeout=90s")
		waitFor(t, 90*time.Second, "the image volume unmounted and its view removed", func() (bool, string) {
			mountinfo, err := os.ReadFile("/proc/self/mountinfo")
			if err != nil {
				return false, err.Error()
			}
			var left []string
			for _, line := range strings.Split(string(mountinfo), "\n") {
				if strings.Contains(line, uid+"/volume") {
					left = append(left, line)
				}
			}
			views := imageVolumeViews(t, uid)
			return len(left) == 0 && len(views) == 0, fmt.Sprintf("mounts %q, views %q", left, views)
		})
	})
}
