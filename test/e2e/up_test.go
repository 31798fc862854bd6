package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/creack/pty"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cci-project/cci/internal/testimage"
	"github.com/cci-project/cci/test/cluster"
)

// waitFor polls cond until it holds or timeout passes; the last detail is
// in the failure message.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	cluster.WaitFor(t, timeout, what, cond)
}

func listPods(t *testing.T, ns, selector string) []v1.Pod {
	t.Helper()
	pods, err := client(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// waitRunning waits for n Running and Ready pods matching selector.
func waitRunning(t *testing.T, ns, selector string, n int, timeout time.Duration) []v1.Pod {
	t.Helper()
	var pods []v1.Pod
	waitFor(t, timeout, fmt.Sprintf("%d running pods %q", n, selector), func() (bool, string) {
		pods = listPods(t, ns, selector)
		ready := 0
		var states []string
		for _, p := range pods {
			states = append(states, fmt.Sprintf("%s=%s", p.Name, p.Status.Phase))
			if p.Status.Phase == v1.PodRunning && podReady(&p) && p.DeletionTimestamp == nil {
				ready++
			}
		}
		return ready == n && len(pods) == n, strings.Join(states, " ")
	})
	return pods
}

func podReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// plainHTTP opens a connection per request: busybox httpd closes each one
// after its answer, and a kept-alive connection it already closed fails the
// next request ("server closed idle connection").
var plainHTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func httpGet(url string) (string, error) {
	resp, err := plainHTTP.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Step 1: `cci up` prints where the kubeconfig and registry are and that it is ready.
func TestUpReportsReady(t *testing.T) {
	out := cci.Output()
	for _, want := range []string{"CCI is ready", "kubeconfig: " + cci.Kubeconfig, "registry:   " + cci.Registry} {
		if !strings.Contains(out, want) {
			t.Errorf("cci up output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(cci.Kubeconfig); err != nil {
		t.Errorf("admin kubeconfig: %v", err)
	}
	nodes := mustKubectl(t, "get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}")
	if strings.TrimSpace(nodes) != "True" {
		t.Errorf("node Ready = %q, want True", nodes)
	}
	node, err := client(t).CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(node.Items) != 1 {
		t.Fatalf("nodes: %v %v", node, err)
	}
	capacity := node.Items[0].Status.Capacity
	if got := capacity.Cpu().Value(); got != int64(goruntime.NumCPU()) {
		t.Errorf("node cpu capacity %d, host has %d", got, goruntime.NumCPU())
	}
	var si syscall.Sysinfo_t
	syscall.Sysinfo(&si)
	if got, want := capacity.Memory().Value(), int64(si.Totalram)*int64(si.Unit); got != want {
		t.Errorf("node memory capacity %d, host has %d", got, want)
	}
	if capacity.Pods().Value() <= 0 {
		t.Errorf("node pod capacity %v", capacity.Pods())
	}
	// The registry answers, and asks anonymous clients to log in.
	resp, err := http.Get("http://" + cci.Registry + "/v2/")
	if err != nil {
		t.Fatalf("registry /v2/: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("anonymous registry /v2/: %s %q, want 401 with a Basic challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
}

// Step 2: images pushed with a standard client and with `cci image import` run.
func TestImagePushAndImport(t *testing.T) {
	// go-containerregistry is the library behind crane; it logs in with
	// the operator's Docker config (DOCKER_CONFIG, set by test/cluster).
	pushed := cci.Registry + "/e2e/random:1"
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(pushed)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		t.Fatalf("push %s: %v", pushed, err)
	}
	got, err := remote.Image(ref, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		t.Fatalf("pull back %s: %v", pushed, err)
	}
	d1, _ := img.Digest()
	d2, _ := got.Digest()
	if d1 != d2 {
		t.Errorf("digest after push = %s, want %s", d2, d1)
	}

	// A docker-archive of the shell image under a new name, imported with the CLI.
	src, err := remote.Image(mustRef(t, image(testimage.Shell)))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := src.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Cmd = []string{"sh", "-c", "echo imported-image-runs; sleep 3600"}
	src, err = mutate.Config(src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("docker.io/library/imported:7")
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "imported.tar")
	if err := tarball.WriteToFile(archive, tag, src); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cci.Bin, "image", "import", "--registry", cci.Registry, archive).CombinedOutput()
	if err != nil {
		t.Fatalf("cci image import: %v\n%s", err, out)
	}
	want := cci.Registry + "/library/imported:7"
	if strings.TrimSpace(string(out)) != want {
		t.Fatalf("cci image import printed %q, want %q", out, want)
	}
	mustKubectl(t, "run", "imported", "--image="+want, "--restart=Never")
	t.Cleanup(func() { kubectl(t, "delete", "pod", "imported", "--grace-period=0", "--force") })
	waitFor(t, 60*time.Second, "imported image's output", func() (bool, string) {
		out, _ := kubectl(t, "logs", "imported")
		return strings.Contains(out, "imported-image-runs"), out
	})
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Step 3: a Deployment of 3 replicas runs, each pod with its own IP serving HTTP.
// Step 4: logs, logs -f, exec, exec -it, attach and port-forward work against them.
// Under every runtime class.
func TestDeploymentServesAndStreams(t *testing.T) {
	forEachRuntime(t, testDeploymentServesAndStreams)
}

// createDeployment runs `kubectl create deployment`, with the runtime class
// set in the pod template when there is one.
func createDeployment(t *testing.T, name, img string, replicas int, rc string) {
	t.Helper()
	args := []string{"create", "deployment", name, "--image=" + img, "--replicas=" + strconv.Itoa(replicas)}
	if rc == "" {
		mustKubectl(t, args...)
		return
	}
	var d appsv1.Deployment
	if err := json.Unmarshal([]byte(mustKubectl(t, append(args, "--dry-run=client", "-o", "json")...)), &d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.RuntimeClassName = runtimeClassPtr(rc)
	raw, err := json.Marshal(&d)
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(t.TempDir(), name+".json")
	if err := os.WriteFile(manifest, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, "apply", "-f", manifest)
}

func testDeploymentServesAndStreams(t *testing.T, rc string) {
	name, replicas := webDeployment(rc)
	begin := time.Now()
	createDeployment(t, name, image(testimage.HTTPD), replicas, rc)
	pods := waitRunning(t, "default", "app="+name, replicas, 90*time.Second)
	t.Logf("%d replicas Running and Ready %.2fs after `kubectl create deployment` (runtime class %q)", replicas, time.Since(begin).Seconds(), rc)

	ips := map[string]bool{}
	for _, p := range pods {
		if p.Status.PodIP == "" || ips[p.Status.PodIP] {
			t.Fatalf("pod %s has IP %q; IPs so far %v", p.Name, p.Status.PodIP, ips)
		}
		ips[p.Status.PodIP] = true
		_, cidr, _ := net.ParseCIDR(cci.ClusterCIDR)
		if !cidr.Contains(net.ParseIP(p.Status.PodIP)) {
			t.Errorf("pod IP %s outside the cluster CIDR %s", p.Status.PodIP, cci.ClusterCIDR)
		}
		// Running means the process started; the server inside takes a
		// moment more to listen (no readiness probe here).
		waitFor(t, 15*time.Second, "pod "+p.Name+" to serve HTTP", func() (bool, string) {
			body, err := httpGet("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/")
			return err == nil && body == testimage.IndexHTML, fmt.Sprint(body, err)
		})
		checkRunningStatus(t, &p)
	}
	pod := pods[0]

	t.Run("logs", func(t *testing.T) {
		out := mustKubectl(t, "logs", pod.Name)
		if !strings.Contains(out, "response:200") {
			t.Errorf("kubectl logs lacks the request just served:\n%s", out)
		}
	})

	t.Run("logs -f", func(t *testing.T) {
		lines := streamLines(t, "logs", "-f", pod.Name)
		marker := "/follow-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		if _, err := httpGet("http://" + net.JoinHostPort(pod.Status.PodIP, "8080") + marker); err != nil {
			t.Logf("GET %s: %v", marker, err)
		}
		expectLine(t, lines, marker, 10*time.Second)
	})

	t.Run("attach", func(t *testing.T) {
		// httpd logs to stderr, which attach keeps apart from stdout (as a
		// kubelet does): kubectl prints it on its own stderr.
		lines := streamAllLines(t, "attach", pod.Name)
		// attach shows output from now on; give it a moment to connect.
		marker := "/attach-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			httpGet("http://" + net.JoinHostPort(pod.Status.PodIP, "8080") + marker)
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("kubectl attach ended")
				}
				if strings.Contains(l, marker) {
					return
				}
			case <-time.After(500 * time.Millisecond):
			}
		}
		t.Fatal("kubectl attach did not show the container's new output")
	})

	t.Run("exec", func(t *testing.T) {
		out := mustKubectl(t, "exec", pod.Name, "--", "sh", "-c", "echo in-$(hostname); cat /etc/hostname")
		if !strings.Contains(out, "in-"+pod.Name) {
			t.Errorf("exec output %q lacks the pod's hostname %q", out, pod.Name)
		}
		out, err := kubectl(t, "exec", pod.Name, "--", "sh", "-c", "exit 7")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
			t.Errorf("exec exit 7: err %v, output %q", err, out)
		}
		cmd := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "exec", "-i", pod.Name, "--", "sh")
		cmd.Stdin = strings.NewReader("echo from-stdin-$((6*7))\nexit\n")
		b, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(b), "from-stdin-42") {
			t.Errorf("exec -i: %v %q", err, b)
		}
	})

	t.Run("exec -it", func(t *testing.T) {
		cmd := exec.Command("kubectl", "--kubeconfig", cci.Kubeconfig, "exec", "-it", pod.Name, "--", "sh")
		f, err := pty.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(f)
			out <- string(b)
		}()
		time.Sleep(time.Second)
		// In gVisor the terminal is a host pty passed in: a terminal
		// (test -t) without a /dev/pts name.
		fmt.Fprintf(f, "tty; test -t 0 && echo tty-$((6*7))\r")
		time.Sleep(500 * time.Millisecond)
		fmt.Fprintf(f, "exit\r")
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kubectl exec -it: %v", err)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatal("kubectl exec -it did not end")
		}
		f.Close()
		got := <-out
		if !strings.Contains(got, "tty-42") || (rc == "" && !strings.Contains(got, "/dev/pts/")) {
			t.Errorf("exec -it output lacks a terminal session:\n%s", got)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		port := cluster.FreePorts(1)[0]
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", cci.Kubeconfig, "port-forward", "pod/"+pod.Name, fmt.Sprintf("%d:8080", port))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cancel()
			cmd.Wait()
		}()
		waitFor(t, 15*time.Second, "port-forward to serve", func() (bool, string) {
			body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
			return err == nil && body == testimage.IndexHTML, fmt.Sprint(body, err)
		})
	})
}

// checkRunningStatus checks the fields a kubelet sets on a running pod.
func checkRunningStatus(t *testing.T, p *v1.Pod) {
	t.Helper()
	st := p.Status
	if st.HostIP == "" || st.StartTime == nil || st.QOSClass == "" {
		t.Errorf("pod %s: hostIP %q startTime %v qosClass %q", p.Name, st.HostIP, st.StartTime, st.QOSClass)
	}
	want := map[v1.PodConditionType]bool{v1.PodScheduled: true, v1.PodInitialized: true, v1.ContainersReady: true, v1.PodReady: true}
	for _, c := range st.Conditions {
		if want[c.Type] {
			if c.Status != v1.ConditionTrue {
				t.Errorf("pod %s condition %s = %s", p.Name, c.Type, c.Status)
			}
			delete(want, c.Type)
		}
	}
	if len(want) > 0 {
		t.Errorf("pod %s lacks conditions %v", p.Name, want)
	}
	if len(st.ContainerStatuses) != 1 {
		t.Fatalf("pod %s: %d container statuses", p.Name, len(st.ContainerStatuses))
	}
	cs := st.ContainerStatuses[0]
	if cs.State.Running == nil || cs.State.Running.StartedAt.IsZero() || !cs.Ready || cs.RestartCount != 0 ||
		!strings.HasPrefix(cs.ContainerID, "containerd://") || !strings.Contains(cs.ImageID, "@sha256:") {
		t.Errorf("pod %s container status: %+v", p.Name, cs)
	}
}

// streamLines runs a long kubectl command and yields its output lines; the
// command is stopped when the test ends.
func streamLines(t *testing.T, args ...string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", cci.Kubeconfig}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	return scanLines(stdout)
}

// scanLines sends the lines read from r until it ends.
func scanLines(r io.Reader) <-chan string {
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines
}

// streamAllLines is streamLines of kubectl's stdout and stderr together.
func streamAllLines(t *testing.T, args ...string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", cci.Kubeconfig}, args...)...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	lines := scanLines(r)
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		r.Close()
	})
	return lines
}

func expectLine(t *testing.T, lines <-chan string, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before a line with %q", substr)
			}
			if strings.Contains(l, substr) {
				return
			}
		case <-deadline:
			t.Fatalf("no line with %q within %s", substr, timeout)
		}
	}
}

// Pod status is exact for containers that end: exit codes, reasons, phases,
// init containers run first.
func TestPodStatusOnExit(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	mk := func(name string, policy v1.RestartPolicy, script string) *v1.Pod {
		return &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.PodSpec{
				RestartPolicy: policy,
				InitContainers: []v1.Container{{
					Name: "init", Image: image(testimage.Shell), Command: []string{"sh", "-c", "echo init-ran > /work/init"},
					VolumeMounts: []v1.VolumeMount{{Name: "work", MountPath: "/work"}},
				}},
				Containers: []v1.Container{{
					Name: "main", Image: image(testimage.Shell), Command: []string{"sh", "-c", script},
					VolumeMounts: []v1.VolumeMount{{Name: "work", MountPath: "/work"}},
				}},
				Volumes: []v1.Volume{{Name: "work", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}},
			},
		}
	}
	for _, tc := range []struct {
		name   string
		script string
		phase  v1.PodPhase
		code   int32
		reason string
	}{
		{"exit-ok", "cat /work/init", v1.PodSucceeded, 0, "Completed"},
		{"exit-fail", "cat /work/init; exit 3", v1.PodFailed, 3, "Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cs.CoreV1().Pods("default").Create(ctx, mk(tc.name, v1.RestartPolicyNever, tc.script), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cs.CoreV1().Pods("default").Delete(ctx, tc.name, metav1.DeleteOptions{}) })
			var p *v1.Pod
			waitFor(t, 60*time.Second, "pod to end", func() (bool, string) {
				var err error
				p, err = cs.CoreV1().Pods("default").Get(ctx, tc.name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				return p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed, string(p.Status.Phase)
			})
			if p.Status.Phase != tc.phase {
				t.Errorf("phase %s, want %s", p.Status.Phase, tc.phase)
			}
			ic := p.Status.InitContainerStatuses
			if len(ic) != 1 || ic[0].State.Terminated == nil || ic[0].State.Terminated.ExitCode != 0 || ic[0].State.Terminated.Reason != "Completed" {
				t.Errorf("init container status %+v", ic)
			}
			mc := p.Status.ContainerStatuses
			if len(mc) != 1 || mc[0].State.Terminated == nil {
				t.Fatalf("container status %+v", mc)
			}
			term := mc[0].State.Terminated
			if term.ExitCode != tc.code || term.Reason != tc.reason || term.StartedAt.IsZero() || term.FinishedAt.Before(&term.StartedAt) {
				t.Errorf("terminated state %+v, want exit %d reason %s", term, tc.code, tc.reason)
			}
			out := mustKubectl(t, "logs", tc.name)
			if !strings.Contains(out, "init-ran") {
				t.Errorf("main container did not see the init container's work: %q", out)
			}
			for _, c := range p.Status.Conditions {
				if c.Type == v1.PodReady && c.Status != v1.ConditionFalse {
					t.Errorf("ended pod Ready = %s", c.Status)
				}
				if c.Type == v1.PodInitialized && c.Status != v1.ConditionTrue {
					t.Errorf("ended pod Initialized = %s", c.Status)
				}
			}
		})
	}

	t.Run("restart-always", func(t *testing.T) {
		p := mk("crashloop", v1.RestartPolicyAlways, "exit 2")
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}) })
		waitFor(t, 60*time.Second, "a restart and CrashLoopBackOff", func() (bool, string) {
			got, err := cs.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil || len(got.Status.ContainerStatuses) == 0 {
				return false, fmt.Sprint(err)
			}
			c := got.Status.ContainerStatuses[0]
			ok := c.RestartCount >= 1 && c.State.Waiting != nil && c.State.Waiting.Reason == "CrashLoopBackOff" &&
				c.LastTerminationState.Terminated != nil && c.LastTerminationState.Terminated.ExitCode == 2
			return ok, fmt.Sprintf("restarts %d state %+v last %+v", c.RestartCount, c.State, c.LastTerminationState)
		})
	})
}

// Bad input: a missing image shows in the pod's status and events, and the
// node keeps serving other pods.
func TestMissingImage(t *testing.T) {
	cs := client(t)
	ctx := context.Background()
	missing := cci.Registry + "/does-not/exist:1"
	mustKubectl(t, "run", "missing", "--image="+missing, "--restart=Never")
	t.Cleanup(func() { kubectl(t, "delete", "pod", "missing", "--grace-period=0", "--force") })
	waitFor(t, 30*time.Second, "ErrImagePull or ImagePullBackOff", func() (bool, string) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "missing", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err)
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		if w == nil {
			return false, fmt.Sprintf("%+v", p.Status.ContainerStatuses[0].State)
		}
		return (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && strings.Contains(w.Message, "not found"), w.Reason + ": " + w.Message
	})
	waitFor(t, 30*time.Second, "a Failed event with the registry's message", func() (bool, string) {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=missing"})
		if err != nil {
			return false, err.Error()
		}
		var all []string
		for _, e := range evs.Items {
			all = append(all, e.Reason+": "+e.Message)
			if e.Reason == "Failed" && strings.Contains(e.Message, "not found") && strings.Contains(e.Message, missing) {
				return true, ""
			}
		}
		return false, strings.Join(all, "\n")
	})
	mustKubectl(t, "run", "still-serving", "--image="+image(testimage.HTTPD))
	t.Cleanup(func() { kubectl(t, "delete", "pod", "still-serving", "--grace-period=0", "--force") })
	waitRunning(t, "default", "run=still-serving", 1, 60*time.Second)
}

// Bad input: an invalid manifest is refused with the upstream validation message.
func TestInvalidManifestRefused(t *testing.T) {
	manifest := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(manifest, []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: Bad_Name
spec:
  selector:
    matchLabels: {app: bad}
  template:
    metadata:
      labels: {app: bad}
    spec:
      containers:
      - name: c
`), 0o644)
	out, err := kubectl(t, "apply", "-f", manifest)
	if err == nil {
		t.Fatalf("invalid manifest accepted:\n%s", out)
	}
	for _, want := range []string{`metadata.name: Invalid value: "Bad_Name"`, "spec.template.spec.containers[0].image: Required value"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal lacks %q:\n%s", want, out)
		}
	}
}

// Bad input: a second `cci up` on the same data folder refuses to start.
func TestSecondUpRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cci.Bin, cci.Args...).CombinedOutput()
	if err == nil {
		t.Fatalf("second cci up started:\n%s", out)
	}
	if !strings.Contains(string(out), "in use by another cci") {
		t.Errorf("second cci up error lacks a clear message:\n%s", out)
	}
	if _, err := kubectl(t, "get", "nodes"); err != nil {
		t.Errorf("first instance harmed: %v", err)
	}
}

type podFacts struct {
	name, ip, containerID string
	startedAt             time.Time
	uid                   types.UID
	runtimeClass          string
}

func runningFacts(t *testing.T, selector string) map[string]podFacts {
	t.Helper()
	out := map[string]podFacts{}
	for _, p := range listPods(t, "default", selector) {
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Running == nil {
			t.Fatalf("pod %s not running: %+v", p.Name, p.Status)
		}
		c := p.Status.ContainerStatuses[0]
		rc := ""
		if p.Spec.RuntimeClassName != nil {
			rc = *p.Spec.RuntimeClassName
		}
		out[p.Name] = podFacts{p.Name, p.Status.PodIP, c.ContainerID, c.State.Running.StartedAt.Time, p.UID, rc}
	}
	return out
}

// webFacts are the running facts of the web pods of every runtime class.
func webFacts(t *testing.T) map[string]podFacts {
	t.Helper()
	all := map[string]podFacts{}
	for _, rc := range runtimeClasses {
		name, _ := webDeployment(rc)
		for n, f := range runningFacts(t, "app="+name) {
			all[n] = f
		}
	}
	return all
}

func webReplicas() int {
	n := 0
	for _, rc := range runtimeClasses {
		_, r := webDeployment(rc)
		n += r
	}
	return n
}

// Bad input: containerd killed; the agent restarts it and re-adopts the pods.
func TestContainerdKilled(t *testing.T) {
	before := webFacts(t)
	pidFile := filepath.Join(cci.DataDir, "containerd", "state", "cci-containerd.pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill containerd %d: %v", pid, err)
	}
	waitFor(t, 30*time.Second, "a new containerd", func() (bool, string) {
		raw, _ := os.ReadFile(pidFile)
		n, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
		return n != 0 && n != pid && syscall.Kill(n, 0) == nil, string(raw)
	})
	for _, p := range before {
		waitFor(t, 30*time.Second, "exec after containerd came back", func() (bool, string) {
			out, err := kubectl(t, "exec", p.name, "--", "echo", "back")
			return err == nil && strings.Contains(out, "back"), out
		})
	}
	after := webFacts(t)
	for n, f := range before {
		if after[n] != f {
			t.Errorf("pod %s changed across the containerd crash: %+v -> %+v", n, f, after[n])
		}
	}
}

// Step 6: stopping and starting `cci up` keeps every object, the PKI, the
// registry's content and the running containers, re-adopted.
func TestRestartKeepsEverything(t *testing.T) {
	mustKubectl(t, "create", "configmap", "survivor", "--from-literal=k=v")
	before := webFacts(t)
	if len(before) != webReplicas() {
		t.Fatalf("want the %d web pods, got %d", webReplicas(), len(before))
	}
	caBefore := fileHash(t, filepath.Join(cci.DataDir, "pki", "ca.crt"))
	tokenBefore := fileHash(t, filepath.Join(cci.DataDir, "pki", "token"))

	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// With cci down, the pods still serve.
	for _, f := range before {
		if body, err := httpGet("http://" + net.JoinHostPort(f.ip, "8080") + "/"); err != nil || body != testimage.IndexHTML {
			t.Errorf("pod %s not serving while cci is down: %q %v", f.name, body, err)
		}
	}
	took, err := cci.Start()
	if err != nil {
		t.Fatalf("start again: %v", err)
	}
	t.Logf("cci up ready again after %.2fs", took.Seconds())

	if got := fileHash(t, filepath.Join(cci.DataDir, "pki", "ca.crt")); got != caBefore {
		t.Error("CA changed across restart")
	}
	if got := fileHash(t, filepath.Join(cci.DataDir, "pki", "token")); got != tokenBefore {
		t.Error("join token changed across restart")
	}
	if out := mustKubectl(t, "get", "configmap", "survivor", "-o", "jsonpath={.data.k}"); out != "v" {
		t.Errorf("configmap after restart: %q", out)
	}
	if _, err := remote.Image(mustRef(t, image(testimage.HTTPD))); err != nil {
		t.Errorf("registry content after restart: %v", err)
	}
	for _, rc := range runtimeClasses {
		name, replicas := webDeployment(rc)
		waitRunning(t, "default", "app="+name, replicas, 60*time.Second)
	}
	after := webFacts(t)
	for n, f := range before {
		a, ok := after[n]
		if !ok {
			t.Errorf("pod %s gone after restart", n)
			continue
		}
		if a.containerID != f.containerID || !a.startedAt.Equal(f.startedAt) || a.ip != f.ip {
			t.Errorf("pod %s not re-adopted as it was: %+v -> %+v", n, f, a)
		}
	}
	for n := range before {
		p, err := client(t).CoreV1().Pods("default").Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rc := p.Status.ContainerStatuses[0].RestartCount; rc != 0 {
			t.Errorf("pod %s restartCount %d after agent restart", p.Name, rc)
		}
	}
	// Exactly one task per container and one runsc sandbox per gvisor pod
	// (a one-container gvisor pod has no pause container): nothing was
	// started twice.
	c := ctrdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), "cci")
	ctrs, err := c.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n, f := range before {
		count, want := 0, 1
		if f.runtimeClass == "gvisor" {
			if procs := sandboxProcesses(string(f.uid)); len(procs) != 1 {
				t.Errorf("pod %s has %d runsc sandboxes, want 1", n, len(procs))
			}
		}
		for _, ctr := range ctrs {
			if strings.HasPrefix(ctr.ID(), string(f.uid)) {
				count++
			}
		}
		if count != want {
			t.Errorf("pod %s has %d containers in containerd, want %d", n, count, want)
		}
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func ctrdClient(t *testing.T) *containerd.Client {
	t.Helper()
	c, err := containerd.New(filepath.Join(cci.DataDir, "containerd", "state", "containerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Step 5: deleting the Deployment removes every container, network
// namespace, IP lease and mount its pods had (and the runsc sandbox of a
// gvisor pod).
func TestDeleteLeavesNothing(t *testing.T) {
	var pods []v1.Pod
	var names []string
	for _, rc := range runtimeClasses {
		name, _ := webDeployment(rc)
		names = append(names, name)
		pods = append(pods, listPods(t, "default", "app="+name)...)
	}
	if len(pods) == 0 {
		t.Fatal("no web pods to delete")
	}
	begin := time.Now()
	mustKubectl(t, append([]string{"delete", "deployment"}, names...)...)
	waitFor(t, 60*time.Second, "web pods gone", func() (bool, string) {
		n := 0
		for _, name := range names {
			n += len(listPods(t, "default", "app="+name))
		}
		return n == 0, fmt.Sprintf("%d left", n)
	})
	t.Logf("pods gone %.2fs after `kubectl delete deployment %s`", time.Since(begin).Seconds(), strings.Join(names, " "))

	c := ctrdClient(t)
	ctx := namespaces.WithNamespace(context.Background(), "cci")
	ctrs, err := c.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snaps := c.SnapshotService("overlayfs")
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	leases := filepath.Join(cci.DataDir, "cni", "ipam")
	for _, p := range pods {
		uid := string(p.UID)
		for _, ctr := range ctrs {
			if strings.HasPrefix(ctr.ID(), uid) {
				t.Errorf("pod %s: container %s left in containerd", p.Name, ctr.ID())
			}
		}
		if _, err := snaps.Stat(ctx, uid+"-httpd"); err == nil {
			t.Errorf("pod %s: snapshot left", p.Name)
		}
		if procs := sandboxProcesses(uid); len(procs) > 0 {
			t.Errorf("pod %s: runsc sandbox left: %s", p.Name, procs)
		}
		if _, err := os.Stat(filepath.Join("/var/run/netns", "cci-"+uid)); err == nil {
			t.Errorf("pod %s: network namespace left", p.Name)
		}
		if strings.Contains(string(mounts), uid) {
			t.Errorf("pod %s: a mount is left", p.Name)
		}
		err := filepath.Walk(leases, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Name() == p.Status.PodIP {
				t.Errorf("pod %s: IP lease %s left", p.Name, path)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(filepath.Join(cci.DataDir, "agent", "pods", uid)); err == nil {
			t.Errorf("pod %s: state folder left", p.Name)
		}
	}
	// CNI's rules name the pod (its UID is the CNI container id).
	out, _ := exec.Command("iptables-save").CombinedOutput()
	for _, p := range pods {
		if strings.Contains(string(out), string(p.UID)) {
			t.Errorf("pod %s: iptables rules left:\n%s", p.Name, grepLines(string(out), string(p.UID)))
		}
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// `cci agent --server --token` joins a second host (here: a second agent on
// this machine with its own data folder, bridge and kubelet port), and pods
// scheduled there run and answer.
func TestSecondAgentJoins(t *testing.T) {
	data := filepath.Join(t.TempDir(), "agent2")
	token, err := os.ReadFile(filepath.Join(cci.DataDir, "pki", "token"))
	if err != nil {
		t.Fatal(err)
	}
	server := strings.TrimSpace(grepLines(cci.Output(), "apiserver:"))
	server = strings.TrimSpace(strings.TrimPrefix(server, "apiserver:"))
	args := []string{"agent", "--data-dir", data, "--server", server, "--token", strings.TrimSpace(string(token)),
		"--node-name", "agent2", "--kubelet-port", strconv.Itoa(cluster.FreePorts(1)[0]), "--cni-bridge", cci.Bridge + "b",
		"--insecure-registry", cci.Registry,
		// This host's service proxy is the first agent's.
		"--service-proxy", "off"}
	out := &strings.Builder{}
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(cci.Bin, args...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	start()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	t.Cleanup(func() {
		stop()
		kubectl(t, "delete", "node", "agent2")
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})

	waitFor(t, 60*time.Second, "node agent2 Ready", func() (bool, string) {
		s, _ := kubectl(t, "get", "node", "agent2", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
		return s == "True", s
	})
	mustKubectl(t, "run", "on-agent2", "--image="+image(testimage.HTTPD), "--overrides", `{"spec":{"nodeName":"agent2"}}`)
	pods := waitRunning(t, "default", "run=on-agent2", 1, 60*time.Second)
	if pods[0].Spec.NodeName != "agent2" {
		t.Fatalf("pod on %q", pods[0].Spec.NodeName)
	}
	if body, err := httpGet("http://" + net.JoinHostPort(pods[0].Status.PodIP, "8080") + "/"); err != nil || body != testimage.IndexHTML {
		t.Errorf("pod on agent2 at %s: %q %v", pods[0].Status.PodIP, body, err)
	}
	if out := mustKubectl(t, "exec", "on-agent2", "--", "hostname"); strings.TrimSpace(out) != "on-agent2" {
		t.Errorf("exec through agent2's kubelet API: %q", out)
	}

	// The agent alone restarts while its pod runs: the pod keeps its
	// container, IP and restart count, and the node's API answers again.
	before := pods[0]
	stop()
	stopped = false
	start()
	// The node stays Ready through a short restart; its kubelet API
	// answering again is the sign the agent is back.
	waitFor(t, 60*time.Second, "exec through agent2's kubelet API after its restart", func() (bool, string) {
		out, err := kubectl(t, "exec", "on-agent2", "--", "hostname")
		return err == nil && strings.TrimSpace(out) == "on-agent2", out
	})
	after := waitRunning(t, "default", "run=on-agent2", 1, 60*time.Second)[0]
	b, a := before.Status.ContainerStatuses[0], after.Status.ContainerStatuses[0]
	if a.ContainerID != b.ContainerID || a.RestartCount != b.RestartCount || after.Status.PodIP != before.Status.PodIP || !a.Ready {
		t.Errorf("after the agent's restart: container %s restarts %d IP %s ready %v; before: %s %d %s",
			a.ContainerID, a.RestartCount, after.Status.PodIP, a.Ready, b.ContainerID, b.RestartCount, before.Status.PodIP)
	}
	if body, err := httpGet("http://" + net.JoinHostPort(after.Status.PodIP, "8080") + "/"); err != nil || body != testimage.IndexHTML {
		t.Errorf("pod on agent2 after the agent's restart: %q %v", body, err)
	}
	mustKubectl(t, "delete", "pod", "on-agent2")
	stop()
}
