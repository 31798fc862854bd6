package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/device"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeRunsc is a controllable runsc: it logs every call to $dir/calls, a
// container "exits" with the code written to $dir/exit-<id>, and wait
// reports it as runsc does. A sandbox that is gone is $dir/gone.
const fakeRunsc = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >>"$dir/calls"
for a in "$@"; do prev2=$prev; prev=$a; done
case " $* " in
*" kill "*|*" delete "*)
	[ -e "$dir/gone" ] && { echo "connecting to control server at PID 7: connection refused" >&2; exit 128; }
esac
case " $* " in
*" create "*)
	while [ $# -gt 0 ]; do [ "$1" = --pid-file ] && printf 1 >"$2"; shift; done ;;
*" start "*)
	echo "output of $prev" ;;
*" kill "*)
	echo $((128 + $prev)) >"$dir/exit-$prev2" ;;
*" wait "*)
	while [ ! -e "$dir/exit-$prev" ]; do
		[ -e "$dir/gone" ] && { echo "sandbox gone" >&2; exit 1; }
		sleep 0.02
	done
	echo "{\"id\":\"$prev\",\"exitStatus\":$(cat "$dir/exit-$prev")}" ;;
esac
`

func TestContainerWrapperWaiter(t *testing.T) {
	if _, err := exec.LookPath("mkfifo"); err != nil {
		t.Skip("no mkfifo")
	}
	// The waiter is left to the shim, the nearest subreaper: here, the test.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	fakeDir := t.TempDir()
	fake := filepath.Join(fakeDir, "runsc")
	if err := os.WriteFile(fake, []byte(fakeRunsc), 0o755); err != nil {
		t.Fatal(err)
	}
	g := setupGVisor(filepath.Join(t.TempDir(), "runsc"), RunscConfig{Path: fake})
	if g.err != nil {
		t.Fatal(g.err)
	}

	run := func(t *testing.T, args ...string) {
		t.Helper()
		// The shim's global flags, as go-runc passes them.
		full := append([]string{"--root", "/run/test-root", "--log", "/dev/null", "--log-format", "json"}, args...)
		if out, err := exec.Command(g.containerRuntime, full...).CombinedOutput(); err != nil {
			t.Fatalf("wrapper %v: %v\n%s", args, err, out)
		}
	}
	// create returns the pid the shim watches, which must not be the sandbox's (1).
	create := func(t *testing.T, id string) int {
		t.Helper()
		pidFile := filepath.Join(t.TempDir(), "init.pid")
		// The container's stdout, as the shim gives it to create.
		stdout, err := os.Create(filepath.Join(fakeDir, "stdout-"+id))
		if err != nil {
			t.Fatal(err)
		}
		defer stdout.Close()
		full := []string{"--root", "/run/test-root", "--log", "/dev/null", "--log-format", "json", "create", "--bundle", "/b", "--pid-file", pidFile, id}
		cmd := exec.Command(g.containerRuntime, full...)
		// Files, as the shim's are: the waiter holds them until start.
		cmd.Stdout, cmd.Stderr = stdout, stdout
		if err := cmd.Run(); err != nil {
			out, _ := os.ReadFile(stdout.Name())
			t.Fatalf("wrapper create: %v\n%s", err, out)
		}
		raw, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(string(raw)) // the shim reads it so: no newline
		if err != nil || pid <= 1 {
			t.Fatalf("pid file %q", raw)
		}
		return pid
	}
	exitCode := func(t *testing.T, pid int) int {
		t.Helper()
		got := make(chan int, 1)
		go func() {
			var ws unix.WaitStatus
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
				got <- -1
				return
			}
			got <- ws.ExitStatus()
		}()
		select {
		case c := <-got:
			return c
		case <-time.After(10 * time.Second):
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("waiter %d still runs", pid)
			return 0
		}
	}
	alive := func(pid int) bool {
		var ws unix.WaitStatus
		n, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		return n == 0
	}

	for _, tc := range []struct {
		name  string
		steps func(t *testing.T, id string)
		code  int
		// calls the fake runsc must (not) have seen
		want, unwanted []string
	}{
		{"exits-3", func(t *testing.T, id string) {
			run(t, "start", id)
			// runsc start's stdio is the container's: create's.
			if out, _ := os.ReadFile(filepath.Join(fakeDir, "stdout-"+id)); string(out) != "output of exits-3\n" {
				t.Errorf("container stdout %q, want the output of runsc start", out)
			}
			os.WriteFile(filepath.Join(fakeDir, "exit-"+id), []byte("3"), 0o644)
		}, 3, []string{"--platform=ptrace --network=host --oci-seccomp --root /run/test-root wait exits-3"}, nil},
		{"killed", func(t *testing.T, id string) {
			run(t, "start", id)
			run(t, "kill", "--all", id, "9")
		}, 137, []string{"kill --all killed 9"}, nil},
		{"kill-before-start", func(t *testing.T, id string) {
			run(t, "kill", id, "9")
		}, 137, nil, []string{"kill kill-before-start", "wait kill-before-start"}},
		{"delete-before-start", func(t *testing.T, id string) {
			run(t, "delete", id)
		}, 137, []string{"delete delete-before-start"}, []string{"wait delete-before-start"}},
		{"sandbox-gone", func(t *testing.T, id string) {
			os.WriteFile(filepath.Join(fakeDir, "gone"), nil, 0o644)
			t.Cleanup(func() { os.Remove(filepath.Join(fakeDir, "gone")) })
			run(t, "start", id)
			// The shim takes runc's words for a container that already exited,
			out, err := exec.Command(g.containerRuntime, "--root", "/run/test-root", "kill", "--all", id, "9").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "container not running") {
				t.Errorf("kill in a sandbox that is gone: %v %q", err, out)
			}
			// and a container whose sandbox is gone is deleted with it.
			run(t, "delete", id)
		}, 137, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := create(t, tc.name)
			time.Sleep(50 * time.Millisecond)
			if !alive(pid) {
				t.Fatal("waiter ended before start")
			}
			tc.steps(t, tc.name)
			if got := exitCode(t, pid); got != tc.code {
				t.Errorf("waiter exit %d, want %d", got, tc.code)
			}
			calls, _ := os.ReadFile(filepath.Join(fakeDir, "calls"))
			for _, w := range tc.want {
				if !strings.Contains(string(calls), w) {
					t.Errorf("runsc calls lack %q:\n%s", w, calls)
				}
			}
			for _, u := range tc.unwanted {
				if strings.Contains(string(calls), u) {
					t.Errorf("runsc calls have %q:\n%s", u, calls)
				}
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(g.containerRuntime), "start", tc.name)); err == nil {
				t.Error("start fifo left behind")
			}
		})
	}
}

// The pause container's wrapper passes every call through; the shim gets
// the sandbox's pid.
func TestSandboxWrapper(t *testing.T) {
	fakeDir := t.TempDir()
	fake := filepath.Join(fakeDir, "runsc")
	if err := os.WriteFile(fake, []byte(fakeRunsc), 0o755); err != nil {
		t.Fatal(err)
	}
	g := setupGVisor(filepath.Join(t.TempDir(), "runsc"), RunscConfig{Path: fake, Platform: "kvm"})
	if g.err != nil {
		t.Fatal(g.err)
	}
	pidFile := filepath.Join(t.TempDir(), "init.pid")
	for _, args := range [][]string{
		{"create", "--bundle", "/b", "--pid-file", pidFile, "sb"},
		{"start", "sb"},
		{"kill", "sb", "9"},
		{"delete", "sb"},
	} {
		full := append([]string{"--root", "/run/test-root"}, args...)
		if out, err := exec.Command(g.sandboxRuntime, full...).CombinedOutput(); err != nil {
			t.Errorf("wrapper %v: %v\n%s", args, err, out)
		}
	}
	if raw, _ := os.ReadFile(pidFile); string(raw) != "1" {
		t.Errorf("pid file %q, want the sandbox's", raw)
	}
	calls, _ := os.ReadFile(filepath.Join(fakeDir, "calls"))
	// The first call reads its flags (default platform, nvproxy).
	want := "flags\n" +
		"--platform=kvm --network=host --oci-seccomp --root /run/test-root create --bundle /b --pid-file " + pidFile + " sb\n" +
		"--platform=kvm --network=host --oci-seccomp --root /run/test-root start sb\n" +
		"--platform=kvm --network=host --oci-seccomp --root /run/test-root kill sb 9\n" +
		"--platform=kvm --network=host --oci-seccomp --root /run/test-root delete sb\n"
	if string(calls) != want {
		t.Errorf("runsc calls:\n%s\nwant:\n%s", calls, want)
	}
}

func TestPauseELFRuns(t *testing.T) {
	dir := t.TempDir()
	if err := writePauseRootfs(dir); err != nil {
		t.Skip(err)
	}
	cmd := exec.Command(filepath.Join(dir, "pause"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("pause ended on its own: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// A signal it does not handle ends it, as the kubelet's pause does.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Errorf("pause ended with %v, want SIGTERM", err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pause ignored SIGTERM")
	}
}

func TestResolveHandler(t *testing.T) {
	kube := fake.NewSimpleClientset(
		&nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "gvisor"}, Handler: "gvisor"},
		&nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "runc"}, Handler: "runc"},
		&nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "sandboxed"}, Handler: "runsc"},
		&nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "kata"}, Handler: "kata-qemu"},
	)
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		class   *string
		want    string
		wantErr string
	}{
		{nil, handlerRunc, ""},
		{str(""), handlerRunc, ""},
		{str("runc"), handlerRunc, ""},
		{str("gvisor"), handlerGVisor, ""},
		{str("sandboxed"), handlerGVisor, ""},
		{str("kata"), "", `RuntimeClass "kata" names handler "kata-qemu", which this node does not serve`},
		{str("missing"), "", `RuntimeClass "missing" not found`},
	} {
		got, err := resolveHandler(context.Background(), kube, tc.class)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("class %v: err %v, want %q", tc.class, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("class %v: %q %v, want %q", tc.class, got, err, tc.want)
		}
	}
}

func TestPodResourceOpts(t *testing.T) {
	res := func(cpu, mem string) v1.ResourceRequirements {
		r := v1.ResourceRequirements{Limits: v1.ResourceList{}, Requests: v1.ResourceList{}}
		if cpu != "" {
			r.Limits[v1.ResourceCPU] = resource.MustParse(cpu)
			r.Requests[v1.ResourceCPU] = resource.MustParse(cpu)
		}
		if mem != "" {
			r.Limits[v1.ResourceMemory] = resource.MustParse(mem)
		}
		return r
	}
	always := v1.ContainerRestartPolicyAlways
	for _, tc := range []struct {
		name   string
		spec   v1.PodSpec
		mem    int64 // 0: no limit
		quota  int64 // 0: no limit
		shares uint64
	}{
		{"no limits", v1.PodSpec{Containers: []v1.Container{{Name: "a"}}}, 0, 0, 2},
		{"sum", v1.PodSpec{Containers: []v1.Container{{Name: "a", Resources: res("500m", "64Mi")}, {Name: "b", Resources: res("250m", "32Mi")}}}, 96 << 20, 75000, 768},
		{"one unlimited", v1.PodSpec{Containers: []v1.Container{{Name: "a", Resources: res("500m", "64Mi")}, {Name: "b"}}}, 0, 0, 512},
		{"big init", v1.PodSpec{
			InitContainers: []v1.Container{{Name: "i", Resources: res("1", "256Mi")}},
			Containers:     []v1.Container{{Name: "a", Resources: res("500m", "64Mi")}},
		}, 256 << 20, 100000, 512},
		{"sidecar and overhead", v1.PodSpec{
			InitContainers: []v1.Container{{Name: "s", RestartPolicy: &always, Resources: res("100m", "16Mi")}},
			Containers:     []v1.Container{{Name: "a", Resources: res("500m", "64Mi")}},
			Overhead:       v1.ResourceList{v1.ResourceMemory: resource.MustParse("32Mi")},
		}, 112 << 20, 60000, 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &oci.Spec{Linux: &specs.Linux{}}
			for _, o := range podResourceOpts(&v1.Pod{Spec: tc.spec}) {
				if err := o(context.Background(), nil, &containers.Container{}, s); err != nil {
					t.Fatal(err)
				}
			}
			r := s.Linux.Resources
			var mem, quota int64
			if r.Memory != nil && r.Memory.Limit != nil {
				mem = *r.Memory.Limit
			}
			if r.CPU != nil && r.CPU.Quota != nil {
				quota = *r.CPU.Quota
			}
			if mem != tc.mem || quota != tc.quota || r.CPU == nil || r.CPU.Shares == nil || *r.CPU.Shares != tc.shares {
				t.Errorf("memory %d quota %d shares %v, want %d %d %d", mem, quota, r.CPU.Shares, tc.mem, tc.quota, tc.shares)
			}
		})
	}
}

// The default platform is read from `runsc flags`: Debian's 2022 runsc
// says ptrace, a current one systrap; a list without the flag gives "".
func TestParseDefaultPlatform(t *testing.T) {
	for _, tc := range []struct{ flags, want string }{
		{"  -pidfile string\n    \tfile\n  -platform string\n    \tspecifies which platform to use: ptrace (default), kvm. (default \"ptrace\")\n  -platform_device_path string\n    \tpath (default \"/dev/kvm\")\n", "ptrace"},
		{"  -platform string\n    \tspecifies which platform to use: systrap (default), ptrace, kvm. (default \"systrap\")\n  -pod-init-config string\n", "systrap"},
		{"  -platform string\n    \tno default here\n  -platform_device_path string\n    \t(default \"/dev/kvm\")\n", ""},
		{"runsc: unknown subcommand", ""},
	} {
		if got := parseDefaultPlatform(tc.flags); got != tc.want {
			t.Errorf("parseDefaultPlatform(%q) = %q, want %q", tc.flags, got, tc.want)
		}
	}
}

// The current runsc is the default where it is an executable file;
// anything else falls back to runsc in PATH, and says so.
func TestDefaultRunscPath(t *testing.T) {
	dir := t.TempDir()
	exe, plain, folder := filepath.Join(dir, "runsc"), filepath.Join(dir, "plain"), filepath.Join(dir, "folder")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		current, want string
		fallback      bool
	}{
		{exe, exe, false},
		{filepath.Join(dir, "missing"), "runsc", true},
		{plain, "runsc", true},
		{folder, "runsc", true},
	} {
		got, fallback := defaultRunscPath(tc.current)
		if got != tc.want || fallback != tc.fallback {
			t.Errorf("current %s: %q fallback %v, want %q fallback %v", tc.current, got, fallback, tc.want, tc.fallback)
		}
	}
}

// GPUs pass into gVisor only as NVIDIA devices through a runsc that has
// --nvproxy: such a runsc gets wrappers with it for pods given GPUs; fake
// GPUs, NPUs and a runsc without nvproxy are refused with what to do.
func TestGVisorGPUs(t *testing.T) {
	withNV := fakeRunscListing(t, `  -network string\n    \tnetwork (default "sandbox")\n  -nvproxy\n    \tLEGACY: enable support for Nvidia GPUs.\n  -nvproxy-docker docker run --gpus\n    \tLEGACY\n`)
	without := fakeRunscListing(t, "")
	nv := setupGVisor(filepath.Join(t.TempDir(), "gv"), RunscConfig{Path: withNV, Platform: "ptrace"})
	old := setupGVisor(filepath.Join(t.TempDir(), "gv"), RunscConfig{Path: without, Platform: "ptrace"})
	if nv.err != nil || old.err != nil {
		t.Fatal(nv.err, old.err)
	}
	if !nv.nvproxy || old.nvproxy {
		t.Fatalf("nvproxy found %v and %v, want true (listed) and false (not listed)", nv.nvproxy, old.nvproxy)
	}
	gpu := []device.Device{{ID: "GPU-1", CDIName: device.NVIDIACDI + "=0"}}
	fake := []device.Device{{ID: device.FakeID(0), CDIName: device.FakeCDIKind + "=0"}}
	npu := []device.Device{{ID: "0", CDIName: "huawei.com/npu=0"}}
	for _, tc := range []struct {
		name string
		g    *gvisor
		devs []device.Device
		want string // in the error; "" for none
	}{
		{"no devices", old, nil, ""},
		{"GPU with nvproxy", nv, gpu, ""},
		{"GPU without nvproxy", old, gpu, "need runsc's --nvproxy"},
		{"fake GPU", nv, fake, "fake GPUs cannot pass into gVisor's sandbox"},
		{"NPU", nv, npu, "huawei.com/npu devices cannot pass into gVisor"},
	} {
		err := tc.g.gvisorDevices(tc.devs)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "runtimeClassName: runc")) {
			t.Errorf("%s: %v, want %q with the way out", tc.name, err, tc.want)
		}
	}
	if sb, ctr := nv.runscWrappers(gpu); sb != nv.sandboxGPURuntime || ctr != nv.containerGPURuntime {
		t.Errorf("GPU pod's wrappers %s %s, want the nvproxy ones", sb, ctr)
	}
	if sb, _ := nv.runscWrappers(nil); sb != nv.sandboxRuntime {
		t.Errorf("pod without GPUs runs %s, want the plain wrapper", sb)
	}
	if out, err := exec.Command(nv.sandboxGPURuntime, "--root", "/run/r", "start", "sb").CombinedOutput(); err != nil {
		t.Fatalf("nvproxy wrapper: %v\n%s", err, out)
	}
	calls, _ := os.ReadFile(filepath.Join(filepath.Dir(withNV), "calls"))
	if !strings.Contains(string(calls), "--platform=ptrace --network=host --oci-seccomp --nvproxy --root /run/r start sb\n") {
		t.Errorf("runsc calls:\n%s\nwant start with --nvproxy", calls)
	}
	flags := "  -network string\n    \tnetwork (default \"sandbox\")\n  -nvproxy\n    \tLEGACY: enable support for Nvidia GPUs.\n  -nvproxy-docker docker run --gpus\n    \tLEGACY\n"
	if !hasBoolFlag(flags, "nvproxy") || hasBoolFlag(flags, "nvproxy-docker") || hasBoolFlag(flags, "network") {
		t.Error("hasBoolFlag misreads the flag list")
	}
}

// Systrap's spinning fast path is off unless asked for, and the flag is
// only given to a runsc that has it, on systrap.
func TestSystrapFastPath(t *testing.T) {
	current := fakeRunscListing(t, `  -platform string\n    \tspecifies which platform to use: systrap (default), ptrace, kvm. (default "systrap")\n  -systrap-disable-fast-path\n    \tunconditionally disables the Systrap fast path.\n`)
	old := fakeRunscListing(t, "")
	for _, tc := range []struct {
		name string
		cfg  RunscConfig
		want bool
	}{
		{"current runsc, its default platform", RunscConfig{Path: current}, true},
		{"current runsc, systrap, fast path kept", RunscConfig{Path: current, SystrapFastPath: true}, false},
		{"current runsc, ptrace", RunscConfig{Path: current, Platform: "ptrace"}, false},
		{"runsc without the flag, systrap", RunscConfig{Path: old, Platform: "systrap"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := setupGVisor(filepath.Join(t.TempDir(), "gv"), tc.cfg)
			if g.err != nil {
				t.Fatal(g.err)
			}
			for _, w := range []string{g.sandboxRuntime, g.containerRuntime} {
				raw, err := os.ReadFile(w)
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Contains(string(raw), "--systrap-disable-fast-path"); got != tc.want {
					t.Errorf("%s: --systrap-disable-fast-path given %v, want %v", filepath.Base(w), got, tc.want)
				}
			}
		})
	}
	// The runsc make setup builds has the flag, so that the agent's
	// default reaches it.
	if flags := runscFlags(CurrentRunsc); flags != "" && !hasBoolFlag(flags, "systrap-disable-fast-path") {
		t.Errorf("%s lists no -systrap-disable-fast-path", CurrentRunsc)
	}
}

// fakeRunscListing writes the fake runsc into a folder of its own, its
// `flags` printing list (a printf format; "" for the fake's own answer),
// and returns its path.
func fakeRunscListing(t *testing.T, list string) string {
	t.Helper()
	script := fakeRunsc
	if list != "" {
		script = strings.Replace(fakeRunsc, "case \" $* \" in\n*\" create \"*)", "case \" $* \" in\n*\" flags \"*)\n\tprintf '"+list+"' ;;\n*\" create \"*)", 1)
		if script == fakeRunsc {
			t.Fatal("the fake runsc's script changed: update this helper")
		}
	}
	path := filepath.Join(t.TempDir(), "runsc")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
