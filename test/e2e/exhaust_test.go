package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/test/cluster"
)

// Exhaustion stays in the pod: a fork bomb stops at the pod's pids limit,
// a log flood at the log's size cap, a disk filler is evicted, a memory
// hog is OOM-killed; a neighbour pod runs on untouched.

// neighbour starts a pod beside the abuser and returns a check that it
// still runs its first container, never restarted.
func neighbour(t *testing.T, ns, rc string) func() {
	t.Helper()
	createPod(t, ns, shellPod("neighbour", rc, idle))
	first := waitRunning(t, ns, "app=neighbour", 1, 2*time.Minute)[0].Status.ContainerStatuses[0].ContainerID
	return func() {
		t.Helper()
		p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "neighbour", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		st := p.Status.ContainerStatuses[0]
		if p.Status.Phase != v1.PodRunning || st.ContainerID != first || st.RestartCount != 0 {
			t.Errorf("neighbour pod affected: phase %s, container %s (was %s), restarts %d", p.Status.Phase, st.ContainerID, first, st.RestartCount)
		}
		if got := execOut(t, ns, "neighbour", "echo", "alive"); got != "alive\n" {
			t.Errorf("exec in the neighbour pod: %q", got)
		}
	}
}

// waitLog waits for the pod's log to hold want and returns it.
func waitLog(t *testing.T, ns, pod, want string, timeout time.Duration) string {
	t.Helper()
	var out string
	waitFor(t, timeout, fmt.Sprintf("%q in the log of %s/%s", want, ns, pod), func() (bool, string) {
		out, _ = kubectl(t, "-n", ns, "logs", pod, "--tail", "20")
		return strings.Contains(out, want), out
	})
	return out
}

// A fork bomb forks until the pod's pids limit refuses it; the processes
// it made are then killed and the pod runs on.
func TestForkBombContained(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		alive := neighbour(t, ns, rc)
		// Builtins only once the bomb stopped: no pid is left to fork with.
		bomb := `( while :; do sleep 3600 & echo $! >> /tmp/pids || exit; done ) 2>/dev/null
n=0; while read p; do n=$((n+1)); done < /tmp/pids
echo "forked=$n"
while read p; do kill $p; done < /tmp/pids
echo freed
` + idle
		createPod(t, ns, shellPod("bomb", rc, bomb))
		// Under gVisor the guest's processes are tasks of the sandbox's
		// kernel (runsc 2022-12 has no limit of its own on them), and its
		// host threads are what the limit counts: when the limit refuses
		// the sandbox a thread, the sandbox ends (exit 2) and takes the
		// bomb with it. Contained either way: only the pod pays.
		var out string
		var restarts int32
		waitFor(t, 3*time.Minute, "the fork bomb stopped by the pods limit", func() (bool, string) {
			out, _ = kubectl(t, "-n", ns, "logs", "bomb", "--tail", "20")
			p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "bomb", metav1.GetOptions{})
			if err == nil && len(p.Status.ContainerStatuses) > 0 {
				restarts = p.Status.ContainerStatuses[0].RestartCount
			}
			return strings.Contains(out, "freed") || (rc != "" && restarts > 0), fmt.Sprintf("restarts %d, log %q", restarts, out)
		})
		if !strings.Contains(out, "freed") {
			t.Logf("fork bomb under %q: its sandbox ended at the pods limit %d (%d restarts)", rc, cluster.PodMaxPids, restarts)
			alive()
			return
		}
		var n int
		if i := strings.Index(out, "forked="); i >= 0 {
			fmt.Sscan(out[i+len("forked="):], &n)
		}
		// Stopped by the limit: below it, and not long before it (the
		// shell, its subshell and the runtime's own tasks count too).
		if n >= cluster.PodMaxPids || n < cluster.PodMaxPids/2 {
			t.Errorf("the fork bomb made %d processes, want fewer than the pods limit %d and more than half of it:\n%s", n, cluster.PodMaxPids, out)
		}
		t.Logf("fork bomb under %q: %d processes, stopped by the pods limit %d", rc, n, cluster.PodMaxPids)
		if got := execOut(t, ns, "bomb", "echo", "usable"); got != "usable\n" {
			t.Errorf("exec in the bomb's pod after its processes were freed: %q", got)
		}
		alive()
	})
}

// A container that writes far more than the log cap keeps at most
// containerLogMaxFiles files of at most containerLogMaxSize each (the
// defaults, 5 of 10 MiB), the newest lines in the current one.
func TestLogFloodCapped(t *testing.T) {
	ns := testNamespace(t)
	const maxSize, maxFiles = 10 << 20, 5
	// 80 000 lines of 1 000 bytes: 80 MB, well past 5 × 10 MiB.
	flood := `line=$(printf '%0999d' 0); yes "$line" | head -n 80000; echo flood-done; ` + idle
	createPod(t, ns, shellPod("flood", "", flood))
	p := waitRunning(t, ns, "app=flood", 1, 2*time.Minute)[0]
	waitLog(t, ns, "flood", "flood-done", 3*time.Minute)
	files, _ := filepath.Glob(filepath.Join(cci.DataDir, "agent", "pods", string(p.UID), "logs", "main", "0.log*"))
	var total int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > maxSize {
			t.Errorf("%s holds %d bytes, past the max size %d", filepath.Base(f), st.Size(), maxSize)
		}
		total += st.Size()
	}
	if len(files) > maxFiles || len(files) < 2 {
		t.Errorf("%d log files %v, want between 2 (rotated) and %d", len(files), files, maxFiles)
	}
	t.Logf("log flood of about 80 MB: %d files, %d bytes kept (cap %d)", len(files), total, maxSize*maxFiles)
}

// A pod past its ephemeral-storage limit is evicted, as the kubelet does:
// Failed, reason Evicted, the kubelet's message; a neighbour runs on.
func TestEphemeralStorageEvicted(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		alive := neighbour(t, ns, rc)
		// Past its own limit, not the pod's (the sum, with the quiet
		// sidecar's): the kubelet names the container.
		// Not /tmp: gVisor mounts a tmpfs there, which is memory.
		fill := "dd if=/dev/zero of=/fill bs=1048576 count=20; " + idle
		filler := shellPod("filler", rc, fill)
		filler.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceEphemeralStorage: resource.MustParse("5Mi")}
		quiet := filler.Spec.Containers[0]
		quiet.Name, quiet.Command = "quiet", []string{"sh", "-c", idle}
		quiet.Resources.Limits = v1.ResourceList{v1.ResourceEphemeralStorage: resource.MustParse("100Mi")}
		filler.Spec.Containers = append(filler.Spec.Containers, quiet)
		createPod(t, ns, filler)
		// Past the pod's limit with its emptyDir, which has none of its own.
		podFill := shellPod("podfill", rc, "dd if=/dev/zero of=/data/fill bs=1048576 count=8; "+idle)
		podFill.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceEphemeralStorage: resource.MustParse("4Mi")}
		podFill.Spec.Volumes = []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
		podFill.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "data", MountPath: "/data"}}
		createPod(t, ns, podFill)
		dirFill := "dd if=/dev/zero of=/scratch/fill bs=1048576 count=8; " + idle
		scratch := shellPod("scratch", rc, dirFill)
		limit := resource.MustParse("2Mi")
		scratch.Spec.Volumes = []v1.Volume{{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{SizeLimit: &limit}}}}
		scratch.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
		createPod(t, ns, scratch)
		for pod, want := range map[string]string{
			"filler":  `Container main exceeded its local ephemeral storage limit "5Mi". `,
			"scratch": `Usage of EmptyDir volume "scratch" exceeds the limit "2Mi". `,
			"podfill": "Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ",
		} {
			waitPodIn(t, ns, pod, 2*time.Minute, "evicted", func(p *v1.Pod) (bool, string) {
				return p.Status.Phase == v1.PodFailed && p.Status.Reason == "Evicted" && p.Status.Message == want,
					fmt.Sprintf("phase %s reason %q message %q", p.Status.Phase, p.Status.Reason, p.Status.Message)
			})
		}
		alive()
	})
}

// A container past its memory limit is OOM-killed alone.
func TestMemoryHogContained(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		alive := neighbour(t, ns, rc)
		hog := shellPod("hog", rc, "tail /dev/zero")
		hog.Spec.RestartPolicy = v1.RestartPolicyNever
		hog.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceMemory: resource.MustParse("32Mi")}
		createPod(t, ns, hog)
		waitPodIn(t, ns, "hog", 2*time.Minute, "OOMKilled", func(p *v1.Pod) (bool, string) {
			if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Terminated == nil {
				return false, string(p.Status.Phase)
			}
			term := p.Status.ContainerStatuses[0].State.Terminated
			return term.Reason == "OOMKilled", fmt.Sprintf("%+v", term)
		})
		alive()
	})
}
