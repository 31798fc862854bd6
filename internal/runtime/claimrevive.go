package runtime

// Claim volumes whose file system process died under running pods.
//
// A cci-obs bucket or cci-sfs volume is a FUSE mount of a user-space
// process (rclone) on the host, bind-mounted into each pod. When that
// process dies (killed, crashed, out of memory) every bind of it answers
// ENOTCONN, and upstream's FUSE-based CSI drivers leave the pods so until
// they are restarted by hand. The agent instead checks the claim volumes of
// its running pods at each volume resync, mounts a dead volume afresh and
// stacks the new mount on the pod's volume folder:
//
//   - runc containers bind the folders of claim volumes with rslave
//     propagation from a folder that is a shared mount of its own, so the
//     new mount shows in the running container at its mount path at once
//     (as a kubelet's HostToContainer propagation does); the container
//     keeps running, and only files it held open on the dead mount fail;
//   - gVisor's sandbox reaches its volumes through descriptors its gofer
//     opened when the container started, which stay on the dead mount: the
//     containers that mount the volume are restarted instead, with an event
//     saying why.

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// mountAnswerTimeout bounds the check of one mount: a FUSE mount whose
// process hangs does not answer at all.
var mountAnswerTimeout = 5 * time.Second

// answers tells whether the file system mounted at dir answers: a FUSE
// mount whose process died fails with ENOTCONN, one whose process hangs
// does not answer in time.
func answers(dir string) bool {
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(dir, &st)
	}()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(mountAnswerTimeout):
		return false
	}
}

// shareClaimMount makes the pod's folder of a claim volume (a bind mount
// of the staged volume) a shared mount in a peer group of its own: the
// containers' rslave binds of it then receive what is later mounted on it,
// and nothing mounted on it reaches the staged volume or other pods.
func shareClaimMount(dir string) error {
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %q private: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %q shared: %w", dir, err)
	}
	return nil
}

// claimPropagation binds the folders of the pod's filesystem claim volumes
// into a runc container with rslave propagation (see the top of this file).
func (r *Runtime) claimPropagation(pod *v1.Pod) oci.SpecOpts {
	claimDirs := map[string]bool{}
	for _, vol := range pod.Spec.Volumes {
		if name, _ := claimName(pod, vol); name != "" {
			claimDirs[r.volumeDir(pod, vol.Name)] = true
		}
	}
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		for i := range s.Mounts {
			m := &s.Mounts[i]
			if m.Type != "bind" || !claimDirs[m.Source] {
				continue
			}
			for j, o := range m.Options {
				if o == "rprivate" {
					m.Options[j] = "rslave"
				}
			}
		}
		return nil
	}
}

// reviveClaims mounts afresh each filesystem claim volume of the pod whose
// mount no longer answers (see the top of this file). It runs in the
// worker's goroutine.
func (w *podWorker) reviveClaims() {
	pod := w.pod()
	r := w.r
	if r.cfg.Claims == nil {
		return
	}
	for _, vol := range pod.Spec.Volumes {
		claim, _ := claimName(pod, vol)
		if claim == "" {
			continue
		}
		dir := r.volumeDir(pod, vol.Name)
		// A statfs first: every pod's claims are checked every few
		// seconds, and it is far cheaper than reading the mount table.
		if answers(dir) {
			continue
		}
		if _, dev, err := readClaimRecord(r.claimRecord(pod, vol.Name)); err != nil || dev != "" {
			continue // not published yet, or a block device
		}
		if !mounted(dir) {
			continue
		}
		w.log.Warn("claim volume does not answer; mounting it again", "volume", vol.Name, "claim", claim)
		if err := w.remountClaim(pod, vol.Name, claim, dir); err != nil {
			w.event(v1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed for volume %q: its file system stopped answering and could not be mounted again: %v", vol.Name, err)
			continue
		}
		w.mu.Lock()
		handler := w.rec.Handler
		w.mu.Unlock()
		if handler != handlerGVisor {
			w.event(v1.EventTypeNormal, "VolumeRemounted", "Volume %q stopped answering (its file system process ended) and was mounted again; the containers see it at their mount paths", vol.Name)
			continue
		}
		w.event(v1.EventTypeWarning, "VolumeRemounted", "Volume %q stopped answering (its file system process ended) and was mounted again; the containers that mount it restart to see it (gVisor)", vol.Name)
		for _, c := range pod.Spec.Containers {
			if !mountsVolume(&c, vol.Name) {
				continue
			}
			if cr := w.rec.ctr(c.Name); cr != nil {
				w.killContainer(&c, cr, fmt.Sprintf("Container %s mounts volume %s, which was mounted again, and will be restarted", c.Name, vol.Name), w.gracePeriod(nil), true)
			}
		}
	}
}

// remountClaim stages the claim's volume again (the stage of a dead mount
// mounts it afresh) and stacks it on the pod's folder dir.
func (w *podWorker) remountClaim(pod *v1.Pod, volName, claim, dir string) error {
	r := w.r
	ctx, cancel := context.WithTimeout(w.ctx(), time.Minute)
	defer cancel()
	pvc, err := r.cfg.Kube.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get persistentvolumeclaim %q: %w", claim, err)
	}
	pv, err := r.cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get persistentvolume %q: %w", pvc.Spec.VolumeName, err)
	}
	staged, err := r.cfg.Claims.Stage(ctx, pv)
	if err != nil {
		return fmt.Errorf("stage persistentvolume %q: %w", pv.Name, err)
	}
	rec := r.claimRecord(pod, volName)
	if err := os.WriteFile(rec, []byte(staged+"\n"), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(staged, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind persistentvolume %q into the pod again: %w", pv.Name, err)
	}
	return nil
}

// mountsVolume tells whether the container mounts the volume.
func mountsVolume(c *v1.Container, name string) bool {
	for _, vm := range c.VolumeMounts {
		if vm.Name == name {
			return true
		}
	}
	return false
}
