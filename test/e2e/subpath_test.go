package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/testimage"
)

// subPathPod is a pod whose init container plants symlinks in a shared
// emptyDir, as any container of a pod can, and whose main container mounts
// subPath of it at /mnt and runs script.
func subPathPod(name, rc, subPath, script string) *v1.Pod {
	p := shellPod(name, rc, script)
	p.Spec.Volumes = []v1.Volume{{Name: "shared", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
	p.Spec.InitContainers = []v1.Container{{
		Name: "plant", Image: image(testimage.Shell),
		Command:      []string{"sh", "-c", "mkdir /shared/data && echo hello > /shared/data/file && ln -s / /shared/escape && ln -s data /shared/inside"},
		VolumeMounts: []v1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
	}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "shared", MountPath: "/mnt", SubPath: subPath}}
	return p
}

// TestSubPathSymlinkEscape: a subPath crossing a symlink a container planted
// to the host's root is refused with CreateContainerConfigError and an
// event, and its container never runs (had it run with the host's root at
// /mnt, it would leave a file on the host); a symlink that stays inside the
// volume is mounted as the kubelet does.
func TestSubPathSymlinkEscape(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		marker := fmt.Sprintf("/tmp/cci-subpath-escaped-%s", ns)
		t.Cleanup(func() { os.Remove(marker) })
		createPod(t, ns, subPathPod("escape", rc, "escape", "touch /mnt"+marker+"; sleep 3600"))
		createPod(t, ns, subPathPod("inside", rc, "inside", "sleep 3600"))

		wantMsg := `failed to prepare subPath for volumeMount "shared" of container "main"`
		waitFor(t, 90*time.Second, "escape: CreateContainerConfigError", func() (bool, string) {
			p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "escape", metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Waiting == nil {
				return false, fmt.Sprint(err, p.Status.ContainerStatuses)
			}
			w := p.Status.ContainerStatuses[0].State.Waiting
			return w.Reason == "CreateContainerConfigError" && strings.Contains(w.Message, wantMsg) && strings.Contains(w.Message, `"escape"`),
				w.Reason + ": " + w.Message
		})
		waitFor(t, 30*time.Second, "escape: Failed event naming the subPath", func() (bool, string) {
			evs, err := client(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=escape,reason=Failed"})
			if err != nil {
				return false, err.Error()
			}
			var msgs []string
			for _, e := range evs.Items {
				if strings.Contains(e.Message, wantMsg) {
					return true, ""
				}
				msgs = append(msgs, e.Message)
			}
			return false, strings.Join(msgs, "; ")
		})

		// The pod beside it runs, and its subPath crosses the symlink to data.
		waitRunning(t, ns, "app=inside", 1, 90*time.Second)
		if got := execOut(t, ns, "inside", "cat", "/mnt/file"); got != "hello\n" {
			t.Errorf("subPath inside: /mnt/file = %q, want %q", got, "hello\n")
		}

		// By now the escaping container has been tried at least once.
		p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "escape", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s := p.Status.ContainerStatuses[0]; s.State.Running != nil || s.State.Terminated != nil || s.LastTerminationState.Terminated != nil || s.RestartCount != 0 {
			t.Errorf("escape: container main ran: %+v", s)
		}
		if p.Status.Phase != v1.PodPending {
			t.Errorf("escape: phase %s, want Pending", p.Status.Phase)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("escape: the container wrote %s on the host", marker)
		}
	})
}
