package runtime

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/moby/sys/signal"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	v1 "k8s.io/api/core/v1"
	utilsysctl "k8s.io/component-helpers/node/util/sysctl"

	"github.com/cci-project/cci/internal/network"
)

// Labels put on every containerd container, so leftovers can be traced to a pod.
const (
	labelPodUID       = "io.cci.pod.uid"
	labelPodNamespace = "io.cci.pod.namespace"
	labelPodName      = "io.cci.pod.name"
	labelContainer    = "io.cci.container.name"
)

const runcRuntime = "io.containerd.runc.v2"

// prepareSandbox gives the pod its network namespace and IP, its volumes and
// the /etc files every container shares.
func (w *podWorker) prepareSandbox() error {
	ctx := w.ctx()
	pod := w.pod()
	w.mu.Lock()
	resolved := w.rec.Handler != ""
	w.mu.Unlock()
	if !resolved {
		h, err := resolveHandler(ctx, w.r.cfg.Kube, pod.Spec.RuntimeClassName)
		if err != nil {
			return err
		}
		w.update(func(rec *podRecord) {
			rec.Handler = h
			rec.Solo = h == handlerGVisor && soloPod(pod)
		})
	}
	w.mu.Lock()
	root := sandboxRoot(w.rec)
	w.mu.Unlock()
	if root != "" && w.r.gvisor.err != nil {
		return w.r.gvisor.err
	}
	if root != "" {
		w.mu.Lock()
		devs := w.rec.Devices
		w.mu.Unlock()
		if err := w.r.gvisor.gvisorDevices(devs); err != nil {
			return err
		}
	}
	if pod.Spec.HostNetwork {
		return w.prepareHostNetworkSandbox(pod)
	}
	var ports []network.PortMapping
	for _, c := range append(append([]v1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				ports = append(ports, network.PortMapping{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: strings.ToLower(string(p.Protocol)), HostIP: p.HostIP})
			}
		}
	}
	sb, err := w.r.cfg.Network.Setup(ctx, string(pod.UID), ports)
	if err != nil {
		return fmt.Errorf("set up network: %w", err)
	}
	ips := make([]string, 0, len(sb.IPs))
	addrs := make([]netip.Addr, 0, len(sb.IPs))
	for _, ip := range sb.IPs {
		ips = append(ips, ip.String())
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	w.update(func(rec *podRecord) { rec.IPs = ips })
	if w.r.cfg.Addresses != nil {
		if err := w.r.cfg.Addresses.PodAddressed(ctx, pod, addrs); err != nil {
			// The pod still runs; until the API shows its IP it is held to
			// the rules of a tenant's pod.
			w.log.Warn("tell the pod's addresses", "err", err)
		}
	}
	if err := w.r.prepareVolumes(ctx, pod); err != nil {
		return err
	}
	if err := w.r.writeEtcFiles(pod, ips); err != nil {
		return err
	}
	if root == podSandboxID(pod) {
		return w.startPodSandbox()
	}
	return nil
}

// prepareHostNetworkSandbox prepares a hostNetwork pod (admission lets
// only the operator's namespaces have them): its containers share the
// host's network and UTS namespaces, as under the kubelet with containerd,
// and its IP is the node's. gVisor's sandbox cannot take the host's network
// namespace here (runsc refuses the root namespace on this kernel), so such
// a pod under the gvisor handler is refused with a clear status.
func (w *podWorker) prepareHostNetworkSandbox(pod *v1.Pod) error {
	w.mu.Lock()
	handler := w.rec.Handler
	w.mu.Unlock()
	if handler == handlerGVisor {
		return fmt.Errorf("hostNetwork pods cannot run under the %q runtime handler on this node: gVisor's sandbox needs a network namespace of its own; use the runc runtime", handlerGVisor)
	}
	ips := w.r.hostIPs()
	if len(ips) == 0 {
		return fmt.Errorf("hostNetwork pod: this node has no IP to give it")
	}
	w.update(func(rec *podRecord) { rec.IPs = ips })
	if err := w.r.prepareVolumes(w.ctx(), pod); err != nil {
		return err
	}
	return w.r.writeEtcFiles(pod, ips)
}

// hostIPs are the IPs of a hostNetwork pod: the node's.
func (r *Runtime) hostIPs() []string {
	if r.cfg.HostIP == "" {
		return nil
	}
	return []string{r.cfg.HostIP}
}

// nodeHostname is the hostname of a hostNetwork pod's containers: the node's.
func nodeHostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}

func (r *Runtime) netnsPath(pod *v1.Pod) string {
	return filepath.Join("/var/run/netns", "cci-"+string(pod.UID))
}

// startContainer creates the containerd container and starts its task.
func (w *podWorker) startContainer(c *v1.Container, cr *ctrRecord, img *pulledImage) (*liveTask, time.Time, error) {
	ctx := w.ctx()
	pod := w.pod()
	client := w.r.cfg.Containerd

	// This run gets an id of its own (see runContainerID). It is written
	// down before the container exists: an agent killed from here on finds
	// the container by the record, to re-adopt or remove it.
	w.mu.Lock()
	prev := cr.ID
	cr.ID = runContainerID(pod, c.Name, cr.Runs)
	cr.Runs++
	w.mu.Unlock()
	w.persist()
	// The earlier run's container, if its removal did not happen, and one
	// of this id left by a start cut short before the record was written,
	// go first.
	// The earlier run's task may also outlive its container (a start cut
	// short, see deleteOrphanTask): its removal runs where it is gone too.
	for _, id := range []string{prev, cr.ID} {
		if _, err := client.LoadContainer(ctx, id); err == nil || errdefs.IsNotFound(err) && id != cr.ID {
			w.removeContainer(id, nil)
		}
	}

	w.mu.Lock()
	podIPs := append([]string(nil), w.rec.IPs...)
	w.mu.Unlock()
	specOpts, err := w.r.specOpts(ctx, pod, c, img, podIPs)
	if err != nil {
		return nil, time.Time{}, err
	}
	runtimeOpt, runtimeSpecOpts := w.runtimeOpts(pod, cr.ID)
	specOpts = append(specOpts, runtimeSpecOpts...)
	specOpts = append(specOpts, w.deviceOpts(pod, c)...)
	w.mu.Lock()
	handler := w.rec.Handler
	w.mu.Unlock()
	devOpts, err := w.r.blockDeviceOpts(pod, c, handler)
	if err != nil {
		return nil, time.Time{}, err
	}
	specOpts = append(specOpts, devOpts...)
	if handler != handlerGVisor {
		specOpts = append(specOpts, w.r.claimPropagation(pod))
	}
	if cr.Ephemeral {
		nsOpts, err := w.targetNamespaceOpts(pod, c.Name)
		if err != nil {
			return nil, time.Time{}, err
		}
		specOpts = append(specOpts, nsOpts...)
	}
	ctr, err := client.NewContainer(ctx, cr.ID,
		containerd.WithImage(img.image),
		containerd.WithSnapshotter(w.r.cfg.Snapshotter),
		containerd.WithNewSnapshot(cr.ID, img.image),
		runtimeOpt,
		containerd.WithNewSpec(specOpts...),
		containerd.WithContainerLabels(map[string]string{
			labelPodUID: string(pod.UID), labelPodNamespace: pod.Namespace, labelPodName: pod.Name, labelContainer: c.Name,
		}),
	)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("create container %q: %w", c.Name, err)
	}
	w.event(v1.EventTypeNormal, "Created", "Created container %s", c.Name)

	w.mu.Lock()
	restarts := cr.RestartCount
	if cr.Started {
		restarts++
	}
	w.mu.Unlock()
	logPath := w.r.logPath(pod, c.Name, restarts)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, time.Time{}, fmt.Errorf("create log folder: %w", err)
	}
	// What a failed start made is removed even when the failure is the
	// agent stopping (ctx cancelled): a task created and never deleted
	// would leave its shim, cgroup and rootfs mount behind for good.
	cleanup, cancelCleanup := w.cleanupCtx()
	defer cancelCleanup()
	// The runs before the previous one lose their logs, as their
	// containers would on a kubelet (its container GC keeps one dead
	// container per container): a crash loop does not pile up files.
	pruneLogs(filepath.Dir(logPath), int(restarts)-1)
	logs, err := openContainerLog(logPath, w.r.cfg.ContainerLogMaxSize, w.r.cfg.ContainerLogMaxFiles)
	if err != nil {
		_ = ctr.Delete(cleanup, containerd.WithSnapshotCleanup)
		return nil, time.Time{}, err
	}
	task, err := newTask(ctx, cleanup, client, ctr, func() cio.Creator { return logs.creator(c.Stdin, c.TTY) })
	if err != nil {
		logs.Close()
		_ = ctr.Delete(cleanup, containerd.WithSnapshotCleanup)
		return nil, time.Time{}, &startError{container: c.Name, err: err}
	}
	wctx, cancel := context.WithCancel(ctx)
	exitCh, err := task.Wait(wctx)
	if err != nil {
		cancel()
		_, _ = task.Delete(cleanup, containerd.WithProcessKill)
		logs.Close()
		_ = ctr.Delete(cleanup, containerd.WithSnapshotCleanup)
		return nil, time.Time{}, fmt.Errorf("wait on container %q: %w", c.Name, err)
	}
	if err := task.Start(ctx); err != nil {
		cancel()
		_, _ = task.Delete(cleanup, containerd.WithProcessKill)
		logs.Close()
		_ = ctr.Delete(cleanup, containerd.WithSnapshotCleanup)
		return nil, time.Time{}, &startError{container: c.Name, err: err}
	}
	lt := w.watch(c.Name, task, exitCh, cancel)
	w.setLogs(c.Name, lt, logs)
	return lt, time.Now(), nil
}

// newTask creates the task of ctr. A task of the same id that containerd
// already holds is the remains of a start cut short (the agent stopping or
// containerd dying under the create): the shim containerd started for it
// stays in containerd's task list though the cut attempt's undo removed the
// container record, so the new container of the same id meets it ("task …:
// already exists"). No one ever started that task, so it is deleted
// (through the container just made, which the task service needs to find
// it) and the creation tried once more. newIO gives each try IO of its
// own: a creator's IO is closed when its try fails.
func newTask(ctx, cleanup context.Context, client *containerd.Client, ctr containerd.Container, newIO func() cio.Creator) (containerd.Task, error) {
	task, err := ctr.NewTask(ctx, newIO())
	if err == nil || !errdefs.IsAlreadyExists(err) {
		return task, err
	}
	if derr := removeStaleTask(cleanup, client, ctr); derr != nil {
		return nil, fmt.Errorf("%w (and deleting the stale task: %v)", err, derr)
	}
	return ctr.NewTask(ctx, newIO())
}

// removeStaleTask deletes the task containerd holds for ctr, killing its
// process first if it has one. A shim whose create was cut before runc
// made the container answers no state ("container not created"), so the
// client cannot load it as a task: it is deleted through the task service
// directly, which removes it from containerd's list and stops the shim.
func removeStaleTask(ctx context.Context, client *containerd.Client, ctr containerd.Container) error {
	if task, err := ctr.Task(ctx, nil); err == nil {
		_, err := task.Delete(ctx, containerd.WithProcessKill)
		if err == nil || errdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	_, err := deleteTaskByID(ctx, client, ctr.ID())
	return err
}

// deleteOrphanTask deletes a task containerd holds under id without a
// container of that id; false, nil when there is none. A start cut short
// (the agent stopping, containerd dying under the create) has its undo
// remove the container while containerd still finishes making the task,
// whose shim and cgroup would then stay with nothing naming them, as the
// container's next run has an id of its own (runContainerID). containerd's
// task service finds tasks only through their container, so a stand-in
// container of that id is made for the deletion and removed after it
// (listing the tasks instead would ask every shim for its state).
func deleteOrphanTask(ctx context.Context, client *containerd.Client, id string) (found bool, err error) {
	ctr, err := client.NewContainer(ctx, id, containerd.WithRuntime(runcRuntime, nil), containerd.WithNewSpec())
	if errdefs.IsAlreadyExists(err) {
		// A container of that id exists again: its task goes with it.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("a stand-in container to delete its task through: %w", err)
	}
	defer func() {
		if derr := ctr.Delete(context.WithoutCancel(ctx)); derr != nil && !errdefs.IsNotFound(derr) && err == nil {
			err = fmt.Errorf("remove the stand-in container: %w", derr)
		}
	}()
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return deleteTaskByID(ctx, client, id)
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return true, err
	}
	return true, nil
}

// deleteTaskByID deletes the task of container id through the task
// service; false, nil when there is none. It reaches a shim whose create
// was cut before runc made the container, which answers no state, so that
// the client cannot load it as a task.
func deleteTaskByID(ctx context.Context, client *containerd.Client, id string) (bool, error) {
	_, err := client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	if err = errgrpc.ToNative(err); errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// setLogs records the log a task writes to, for attached clients; the
// run goroutine closes it when the task is gone (dropTask).
func (w *podWorker) setLogs(name string, lt *liveTask, logs *containerLog) {
	lt.logs = logs
	logs.task = lt.task
	if io := lt.task.IO(); io != nil && logs.io == nil {
		logs.io = io
	}
	w.mu.Lock()
	w.logs[name] = logs
	w.mu.Unlock()
}

// dropTask closes the log of a task that was deleted (its IO done).
func (w *podWorker) dropTask(name string, lt *liveTask) {
	if lt == nil || lt.logs == nil {
		return
	}
	w.mu.Lock()
	if w.logs[name] == lt.logs {
		delete(w.logs, name)
	}
	w.mu.Unlock()
	_ = lt.logs.Close()
}

// closeLog closes the log kept for a container whose task is gone without
// an exit the agent saw (lost while containerd restarted, then not found).
func (w *podWorker) closeLog(name string) {
	w.mu.Lock()
	l := w.logs[name]
	delete(w.logs, name)
	w.mu.Unlock()
	_ = l.Close()
}

// attachedLog is the log the running task of a container writes to.
func (w *podWorker) attachedLog(name string) *containerLog {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs[name]
}

// startError is a container the runtime created but whose process it could
// not start: its command missing from the image, not executable, a working
// directory that cannot be entered … runc finds these when it creates the
// task, runsc when it starts it. Like containerd's CRI, which reports such a
// container as exited with reason StartError, the agent counts it as a run
// that ended at once (see onStartError).
type startError struct {
	container string
	err       error // the runtime's own words
}

func (e *startError) Error() string {
	return fmt.Sprintf("start container %q: %v", e.container, e.err)
}
func (e *startError) Unwrap() error { return e.err }

// removeContainer deletes a container's task, the container and its snapshot.
// containerd dying under the removal (the agent restarts it) is waited out
// until the clean-up's bound: given up at once, the task's shim and cgroups
// and the container would stay, with nothing left to remove them.
func (w *podWorker) removeContainer(id string, task containerd.Task) {
	ctx, cancel := w.cleanupCtx()
	defer cancel()
	for {
		err := w.tryRemoveContainer(ctx, id, task)
		if err == nil {
			return
		}
		if !containerdLost(err) || ctx.Err() != nil {
			w.log.Warn("remove container", "id", id, "err", err)
			return
		}
		task = nil // it held the connection that went with containerd
		select {
		case <-ctx.Done():
			w.log.Warn("remove container: containerd did not come back", "id", id, "err", err)
			return
		case <-time.After(time.Second):
		}
	}
}

func (w *podWorker) tryRemoveContainer(ctx context.Context, id string, task containerd.Task) error {
	c, err := w.r.cfg.Containerd.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		// Its task may still be there without it (deleteOrphanTask).
		found, err := deleteOrphanTask(ctx, w.r.cfg.Containerd, id)
		if err != nil {
			return fmt.Errorf("delete the task left without its container: %w", err)
		}
		if found {
			w.log.Info("removed a task left without its container by a start cut short", "id", id)
		}
		w.removeCgroups(id)
		return nil
	}
	if err != nil {
		return err
	}
	if task != nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task: %w", err)
		}
	} else if err := removeStaleTask(ctx, w.r.cfg.Containerd, c); err != nil {
		// Also a shim that never got its container, which the client
		// cannot load as a task and would leave running.
		return fmt.Errorf("delete task: %w", err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container: %w", err)
	}
	w.removeCgroups(id)
	return nil
}

// removeCgroups removes what runc left of a deleted container's cgroups
// (containerd's default cgroupsPath "/<namespace>/<id>").
func (w *podWorker) removeCgroups(id string) {
	if err := removeCgroups(cgroupRoot, "/"+w.r.cfg.Namespace+"/"+id); err != nil {
		w.log.Warn("remove the cgroups of a deleted container", "id", id, "err", err)
	}
}

// oomKilled tells whether the container's memory cgroup, or for a gvisor
// pod its sandbox's, saw an OOM kill.
func (w *podWorker) oomKilled(id string) bool {
	// A gvisor pod's memory is its sandbox's: the limit and the OOM kills
	// are on the sandbox's cgroup, whose death ends every container in it
	// (and may be handled just before the container's exit).
	// Only the run goroutine calls this, some callers with mu held: it reads
	// the record without the lock, as its only writer may.
	if root := sandboxRoot(w.rec); root != "" && root != id {
		if !w.sandboxOOMAt.IsZero() && timeNow().Sub(w.sandboxOOMAt) < 10*time.Second {
			return true
		}
		id = root
	}
	return oomKillCount(w.r.cfg.Namespace, id) > 0
}

// oomKillCount is how many OOM kills the memory cgroup of containerd's
// default spec (/<namespace>/<id>) counted: memory.oom_control under
// cgroup v1, memory.events under v2; 0 when neither can be read.
func oomKillCount(namespace, id string) int64 {
	for _, f := range []string{
		filepath.Join(cgroupRoot, "memory", namespace, id, "memory.oom_control"),
		filepath.Join(cgroupRoot, namespace, id, "memory.events"),
	} {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		return parseOOMKill(raw)
	}
	return 0
}

// parseOOMKill reads the oom_kill line of memory.oom_control or memory.events.
func parseOOMKill(raw []byte) int64 {
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// cgroupRoot is where the cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// stopSignal is the image's STOPSIGNAL, SIGTERM by default.
func (w *podWorker) stopSignal(name string) syscall.Signal {
	cr := w.rec.ctr(name)
	if cr == nil {
		return syscall.SIGTERM
	}
	c, err := w.r.cfg.Containerd.LoadContainer(w.ctx(), cr.ID)
	if err != nil {
		return syscall.SIGTERM
	}
	img, err := c.Image(w.ctx())
	if err != nil {
		return syscall.SIGTERM
	}
	cfg, err := img.Spec(w.ctx())
	if err != nil || cfg.Config.StopSignal == "" {
		return syscall.SIGTERM
	}
	sig, err := signal.ParseSignal(cfg.Config.StopSignal)
	if err != nil {
		return syscall.SIGTERM
	}
	return sig
}

func (r *Runtime) logPath(pod *v1.Pod, container string, restart int32) string {
	return filepath.Join(r.podDir(pod.UID), "logs", container, strconv.Itoa(int(restart))+".log")
}

// pidsOpts puts the pod pids limit on a container or sandbox.
func (r *Runtime) pidsOpts() []oci.SpecOpts {
	if r.cfg.PodPidsLimit <= 0 {
		return nil
	}
	return []oci.SpecOpts{oci.WithPidsLimit(r.cfg.PodPidsLimit)}
}

// specOpts turns a Kubernetes container into OCI spec options.
func (r *Runtime) specOpts(ctx context.Context, pod *v1.Pod, c *v1.Container, img *pulledImage, podIPs []string) ([]oci.SpecOpts, error) {
	imgSpec, err := img.image.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("read image config of %q: %w", c.Image, err)
	}
	hostname := podHostname(pod)
	opts := []oci.SpecOpts{oci.WithImageConfig(img.image)}
	if pod.Spec.HostNetwork {
		// As containerd's CRI does for a pod of host network: the host's
		// network and UTS namespaces, so the node's hostname.
		hostname = nodeHostname()
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostNamespace(specs.UTSNamespace))
	} else {
		opts = append(opts,
			oci.WithHostname(hostname),
			oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: r.netnsPath(pod)}))
	}

	// Kubernetes: command replaces ENTRYPOINT, args replace CMD.
	entrypoint, cmd := imgSpec.Config.Entrypoint, imgSpec.Config.Cmd
	if len(c.Command) > 0 {
		entrypoint, cmd = c.Command, nil
	}
	if len(c.Args) > 0 {
		cmd = c.Args
	}
	args := append(append([]string{}, entrypoint...), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("container %q has no command: the image %q sets no ENTRYPOINT or CMD and the pod gives no command", c.Name, c.Image)
	}
	env, err := r.containerEnv(pod, c, podIPs)
	if err != nil {
		return nil, err
	}
	args = expandCommand(args, env)
	opts = append(opts, oci.WithProcessArgs(args...))
	if c.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(c.WorkingDir))
	}
	envList := make([]string, 0, len(env)+1)
	envList = append(envList, "HOSTNAME="+hostname)
	for _, e := range env {
		envList = append(envList, e.Name+"="+e.Value)
	}
	opts = append(opts, oci.WithEnv(envList))
	if c.TTY {
		opts = append(opts, oci.WithTTY)
	}

	mounts, err := r.containerMounts(pod, c, env)
	if err != nil {
		return nil, err
	}
	// The container's own cgroups at /sys/fs/cgroup, read-only (writable
	// when privileged: oci.WithPrivileged makes cgroup mounts so), as
	// containerd's CRI mounts them for a kubelet; containerd's default
	// spec no longer has them, and workloads (JVMs, Go's GOMAXPROCS, the
	// resize specs) read their limits there.
	cgroupMount := specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
		Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}}
	opts = append(opts, oci.WithMounts(append([]specs.Mount{cgroupMount}, mounts...)))

	// Resources.
	if q, ok := c.Resources.Limits[v1.ResourceMemory]; ok && q.Value() > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(q.Value())))
	}
	if q, ok := c.Resources.Limits[v1.ResourceCPU]; ok && q.MilliValue() > 0 {
		const period = 100000
		opts = append(opts, oci.WithCPUCFS(cpuQuota(q.MilliValue(), period), period))
	}
	// The same settings an in-place resize applies (resize.go).
	opts = append(opts, oci.WithCPUShares(cpuShares(c.Resources)))
	opts = append(opts, r.pidsOpts()...)

	// Security context (container over pod).
	sc := c.SecurityContext
	psc := pod.Spec.SecurityContext
	var uid, gid *int64
	if psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	if nonRoot := (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) ||
		(sc == nil || sc.RunAsNonRoot == nil) && psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot; nonRoot {
		if err := verifyNonRoot(uid, imgSpec.Config.User, pod, c); err != nil {
			return nil, err
		}
	}
	switch {
	case uid != nil && gid != nil:
		opts = append(opts, oci.WithUIDGID(uint32(*uid), uint32(*gid)))
	case uid != nil:
		opts = append(opts, oci.WithUserID(uint32(*uid)))
	}
	if psc != nil && len(psc.Sysctls) > 0 {
		opts = append(opts, withSysctls(psc.Sysctls))
	}
	if psc != nil && len(psc.SupplementalGroups) > 0 {
		gids := make([]uint32, 0, len(psc.SupplementalGroups))
		for _, g := range psc.SupplementalGroups {
			gids = append(gids, uint32(g))
		}
		opts = append(opts, withAdditionalGIDs(gids))
	}
	if sc != nil {
		if sc.Privileged != nil && *sc.Privileged {
			opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
		}
		if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			opts = append(opts, oci.WithRootFSReadonly())
		}
		if sc.Capabilities != nil {
			// As the CRI does: "ALL" in drop starts from no capability, "ALL"
			// in add grants every known one; then the named ones.
			add, drop := capNames(sc.Capabilities.Add), capNames(sc.Capabilities.Drop)
			if slices.Contains(drop, "ALL") {
				opts = append(opts, oci.WithCapabilities(nil))
				drop = nil
			}
			if slices.Contains(add, "ALL") {
				opts = append(opts, oci.WithAllKnownCapabilities)
				add = nil
			}
			if len(drop) > 0 {
				opts = append(opts, oci.WithDroppedCapabilities(drop))
			}
			if len(add) > 0 {
				opts = append(opts, oci.WithAddedCapabilities(add))
			}
		}
		if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			opts = append(opts, oci.WithNoNewPrivileges)
		}
	}
	// seccomp: the container's profile over the pod's; Unconfined by
	// default, as on a kubelet.
	var profile *v1.SeccompProfile
	if psc != nil {
		profile = psc.SeccompProfile
	}
	if sc != nil && sc.SeccompProfile != nil {
		profile = sc.SeccompProfile
	}
	if profile != nil {
		switch profile.Type {
		case v1.SeccompProfileTypeRuntimeDefault:
			opts = append(opts, seccomp.WithDefaultProfile())
		case v1.SeccompProfileTypeUnconfined:
		default:
			return nil, &configError{fmt.Errorf("seccomp profile type %q is not supported on this node (RuntimeDefault and Unconfined are)", profile.Type)}
		}
	}
	return opts, nil
}

// configError is a container whose configuration cannot be honoured: the
// kubelet reports it as CreateContainerConfigError.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// verifyNonRoot refuses to run a container as root when runAsNonRoot asks so.
func verifyNonRoot(uid *int64, imageUser string, pod *v1.Pod, c *v1.Container) error {
	if uid != nil {
		if *uid == 0 {
			return &configError{fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", pod.Namespace+"/"+pod.Name, c.Name)}
		}
		return nil
	}
	user, _, _ := strings.Cut(imageUser, ":")
	if user == "" || user == "root" {
		return &configError{fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod.Namespace+"/"+pod.Name, c.Name)}
	}
	n, err := strconv.ParseInt(user, 10, 64)
	if err != nil {
		return &configError{fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root (pod: %q, container: %s)", user, pod.Namespace+"/"+pod.Name, c.Name)}
	}
	if n == 0 {
		return &configError{fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod.Namespace+"/"+pod.Name, c.Name)}
	}
	return nil
}

func withAdditionalGIDs(gids []uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, gids...)
		return nil
	}
}

// withSysctls sets the pod's sysctls in the container's namespaces, as
// containerd's CRI applies the sandbox's to each container. Names may use
// '/' as separator; the admission has let only the allowed ones through.
func withSysctls(sysctls []v1.Sysctl) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		for _, sc := range sysctls {
			s.Linux.Sysctl[utilsysctl.NormalizeName(sc.Name)] = sc.Value
		}
		return nil
	}
}

func capNames(caps []v1.Capability) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		n := strings.ToUpper(string(c))
		if n == "ALL" {
			out = append(out, "ALL")
			continue
		}
		if !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		out = append(out, n)
	}
	return out
}
