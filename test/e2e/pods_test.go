package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/cci-project/cci/internal/testimage"
)

// testNamespace makes a namespace that goes with the test.
func testNamespace(t *testing.T) string {
	t.Helper()
	ns := "t-" + rand.String(6)
	mustKubectl(t, "create", "namespace", ns)
	t.Cleanup(func() { kubectl(t, "delete", "namespace", ns, "--wait=false") })
	return ns
}

// shellPod is a pod running script in the shell image.
func shellPod(name, rc, script string) *v1.Pod {
	zero := int64(1)
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: v1.PodSpec{
			RuntimeClassName:              runtimeClassPtr(rc),
			TerminationGracePeriodSeconds: &zero,
			Containers: []v1.Container{{
				Name: "main", Image: image(testimage.Shell), Command: []string{"sh", "-c", script},
			}},
		},
	}
}

func createPod(t *testing.T, ns string, p *v1.Pod) {
	t.Helper()
	if _, err := client(t).CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
}

// execOut runs a command in a running pod and returns its output.
// Only the command's standard output is returned: kubectl's own warnings
// go to its standard error. runsc (2022-12) now and then fails to start an
// exec under load ("runsc-container did not terminate successfully"); such
// a failure is logged and the exec tried again, up to three times.
func execOut(t *testing.T, ns, pod string, cmd ...string) string {
	t.Helper()
	args := append([]string{"--kubeconfig", cci.Kubeconfig, "-n", ns, "exec", pod, "--"}, cmd...)
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		c := exec.Command("kubectl", args...)
		var stderr strings.Builder
		c.Stderr = &stderr
		out, err := c.Output()
		if err == nil {
			return string(out)
		}
		lastErr = fmt.Errorf("%v: %s%s", err, out, stderr.String())
		if !strings.Contains(stderr.String(), "OCI runtime exec failed") {
			break
		}
		t.Logf("exec %q attempt %d: %v", cmd, attempt, lastErr)
	}
	t.Fatalf("kubectl exec %s -- %s: %v", pod, strings.Join(cmd, " "), lastErr)
	return ""
}

func TestEnvironment(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		mustKubectl(t, "-n", ns, "create", "configmap", "cfg", "--from-literal=color=blue", "--from-literal=size=L")
		mustKubectl(t, "-n", ns, "create", "secret", "generic", "sec", "--from-literal=password=s3cret")
		mustKubectl(t, "-n", ns, "create", "service", "clusterip", "backend", "--tcp=8080:8080")
		p := shellPod("env", rc, "env | sort; sleep 3600")
		c := &p.Spec.Containers[0]
		c.Resources.Limits = v1.ResourceList{v1.ResourceMemory: resource.MustParse("64Mi")}
		c.Env = []v1.EnvVar{
			{Name: "EARLY", Value: "x-$(COLOR_REF)"},
			{Name: "COLOR_REF", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "color"}}},
			{Name: "PASSWORD", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "sec"}, Key: "password"}}},
			{Name: "MY_POD", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "MY_NS", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "MY_NODE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "PLAIN", Value: "x-$(COLOR_REF)"},
			{Name: "MY_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "MEM_LIMIT", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
		}
		c.EnvFrom = []v1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}}
		createPod(t, ns, p)
		pods := waitRunning(t, ns, "app=env", 1, 60*time.Second)
		var out string
		waitFor(t, 20*time.Second, "env printed", func() (bool, string) {
			out, _ = kubectl(t, "-n", ns, "logs", "env")
			return strings.Contains(out, "PASSWORD="), out
		})
		node := strings.TrimSpace(mustKubectl(t, "get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"))
		for _, want := range []string{
			"COLOR_REF=blue", "PLAIN=x-blue", "EARLY=x-$(COLOR_REF)", "MY_IP=" + pods[0].Status.PodIP, "PASSWORD=s3cret", "MY_POD=env", "MY_NS=" + ns, "MY_NODE=" + node,
			"MEM_LIMIT=64", "CFG_color=blue", "CFG_size=L", "HOSTNAME=env",
			"BACKEND_SERVICE_PORT=8080", "KUBERNETES_SERVICE_HOST=",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("env lacks %q:\n%s", want, out)
			}
		}

		// Bad input: a key the configMap does not have.
		bad := shellPod("bad-env", rc, "sleep 3600")
		bad.Spec.Containers[0].Env = []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Key: "nope"}}}}
		createPod(t, ns, bad)
		waitFor(t, 30*time.Second, "CreateContainerConfigError", func() (bool, string) {
			got, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "bad-env", metav1.GetOptions{})
			if err != nil || len(got.Status.ContainerStatuses) == 0 || got.Status.ContainerStatuses[0].State.Waiting == nil {
				return false, fmt.Sprint(err)
			}
			w := got.Status.ContainerStatuses[0].State.Waiting
			return w.Reason == "CreateContainerConfigError" && w.Message == "couldn't find key nope in ConfigMap "+ns+"/cfg", w.Reason + ": " + w.Message
		})
	})
}

func TestVolumes(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		mustKubectl(t, "-n", ns, "create", "configmap", "cfg", "--from-literal=app.conf=v1", "--from-literal=other=o")
		mustKubectl(t, "-n", ns, "create", "secret", "generic", "sec", "--from-literal=key=topsecret")
		mode := int32(0o400)
		expiry := int64(3600)
		size := resource.MustParse("16Mi")
		p := shellPod("vols", rc, "sleep 3600")
		p.Labels["tier"] = "backend"
		p.Spec.Volumes = []v1.Volume{
			{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
			{Name: "mem", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory, SizeLimit: &size}}},
			{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
				LocalObjectReference: v1.LocalObjectReference{Name: "cfg"},
				Items:                []v1.KeyToPath{{Key: "app.conf", Path: "conf/app.conf", Mode: &mode}},
			}}},
			{Name: "sec", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "sec"}}},
			{Name: "down", VolumeSource: v1.VolumeSource{DownwardAPI: &v1.DownwardAPIVolumeSource{Items: []v1.DownwardAPIVolumeFile{
				{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
				{Path: "name", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			}}}},
			{Name: "proj", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
				{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: &expiry, Path: "token"}},
				{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Items: []v1.KeyToPath{{Key: "other", Path: "other"}}}},
				{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{{Path: "ns", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
			}}}},
		}
		p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{
			{Name: "scratch", MountPath: "/scratch"},
			{Name: "scratch", MountPath: "/sub", SubPath: "nested/dir"},
			{Name: "mem", MountPath: "/mem"},
			{Name: "cfg", MountPath: "/etc/app"},
			{Name: "sec", MountPath: "/etc/sec"},
			{Name: "down", MountPath: "/etc/podinfo"},
			{Name: "proj", MountPath: "/var/run/proj"},
		}
		createPod(t, ns, p)
		waitRunning(t, ns, "app=vols", 1, 60*time.Second)

		if got := execOut(t, ns, "vols", "cat", "/etc/app/conf/app.conf"); got != "v1" {
			t.Errorf("configMap item = %q", got)
		}
		if got := execOut(t, ns, "vols", "stat", "-L", "-c", "%a", "/etc/app/conf/app.conf"); strings.TrimSpace(got) != "400" {
			t.Errorf("configMap item mode = %q, want 400", got)
		}
		if got := execOut(t, ns, "vols", "cat", "/etc/sec/key"); got != "topsecret" {
			t.Errorf("secret = %q", got)
		}
		if got := execOut(t, ns, "vols", "cat", "/etc/podinfo/labels"); !strings.Contains(got, `tier="backend"`) {
			t.Errorf("downwardAPI labels = %q", got)
		}
		if got := execOut(t, ns, "vols", "cat", "/var/run/proj/ns"); got != ns {
			t.Errorf("projected downwardAPI = %q", got)
		}
		if got := execOut(t, ns, "vols", "cat", "/var/run/proj/other"); got != "o" {
			t.Errorf("projected configMap = %q", got)
		}
		claims := jwtClaims(t, execOut(t, ns, "vols", "cat", "/var/run/proj/token"))
		if aud := fmt.Sprint(claims["aud"]); !strings.Contains(aud, "vault") {
			t.Errorf("token audience %v, want vault", claims["aud"])
		}
		if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat < 3000 || exp-iat > 3700 {
			t.Errorf("token lifetime %v s, want about 3600", exp-iat)
		}
		// emptyDir shared through subPath, memory emptyDir sized.
		execOut(t, ns, "vols", "sh", "-c", "echo through-subpath > /sub/f")
		if got := execOut(t, ns, "vols", "cat", "/scratch/nested/dir/f"); got != "through-subpath\n" {
			t.Errorf("subPath file seen in the volume as %q", got)
		}
		df := execOut(t, ns, "vols", "df", "-k", "/mem")
		if !strings.Contains(df, "16384") {
			t.Errorf("memory emptyDir not a 16Mi tmpfs:\n%s", df)
		}
		// Live update of a mounted configMap.
		mustKubectl(t, "-n", ns, "patch", "configmap", "cfg", "-p", `{"data":{"app.conf":"v2"}}`)
		waitFor(t, 60*time.Second, "the mounted configMap to change", func() (bool, string) {
			out, _ := kubectl(t, "-n", ns, "exec", "vols", "--", "cat", "/etc/app/conf/app.conf")
			return out == "v2", out
		})
	})
}

func jwtClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

func TestSecurityContext(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		uid, gid := int64(1234), int64(5678)
		no, yes := false, true
		// Each container probes its own seccomp filter into its log: filter
		// mode, and whether it may make a new user namespace (see below).
		const probe = "unshare -U true 2>&1; echo unshare-rc=$?"
		p := shellPod("secure", rc, "grep Seccomp: /proc/self/status; "+probe+"; exec sleep 3600")
		p.Spec.SecurityContext = &v1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &gid, RunAsNonRoot: &yes}
		p.Spec.Containers[0].SecurityContext = &v1.SecurityContext{
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities:             &v1.Capabilities{Drop: []v1.Capability{"ALL"}},
			SeccompProfile:           &v1.SeccompProfile{Type: v1.SeccompProfileTypeRuntimeDefault},
		}
		unconfined := p.Spec.Containers[0]
		unconfined.Name = "unconfined"
		unconfined.SecurityContext = unconfined.SecurityContext.DeepCopy()
		unconfined.SecurityContext.SeccompProfile = &v1.SeccompProfile{Type: v1.SeccompProfileTypeUnconfined}
		p.Spec.Containers = append(p.Spec.Containers, unconfined)
		createPod(t, ns, p)
		waitRunning(t, ns, "app=secure", 1, 60*time.Second)
		if got := execOut(t, ns, "secure", "sh", "-c", "echo $(id -u):$(id -g)"); got != "1234:5678\n" {
			t.Errorf("uid:gid = %q", got)
		}
		if out, err := kubectl(t, "-n", ns, "exec", "secure", "--", "touch", "/newfile"); err == nil {
			t.Errorf("wrote to a read-only root filesystem: %s", out)
		}
		status := execOut(t, ns, "secure", "cat", "/proc/self/status")
		wants := []string{"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"}
		if rc == "" {
			// gVisor's /proc does not report NoNewPrivs.
			wants = append(wants, "NoNewPrivs:\t1")
		}
		for _, want := range wants {
			if !strings.Contains(status, want) {
				t.Errorf("/proc/self/status lacks %q:\n%s", want, status)
			}
		}
		// RuntimeDefault in force, under gVisor too (runsc --oci-seccomp):
		// the container's processes are in filter mode, and unshare(2),
		// which the default profile allows only with CAP_SYS_ADMIN, fails
		// with EPERM. The probe is a new user namespace, which needs no
		// capability: the unconfined container beside it, as unprivileged
		// and capability-less, makes one.
		logs := func(container string) string {
			var out string
			waitFor(t, 30*time.Second, container+"'s probe in its log", func() (bool, string) {
				out, _ = kubectl(t, "-n", ns, "logs", "secure", "-c", container)
				return strings.Contains(out, "unshare-rc="), out
			})
			return out
		}
		if got := logs("main"); !strings.Contains(got, "Seccomp:\t2") || !strings.Contains(got, "Operation not permitted") || !strings.Contains(got, "unshare-rc=1") {
			t.Errorf("container under RuntimeDefault seccomp: %q, want filter mode and unshare refused with EPERM", got)
		}
		if got := logs("unconfined"); !strings.Contains(got, "Seccomp:\t0") || !strings.Contains(got, "unshare-rc=0") {
			t.Errorf("unconfined container: %q, want no filter and unshare allowed", got)
		}
		// runc puts processes run by exec under the container's profile
		// too, and so does a current runsc (its loader's executeAsync
		// applies the container's OCI profile). Debian's runsc (2022-12)
		// does not: it applies the profile to a container's own process
		// only, so kubectl exec in a gvisor pod runs unconfined inside the
		// sandbox there; a host with it runs current runsc for tenants.
		confinesExec := rc == ""
		if rc != "" {
			pod, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "secure", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			version := runscVersionOf(t, string(pod.UID))
			confinesExec = !runscBefore2023(version)
			if !confinesExec {
				t.Logf("runsc %q predates exec under the container's seccomp profile: not checked", version)
			}
		}
		if confinesExec {
			if !strings.Contains(status, "Seccomp:\t2") {
				t.Errorf("exec: RuntimeDefault seccomp not in force:\n%s", status)
			}
			if got := execOut(t, ns, "secure", "sh", "-c", probe); !strings.Contains(got, "Operation not permitted") || !strings.Contains(got, "unshare-rc=1") {
				t.Errorf("exec: unshare under RuntimeDefault seccomp: %q, want EPERM", got)
			}
		}

		// runAsNonRoot with an image that runs as root is refused, as the kubelet does.
		root := shellPod("wants-root", rc, "sleep 3600")
		root.Spec.SecurityContext = &v1.PodSecurityContext{RunAsNonRoot: &yes}
		createPod(t, ns, root)
		waitFor(t, 30*time.Second, "CreateContainerConfigError", func() (bool, string) {
			got, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "wants-root", metav1.GetOptions{})
			if err != nil || len(got.Status.ContainerStatuses) == 0 || got.Status.ContainerStatuses[0].State.Waiting == nil {
				return false, fmt.Sprint(err)
			}
			w := got.Status.ContainerStatuses[0].State.Waiting
			return w.Reason == "CreateContainerConfigError" && strings.Contains(w.Message, "runAsNonRoot and image will run as root"), w.Reason + ": " + w.Message
		})
	})
}

func TestResourceLimits(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		// Over its memory limit the container is killed: OOMKilled.
		p := shellPod("oom", rc, "tail /dev/zero")
		p.Spec.RestartPolicy = v1.RestartPolicyNever
		p.Spec.Containers[0].Resources = v1.ResourceRequirements{
			Limits: v1.ResourceList{v1.ResourceMemory: resource.MustParse("32Mi"), v1.ResourceCPU: resource.MustParse("500m")},
		}
		createPod(t, ns, p)
		waitFor(t, 90*time.Second, "OOMKilled", func() (bool, string) {
			got, err := client(t).CoreV1().Pods(ns).Get(context.Background(), "oom", metav1.GetOptions{})
			if err != nil || len(got.Status.ContainerStatuses) == 0 {
				return false, fmt.Sprint(err)
			}
			term := got.Status.ContainerStatuses[0].State.Terminated
			if term == nil {
				return false, fmt.Sprintf("%+v", got.Status.ContainerStatuses[0].State)
			}
			return term.Reason == "OOMKilled" && term.ExitCode == 137, fmt.Sprintf("%+v", term)
		})
		got, _ := client(t).CoreV1().Pods(ns).Get(context.Background(), "oom", metav1.GetOptions{})
		if got.Status.Phase != v1.PodFailed || got.Status.QOSClass != v1.PodQOSGuaranteed {
			t.Errorf("phase %s qos %s, want Failed and Guaranteed", got.Status.Phase, got.Status.QOSClass)
		}
		if rc != "" {
			return
		}
		// CPU limit as a CFS quota on the container's cgroup (runc).
		cpu := shellPod("cpu", rc, "sleep 3600")
		cpu.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m"), v1.ResourceMemory: resource.MustParse("64Mi")}
		createPod(t, ns, cpu)
		pods := waitRunning(t, ns, "app=cpu", 1, 60*time.Second)
		id := strings.TrimPrefix(pods[0].Status.ContainerStatuses[0].ContainerID, "containerd://")
		quota, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpu/cci", id, "cpu.cfs_quota_us"))
		if err != nil || strings.TrimSpace(string(quota)) != "25000" {
			t.Errorf("cfs quota %q (%v), want 25000", quota, err)
		}
		limit, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory/cci", id, "memory.limit_in_bytes"))
		if err != nil || strings.TrimSpace(string(limit)) != fmt.Sprint(64<<20) {
			t.Errorf("memory limit %q (%v), want %d", limit, err, 64<<20)
		}
	})
}

func TestDownwardFacts(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		p := shellPod("facts", rc, "sleep 3600")
		createPod(t, ns, p)
		pods := waitRunning(t, ns, "app=facts", 1, 60*time.Second)
		if got := execOut(t, ns, "facts", "hostname"); got != "facts\n" {
			t.Errorf("hostname %q", got)
		}
		hosts := execOut(t, ns, "facts", "cat", "/etc/hosts")
		if !strings.Contains(hosts, "# Kubernetes-managed hosts file.") || !strings.Contains(hosts, pods[0].Status.PodIP+"\tfacts") {
			t.Errorf("/etc/hosts:\n%s", hosts)
		}
		if resolv := execOut(t, ns, "facts", "cat", "/etc/resolv.conf"); !strings.Contains(resolv, "nameserver") {
			t.Errorf("/etc/resolv.conf:\n%s", resolv)
		}
	})
}

// A Job of 50 completions, 10 at a time, finishes; each finished pod gives
// its sandbox back at once.
func TestJobCompletions(t *testing.T) {
	forEachRuntime(t, testJobCompletions)
}

func testJobCompletions(t *testing.T, rc string) {
	ns := testNamespace(t)
	completions, parallelism := int32(50), int32(10)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "fifty"},
		Spec: batchv1.JobSpec{
			Completions: &completions,
			Parallelism: &parallelism,
			Template: v1.PodTemplateSpec{Spec: v1.PodSpec{
				RuntimeClassName: runtimeClassPtr(rc),
				RestartPolicy:    v1.RestartPolicyNever,
				Containers:       []v1.Container{{Name: "work", Image: image(testimage.Shell), Command: []string{"sh", "-c", "echo done"}}},
			}},
		},
	}
	begin := time.Now()
	if _, err := client(t).BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 4*time.Minute, "50 completions", func() (bool, string) {
		j, err := client(t).BatchV1().Jobs(ns).Get(context.Background(), "fifty", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Succeeded == completions, fmt.Sprintf("succeeded %d active %d failed %d", j.Status.Succeeded, j.Status.Active, j.Status.Failed)
	})
	t.Logf("50 completions, parallelism 10: %.1fs", time.Since(begin).Seconds())
	pods := listPods(t, ns, "")
	for _, p := range pods {
		if p.Status.Phase != v1.PodSucceeded {
			continue
		}
		if _, err := os.Stat(filepath.Join("/var/run/netns", "cci-"+string(p.UID))); err == nil {
			t.Errorf("finished pod %s still holds its network namespace", p.Name)
		}
		if p.Status.PodIP == "" {
			t.Errorf("finished pod %s lost its podIP in status", p.Name)
		}
	}
}

// Bad input: a volume that cannot be mounted shows the kubelet's reason and
// message; the pod waits and nothing else breaks.
func TestVolumeMountFailure(t *testing.T) {
	forEachRuntime(t, testVolumeMountFailure)
}

func testVolumeMountFailure(t *testing.T, rc string) {
	ns := testNamespace(t)
	p := shellPod("no-cm", rc, "sleep 3600")
	p.Spec.Volumes = []v1.Volume{{Name: "cfg", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "missing"}}}}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	createPod(t, ns, p)
	waitFor(t, 30*time.Second, "a FailedMount event", func() (bool, string) {
		evs, err := client(t).CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=no-cm"})
		if err != nil {
			return false, err.Error()
		}
		var all []string
		for _, e := range evs.Items {
			all = append(all, e.Reason+": "+e.Message)
			if e.Reason == "FailedMount" && strings.Contains(e.Message, `configmap "missing" not found`) {
				return true, ""
			}
		}
		return false, strings.Join(all, "\n")
	})
	got, _ := client(t).CoreV1().Pods(ns).Get(context.Background(), "no-cm", metav1.GetOptions{})
	if w := got.Status.ContainerStatuses; len(w) != 1 || w[0].State.Waiting == nil || w[0].State.Waiting.Reason != "ContainerCreating" {
		t.Errorf("container status %+v, want waiting ContainerCreating", w)
	}
	// Once the configMap exists, the pod starts.
	mustKubectl(t, "-n", ns, "create", "configmap", "missing", "--from-literal=k=v")
	waitRunning(t, ns, "app=no-cm", 1, 60*time.Second)
}

// Bad input: exec of a binary the container does not have fails with a
// clear message and leaves the container running.
func TestExecMissingBinary(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		createPod(t, ns, shellPod("execme", rc, "sleep 3600"))
		waitRunning(t, ns, "app=execme", 1, 60*time.Second)
		out, err := kubectl(t, "-n", ns, "exec", "execme", "--", "/no/such/binary")
		if err == nil || !strings.Contains(out, "/no/such/binary") || !strings.Contains(out, "no such file or directory") {
			t.Errorf("exec of a missing binary: err %v, output %q", err, out)
		}
		if got := execOut(t, ns, "execme", "echo", "still-here"); got != "still-here\n" {
			t.Errorf("container after a failed exec: %q", got)
		}
	})
}

// A container's termination message is what it wrote to its
// terminationMessagePath (as a user other than root too), or under
// FallbackToLogsOnError the end of its log when it failed without writing one.
func TestTerminationMessage(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rc string) {
		ns := testNamespace(t)
		user := int64(1000)
		file := shellPod("term-file", rc, "printf 'bye from main' > /dev/termination-log; echo not the message; exit 3")
		file.Spec.RestartPolicy = v1.RestartPolicyNever
		file.Spec.SecurityContext = &v1.PodSecurityContext{RunAsUser: &user}
		logs := shellPod("term-logs", rc, "echo line1; echo oops; exit 1")
		logs.Spec.RestartPolicy = v1.RestartPolicyNever
		logs.Spec.Containers[0].TerminationMessagePath = "/tmp/why"
		logs.Spec.Containers[0].TerminationMessagePolicy = v1.TerminationMessageFallbackToLogsOnError
		// The end of the log, an unfinished last line included, as the
		// conformance spec's "echo -n DONE; /bin/false".
		partial := shellPod("term-partial", rc, "echo -n DONE; exit 2")
		partial.Spec.RestartPolicy = v1.RestartPolicyNever
		partial.Spec.Containers[0].TerminationMessagePolicy = v1.TerminationMessageFallbackToLogsOnError
		for _, p := range []*v1.Pod{file, logs, partial} {
			createPod(t, ns, p)
		}
		for name, want := range map[string]struct {
			code int32
			msg  string
		}{"term-file": {3, "bye from main"}, "term-logs": {1, "line1\noops\n"}, "term-partial": {2, "DONE"}} {
			waitFor(t, 90*time.Second, name+" terminated with its message", func() (bool, string) {
				p, err := client(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
				if err != nil || len(p.Status.ContainerStatuses) == 0 {
					return false, fmt.Sprint(err)
				}
				term := p.Status.ContainerStatuses[0].State.Terminated
				if term == nil {
					return false, fmt.Sprintf("%+v", p.Status.ContainerStatuses[0].State)
				}
				return term.ExitCode == want.code && term.Message == want.msg, fmt.Sprintf("exit %d message %q", term.ExitCode, term.Message)
			})
		}
	})
}

// runscVersionOf is the --version line of the runsc binary that runs the
// sandbox of the pod with this UID.
func runscVersionOf(t *testing.T, uid string) string {
	t.Helper()
	pids := sandboxPids(uid)
	if len(pids) == 0 {
		t.Fatalf("no runsc sandbox process for pod %s", uid)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(strings.TrimSuffix(exe, " (deleted)"), "--version").Output()
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}

// runscBefore2023 tells whether a runsc version line names a release
// before 2023 (Debian's is "runsc version 0.0~20221219.0"); one without a
// date (built from source) is current.
func runscBefore2023(version string) bool {
	m := regexp.MustCompile(`(20\d{2})(\d{4})`).FindStringSubmatch(version)
	return m != nil && m[1] < "2023"
}
