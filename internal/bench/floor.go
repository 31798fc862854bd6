package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/cci-project/cci/internal/runtime"
)

// floorNamespace is the containerd namespace of the floor's containers,
// apart from the agent's.
const floorNamespace = "cci-bench"

// floorContainer is one container the floor started.
type floorContainer struct {
	id      string
	ctr     containerd.Container
	task    containerd.Task
	exit    <-chan containerd.ExitStatus
	log     string
	t0      time.Time // create call began
	started time.Time // task.Start returned
}

// floorEnv is a containerd client set up for the floor: image pulled and
// unpacked, runtime chosen.
type floorEnv struct {
	client  *containerd.Client
	image   containerd.Image
	runtime string
	opts    any
	dir     string // logs and the gVisor wrapper
	prefix  string
	logf    func(format string, args ...any)
}

// floor measures the physical floor: the bench's image started straight
// through the agent's containerd, n times one after another (and, when
// parallel > 0, that many at once), with the same snapshotter (overlayfs)
// and runtime the agent uses.
func (b *bench) floor(ctx context.Context, n, parallel int) (*Floor, error) {
	env, err := b.floorSetup(ctx)
	if err != nil {
		return nil, err
	}
	defer env.close()
	ctx = namespaces.WithNamespace(ctx, floorNamespace)
	f := &Floor{Runtime: env.runtime}
	if b.cfg.RuntimeClass != "" {
		f.Runtime = b.cfg.RuntimeClass
	}

	// One unmeasured container first: runc's and the shim's pages cached.
	if c, err := env.start(ctx, "warmup"); err != nil {
		return nil, fmt.Errorf("floor warm-up container: %w", err)
	} else if err := env.remove(ctx, c); err != nil {
		return nil, err
	}

	b.logf("floor: starting %d containers one after another (%s)", n, f.Runtime)
	kernel0, shims0 := kernelMem(), shimPSS(b.c.ContainerdSocket)
	var running []*floorContainer
	defer func() { env.removeAll(ctx, running) }()
	for i := 0; i < n; i++ {
		c, err := env.start(ctx, fmt.Sprintf("seq-%04d", i))
		if err != nil {
			return nil, err
		}
		running = append(running, c)
		f.Samples = append(f.Samples, ms(c.started.Sub(c.t0)))
	}
	time.Sleep(500 * time.Millisecond) // let the last ones write their stamp
	if n > 0 {
		// What each running container costs: its shim, its cgroup (the
		// container's processes), and the kernel objects it holds.
		var cgroups int64
		for _, c := range running {
			cgroups += cgroupMemory(filepath.Join(floorNamespace, c.id))
		}
		f.MemPerContainer = (shimPSS(b.c.ContainerdSocket) - shims0 + cgroups + kernelMem() - kernel0) / int64(n)
	}
	var first []float64
	for _, c := range running {
		raw, err := os.ReadFile(c.log)
		if err != nil {
			continue
		}
		if t, err := parseT0(string(raw)); err == nil {
			first = append(first, ms(t.Sub(c.t0)))
		}
	}
	f.Start, f.FirstInstruction = summarize(f.Samples), summarize(first)
	if len(first) < len(running) {
		b.logf("floor: %d of %d containers wrote no stamp", len(running)-len(first), len(running))
	}
	env.removeAll(ctx, running)
	running = nil

	if parallel > 0 {
		b.logf("floor: starting %d containers at once", parallel)
		var (
			mu   sync.Mutex
			errs []error
			wg   sync.WaitGroup
		)
		t0 := time.Now()
		for i := 0; i < parallel; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := env.start(ctx, fmt.Sprintf("par-%04d", i))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				running = append(running, c)
			}()
		}
		wg.Wait()
		took := time.Since(t0)
		if len(errs) > 0 {
			return nil, fmt.Errorf("%d of %d parallel floor containers failed: %w", len(errs), parallel, errs[0])
		}
		f.ParallelPods, f.ParallelTook = parallel, ms(took)
	}
	return f, nil
}

// floorScenario is `cci bench floor`: the floor alone, with N containers.
func (b *bench) floorScenario(ctx context.Context) error {
	if b.c.ContainerdSocket == "" {
		return errors.New("the floor needs the agent's containerd: pass --data-dir or --containerd-socket")
	}
	f, err := b.floor(ctx, b.cfg.Pods, b.cfg.Pods)
	if err != nil {
		return err
	}
	b.rep.Floor = f
	return nil
}

func (b *bench) floorSetup(ctx context.Context) (*floorEnv, error) {
	client, err := containerd.New(b.c.ContainerdSocket, containerd.WithDefaultNamespace(floorNamespace), containerd.WithTimeout(20*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to the agent's containerd at %q: %w", b.c.ContainerdSocket, err)
	}
	env := &floorEnv{client: client, runtime: "io.containerd.runc.v2", prefix: "bench-" + b.runID + "-", logf: b.logf}
	ok := false
	defer func() {
		if !ok {
			env.close()
		}
	}()
	env.dir, err = os.MkdirTemp("", "cci-bench-floor-")
	if err != nil {
		return nil, err
	}
	switch b.cfg.RuntimeClass {
	case "", "runc":
	case "gvisor", "runsc":
		// The runc shim driving runsc, as the gVisor notes describe;
		// --network=none: the floor has no pod network.
		def, _ := runtime.DefaultRunscPath()
		runsc, err := exec.LookPath(cmp.Or(b.cfg.Runsc, def))
		if err != nil {
			return nil, fmt.Errorf("%w: runsc is not installed", ErrRuntimeClassUnavailable)
		}
		// The platform flags the agent gives this runsc, so that the
		// floor's sandboxes are the pods' own.
		wrapper := filepath.Join(env.dir, "runsc-wrapper")
		script := fmt.Sprintf("#!/bin/sh\nexec %s %s --network=none \"$@\"\n", runsc, strings.Join(runtime.RunscPlatformArgs(runsc, runtime.RunscConfig{}), " "))
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			return nil, err
		}
		env.opts = &runcoptions.Options{BinaryName: wrapper}
	default:
		return nil, fmt.Errorf("%w: the floor knows runc and gvisor, not %q", ErrRuntimeClassUnavailable, b.cfg.RuntimeClass)
	}

	nsCtx := namespaces.WithNamespace(ctx, floorNamespace)
	ref := b.image
	img, err := client.GetImage(nsCtx, ref)
	if errdefs.IsNotFound(err) {
		b.logf("floor: pulling %s into containerd namespace %q", ref, floorNamespace)
		img, err = client.Pull(nsCtx, ref,
			containerd.WithPullUnpack,
			containerd.WithPullSnapshotter("overlayfs"),
			containerd.WithResolver(docker.NewResolver(docker.ResolverOptions{
				Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(func(string) (bool, error) { return true, nil })),
			})),
		)
	}
	if err != nil {
		return nil, fmt.Errorf("floor image %q: %w", ref, err)
	}
	if unpacked, err := img.IsUnpacked(nsCtx, "overlayfs"); err == nil && !unpacked {
		if err := img.Unpack(nsCtx, "overlayfs"); err != nil {
			return nil, fmt.Errorf("unpack floor image: %w", err)
		}
	}
	env.image = img
	ok = true
	return env, nil
}

// start creates one container and starts its task: what the floor times.
// Names must not be prefixes of one another (seq-0001, not seq-1): runsc
// finds containers by id prefix and refuses ambiguous ones.
func (e *floorEnv) start(ctx context.Context, name string) (*floorContainer, error) {
	c := &floorContainer{id: e.prefix + name, log: filepath.Join(e.dir, name+".log")}
	c.t0 = time.Now()
	ctr, err := e.client.NewContainer(ctx, c.id,
		containerd.WithImage(e.image),
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(c.id, e.image),
		containerd.WithRuntime(e.runtime, e.opts),
		containerd.WithNewSpec(oci.WithImageConfig(e.image), oci.WithProcessArgs("sh", "-c", idleScript)),
	)
	if err != nil {
		return nil, fmt.Errorf("create floor container: %w", err)
	}
	c.ctr = ctr
	task, err := ctr.NewTask(ctx, cio.LogFile(c.log))
	if err != nil {
		_ = ctr.Delete(ctx, containerd.WithSnapshotCleanup)
		return nil, fmt.Errorf("create floor task: %w", err)
	}
	c.task = task
	if c.exit, err = task.Wait(ctx); err != nil {
		_ = e.remove(ctx, c)
		return nil, fmt.Errorf("wait on floor task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		_ = e.remove(ctx, c)
		return nil, fmt.Errorf("start floor task: %w", err)
	}
	c.started = time.Now()
	return c, nil
}

func (e *floorEnv) remove(ctx context.Context, c *floorContainer) error {
	var errs []error
	if c.task != nil {
		if err := c.task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("kill: %w", err))
		}
		// Delete an exited task without WithProcessKill: a second kill of
		// a gVisor sandbox that is gone fails ("sandbox is not running")
		// and with it the delete.
		var opts []containerd.ProcessDeleteOpts
		if c.exit != nil {
			select {
			case <-c.exit:
			case <-time.After(10 * time.Second):
				opts = append(opts, containerd.WithProcessKill)
			}
		}
		if _, err := c.task.Delete(ctx, opts...); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete task: %w", err))
		}
	}
	if c.ctr != nil {
		if err := c.ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete container: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove floor container %s: %w", c.id, err)
	}
	return nil
}

func (e *floorEnv) removeAll(ctx context.Context, cs []*floorContainer) {
	ctx = context.WithoutCancel(ctx)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := e.remove(ctx, c); err != nil {
				e.logf("%v", err)
			}
		}()
	}
	wg.Wait()
}

// close removes what the floor left in its containerd namespace (any
// container of this run, then the image and the namespace if empty).
func (e *floorEnv) close() {
	ctx := namespaces.WithNamespace(context.Background(), floorNamespace)
	if ctrs, err := e.client.Containers(ctx); err == nil {
		var mine []*floorContainer
		for _, c := range ctrs {
			if len(c.ID()) > len(e.prefix) && c.ID()[:len(e.prefix)] == e.prefix {
				fc := &floorContainer{id: c.ID(), ctr: c}
				if t, err := c.Task(ctx, nil); err == nil {
					fc.task = t
				}
				mine = append(mine, fc)
			}
		}
		e.removeAll(ctx, mine)
		if left, err := e.client.Containers(ctx); err == nil && len(left) == 0 {
			if imgs, err := e.client.ImageService().List(ctx); err == nil {
				for _, img := range imgs {
					_ = e.client.ImageService().Delete(ctx, img.Name)
				}
			}
			_ = e.client.NamespaceService().Delete(ctx, floorNamespace)
		}
	}
	_ = e.client.Close()
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}
