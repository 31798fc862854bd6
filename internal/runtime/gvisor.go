package runtime

// gVisor pods.
//
// A pod of the gvisor handler runs in one runsc sandbox. Its first container
// is the pod sandbox: a pause process in a tiny rootfs the agent writes
// itself, started in the pod's network namespace. Every container of the pod
// then joins that sandbox through the CRI annotations runsc reads:
//
//	io.kubernetes.cri.container-type = sandbox (the pause) | container (the others)
//	io.kubernetes.cri.sandbox-id     = <id of the pause container>
//
// The same annotation makes containerd's runc shim serve the whole pod from
// one shim process. runsc runs through that shim as its BinaryName: a
// wrapper script that adds runsc's own flags. Two facts of this runsc shape
// the wrappers (see the notes on building on upstream):
//
//   - runsc --network=sandbox refuses every network namespace on recent
//     kernels; --network=host inside the pod's own namespace works and keeps
//     every syscall in gVisor's kernel.
//   - runsc reports the sandbox's pid as the pid of every container in it, so
//     the shim, which learns of exits by reaping pids, would never see a
//     container of the pod exit. The container wrapper therefore gives the
//     shim the pid of a waiter of its own: a child of the shim that lives
//     exactly as long as the container (`runsc wait`) and exits with its
//     status. gVisor's own shim does the same with a goroutine.
//
// A pod of one container and no init containers has no pause container: its
// container is the sandbox's own first process (soloPod).
//
// Lifecycle of a gvisor pod's sandbox:
//
//	prepareSandbox ─► pause created and started ─► containers join it …
//	                        │ pause exits (sandbox died)
//	                        ▼
//	        pause removed, SandboxReady=false ─► next sync prepares a new one
//	pod finished or deleted ─► containers removed ─► pause removed (release)

import (
	"github.com/cci-project/cci/internal/device"

	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// soloPod tells whether a gvisor pod runs without a pause container: one
// container and no init containers. Its container is then the first process
// of the pod's sandbox, as a single container started with runsc is, and
// the pod starts in one sandbox boot instead of a boot and a join (BENCHMARKS.md:
// the join, runsc start of a second container, took 117–179 ms). The pod's
// network namespace, IP and volumes are the agent's and outlive the
// sandbox: a restart of the container boots a new sandbox in them, where a
// pause would have kept the old one. Pods of several containers share one
// sandbox through the pause container.
func soloPod(pod *v1.Pod) bool {
	return len(pod.Spec.Containers) == 1 && len(pod.Spec.InitContainers) == 0 && len(pod.Spec.EphemeralContainers) == 0
}

// The CRI annotations runsc (and the runc shim's grouping) read.
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	containerTypeSandbox    = "sandbox"
	containerTypeContainer  = "container"
)

// podSandboxName stands for the pod sandbox where a container name is
// expected (task events). Container names are lower-case DNS labels, so it
// cannot clash with one.
const podSandboxName = "POD"

// CurrentRunsc is where make setup builds a current runsc, from the Go
// module proxy (gvisor.dev/gvisor at the version the Makefile pins).
const CurrentRunsc = "/usr/local/lib/cci/runsc"

// DefaultRunscPath is the runsc gvisor pods run with when none is given:
// the current one make setup builds, or, on a host without it, "runsc" in
// PATH (Debian's of 2022 where its package is installed). It says which
// with fallback.
func DefaultRunscPath() (path string, fallback bool) { return defaultRunscPath(CurrentRunsc) }

// defaultRunscPath is DefaultRunscPath with the current runsc at current.
func defaultRunscPath(current string) (string, bool) {
	if fi, err := os.Stat(current); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return current, false
	}
	return "runsc", true
}

// RunscConfig says how pods of the gvisor handler run.
type RunscConfig struct {
	// Path is the runsc binary. Default DefaultRunscPath(): the current
	// runsc of make setup at /usr/local/lib/cci/runsc, else "runsc" in
	// PATH (Debian's of 2022).
	Path string
	// Platform is runsc's --platform. Default: the runsc's own default
	// (systrap for a current runsc, ptrace for Debian's), but never kvm,
	// which needs hardware virtualisation the host may lack and hangs on
	// some.
	Platform string
	// SystrapFastPath keeps the systrap platform's fast path (gVisor's
	// default): stub threads and the sentry spin for a while on each
	// syscall rather than sleep. That lowers one busy sandbox's syscall
	// latency but costs CPU in every active sandbox; on a host that packs
	// many sandboxes per core, the spinning sandboxes take the cores from
	// one another. Off by default: runsc gets --systrap-disable-fast-path
	// where it has the flag.
	SystrapFastPath bool
}

// gvisor is what the agent prepared for gvisor pods at start.
type gvisor struct {
	// path and platform are the runsc that runs the pods and its
	// --platform.
	path, platform string
	// sandboxRuntime and containerRuntime are the wrappers the runc shim
	// runs as its OCI runtime: for the pause container, and for the
	// containers that join its sandbox.
	sandboxRuntime   string
	containerRuntime string
	// nvproxy says this runsc has --nvproxy, gVisor's proxy of the NVIDIA
	// driver's ioctls, which GPUs under gVisor need; the GPU wrappers are
	// the two above with it, for pods given GPUs.
	nvproxy             bool
	sandboxGPURuntime   string
	containerGPURuntime string
	// root is runsc's state folder (--root, below it one per containerd
	// namespace): the agent's own, so that runsc state of other agents on
	// the host never mixes with its own.
	root string
	// pauseRootfs holds /pause, the pod sandbox's only process.
	pauseRootfs string
	// err says why gvisor pods cannot run on this node (runsc missing …).
	err error
	// fellBack says no runsc was given and the current one was missing:
	// path is runsc in PATH.
	fellBack bool
}

// sandboxRecord is the pod sandbox of a gvisor pod.
type sandboxRecord struct {
	// ID is the pause container's containerd id, also the runsc sandbox id.
	ID string `json:"id"`
	// Live says a task exists in containerd.
	Live bool `json:"live,omitempty"`
	// CgroupsPath is the sandbox's cgroup (OCI cgroupsPath, e.g.
	// /cci/<id>; under cgroup v1 it is that path below each controller's
	// mount). The whole sandbox, gVisor's kernel and every container of
	// the pod, is accounted there: it is the pod's cgroup for stats.
	CgroupsPath string `json:"cgroupsPath,omitempty"`
}

// setupGVisor writes the runsc wrappers and the pause rootfs under dir. A
// node without runsc still runs runc pods; its gvisor pods fail with err.
func setupGVisor(dir string, cfg RunscConfig) *gvisor {
	g := &gvisor{
		sandboxRuntime:      filepath.Join(dir, "runsc-sandbox"),
		containerRuntime:    filepath.Join(dir, "runsc-container"),
		sandboxGPURuntime:   filepath.Join(dir, "runsc-sandbox-nvproxy"),
		containerGPURuntime: filepath.Join(dir, "runsc-container-nvproxy"),
		root:                filepath.Join(dir, "root"),
		pauseRootfs:         filepath.Join(dir, "pause"),
	}
	if cfg.Path == "" {
		cfg.Path, g.fellBack = DefaultRunscPath()
	}
	path, err := exec.LookPath(cfg.Path)
	if err != nil {
		g.err = fmt.Errorf("gVisor pods need runsc, which is not at %q (make setup builds the current one at %s; or install Debian's runsc package, or set the agent's --runsc-path): %w", cfg.Path, CurrentRunsc, err)
		return g
	}
	if path, err = filepath.Abs(path); err != nil {
		g.err = err
		return g
	}
	g.path = path
	flags := runscFlags(path)
	platformArgs := platformArgs(&cfg, flags)
	g.nvproxy = hasBoolFlag(flags, "nvproxy")
	g.platform = cfg.Platform
	for _, s := range []string{path, cfg.Platform, dir} {
		if strings.ContainsAny(s, "'\n") {
			g.err = fmt.Errorf("gVisor setup: %q may not contain quotes or newlines", s)
			return g
		}
	}
	if err := writePauseRootfs(g.pauseRootfs); err != nil {
		g.err = fmt.Errorf("gVisor pod sandbox image: %w", err)
		return g
	}
	// --oci-seccomp: without it runsc ignores the OCI spec's seccomp
	// profile (gVisor's own filters guard the host, not the container), so
	// a RuntimeDefault pod would run unconfined inside the sandbox. With it
	// gVisor's kernel applies the profile to the container's processes.
	runsc := fmt.Sprintf("'%s' %s --network=host --oci-seccomp", path, strings.Join(platformArgs, " "))
	fifos := filepath.Join(dir, "start")
	wrappers := map[string]string{
		g.sandboxRuntime:   fmt.Sprintf(wrapper, runsc, fifos, 0),
		g.containerRuntime: fmt.Sprintf(wrapper, runsc, fifos, 1),
	}
	if g.nvproxy {
		// Current runsc turns nvproxy on by itself when the spec has
		// NVIDIA devices; saying it keeps older ones (2023-2024) right.
		wrappers[g.sandboxGPURuntime] = fmt.Sprintf(wrapper, runsc+" --nvproxy", fifos, 0)
		wrappers[g.containerGPURuntime] = fmt.Sprintf(wrapper, runsc+" --nvproxy", fifos, 1)
	}
	for file, text := range wrappers {
		if err := writeFileAtomic(file, []byte(text), 0o755); err != nil {
			g.err = fmt.Errorf("write runsc wrapper: %w", err)
			return g
		}
	}
	return g
}

// platformArgs fills in cfg's platform from runsc's flag list where it
// is unset, and returns the platform flags the agent gives runsc: its
// --platform, and --systrap-disable-fast-path on systrap unless cfg keeps
// the fast path, where the runsc has that flag.
func platformArgs(cfg *RunscConfig, flags string) []string {
	if cfg.Platform == "" {
		cfg.Platform = defaultPlatform(flags)
	}
	args := []string{"--platform=" + cfg.Platform}
	if cfg.Platform == "systrap" && !cfg.SystrapFastPath && hasBoolFlag(flags, "systrap-disable-fast-path") {
		args = append(args, "--systrap-disable-fast-path")
	}
	return args
}

// RunscPlatformArgs are the platform flags the agent gives runsc at path
// under cfg: for a floor that starts the same sandboxes straight through
// containerd.
func RunscPlatformArgs(path string, cfg RunscConfig) []string {
	return platformArgs(&cfg, runscFlags(path))
}

// runscFlags is runsc's list of its flags ("" if it cannot be read).
func runscFlags(runsc string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, runsc, "flags").CombinedOutput()
	return string(out)
}

// defaultPlatform is the platform a runsc uses by default, as its flag
// list says (`-platform … (default "systrap")`), or ptrace where that is
// kvm or cannot be read: ptrace works on every host.
func defaultPlatform(flags string) string {
	if p := parseDefaultPlatform(flags); p != "" && p != "kvm" {
		return p
	}
	return "ptrace"
}

// hasBoolFlag tells whether runsc's flag list has the boolean flag name
// (Go's flag package prints it as "  -name" alone on its line).
func hasBoolFlag(flags, name string) bool {
	for _, l := range strings.Split(flags, "\n") {
		if strings.TrimRight(l, " \t\r") == "  -"+name {
			return true
		}
	}
	return false
}

// gvisorDevices says whether a gvisor pod holding devs can have them, and
// why not: only NVIDIA GPUs pass into gVisor's sandbox, through nvproxy.
// A pod that cannot have them is refused (its status and events say so)
// rather than started without its devices.
func (g *gvisor) gvisorDevices(devs []device.Device) error {
	if len(devs) == 0 {
		return nil
	}
	kind, _, _ := strings.Cut(devs[0].CDIName, "=")
	switch {
	case kind == device.FakeCDIKind:
		return fmt.Errorf("fake GPUs cannot pass into gVisor's sandbox (they are stand-ins, not NVIDIA devices gVisor's nvproxy can drive): run this pod with the runc runtime (runtimeClassName: runc)")
	case kind != device.NVIDIACDI:
		return fmt.Errorf("%s devices cannot pass into gVisor's sandbox (gVisor proxies only NVIDIA GPUs): run this pod with the runc runtime (runtimeClassName: runc)", kind)
	case !g.nvproxy:
		return fmt.Errorf("GPUs under gVisor need runsc's --nvproxy, which this node's runsc (%s) lacks (Debian's of 2022 does): make setup builds a current one at %s; or run this pod with the runc runtime (runtimeClassName: runc)", g.path, CurrentRunsc)
	}
	return nil
}

// runscWrappers are the OCI runtimes of a gvisor pod's sandbox and its
// containers: with nvproxy for a pod given GPUs.
func (g *gvisor) runscWrappers(devs []device.Device) (sandbox, container string) {
	if len(devs) > 0 && g.nvproxy {
		return g.sandboxGPURuntime, g.containerGPURuntime
	}
	return g.sandboxRuntime, g.containerRuntime
}

// parseDefaultPlatform reads the default of -platform from `runsc flags`.
func parseDefaultPlatform(flags string) string {
	_, rest, ok := strings.Cut(flags, "-platform string")
	if !ok {
		return ""
	}
	// The flag's usage line follows; the next flag starts with "  -".
	if i := strings.Index(rest, "\n  -"); i >= 0 {
		rest = rest[:i]
	}
	_, def, ok := strings.Cut(rest, `(default "`)
	if !ok {
		return ""
	}
	def, _, _ = strings.Cut(def, `"`)
	return def
}

// wrapper is the OCI runtime the runc shim runs for gvisor pods: runsc with
// its flags (the first %s), the folder of the waiters' start fifos (the
// second) and whether it serves containers that join a sandbox (1) or the
// sandbox's own pause container (0).
const wrapper = `#!/bin/sh
# Written by the cci agent at every start: the OCI runtime of gVisor pods,
# run by containerd's runc shim as its runc. runsc runs with its host network
# stack inside the pod's own network namespace.
#
# For the containers that join a pod's sandbox (joins=1):
# runsc reports the sandbox's pid as every container's pid, so the shim would
# never see the container exit. On create this wrapper starts a waiter, a
# child of the shim (its subreaper) that lives as long as the container, and
# gives the shim the waiter's pid: the waiter waits for "start", then for the
# container (runsc wait), and exits with the container's exit status.
#
# runsc gives a container that joins a sandbox the stdio of "runsc start",
# where the shim passes the container's stdio to create (and collects the
# output of start until it closes). The waiter holds create's stdio as fds
# 5-7 until start, which runs runsc with them.
runsc() { %s "$@"; }
fifos='%s'
joins=%d

cmd= root= pidfile= prev= last=
for a in "$@"; do
	if [ -z "$cmd" ]; then
		case "$a" in create|start|kill|delete) cmd=$a ;; esac
		[ "$last" = --root ] && root=$a
	fi
	[ "$last" = --pid-file ] && pidfile=$a
	prev=$last
	last=$a
done
# The id is the last argument; kill has the signal after it.
id=$last
[ "$cmd" = kill ] && id=$prev
fifo="$fifos/$id"

# tell WORD: hands WORD to a waiter that still waits for start; false if none does.
tell() {
	[ "$joins" = 1 ] && [ -p "$fifo" ] || return 1
	exec 4<>"$fifo" && echo "$1" >&4
	exec 4>&-
	rm -f "$fifo" "$fifo.waiter"
}

# gone OUTPUT: whether runsc failed because the sandbox is gone, and with it
# the container.
gone() {
	case "$1" in
	*"sandbox is not running"*|*"connection refused"*|*"file does not exist"*) return 0 ;;
	esac
	return 1
}

case "$cmd" in
create)
	runsc "$@" || exit
	[ "$joins" = 1 ] && [ -n "$pidfile" ] || exit 0
	mkdir -p "$fifos" && rm -f "$fifo" && mkfifo -m 600 "$fifo" || exit
	# The waiter holds the fifo open from here on, so what start, kill or
	# delete write is never lost and they never block on it.
	exec 3<>"$fifo"
	(
		read -r word <&3
		exec 3<&- 5<&- 6>&- 7>&-
		[ "$word" = start ] || exit 137
		out=$(runsc --root "$root" wait "$id" 2>/dev/null)
		code=${out##*\"exitStatus\":}
		code=${code%%%%[!0-9]*}
		# No status: the sandbox itself went away.
		[ -n "$code" ] || exit 137
		exit "$code"
	) 5<&0 6>&1 7>&2 </dev/null >/dev/null 2>&1 &
	echo $! >"$fifo.waiter"
	printf %%s $! >"$pidfile.waiter" && mv "$pidfile.waiter" "$pidfile"
	;;
start)
	w=$(cat "$fifo.waiter" 2>/dev/null)
	if [ -n "$w" ]; then
		runsc "$@" <"/proc/$w/fd/5" >"/proc/$w/fd/6" 2>"/proc/$w/fd/7" || exit
	else
		runsc "$@" || exit
	fi
	tell start || true
	;;
kill)
	# A container that never started has no process in the sandbox: its
	# waiter stands for it.
	tell stop && exit 0
	out=$(runsc "$@" 2>&1) && exit 0
	# In runc's words, which the shim takes for "already exited".
	gone "$out" && out="container not running: $out"
	echo "$out" >&2
	exit 1
	;;
delete)
	tell stop
	out=$(runsc "$@" 2>&1) && exit 0
	gone "$out" && exit 0
	echo "$out" >&2
	exit 1
	;;
*)
	runsc "$@"
	;;
esac
`

// writePauseRootfs writes the pod sandbox's rootfs: /pause and the mount
// points runsc needs in a read-only root.
func writePauseRootfs(dir string) error {
	bin, err := pauseELF(goruntime.GOARCH)
	if err != nil {
		return err
	}
	for _, d := range []string{"proc", "dev", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	return writeFileAtomic(filepath.Join(dir, "pause"), bin, 0o755)
}

// pauseELF is a static executable that sleeps in pause(2) until a signal
// ends it: the pod sandbox's process, as the kubelet's pause image has. It is
// built here, nine bytes of code, so that gvisor pods need no image.
func pauseELF(arch string) ([]byte, error) {
	if arch != "amd64" {
		return nil, fmt.Errorf("the gVisor pod sandbox is built for amd64 only, not %s", arch)
	}
	code := []byte{
		0xb8, 0x22, 0x00, 0x00, 0x00, // loop: mov eax, 34 (SYS_pause)
		0x0f, 0x05, //                       syscall
		0xeb, 0xf7, //                       jmp loop
	}
	const base = 0x400000
	hdrSize := binary.Size(elf.Header64{}) + binary.Size(elf.Prog64{})
	size := uint64(hdrSize + len(code))
	hdr := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(elf.EM_X86_64),
		Version:   uint32(elf.EV_CURRENT),
		Entry:     base + uint64(hdrSize),
		Phoff:     uint64(binary.Size(elf.Header64{})),
		Ehsize:    uint16(binary.Size(elf.Header64{})),
		Phentsize: uint16(binary.Size(elf.Prog64{})),
		Phnum:     1,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	prog := elf.Prog64{
		Type:   uint32(elf.PT_LOAD),
		Flags:  uint32(elf.PF_R | elf.PF_X),
		Vaddr:  base,
		Paddr:  base,
		Filesz: size,
		Memsz:  size,
		Align:  0x1000,
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, hdr)
	_ = binary.Write(&b, binary.LittleEndian, prog)
	b.Write(code)
	return b.Bytes(), nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func podSandboxID(pod *v1.Pod) string { return string(pod.UID) + "_pod" }

// podHostname is the pod's hostname as the kubelet makes it: spec.hostname
// or the pod's name, cut to 63 characters (a name may have 253, the kernel
// takes 64 bytes with the terminating NUL) without a trailing '-' or '.'.
func podHostname(pod *v1.Pod) string {
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	const maxLen = 63
	if len(hostname) > maxLen {
		hostname = strings.TrimRight(hostname[:maxLen], "-.")
	}
	return hostname
}

// sandboxRoot is the id of the container whose process is the pod's gVisor
// sandbox: the pause container's, or a solo pod's one container's (see
// soloPod); "" for a pod without a sandbox (runc, and records of older
// agents, which have no handler). The caller holds rec's lock or is its
// only writer.
func sandboxRoot(rec *podRecord) string {
	switch {
	case rec.Handler != handlerGVisor:
		return ""
	case rec.Solo:
		// The current run's: each run of a solo pod's container boots a
		// sandbox of its id.
		if cr := rec.ctr(rec.Pod.Spec.Containers[0].Name); cr != nil {
			return cr.ID
		}
		return containerID(rec.Pod, rec.Pod.Spec.Containers[0].Name)
	default:
		return podSandboxID(rec.Pod)
	}
}

// runtimeOpts are the containerd options that put the app container id
// under the pod's handler: a gvisor container joins its pod's sandbox, or,
// if it is the sandbox's root, boots it with the pod's limits on it, as
// the pause container otherwise does.
func (w *podWorker) runtimeOpts(pod *v1.Pod, id string) (containerd.NewContainerOpts, []oci.SpecOpts) {
	w.mu.Lock()
	root := sandboxRoot(w.rec)
	devs := w.rec.Devices
	w.mu.Unlock()
	if root == "" {
		return containerd.WithRuntime(runcRuntime, nil), nil
	}
	sandboxRuntime, containerRuntime := w.r.gvisor.runscWrappers(devs)
	binary, kind, opts := containerRuntime, containerTypeContainer, []oci.SpecOpts(nil)
	if root == id {
		binary, kind, opts = sandboxRuntime, containerTypeSandbox, append(podResourceOpts(pod), w.r.pidsOpts()...)
	}
	return containerd.WithRuntime(runcRuntime, &options.Options{BinaryName: binary, Root: w.r.gvisor.root}),
		append(opts, oci.WithAnnotations(map[string]string{
			annotationContainerType: kind,
			annotationSandboxID:     root,
		}))
}

// startPodSandbox creates and starts the pause container of a gvisor pod,
// unless it already runs.
func (w *podWorker) startPodSandbox() error {
	g := w.r.gvisor
	if w.sandboxTask != nil {
		return nil
	}
	ctx := w.ctx()
	pod := w.pod()
	id := podSandboxID(pod)
	client := w.r.cfg.Containerd
	begin := time.Now()

	// One left from an earlier try goes first.
	w.removeContainer(id, nil)
	opts := []oci.SpecOpts{
		oci.WithRootFSPath(g.pauseRootfs),
		oci.WithRootFSReadonly(),
		oci.WithProcessArgs("/pause"),
		oci.WithProcessCwd("/"),
		oci.WithHostname(podHostname(pod)),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: w.r.netnsPath(pod)}),
		oci.WithAnnotations(map[string]string{annotationContainerType: containerTypeSandbox, annotationSandboxID: id}),
	}
	opts = append(opts, podResourceOpts(pod)...)
	opts = append(opts, w.r.pidsOpts()...)
	if psc := pod.Spec.SecurityContext; psc != nil && len(psc.Sysctls) > 0 {
		opts = append(opts, withSysctls(psc.Sysctls))
	}
	w.mu.Lock()
	sandboxRuntime, _ := g.runscWrappers(w.rec.Devices)
	w.mu.Unlock()
	ctr, err := client.NewContainer(ctx, id,
		containerd.WithRuntime(runcRuntime, &options.Options{BinaryName: sandboxRuntime, Root: g.root}),
		containerd.WithNewSpec(opts...),
		containerd.WithContainerLabels(map[string]string{
			labelPodUID: string(pod.UID), labelPodNamespace: pod.Namespace, labelPodName: pod.Name, labelContainer: podSandboxName,
		}),
	)
	if err != nil {
		return fmt.Errorf("create gVisor pod sandbox: %w", err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		_ = ctr.Delete(ctx)
		return fmt.Errorf("read gVisor pod sandbox spec: %w", err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		_ = ctr.Delete(ctx)
		return fmt.Errorf("create gVisor pod sandbox task: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	exitCh, err := task.Wait(wctx)
	if err == nil {
		err = task.Start(ctx)
	}
	if err != nil {
		cancel()
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		_ = ctr.Delete(ctx)
		return fmt.Errorf("start gVisor pod sandbox: %w", err)
	}
	w.sandboxTask = w.watch(podSandboxName, task, exitCh, cancel)
	cgroups := ""
	if spec.Linux != nil {
		cgroups = spec.Linux.CgroupsPath
	}
	w.update(func(rec *podRecord) {
		rec.Sandbox = &sandboxRecord{ID: id, Live: true, CgroupsPath: cgroups}
	})
	w.log.Info("gVisor pod sandbox started", "id", id, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// removePodSandbox stops and removes a gvisor pod's pause container, and so
// its runsc sandbox; the pod's containers must be gone first.
func (w *podWorker) removePodSandbox() {
	if lt := w.sandboxTask; lt != nil {
		w.sandboxTask = nil
		lt.cancel()
	}
	w.mu.Lock()
	sb := w.rec.Sandbox
	live := sb != nil && sb.Live
	w.mu.Unlock()
	if !live {
		return
	}
	w.removeContainer(sb.ID, nil)
	w.update(func(rec *podRecord) { rec.Sandbox.Live = false })
}

// onSandboxExit handles the end of a gvisor pod's pause process: its
// sandbox, and every container in it, is gone. The containers' own exits
// arrive as events; the next sync prepares a new sandbox, as the kubelet
// re-creates a dead one.
func (w *podWorker) onSandboxExit(lt *liveTask) {
	if w.sandboxTask != lt {
		return // removed on purpose
	}
	w.sandboxTask = nil
	if lt.lost != nil {
		if w.ctx().Err() != nil {
			return
		}
		w.log.Warn("lost track of the pod sandbox, re-attaching", "err", lt.lost)
		w.retryReattach()
		return
	}
	w.log.Warn("gVisor pod sandbox exited", "code", lt.code)
	w.event(v1.EventTypeNormal, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
	if lt.code == 137 && w.oomKilled(podSandboxID(w.rec.Pod)) {
		w.sandboxOOMAt = timeNow()
	}
	w.mu.Lock()
	id := w.rec.Sandbox.ID
	w.mu.Unlock()
	w.removeContainer(id, lt.task)
	w.update(func(rec *podRecord) {
		rec.Sandbox.Live = false
		rec.SandboxReady = false
	})
}

// reattachSandbox watches again the pause container of a re-adopted gvisor
// pod; it reports false when containerd is not answering.
func (w *podWorker) reattachSandbox() bool {
	w.mu.Lock()
	sb := w.rec.Sandbox
	live := sb != nil && sb.Live
	w.mu.Unlock()
	if !live || w.sandboxTask != nil {
		return true
	}
	ctx := w.ctx()
	lost := func() {
		w.log.Warn("gVisor pod sandbox gone while nobody watched it", "id", sb.ID)
		w.update(func(rec *podRecord) {
			rec.Sandbox.Live = false
			rec.SandboxReady = false
		})
	}
	c, err := w.r.cfg.Containerd.LoadContainer(ctx, sb.ID)
	if errdefs.IsNotFound(err) {
		lost()
		return true
	}
	if err != nil {
		w.log.Warn("re-attach: containerd not answering", "container", podSandboxName, "err", err)
		return false
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		_ = c.Delete(ctx)
		lost()
		return true
	}
	if err != nil {
		w.log.Warn("re-attach: load pod sandbox task", "err", err)
		return true
	}
	wctx, cancel := context.WithCancel(ctx)
	exitCh, err := task.Wait(wctx)
	if err != nil {
		cancel()
		w.log.Warn("re-attach: wait pod sandbox", "err", err)
		return true
	}
	w.sandboxTask = w.watch(podSandboxName, task, exitCh, cancel)
	w.log.Info("re-attached gVisor pod sandbox", "id", sb.ID)
	return true
}

// retryReattach posts a re-attach soon.
func (w *podWorker) retryReattach() {
	go func() {
		select {
		case <-time.After(reattachRetry):
			w.post(event{kind: evReattach})
		case <-w.done:
		}
	}()
}

// podResourceOpts puts the pod's limits on its sandbox, as the kubelet's pod
// cgroup has them: the sum of its long-running containers' limits (or the
// largest init container's, if more) plus the pod's overhead; no limit if
// one container has none. CPU shares are the sum of the requests.
func podResourceOpts(pod *v1.Pod) []oci.SpecOpts {
	limit := func(name v1.ResourceName) (resource.Quantity, bool) {
		var sum, initMax resource.Quantity
		for _, c := range pod.Spec.InitContainers {
			q, ok := c.Resources.Limits[name]
			if !ok || q.IsZero() {
				return sum, false
			}
			if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
				sum.Add(q)
			} else if q.Cmp(initMax) > 0 {
				initMax = q
			}
		}
		for _, c := range pod.Spec.Containers {
			q, ok := c.Resources.Limits[name]
			if !ok || q.IsZero() {
				return sum, false
			}
			sum.Add(q)
		}
		if initMax.Cmp(sum) > 0 {
			sum = initMax
		}
		if q, ok := pod.Spec.Overhead[name]; ok {
			sum.Add(q)
		}
		return sum, true
	}
	var opts []oci.SpecOpts
	if q, ok := limit(v1.ResourceMemory); ok {
		opts = append(opts, oci.WithMemoryLimit(uint64(q.Value())))
	}
	if q, ok := limit(v1.ResourceCPU); ok {
		const period = 100000
		opts = append(opts, oci.WithCPUCFS(q.MilliValue()*period/1000, period))
	}
	var requests int64
	for _, c := range pod.Spec.Containers {
		if q, ok := c.Resources.Requests[v1.ResourceCPU]; ok {
			requests += q.MilliValue()
		}
	}
	return append(opts, oci.WithCPUShares(uint64(max(requests*1024/1000, 2))))
}
