package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cci-project/cci/internal/diskperf"
	"github.com/cci-project/cci/internal/testimage"
)

// StorageClasses are the classes `cci bench storage` measures by default.
var StorageClasses = []string{"cci-evs", "cci-sfs", "cci-obs"}

// storageRun is one place the diskperf program measured.
type storageRun struct {
	name string // "host", "emptyDir" or a StorageClass
	res  *diskperf.Result
}

// storageFigure is one of the four measured figures of a diskperf result.
type storageFigure struct {
	name string
	unit string // "MiB/s" or "IOPS"
	test func(*diskperf.Result) diskperf.Test
}

// of is the figure's value in r, 0 where its test failed.
func (f storageFigure) of(r *diskperf.Result) float64 {
	t := f.test(r)
	if f.unit == "IOPS" {
		return t.IOPS()
	}
	return t.MiBps()
}

var storageFigures = []storageFigure{
	{"sequential write", "MiB/s", func(r *diskperf.Result) diskperf.Test { return r.SeqWrite }},
	{"sequential read", "MiB/s", func(r *diskperf.Result) diskperf.Test { return r.SeqRead }},
	{"random 4 KiB write", "IOPS", func(r *diskperf.Result) diskperf.Test { return r.RandWrite }},
	{"random 4 KiB read", "IOPS", func(r *diskperf.Result) diskperf.Test { return r.RandRead }},
}

// storage is `cci bench storage`: the diskperf program on a volume of
// each StorageClass, in a pod, against the same program straight on the
// host's data folder (the floor: the file system that holds the disks of
// cci-evs and the stores behind cci-sfs and cci-obs), measured before
// and after the classes; and the time from a claim's create to its pod
// Running, against pods with an emptyDir.
func (b *bench) storage(ctx context.Context) error {
	if err := b.checkRuntimeClass(ctx); err != nil {
		return err
	}
	if err := b.checkStorageClasses(ctx); err != nil {
		return err
	}
	prog, img, cleanup, err := b.diskperfImage(ctx)
	if err != nil {
		return err
	}
	defer cleanup()
	args := b.diskperfArgs()

	sampler := startCPUSampler(b.c.processGroups, time.Second)
	var hosts []*diskperf.Result
	hostRun := func() {
		if b.c.DataDir == "" {
			return
		}
		b.logf("storage: the program on the host's data folder")
		res, err := hostDiskperf(ctx, prog, b.c.DataDir, args)
		if err != nil {
			b.rep.note("no host floor: %v", err)
			return
		}
		hosts = append(hosts, res)
	}
	if b.c.DataDir == "" {
		b.rep.note("no host floor: the cluster's data folder is unknown (pass --data-dir); the ratios are to the emptyDir pod instead")
	}

	hostRun()
	// The emptyDir pod runs first: it also pulls the image, so that no
	// claim's start pays for that.
	b.logf("storage: the program in a pod on an emptyDir")
	empty, err := b.storageIO(ctx, "empty-dir", "", img, args)
	if err != nil {
		return fmt.Errorf("emptyDir: %w", err)
	}
	runs := []storageRun{{"emptyDir", empty}}
	b.logf("storage: %d pods with an emptyDir, one after another", b.cfg.StorageClaims)
	emptyStart, err := b.claimStarts(ctx, "", img)
	if err != nil {
		return fmt.Errorf("emptyDir pods: %w", err)
	}
	starts := map[string][2][]float64{"emptyDir": emptyStart}
	for _, class := range b.cfg.StorageClasses {
		b.logf("storage: %d claims of %s, one after another", b.cfg.StorageClaims, class)
		s, err := b.claimStarts(ctx, class, img)
		if err != nil {
			b.reportStorage(hosts, runs, starts)
			return fmt.Errorf("%s: %w", class, err)
		}
		starts[class] = s
		b.logf("storage: the program in a pod on a claim of %s", class)
		res, err := b.storageIO(ctx, "io-"+class, class, img, args)
		if err != nil {
			b.reportStorage(hosts, runs, starts)
			return fmt.Errorf("%s: %w", class, err)
		}
		runs = append(runs, storageRun{class, res})
	}
	hostRun()
	use := sampler.Stop()
	b.reportStorage(hosts, runs, starts)
	if len(b.rep.Results) > 0 {
		b.rep.Results[len(b.rep.Results)-1].setCPU(use)
	}
	return nil
}

// checkStorageClasses refuses a class the cluster does not have, before
// anything is measured.
func (b *bench) checkStorageClasses(ctx context.Context) error {
	for _, class := range b.cfg.StorageClasses {
		_, err := b.kube.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			var names []string
			if l, err := b.kube.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{}); err == nil {
				for _, c := range l.Items {
					names = append(names, c.Name)
				}
			}
			offered := "none"
			if len(names) > 0 {
				offered = strings.Join(names, ", ")
			}
			return fmt.Errorf("the cluster has no StorageClass %q (it offers: %s); nothing was measured", class, offered)
		}
		if err != nil {
			return fmt.Errorf("look up StorageClass %q: %w", class, err)
		}
	}
	return nil
}

// diskperfArgs are the program's flags after `diskperf run -dir DIR`.
func (b *bench) diskperfArgs() []string {
	return []string{
		"-size-mib", strconv.Itoa(b.cfg.StorageSizeMiB),
		"-rand-ops", strconv.Itoa(b.cfg.StorageRandOps),
		"-rand-for", b.cfg.StorageRandFor.String(),
		"-direct", b.cfg.StorageDirect,
	}
}

// diskperfImage builds the diskperf program from the CCI source tree and
// pushes the Diskperf image; it returns the program (for the host's
// side) and the image.
func (b *bench) diskperfImage(ctx context.Context) (prog, img string, cleanup func(), err error) {
	root, err := sourceTree(b.cfg.Source)
	if err != nil {
		return "", "", nil, err
	}
	dir, err := os.MkdirTemp("", "cci-bench-diskperf-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	prog = filepath.Join(dir, "diskperf")
	b.logf("storage: building the diskperf program from %s", root)
	if err := testimage.BuildDiskperfProgram(ctx, root, prog); err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("the storage bench builds its measuring program with the Go toolchain: %w", err)
	}
	if img, err = testimage.PushDiskperf(ctx, b.c.Registry, "", prog); err != nil {
		cleanup()
		return "", "", nil, err
	}
	return prog, img, cleanup, nil
}

// hostDiskperf runs the program straight on the host, in a folder of its
// own under dataDir, and removes the folder.
func hostDiskperf(ctx context.Context, prog, dataDir string, args []string) (*diskperf.Result, error) {
	dir, err := os.MkdirTemp(dataDir, "bench-storage-floor-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	raw, err := exec.CommandContext(ctx, prog, append([]string{"run", "-dir", dir}, args...)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("diskperf on %s: %w: %s", dir, err, truncate(strings.TrimSpace(string(raw)), 500))
	}
	return diskperf.Parse(string(raw))
}

// claimSize is what each claim asks for: room for the test file twice
// over, at least 1 GiB.
func (b *bench) claimSize() resource.Quantity {
	mib := max(1024, 2*b.cfg.StorageSizeMiB)
	return *resource.NewQuantity(int64(mib)<<20, resource.BinarySI)
}

// storageClaim is a claim of class, ReadWriteOnce for cci-evs and
// ReadWriteMany for the shared classes (what each offers).
func (b *bench) storageClaim(name, class string) *v1.PersistentVolumeClaim {
	mode := v1.ReadWriteMany
	if class == "cci-evs" {
		mode = v1.ReadWriteOnce
	}
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{labelRun: b.runID, labelApp: appName}},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []v1.PersistentVolumeAccessMode{mode},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: b.claimSize()}},
		},
	}
}

// volumePod is a pod of img running script with the claim (or, for
// claim "", an emptyDir) at /data.
func (b *bench) volumePod(name, claim, img, script string, restart v1.RestartPolicy) *v1.Pod {
	p := b.pod(name, podOpts{Image: img, Script: script, RuntimeClass: b.cfg.RuntimeClass, Restart: restart})
	src := v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}
	if claim != "" {
		src = v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}
	}
	p.Spec.Volumes = []v1.Volume{{Name: "data", VolumeSource: src}}
	p.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "data", MountPath: "/data"}}
	return p
}

// claimStarts creates StorageClaims claims of class one after another,
// each with a pod using it, and times claim create → claim Bound and →
// pod Running (class "": pods with an emptyDir, create → Running, no
// claim). The pods and claims are deleted afterwards and waited for, so
// that their teardown does not weigh on what is measured next.
func (b *bench) claimStarts(ctx context.Context, class, img string) (starts [2][]float64, err error) {
	prefix := "start-" + class
	if class == "" {
		prefix = "start-empty-dir"
	}
	var names []string
	defer func() {
		if derr := b.deleteVolumePods(ctx, names, class != ""); derr != nil && err == nil {
			err = derr
		}
	}()
	for i := range b.cfg.StorageClaims {
		name := fmt.Sprintf("%s-%d", prefix, i)
		names = append(names, name)
		t0 := time.Now()
		claim := ""
		if class != "" {
			if _, err := b.kube.CoreV1().PersistentVolumeClaims(b.ns).Create(ctx, b.storageClaim(name, class), metav1.CreateOptions{}); err != nil {
				return starts, fmt.Errorf("create claim %s: %w", name, err)
			}
			claim = name
		}
		if _, err := b.kube.CoreV1().Pods(b.ns).Create(ctx, b.volumePod(name, claim, img, "exec sleep 3600", v1.RestartPolicyAlways), metav1.CreateOptions{}); err != nil {
			return starts, fmt.Errorf("create pod %s: %w", name, err)
		}
		bound, running, err := b.waitClaimPod(ctx, name, claim != "", t0)
		if err != nil {
			return starts, err
		}
		if claim != "" {
			starts[0] = append(starts[0], ms(bound))
		}
		starts[1] = append(starts[1], ms(running))
	}
	return starts, nil
}

// waitClaimPod polls the pod name (and its claim of the same name) until
// the pod runs; it returns the time from t0 to the claim's Bound and to
// the pod's Running, as first seen.
func (b *bench) waitClaimPod(ctx context.Context, name string, claim bool, t0 time.Time) (bound, running time.Duration, err error) {
	var last *v1.Pod
	deadline := t0.Add(b.cfg.PodTimeout)
	for time.Now().Before(deadline) {
		if claim && bound == 0 {
			if c, err := b.kube.CoreV1().PersistentVolumeClaims(b.ns).Get(ctx, name, metav1.GetOptions{}); err == nil && c.Status.Phase == v1.ClaimBound {
				bound = time.Since(t0)
			}
		}
		p, err := b.kube.CoreV1().Pods(b.ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = p
			if p.Status.Phase == v1.PodRunning {
				running = time.Since(t0)
				if claim && bound == 0 {
					// A pod runs only once its claim is bound.
					bound = running
				}
				if err := b.verifyRuntime(ctx, p.UID); err != nil {
					return 0, 0, err
				}
				return bound, running, nil
			}
			if p.Status.Phase == v1.PodFailed {
				return 0, 0, fmt.Errorf("pod %s failed: %s", name, podProblem(p))
			}
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, 0, fmt.Errorf("pod %s with its volume did not run in %s: %s%s", name, b.cfg.PodTimeout, podProblem(last), b.claimProblem(ctx, name, claim))
}

// claimProblem says why a claim is not bound: its phase and its latest
// event.
func (b *bench) claimProblem(ctx context.Context, name string, claim bool) string {
	if !claim {
		return ""
	}
	c, err := b.kube.CoreV1().PersistentVolumeClaims(b.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "; claim: " + err.Error()
	}
	s := "; claim " + string(c.Status.Phase)
	evs, err := b.kube.CoreV1().Events(b.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=" + name})
	if err == nil && len(evs.Items) > 0 {
		e := evs.Items[len(evs.Items)-1]
		s += ": " + e.Reason + " " + e.Message
	}
	return s
}

// deleteVolumePods deletes the pods and (with claims) the claims of these
// names and waits until they are gone: a claim's volume is removed after
// its pods are.
func (b *bench) deleteVolumePods(ctx context.Context, names []string, claims bool) error {
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	for _, n := range names {
		if err := b.kube.CoreV1().Pods(b.ns).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s: %w", n, err)
		}
		if claims {
			if err := b.kube.CoreV1().PersistentVolumeClaims(b.ns).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete claim %s: %w", n, err)
			}
		}
	}
	var left []string
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		left = left[:0]
		for _, n := range names {
			if _, err := b.kube.CoreV1().Pods(b.ns).Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, "pod "+n)
			}
			if claims {
				if _, err := b.kube.CoreV1().PersistentVolumeClaims(b.ns).Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					left = append(left, "claim "+n)
				}
			}
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("still there 3 minutes after their delete: %s", strings.Join(left, ", "))
	}
	return nil
}

// storageIO runs the program in a pod on a claim of class (or an
// emptyDir, for class "") and reads its result from the pod's log.
func (b *bench) storageIO(ctx context.Context, name, class, img string, args []string) (res *diskperf.Result, err error) {
	claim := ""
	if class != "" {
		claim = name
		if _, err := b.kube.CoreV1().PersistentVolumeClaims(b.ns).Create(ctx, b.storageClaim(name, class), metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create claim %s: %w", name, err)
		}
	}
	defer func() {
		if derr := b.deleteVolumePods(ctx, []string{name}, claim != ""); derr != nil && err == nil {
			err = derr
		}
	}()
	// The program waits a moment after the pod starts, so that the
	// agent's own work for the new pod (status updates) is done first.
	script := "sleep 2; exec diskperf run -dir /data " + strings.Join(args, " ")
	if _, err := b.kube.CoreV1().Pods(b.ns).Create(ctx, b.volumePod(name, claim, img, script, v1.RestartPolicyNever), metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create pod %s: %w", name, err)
	}
	timeout := b.cfg.PodTimeout + 2*b.cfg.StorageRandFor + 5*time.Minute
	deadline := time.Now().Add(timeout)
	for {
		p, err := b.kube.CoreV1().Pods(b.ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed) {
			raw, lerr := b.kube.CoreV1().Pods(b.ns).GetLogs(name, &v1.PodLogOptions{Container: "c"}).DoRaw(ctx)
			if lerr != nil {
				return nil, fmt.Errorf("logs of pod %s: %w", name, lerr)
			}
			if p.Status.Phase == v1.PodFailed {
				return nil, fmt.Errorf("pod %s failed: %s", name, truncate(strings.TrimSpace(string(raw)), 500))
			}
			return diskperf.Parse(string(raw))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pod %s did not finish in %s: %s%s", name, timeout, podProblem(p), b.claimProblem(ctx, name, claim != ""))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hostFloor is the mean of the host runs' figures (before and after the
// classes), or nil without any.
func hostFloor(hosts []*diskperf.Result) []float64 {
	if len(hosts) == 0 {
		return nil
	}
	floor := make([]float64, len(storageFigures))
	for i, f := range storageFigures {
		for _, h := range hosts {
			floor[i] += f.of(h)
		}
		floor[i] /= float64(len(hosts))
	}
	return floor
}

// reportStorage turns the host runs, the pods' runs and the start times
// into results: the floor, each place with its ratios, and a summary of
// the ratios.
func (b *bench) reportStorage(hosts []*diskperf.Result, runs []storageRun, starts map[string][2][]float64) {
	floor := hostFloor(hosts)
	floorName := "the host floor"
	if floor == nil && len(runs) > 0 && runs[0].name == "emptyDir" {
		floor = make([]float64, len(storageFigures))
		for i, f := range storageFigures {
			floor[i] = f.of(runs[0].res)
		}
		floorName = "the emptyDir pod"
	}
	if len(hosts) > 0 {
		r := &Result{Name: "storage/floor: the program on the host's data folder (" + resultKind(hosts[0]) + ")"}
		for i, f := range storageFigures {
			var each []string
			for _, h := range hosts {
				each = append(each, trimFloat(f.of(h)))
			}
			note := ""
			if len(hosts) > 1 {
				note = "mean of the runs before and after the classes: " + strings.Join(each, ", ")
			}
			r.figure(f.name, floor[i], f.unit, note)
		}
		hostLatencies(r, hosts[0])
		b.rep.Results = append(b.rep.Results, r)
	}
	var emptyStart *Summary
	if s, ok := starts["emptyDir"]; ok && len(s[1]) > 0 {
		sum := summarize(s[1])
		emptyStart = &sum
	}
	sum := &Result{Name: "storage/ratios to " + floorName + " (" + runtimeName(b.cfg.RuntimeClass) + ")"}
	for _, run := range runs {
		title := run.name
		if run.name == "emptyDir" {
			title = "a pod's emptyDir"
		}
		r := &Result{Name: "storage/" + title + " (" + resultKind(run.res) + ")"}
		for i, f := range storageFigures {
			v := f.of(run.res)
			note := ""
			if e := f.test(run.res).Error; e != "" {
				r.figure(f.name, 0, f.unit, "failed: "+e)
				sum.figure(run.name+": "+f.name, 0, "×", "failed")
				continue
			}
			if floor != nil && floor[i] > 0 {
				note = fmt.Sprintf("%.2f× %s's %s %s", ratio(v, floor[i]), floorName, trimFloat(floor[i]), f.unit)
				sum.figure(run.name+": "+f.name, ratio(v, floor[i]), "×", "")
			}
			r.figure(f.name, v, f.unit, note)
		}
		hostLatencies(r, run.res)
		if s, ok := starts[run.name]; ok {
			if run.name != "emptyDir" {
				r.latency("claim create→Bound", s[0], nil)
				r.latency("claim create→pod Running", s[1], emptyStart)
			} else {
				r.latency("pod create→Running", s[1], nil)
			}
		}
		if c := run.res.SeqRead.CachedBefore; c != nil && !run.res.Direct {
			switch {
			case *c < 0:
				r.note("no O_DIRECT (%s): the page cache may have served reads; how much of the file it held could not be read", run.res.DirectError)
			default:
				r.note("no O_DIRECT (%s): the file's cached pages were dropped before the reads (%.0f%% still cached); a cache of the file system's own may still serve them", run.res.DirectError, 100**c)
			}
		}
		var short []string
		for _, t := range []struct {
			what string
			t    diskperf.Test
		}{{"writes", run.res.RandWrite}, {"reads", run.res.RandRead}} {
			if t.t.Error == "" && t.t.Ops < b.cfg.StorageRandOps {
				short = append(short, fmt.Sprintf("%d %s", t.t.Ops, t.what))
			}
		}
		if len(short) > 0 {
			r.note("random tests stopped by the %s limit: %s", b.cfg.StorageRandFor, strings.Join(short, ", "))
		}
		b.rep.Results = append(b.rep.Results, r)
	}
	if len(sum.Figures) > 0 {
		b.rep.Results = append(b.rep.Results, sum)
	}
}

// hostLatencies records the per-operation latencies of the random tests.
func hostLatencies(r *Result, res *diskperf.Result) {
	if res.RandWrite.Error == "" {
		r.figure("random write latency p50 / p99", res.RandWrite.LatencyP50Us, "µs", fmt.Sprintf("p99 %s µs", trimFloat(res.RandWrite.LatencyP99Us)))
	}
	if res.RandRead.Error == "" {
		r.figure("random read latency p50 / p99", res.RandRead.LatencyP50Us, "µs", fmt.Sprintf("p99 %s µs", trimFloat(res.RandRead.LatencyP99Us)))
	}
}

// resultKind says how a run read and wrote: the file system and whether
// O_DIRECT was used.
func resultKind(r *diskperf.Result) string {
	if r.Direct {
		return r.FSType + ", O_DIRECT"
	}
	return r.FSType + ", buffered"
}
