package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cci-project/cci/internal/testimage"
)

// Probes and lifecycle hooks, as a kubelet runs them.

// idle keeps a shell container running until SIGTERM, on which it exits 0.
const idle = "trap 'exit 0' TERM; while :; do sleep 1 & wait; done"

func execProbe(cmd ...string) v1.ProbeHandler {
	return v1.ProbeHandler{Exec: &v1.ExecAction{Command: cmd}}
}

// fast makes a probe run every second and settle on one result.
func fast(h v1.ProbeHandler) *v1.Probe {
	return &v1.Probe{ProbeHandler: h, PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1}
}

// probePod is a pod of one container "main" of the shell image running script.
func probePod(name, rc, script string) *v1.Pod {
	grace := int64(5)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PodSpec{
			RuntimeClassName:              runtimeClassPtr(rc),
			TerminationGracePeriodSeconds: &grace,
			Containers: []v1.Container{{
				Name: "main", Image: image(testimage.Shell), Command: []string{"sh", "-c", script},
			}},
		},
	}
}

// podName makes a pod name unique per runtime class.
func podName(base, rc string) string {
	if rc == "" {
		return base
	}
	return base + "-" + rc
}

// createProbePod creates pod and deletes it at the end of the test, waiting
// until it is gone so that the next test starts on a quiet node.
func createProbePod(t *testing.T, pod *v1.Pod) *v1.Pod {
	t.Helper()
	cs := client(t)
	ctx := context.Background()
	got, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePodAndWait(t, pod.Name, nil) })
	return got
}

func deletePodAndWait(t *testing.T, name string, grace *int64) {
	t.Helper()
	cs := client(t)
	ctx := context.Background()
	err := cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: grace})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("delete pod %s: %v", name, err)
		return
	}
	waitFor(t, 2*time.Minute, "pod "+name+" gone", func() (bool, string) {
		_, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// waitPod polls the pod until cond holds and returns it.
func waitPod(t *testing.T, name string, timeout time.Duration, what string, cond func(p *v1.Pod) (bool, string)) *v1.Pod {
	t.Helper()
	var p *v1.Pod
	waitFor(t, timeout, name+": "+what, func() (bool, string) {
		var err error
		p, err = client(t).CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return cond(p)
	})
	return p
}

func condition(p *v1.Pod, t v1.PodConditionType) v1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func mainStatus(p *v1.Pod) v1.ContainerStatus {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "main" {
			return c
		}
	}
	return v1.ContainerStatus{}
}

func describe(p *v1.Pod) string {
	c := mainStatus(p)
	started := c.Started != nil && *c.Started
	return fmt.Sprintf("phase %s Ready %s ContainersReady %s; main: ready %v started %v restarts %d state %+v last %+v",
		p.Status.Phase, condition(p, v1.PodReady), condition(p, v1.ContainersReady), c.Ready, started, c.RestartCount, c.State, c.LastTerminationState)
}

// readyIs is a waitPod condition: the pod's Ready and ContainersReady
// conditions and main's ready flag all equal want, while main runs.
func readyIs(want bool) func(p *v1.Pod) (bool, string) {
	s := v1.ConditionFalse
	if want {
		s = v1.ConditionTrue
	}
	return func(p *v1.Pod) (bool, string) {
		c := mainStatus(p)
		ok := p.Status.Phase == v1.PodRunning && c.State.Running != nil && c.Ready == want &&
			condition(p, v1.PodReady) == s && condition(p, v1.ContainersReady) == s
		return ok, describe(p)
	}
}

// podEvents lists the events about one pod (any of its containers).
func podEvents(t *testing.T, p *v1.Pod) []v1.Event {
	t.Helper()
	evs, err := client(t).CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(p.UID)})
	if err != nil {
		t.Fatal(err)
	}
	return evs.Items
}

// waitEvent waits for an event about p with reason whose message contains
// every one of substrs, and returns it.
func waitEvent(t *testing.T, p *v1.Pod, reason string, substrs ...string) v1.Event {
	t.Helper()
	var found v1.Event
	waitFor(t, 90*time.Second, fmt.Sprintf("event %s %q", reason, substrs), func() (bool, string) {
		var seen []string
		for _, e := range podEvents(t, p) {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason != reason {
				continue
			}
			all := true
			for _, s := range substrs {
				all = all && strings.Contains(e.Message, s)
			}
			if all {
				found = e
				return true, ""
			}
		}
		return false, strings.Join(seen, " | ")
	})
	return found
}

// eventCount is how often events about p with reason and a message
// containing substr were recorded (repeats are counted in one event).
func eventCount(t *testing.T, p *v1.Pod, reason, substr string) int32 {
	t.Helper()
	var n int32
	for _, e := range podEvents(t, p) {
		if e.Reason == reason && strings.Contains(e.Message, substr) {
			n += max(e.Count, 1)
		}
	}
	return n
}

// Readiness follows an exec probe: the pod's Ready and ContainersReady
// conditions and the container's ready flag flip with a file the test
// creates and removes.
func TestProbesReadinessFollowsExec(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("ready-exec", rc), rc, idle)
		pod.Spec.Containers[0].ReadinessProbe = fast(execProbe("cat", "/tmp/ready"))
		p := createProbePod(t, pod)

		got := waitPod(t, p.Name, 90*time.Second, "running, not ready", readyIs(false))
		if c := mainStatus(got); c.Started == nil || !*c.Started {
			t.Errorf("running container without startup probe not started: %s", describe(got))
		}
		waitEvent(t, p, "Unhealthy", "Readiness probe failed:", "/tmp/ready")

		mustKubectl(t, "exec", p.Name, "--", "touch", "/tmp/ready")
		waitPod(t, p.Name, 30*time.Second, "ready", readyIs(true))
		mustKubectl(t, "exec", p.Name, "--", "rm", "/tmp/ready")
		waitPod(t, p.Name, 30*time.Second, "not ready again", readyIs(false))
		mustKubectl(t, "exec", p.Name, "--", "touch", "/tmp/ready")
		got = waitPod(t, p.Name, 30*time.Second, "ready again", readyIs(true))
		if n := mainStatus(got).RestartCount; n != 0 {
			t.Errorf("a readiness probe restarted the container: %s", describe(got))
		}
	})
}

// Every kind of probe: httpGet, tcpSocket and exec against the httpd image,
// grpc against the grpchealth image (whose answer the test flips).
func TestProbesAllKinds(t *testing.T) {
	grpcImage := grpcHealthImage(t)
	forEachRuntime(t, func(t *testing.T, rc string) {
		t.Run("http-tcp-exec", func(t *testing.T) {
			pod := probePod(podName("probe-kinds", rc), rc, "")
			c := &pod.Spec.Containers[0]
			c.Image, c.Command = image(testimage.HTTPD), nil
			c.Ports = []v1.ContainerPort{{Name: "http", ContainerPort: testimage.HTTPDPort}}
			c.StartupProbe = fast(v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromString("http")}})
			c.StartupProbe.FailureThreshold = 30
			c.LivenessProbe = fast(v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/index.html", Port: intstr.FromInt32(testimage.HTTPDPort)}})
			c.ReadinessProbe = fast(v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/ready.html", Port: intstr.FromString("http")}})
			p := createProbePod(t, pod)

			// /ready.html does not exist yet: a 404 is a failure.
			waitPod(t, p.Name, 90*time.Second, "running, not ready", readyIs(false))
			waitEvent(t, p, "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 404")
			mustKubectl(t, "exec", p.Name, "--", "sh", "-c", "echo ok > /www/ready.html")
			got := waitPod(t, p.Name, 30*time.Second, "ready", readyIs(true))
			if n := mainStatus(got).RestartCount; n != 0 {
				t.Errorf("liveness httpGet restarted a healthy container: %s", describe(got))
			}
		})
		t.Run("grpc", func(t *testing.T) {
			pod := probePod(podName("probe-grpc", rc), rc, "")
			c := &pod.Spec.Containers[0]
			c.Image, c.Command = grpcImage, nil
			c.ReadinessProbe = fast(v1.ProbeHandler{GRPC: &v1.GRPCAction{Port: testimage.GRPCHealthPort}})
			c.LivenessProbe = fast(v1.ProbeHandler{GRPC: &v1.GRPCAction{Port: testimage.GRPCHealthPort}})
			c.LivenessProbe.FailureThreshold = 1000 // the test makes the server say NOT_SERVING
			p := createProbePod(t, pod)

			waitPod(t, p.Name, 90*time.Second, "ready", readyIs(true))
			mustKubectl(t, "exec", p.Name, "--", "touch", testimage.GRPCHealthDown)
			waitPod(t, p.Name, 30*time.Second, "not ready", readyIs(false))
			waitEvent(t, p, "Unhealthy", "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")")
			mustKubectl(t, "exec", p.Name, "--", "rm", testimage.GRPCHealthDown)
			waitPod(t, p.Name, 30*time.Second, "ready again", readyIs(true))
		})
	})
}

// A failing liveness probe kills the container, which restarts with the
// back-off; the restart count grows and the last state is the killed one.
func TestProbesLivenessRestarts(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("liveness", rc), rc, idle)
		pod.Spec.Containers[0].LivenessProbe = fast(execProbe("test", "-f", "/tmp/healthy"))
		p := createProbePod(t, pod)

		got := waitPod(t, p.Name, 2*time.Minute, "two restarts", func(p *v1.Pod) (bool, string) {
			c := mainStatus(p)
			return c.RestartCount >= 2 && c.LastTerminationState.Terminated != nil, describe(p)
		})
		last := mainStatus(got).LastTerminationState.Terminated
		if last.StartedAt.IsZero() || last.FinishedAt.Before(&last.StartedAt) || last.ContainerID == "" {
			t.Errorf("last state %+v", last)
		}
		waitEvent(t, p, "Unhealthy", "Liveness probe failed:")
		ev := waitEvent(t, p, "Killing", "Container main failed liveness probe, will be restarted")
		if ev.InvolvedObject.FieldPath != "spec.containers{main}" {
			t.Errorf("Killing event about %q, want the container", ev.InvolvedObject.FieldPath)
		}
	})
}

// A startup probe holds back liveness and readiness: a liveness probe that
// would kill the container at once does not run before the startup probe
// passed, and the container is neither started nor ready until then. A
// startup probe that fails its threshold restarts the container.
func TestProbesStartupGates(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		t.Run("gates", func(t *testing.T) {
			pod := probePod(podName("startup", rc), rc, idle)
			c := &pod.Spec.Containers[0]
			c.StartupProbe = fast(execProbe("test", "-f", "/tmp/started"))
			c.StartupProbe.FailureThreshold = 1000
			c.LivenessProbe = fast(execProbe("test", "-f", "/tmp/started"))
			c.ReadinessProbe = fast(execProbe("true"))
			p := createProbePod(t, pod)

			waitPod(t, p.Name, 90*time.Second, "running", readyIs(false))
			waitFor(t, 60*time.Second, "three failed startup probes", func() (bool, string) {
				n := eventCount(t, p, "Unhealthy", "Startup probe failed")
				return n >= 3, fmt.Sprint(n)
			})
			got, err := client(t).CoreV1().Pods("default").Get(context.Background(), p.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cs := mainStatus(got)
			if cs.Started == nil || *cs.Started || cs.Ready || cs.RestartCount != 0 || condition(got, v1.PodReady) != v1.ConditionFalse {
				t.Errorf("before the startup probe passed: %s", describe(got))
			}
			if n := eventCount(t, p, "Unhealthy", "Liveness probe"); n != 0 {
				t.Errorf("liveness probe ran %d times before the startup probe passed", n)
			}

			mustKubectl(t, "exec", p.Name, "--", "touch", "/tmp/started")
			got = waitPod(t, p.Name, 30*time.Second, "started and ready", func(p *v1.Pod) (bool, string) {
				c := mainStatus(p)
				ok, d := readyIs(true)(p)
				return ok && c.Started != nil && *c.Started, d
			})
			if n := mainStatus(got).RestartCount; n != 0 {
				t.Errorf("restarted: %s", describe(got))
			}
		})
		t.Run("fails", func(t *testing.T) {
			pod := probePod(podName("startup-fails", rc), rc, idle)
			pod.Spec.Containers[0].StartupProbe = fast(execProbe("false"))
			pod.Spec.Containers[0].StartupProbe.FailureThreshold = 2
			p := createProbePod(t, pod)
			waitPod(t, p.Name, 90*time.Second, "a restart", func(p *v1.Pod) (bool, string) {
				c := mainStatus(p)
				return c.RestartCount >= 1 && c.LastTerminationState.Terminated != nil, describe(p)
			})
			waitEvent(t, p, "Killing", "Container main failed startup probe, will be restarted")
		})
	})
}

// Bad input: a probe at a closed port and an exec probe of a missing binary
// give the kubelet's events; the container keeps running (a probe that
// errored counts for nothing) and keeps serving.
func TestProbesBadInput(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("bad-probes", rc), rc, "")
		c := &pod.Spec.Containers[0]
		c.Image, c.Command = image(testimage.HTTPD), nil
		c.ReadinessProbe = fast(v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(9999)}})
		c.LivenessProbe = fast(execProbe("no-such-binary", "--healthy"))
		p := createProbePod(t, pod)

		got := waitPod(t, p.Name, 90*time.Second, "running with an IP", func(p *v1.Pod) (bool, string) {
			return p.Status.PodIP != "" && mainStatus(p).State.Running != nil, describe(p)
		})
		ip := got.Status.PodIP
		ev := waitEvent(t, p, "Unhealthy", "Readiness probe failed: dial tcp "+net.JoinHostPort(ip, "9999")+": connect: connection refused")
		t.Logf("%s %s: %s", ev.Type, ev.Reason, ev.Message)
		ev = waitEvent(t, p, "Unhealthy", "Liveness probe errored and resulted in unknown state:", "no-such-binary")
		t.Logf("%s %s: %s", ev.Type, ev.Reason, ev.Message)
		waitFor(t, 30*time.Second, "several errored liveness probes", func() (bool, string) {
			n := eventCount(t, p, "Unhealthy", "Liveness probe errored")
			return n >= 3, fmt.Sprint(n)
		})
		got = waitPod(t, p.Name, 10*time.Second, "running, not ready", readyIs(false))
		if n := mainStatus(got).RestartCount; n != 0 {
			t.Errorf("an errored liveness probe restarted the container: %s", describe(got))
		}
		if body, err := httpGet("http://" + net.JoinHostPort(ip, strconv.Itoa(testimage.HTTPDPort)) + "/"); err != nil || body != testimage.IndexHTML {
			t.Errorf("pod no longer serves: %q %v", body, err)
		}
	})
}

// postStart runs right after the container starts: exec (a file the main
// process waits for) and httpGet (dialled from the host, here to the test);
// a failing postStart hook kills the container. preStop's httpGet arrives
// when the pod is deleted.
func TestLifecyclePostStart(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		t.Run("exec", func(t *testing.T) {
			pod := probePod(podName("poststart", rc), rc, "while [ ! -f /tmp/hooked ]; do sleep 0.1; done; cat /tmp/hooked; "+idle)
			pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{PostStart: &v1.LifecycleHandler{
				Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo written-by-poststart > /tmp/hooked"}},
			}}
			p := createProbePod(t, pod)
			waitPod(t, p.Name, 90*time.Second, "ready", readyIs(true))
			waitFor(t, 30*time.Second, "main to see the hook's file", func() (bool, string) {
				out, _ := kubectl(t, "logs", p.Name)
				return strings.Contains(out, "written-by-poststart"), out
			})
		})
		t.Run("http", func(t *testing.T) {
			var mu sync.Mutex
			var paths []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
			}))
			t.Cleanup(srv.Close)
			host, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
			portN, _ := strconv.Atoi(port)
			hook := func(path string) *v1.LifecycleHandler {
				return &v1.LifecycleHandler{HTTPGet: &v1.HTTPGetAction{Host: host, Port: intstr.FromInt(portN), Path: path}}
			}
			pod := probePod(podName("hooks-http", rc), rc, idle)
			pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{PostStart: hook("/poststart"), PreStop: hook("/prestop")}
			p := createProbePod(t, pod)
			waitPod(t, p.Name, 90*time.Second, "ready", readyIs(true))
			deletePodAndWait(t, p.Name, nil)
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(paths, []string{"/poststart", "/prestop"}) {
				t.Errorf("hook requests %q, want /poststart then /prestop", paths)
			}
		})
		t.Run("fails", func(t *testing.T) {
			pod := probePod(podName("poststart-fails", rc), rc, idle)
			pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{PostStart: &v1.LifecycleHandler{
				Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo hook-broke; exit 3"}},
			}}
			p := createProbePod(t, pod)
			waitEvent(t, p, "FailedPostStartHook", `Exec lifecycle hook ([sh -c echo hook-broke; exit 3]) for Container "main" in Pod "`+p.Name+"_default(", "hook-broke")
			waitEvent(t, p, "Killing", "FailedPostStartHook")
			got := waitPod(t, p.Name, 90*time.Second, "a restart", func(p *v1.Pod) (bool, string) {
				c := mainStatus(p)
				return c.RestartCount >= 1, describe(p)
			})
			if c := mainStatus(got); c.Ready || condition(got, v1.PodReady) == v1.ConditionTrue {
				t.Errorf("a container whose postStart hook fails became ready: %s", describe(got))
			}
		})
	})
}

// hostLog is a host folder the test reads, mounted at /log in the pod.
func hostLog(t *testing.T, pod *v1.Pod) string {
	dir := t.TempDir()
	pod.Spec.Volumes = append(pod.Spec.Volumes, v1.Volume{Name: "log", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: dir}}})
	c := &pod.Spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, v1.VolumeMount{Name: "log", MountPath: "/log"})
	return filepath.Join(dir, "out")
}

// waitNoContainers waits until containerd holds no container of the pod:
// the API object may go at the end of the grace period while the node
// still stops the containers.
func waitNoContainers(t *testing.T, p *v1.Pod) {
	t.Helper()
	c := ctrdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), "cci")
	waitFor(t, 90*time.Second, "no container of pod "+p.Name+" in containerd", func() (bool, string) {
		ctrs, err := c.Containers(ctx)
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, ctr := range ctrs {
			if strings.HasPrefix(ctr.ID(), string(p.UID)) {
				left = append(left, ctr.ID())
			}
		}
		return len(left) == 0, strings.Join(left, " ")
	})
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// preStop runs before the stop signal: its line comes before the one the
// container's TERM trap writes.
func TestLifecyclePreStop(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("prestop", rc), rc, "trap 'echo TERM >> /log/out; exit 0' TERM; echo started >> /log/out; while :; do sleep 1 & wait; done")
		out := hostLog(t, pod)
		pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{PreStop: &v1.LifecycleHandler{
			Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo preStop >> /log/out"}},
		}}
		p := createProbePod(t, pod)
		waitPod(t, p.Name, 90*time.Second, "ready", readyIs(true))
		deletePodAndWait(t, p.Name, nil)
		waitNoContainers(t, p)
		if got := readLines(t, out); !slices.Equal(got, []string{"started", "preStop", "TERM"}) {
			t.Errorf("container wrote %q, want started, preStop, TERM", got)
		}
	})
}

// A graceful stop sends the image's STOPSIGNAL, not SIGTERM: of two
// containers running the same command, which exits with one code on SIGUSR1
// and another on SIGTERM, the one whose image says STOPSIGNAL SIGUSR1 gets
// SIGUSR1 and the other SIGTERM. A finalizer keeps the deleted pod's object,
// so that its last status, with the exit codes, can be read.
func TestLifecycleStopSignal(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("stopsignal", rc), rc, "")
		grace := int64(60)
		pod.Spec.TerminationGracePeriodSeconds = &grace
		pod.Spec.Containers = []v1.Container{
			{Name: "main", Image: image(testimage.StopSignal)},
			{Name: "term", Image: image(testimage.Shell), Command: testimage.StopSignalCmd},
		}
		const finalizer = "e2e.cci.io/keep"
		pod.Finalizers = []string{finalizer}
		p := createProbePod(t, pod)
		unfinalize := func() {
			kubectl(t, "patch", "pod", p.Name, "--type=json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`)
		}
		t.Cleanup(unfinalize) // before createProbePod's clean-up, which waits for the pod to go
		waitPod(t, p.Name, 90*time.Second, "ready", readyIs(true))

		if err := client(t).CoreV1().Pods("default").Delete(context.Background(), p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		got := waitPod(t, p.Name, 90*time.Second, "both containers terminated", func(p *v1.Pod) (bool, string) {
			var states []string
			n := 0
			for _, c := range p.Status.ContainerStatuses {
				states = append(states, fmt.Sprintf("%s: %+v", c.Name, c.State))
				if c.State.Terminated != nil {
					n++
				}
			}
			return n == 2, strings.Join(states, "; ")
		})
		want := map[string]int32{"main": testimage.StopSignalExit, "term": testimage.TermExit}
		for _, c := range got.Status.ContainerStatuses {
			if code := c.State.Terminated.ExitCode; code != want[c.Name] {
				t.Errorf("container %s exited with %d, want %d (%d: SIGUSR1, %d: SIGTERM, 137: killed)",
					c.Name, code, want[c.Name], testimage.StopSignalExit, testimage.TermExit)
			}
		}
		unfinalize()
		waitNoContainers(t, p)
	})
}

// `kubectl delete --grace-period` overrides the pod's
// terminationGracePeriodSeconds: a container that ignores SIGTERM runs on
// after it and is killed once the shorter grace period is over.
func TestLifecycleGracePeriod(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("grace", rc), rc, "trap 'echo TERM >> /log/out' TERM; while :; do echo tick >> /log/out; sleep 1 & wait; done")
		long := int64(300)
		pod.Spec.TerminationGracePeriodSeconds = &long
		out := hostLog(t, pod)
		p := createProbePod(t, pod)
		waitPod(t, p.Name, 90*time.Second, "ready", readyIs(true))
		mustKubectl(t, "delete", "pod", p.Name, "--grace-period=3", "--wait=false")
		// Well within the pod's own 300 s: the override was used.
		waitFor(t, 90*time.Second, "pod gone", func() (bool, string) {
			_, err := client(t).CoreV1().Pods("default").Get(context.Background(), p.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		// It ignores SIGTERM: only SIGKILL ends it.
		waitNoContainers(t, p)
		lines := readLines(t, out)
		i := slices.Index(lines, "TERM")
		if i < 0 {
			t.Fatalf("container never saw SIGTERM: %q", lines)
		}
		if !slices.Contains(lines[i+1:], "tick") {
			t.Errorf("container did not run on after SIGTERM within the grace period: %q", lines)
		}
	})
}

// A preStop hook counts against the grace period: one that would run for
// ten minutes is cut short, the container still gets its stop signal and
// the pod goes long before the hook would have ended.
func TestLifecyclePreStopUsesGrace(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		pod := probePod(podName("prestop-grace", rc), rc, "trap 'echo TERM >> /log/out' TERM; while :; do sleep 1 & wait; done")
		grace := int64(3)
		pod.Spec.TerminationGracePeriodSeconds = &grace
		out := hostLog(t, pod)
		pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{PreStop: &v1.LifecycleHandler{
			Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo preStop >> /log/out; sleep 600"}},
		}}
		p := createProbePod(t, pod)
		waitPod(t, p.Name, 90*time.Second, "ready", readyIs(true))
		deletePodAndWait(t, p.Name, nil)
		waitNoContainers(t, p)
		if got := readLines(t, out); !slices.Equal(got, []string{"preStop", "TERM"}) {
			t.Errorf("container wrote %q, want preStop, TERM", got)
		}
	})
}

// Restart safety: `cci up` stopped and started while a pod with probes
// runs. The container is re-adopted (same id, IP, start time, restart
// count), stays ready throughout (a reset to not-ready would need three
// successful probes to heal), and its probes go on after the restart.
func TestProbesSurviveAgentRestart(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		// Exits once (restartCount 1), then runs with /tmp/ready present.
		pod := probePod(podName("probe-restart", rc), rc, "if [ ! -f /state/once ]; then touch /state/once; exit 1; fi; touch /tmp/ready; "+idle)
		pod.Spec.Volumes = []v1.Volume{{Name: "state", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
		c := &pod.Spec.Containers[0]
		c.VolumeMounts = []v1.VolumeMount{{Name: "state", MountPath: "/state"}}
		c.ReadinessProbe = fast(execProbe("cat", "/tmp/ready"))
		c.ReadinessProbe.SuccessThreshold = 3
		c.LivenessProbe = fast(execProbe("true"))
		p := createProbePod(t, pod)

		before := waitPod(t, p.Name, 90*time.Second, "ready after one restart", func(p *v1.Pod) (bool, string) {
			ok, d := readyIs(true)(p)
			return ok && mainStatus(p).RestartCount == 1, d
		})
		bc := mainStatus(before)

		if err := cci.Stop(syscall.SIGINT); err != nil {
			t.Fatalf("stop: %v", err)
		}
		if _, err := cci.Start(); err != nil {
			t.Fatalf("start again: %v", err)
		}
		// Watch the pod for a few probe periods: it must never read not-ready.
		deadline := time.Now().Add(8 * time.Second)
		var after *v1.Pod
		for time.Now().Before(deadline) {
			got, err := client(t).CoreV1().Pods("default").Get(context.Background(), p.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ok, d := readyIs(true)(got); !ok {
				t.Fatalf("pod not ready after the agent restart: %s", d)
			}
			after = got
			time.Sleep(200 * time.Millisecond)
		}
		ac := mainStatus(after)
		if bc.LastTerminationState.Terminated == nil || ac.LastTerminationState.Terminated == nil {
			t.Fatalf("last state lost:\nbefore %s\nafter  %s", describe(before), describe(after))
		}
		if ac.ContainerID != bc.ContainerID || ac.RestartCount != bc.RestartCount || after.Status.PodIP != before.Status.PodIP ||
			!ac.State.Running.StartedAt.Equal(&bc.State.Running.StartedAt) || !ac.LastTerminationState.Terminated.FinishedAt.Equal(&bc.LastTerminationState.Terminated.FinishedAt) {
			t.Errorf("not re-adopted as it was:\nbefore %s ip %s id %s\nafter  %s ip %s id %s", describe(before), before.Status.PodIP, bc.ContainerID, describe(after), after.Status.PodIP, ac.ContainerID)
		}
		ctrs, err := ctrdClient(t).Containers(namespaces.WithNamespace(context.Background(), "cci"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ctr := range ctrs {
			// A gvisor pod also has its sandbox container, <uid>_pod.
			if strings.HasPrefix(ctr.ID(), string(p.UID)) && !strings.HasSuffix(ctr.ID(), "_pod") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d containers of the pod in containerd, want 1", n)
		}
		// The probes run on under the new agent.
		mustKubectl(t, "exec", p.Name, "--", "rm", "/tmp/ready")
		waitPod(t, p.Name, 30*time.Second, "not ready", readyIs(false))
		mustKubectl(t, "exec", p.Name, "--", "touch", "/tmp/ready")
		waitPod(t, p.Name, 30*time.Second, "ready again", readyIs(true))
	})
}

var grpcHealth struct {
	once sync.Once
	ref  string
	err  error
}

// grpcHealthImage builds the grpchealth server (a static Go binary of this
// repository) and its image once per run, and returns the image reference.
func grpcHealthImage(t *testing.T) string {
	t.Helper()
	grpcHealth.once.Do(func() {
		bin := filepath.Join(t.TempDir(), "grpchealth")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if grpcHealth.err = testimage.BuildGRPCHealthServer(ctx, repoRoot(), bin); grpcHealth.err != nil {
			return
		}
		grpcHealth.ref, grpcHealth.err = testimage.BuildGRPCHealth(ctx, cci.Registry, "", bin)
	})
	if grpcHealth.err != nil {
		t.Fatalf("grpchealth test image: %v", grpcHealth.err)
	}
	return grpcHealth.ref
}
