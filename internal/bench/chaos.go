package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/cci-project/cci/internal/hostns"
	"github.com/cci-project/cci/internal/testimage"
)

// Faults chaos injects, in the order reports list them.
const (
	// FaultAgent SIGKILLs a host agent: the `cci up` process itself when
	// the agent runs in it (then started again on the same data folder),
	// else one host's `cci agent`, which `cci up` starts again.
	FaultAgent = "agent"
	// FaultContainerd SIGKILLs a host's containerd; its agent starts it again.
	FaultContainerd = "containerd"
	// FaultShim SIGKILLs the shim of one running pod: that pod's container
	// dies (deliberately) and restarts; no other pod may notice.
	FaultShim = "shim"
	// FaultControlPlane stops the `cci up` process cleanly (SIGTERM) and
	// starts it again on the same data folder.
	FaultControlPlane = "controlplane"
	// FaultHost powers a host of `cci up --hosts` off (`cci host stop`:
	// every process of it SIGKILLed) and on again.
	FaultHost = "host"
	// FaultEtcd SIGKILLs etcd where it runs apart from the control plane
	// (`cci etcd`, chaos --etcd-apart) and starts it again on the same
	// data folder; the apiserver reconnects to it.
	FaultEtcd = "etcd"
)

// AllFaults are every fault chaos knows.
var AllFaults = []string{FaultAgent, FaultContainerd, FaultShim, FaultControlPlane, FaultHost, FaultEtcd}

// apiDeadline is how soon after its restart the control plane must answer.
const apiDeadline = 10 * time.Second

// ChaosReport is chaos's structured outcome (also in the report's JSON).
type ChaosReport struct {
	Seed   uint64         `json:"seed"`
	Rounds int            `json:"rounds"`
	Faults map[string]int `json:"faults"`
	// Recovery is fault → everything back (ms).
	Recovery Summary `json:"recoveryMs"`
	// APIReady is a restarted control plane's (or etcd's) start → /readyz answers (ms).
	APIReady Summary `json:"apiReadyMs"`
	// APILate counts restarts after which the API took longer than 10 s.
	APILate int `json:"apiLate"`
	// Losses are broken invariants: objects lost, pods restarted or gone
	// that no fault touched, Job completions lost or doubled, leftovers.
	Losses    []string      `json:"losses"`
	Leftovers Leftovers     `json:"leftoversAtEnd"`
	Log       []ChaosRecord `json:"roundLog"`
}

// ChaosRecord is one round.
type ChaosRecord struct {
	Round      int      `json:"round"`
	Fault      string   `json:"fault"`
	Target     string   `json:"target"`
	RecoveryMs float64  `json:"recoveryMs"`
	APIReadyMs float64  `json:"apiReadyMs,omitempty"`
	Losses     []string `json:"losses,omitempty"`
}

// chaosState is what the bench knows of the workload between rounds.
type chaosState struct {
	seen      map[types.UID]podState // every pod of the run ever seen
	jobFailOK int                    // Job pods a fault killed on purpose
	gvisor    bool
}

// podState is one pod as the API showed it.
type podState struct {
	Name, Node string
	UID        types.UID
	Phase      v1.PodPhase
	Restart    v1.RestartPolicy
	Ready      bool
	IP         string
	Job        bool
	Ctrs       []ctrState
}

type ctrState struct {
	Name, ID  string
	Restarts  int32
	StartedAt time.Time
	Running   bool
	ExitCode  int32
	Exited    bool
}

func (b *bench) chaos(ctx context.Context) error {
	if !b.own {
		return errors.New("chaos kills and restarts the cluster's processes: it runs only against a cluster of its own (drop --kubeconfig)")
	}
	cr := &ChaosReport{Seed: b.cfg.Seed, Faults: map[string]int{}}
	b.rep.Chaos = cr
	rng := rand.New(rand.NewPCG(b.cfg.Seed, b.cfg.Seed^0x9e3779b97f4a7c15))
	run := &Result{Name: fmt.Sprintf("chaos: %d rounds", b.cfg.Rounds)}
	b.rep.Results = append(b.rep.Results, run)

	st := &chaosState{seen: map[types.UID]podState{}}
	if err := b.checkRuntimeClassNamed(ctx, "gvisor"); err == nil {
		st.gvisor = true
	} else {
		run.note("no gVisor pods: %v", err)
	}
	if err := b.chaosWorkload(ctx, st); err != nil {
		return err
	}
	faults := b.availableFaults()
	b.logf("chaos: %d rounds of %s (seed %d)", b.cfg.Rounds, strings.Join(faults, ", "), b.cfg.Seed)
	var recov, apiReady []float64
	for i := 1; i <= b.cfg.Rounds; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fault := faults[rng.IntN(len(faults))]
		rec, err := b.chaosRound(ctx, rng, st, i, fault)
		cr.Log = append(cr.Log, rec)
		cr.Faults[rec.Fault]++
		cr.Rounds = i
		cr.Losses = append(cr.Losses, rec.Losses...)
		if rec.APIReadyMs > 0 {
			apiReady = append(apiReady, rec.APIReadyMs)
			if rec.APIReadyMs > ms(apiDeadline) {
				cr.APILate++
			}
		}
		if err != nil {
			cr.Losses = append(cr.Losses, fmt.Sprintf("round %d (%s): %v", i, rec.Fault, err))
			b.logf("chaos: round %d (%s on %s): %v", i, rec.Fault, rec.Target, err)
			return b.chaosFinish(run, cr, recov, apiReady, err)
		}
		recov = append(recov, rec.RecoveryMs)
		for _, l := range rec.Losses {
			b.logf("chaos: LOSS %s", l)
		}
		b.logf("chaos: round %d: %s on %s, recovered in %s%s, losses %d", i, rec.Fault, rec.Target, fmtMs(rec.RecoveryMs),
			map[bool]string{true: fmt.Sprintf(" (API after %s)", fmtMs(rec.APIReadyMs)), false: ""}[rec.APIReadyMs > 0], len(rec.Losses))
	}
	cr.Losses = append(cr.Losses, b.chaosJobDone(ctx, st)...)
	l, err := b.chaosTeardown(ctx, st)
	cr.Leftovers = l
	if err != nil {
		cr.Losses = append(cr.Losses, err.Error())
	} else if l.Total() > 0 {
		cr.Losses = append(cr.Losses, "after the workload was deleted the hosts still hold "+l.String())
	}
	return b.chaosFinish(run, cr, recov, apiReady, nil)
}

func (b *bench) chaosFinish(run *Result, cr *ChaosReport, recov, apiReady []float64, err error) error {
	cr.Recovery = run.latency("fault → recovered", recov, nil).Summary
	if len(apiReady) > 0 {
		cr.APIReady = run.latency("control plane or etcd restart → API ready", apiReady, nil).Summary
	}
	run.figure("rounds", float64(cr.Rounds), "", "")
	for _, f := range AllFaults {
		if n := cr.Faults[f]; n > 0 {
			run.figure("faults: "+f, float64(n), "", "")
		}
	}
	run.figure("API later than 10 s after a restart", float64(cr.APILate), "", "")
	run.figure("losses", float64(len(cr.Losses)), "", "expected 0")
	for i, l := range cr.Losses {
		if i == 20 {
			run.note("… %d more losses in the JSON", len(cr.Losses)-20)
			break
		}
		run.note("LOSS: %s", l)
	}
	if err == nil && len(cr.Losses) > 0 {
		err = fmt.Errorf("chaos: %d invariants broken (first: %s)", len(cr.Losses), cr.Losses[0])
	}
	return err
}

// availableFaults are the faults this cluster can take.
func (b *bench) availableFaults() []string {
	var out []string
	for _, f := range b.cfg.Faults {
		if f == FaultHost && b.cfg.Hosts == 0 || f == FaultEtcd && b.c.EtcdPID == 0 {
			continue
		}
		out = append(out, f)
	}
	return out
}

const (
	chaosWeb    = "web"
	chaosTenant = "tenant"
	chaosJob    = "work"
)

// chaosWorkload starts the steady workload: a Deployment under runc and one
// under gVisor, both with readiness probes behind a Service, and a Job of
// many completions; it returns once the Deployments are ready.
func (b *bench) chaosWorkload(ctx context.Context, st *chaosState) error {
	httpd := b.c.Image(testimage.HTTPD)
	deploy := func(name string, replicas int32, rc string) *appsv1.Deployment {
		t := b.podTemplate(podOpts{Image: httpd, RuntimeClass: rc})
		t.Labels["chaos"] = name
		t.Spec.Containers[0].Command = nil // the image's own httpd
		t.Spec.Containers[0].ReadinessProbe = &v1.Probe{
			ProbeHandler:  v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(testimage.HTTPDPort)}},
			PeriodSeconds: 3,
		}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{labelRun: b.runID}},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"chaos": name}},
				Template: t,
			},
		}
	}
	ds := []*appsv1.Deployment{deploy(chaosWeb, 3, "")}
	if st.gvisor {
		ds = append(ds, deploy(chaosTenant, 2, "gvisor"))
	}
	for _, d := range ds {
		if _, err := b.kube.AppsV1().Deployments(b.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create deployment %s: %w", d.Name, err)
		}
		svc := &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name, Labels: map[string]string{labelRun: b.runID}},
			Spec: v1.ServiceSpec{Selector: map[string]string{"chaos": d.Name},
				Ports: []v1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(testimage.HTTPDPort)}}},
		}
		if _, err := b.kube.CoreV1().Services(b.ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create service %s: %w", d.Name, err)
		}
	}
	completions, parallel := int32(b.cfg.Completions), int32(4)
	backoff := completions // count failures rather than fail the Job
	t := b.podTemplate(podOpts{Image: b.c.Image(testimage.Shell), Script: "sleep 1", Restart: v1.RestartPolicyNever})
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: chaosJob, Labels: map[string]string{labelRun: b.runID}},
		Spec:       batchv1.JobSpec{Completions: &completions, Parallelism: &parallel, BackoffLimit: &backoff, Template: t},
	}
	if _, err := b.kube.BatchV1().Jobs(b.ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create job: %w", err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		why, err := b.chaosSteady(ctx, st, time.Time{}, nil)
		if err == nil && why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the chaos workload did not become ready in 3 minutes: %s %v", why, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// chaosPods lists the run's pods and remembers every one seen.
func (b *bench) chaosPods(ctx context.Context, st *chaosState) (map[types.UID]podState, error) {
	l, err := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: labelRun + "=" + b.runID})
	if err != nil {
		return nil, err
	}
	out := map[types.UID]podState{}
	for i := range l.Items {
		p := &l.Items[i]
		s := podState{Name: p.Name, Node: p.Spec.NodeName, UID: p.UID, Phase: p.Status.Phase, Restart: p.Spec.RestartPolicy, IP: p.Status.PodIP}
		_, s.Job = p.Labels["job-name"]
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodReady {
				s.Ready = c.Status == v1.ConditionTrue
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			c := ctrState{Name: cs.Name, ID: cs.ContainerID, Restarts: cs.RestartCount}
			if r := cs.State.Running; r != nil {
				c.Running, c.StartedAt = true, r.StartedAt.Time
			}
			if t := cs.State.Terminated; t != nil {
				c.Exited, c.ExitCode, c.StartedAt = true, t.ExitCode, t.StartedAt.Time
			}
			s.Ctrs = append(s.Ctrs, c)
		}
		out[p.UID] = s
		if st != nil {
			st.seen[p.UID] = s
		}
	}
	return out, nil
}

// chaosSteady says what still keeps the cluster from its steady state
// ("" when there is nothing): the API answers, every host node is Ready
// and its agent renewed its lease after since, the Deployments are ready.
func (b *bench) chaosSteady(ctx context.Context, st *chaosState, since time.Time, restarted map[types.UID]bool) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(cctx); err != nil {
		return "API not ready", nil
	}
	nodes, err := b.kube.CoreV1().Nodes().List(cctx, metav1.ListOptions{})
	if err != nil {
		return "nodes not listed", nil
	}
	want := max(1, b.cfg.Hosts)
	ready := 0
	for _, n := range nodes.Items {
		if !nodeReady(&n) {
			continue
		}
		if !since.IsZero() {
			lease, err := b.kube.CoordinationV1().Leases("kube-node-lease").Get(cctx, n.Name, metav1.GetOptions{})
			if err != nil || lease.Spec.RenewTime == nil || lease.Spec.RenewTime.Time.Before(since) {
				continue
			}
		}
		ready++
	}
	if ready < want {
		return fmt.Sprintf("%d of %d nodes Ready with a lease renewed since the fault", ready, want), nil
	}
	for _, site := range b.sites() {
		if !pidFileAlive(filepath.Join(site.DataDir, "containerd", "state", "cci-containerd.pid"), "containerd") {
			return fmt.Sprintf("containerd of %s not running", site.Name), nil
		}
	}
	ds, err := b.kube.AppsV1().Deployments(b.ns).List(cctx, metav1.ListOptions{})
	if err != nil {
		return "deployments not listed", nil
	}
	for _, d := range ds.Items {
		if d.Status.ReadyReplicas != *d.Spec.Replicas || d.Status.UpdatedReplicas != *d.Spec.Replicas || d.Status.Replicas != *d.Spec.Replicas {
			return fmt.Sprintf("deployment %s: %d of %d ready", d.Name, d.Status.ReadyReplicas, *d.Spec.Replicas), nil
		}
	}
	pods, err := b.chaosPods(cctx, st)
	if err != nil {
		return "pods not listed", nil
	}
	for _, p := range pods {
		if !p.Job && !p.Ready {
			return fmt.Sprintf("pod %s not ready", p.Name), nil
		}
	}
	for uid := range restarted {
		if p, ok := pods[uid]; ok && !startedSince(p, since) {
			return fmt.Sprintf("pod %s not running again since the fault", p.Name), nil
		}
	}
	return "", nil
}

// startedSince tells whether a pod whose containers the fault killed runs
// again: finished, or Ready with every running container started at or
// after since (the API's times have whole seconds). Until then its status
// may still show the containers from before the fault, which the agent
// has not yet found dead.
func startedSince(p podState, since time.Time) bool {
	if p.Phase == v1.PodSucceeded || p.Phase == v1.PodFailed {
		return true
	}
	if !p.Ready {
		return false
	}
	for _, c := range p.Ctrs {
		if c.Running && c.StartedAt.Before(since.Truncate(time.Second)) {
			return false
		}
	}
	return true
}

// chaosRound injects one fault, waits for recovery and checks the invariants.
func (b *bench) chaosRound(ctx context.Context, rng *rand.Rand, st *chaosState, round int, fault string) (ChaosRecord, error) {
	rec := ChaosRecord{Round: round, Fault: fault}
	objsBefore, err := b.apiObjects(ctx)
	if err != nil {
		return rec, fmt.Errorf("list API objects before the fault: %w", err)
	}
	before, err := b.chaosPods(ctx, st)
	if err != nil {
		return rec, fmt.Errorf("list pods before the fault: %w", err)
	}
	sites := b.sites()
	target := sites[rng.IntN(len(sites))]
	rec.Target = target.Name
	affected := map[types.UID]bool{}
	// Pods whose containers the fault kills: recovered once they run again.
	restarted := map[types.UID]bool{}
	t0 := time.Now()
	switch fault {
	case FaultAgent:
		if b.cfg.Hosts == 0 {
			rec.Target = "cci up (control plane + agent)"
			ready, err := b.restartCluster(ctx, syscall.SIGKILL)
			rec.APIReadyMs = ms(ready)
			if err != nil {
				return rec, err
			}
		} else if err := killPidFile(filepath.Join(target.DataDir, "agent.pid"), "agent"); err != nil {
			return rec, err
		}
	case FaultContainerd:
		if err := killPidFile(filepath.Join(target.DataDir, "containerd", "state", "cci-containerd.pid"), "containerd"); err != nil {
			return rec, err
		}
	case FaultShim:
		var cands []podState
		for _, p := range before {
			if !p.Job && p.Phase == v1.PodRunning && (b.cfg.Hosts == 0 || p.Node == target.Name) {
				cands = append(cands, p)
			}
		}
		if len(cands) == 0 {
			rec.Fault, rec.Target = FaultContainerd, target.Name+" (no pod for a shim fault)"
			if err := killPidFile(filepath.Join(target.DataDir, "containerd", "state", "cci-containerd.pid"), "containerd"); err != nil {
				return rec, err
			}
			break
		}
		sort.Slice(cands, func(i, j int) bool { return cands[i].Name < cands[j].Name })
		p := cands[rng.IntN(len(cands))]
		rec.Target = p.Name
		pid := 0
		for _, sp := range shimPids(target.Socket) {
			if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sp)); err == nil && strings.Contains(string(raw), string(p.UID)) {
				pid = sp
			}
		}
		if pid == 0 {
			return rec, fmt.Errorf("no shim of pod %s (%s) under %s", p.Name, p.UID, target.Socket)
		}
		affected[p.UID], restarted[p.UID] = true, true
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return rec, fmt.Errorf("kill the shim %d of pod %s: %w", pid, p.Name, err)
		}
	case FaultControlPlane:
		rec.Target = "cci up"
		ready, err := b.restartCluster(ctx, syscall.SIGTERM)
		rec.APIReadyMs = ms(ready)
		if err != nil {
			return rec, err
		}
	case FaultEtcd:
		rec.Target = "etcd (cci etcd)"
		t1 := time.Now()
		if err := b.c.RestartEtcd(ctx, syscall.SIGKILL); err != nil {
			return rec, err
		}
		ready, err := b.waitAPI(ctx, t1)
		rec.APIReadyMs = ms(ready)
		if err != nil {
			return rec, err
		}
	case FaultHost:
		hosts, err := hostns.LoadHosts(b.c.DataDir)
		if err != nil {
			return rec, err
		}
		i := slices.IndexFunc(hosts, func(h hostns.Host) bool { return h.Name == target.Name })
		if i < 0 {
			return rec, fmt.Errorf("no host %q in the layout", target.Name)
		}
		for _, p := range before {
			if p.Node == target.Name && (p.Phase == v1.PodRunning || p.Phase == v1.PodPending) {
				affected[p.UID] = true
				if p.Phase == v1.PodRunning && !p.Job {
					restarted[p.UID] = true
				}
				if p.Job {
					st.jobFailOK++
				}
			}
		}
		if _, err := hostns.PowerOff(hosts[i]); err != nil {
			return rec, fmt.Errorf("power host %s off: %w", target.Name, err)
		}
		// A power cut is not a blink: the control plane notices the host gone.
		time.Sleep(5 * time.Second)
		if err := hostns.PowerOn(hosts[i]); err != nil {
			return rec, fmt.Errorf("power host %s on: %w", target.Name, err)
		}
	default:
		return rec, fmt.Errorf("unknown fault %q: choose from %s", fault, strings.Join(AllFaults, ", "))
	}

	// Recovery: the steady state again, with every agent alive after the fault.
	var why string
	deadline := time.Now().Add(b.cfg.RecoveryTimeout)
	for {
		why, err = b.chaosSteady(ctx, st, t0, restarted)
		if err == nil && why == "" {
			break
		}
		if time.Now().After(deadline) {
			return rec, fmt.Errorf("not recovered %s after the fault: %s %v", b.cfg.RecoveryTimeout, why, err)
		}
		select {
		case <-ctx.Done():
			return rec, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	rec.RecoveryMs = ms(time.Since(t0))

	// Invariants.
	objsAfter, err := b.apiObjects(ctx)
	if err != nil {
		return rec, fmt.Errorf("list API objects after recovery: %w", err)
	}
	for k := range objsBefore {
		if !objsAfter[k] {
			rec.Losses = append(rec.Losses, fmt.Sprintf("round %d (%s): API object %s is gone", round, fault, k))
		}
	}
	after, err := b.chaosPods(ctx, st)
	if err != nil {
		return rec, err
	}
	rec.Losses = append(rec.Losses, podLosses(round, fault, before, after, affected)...)
	if l := b.chaosJobLosses(ctx, st); l != "" {
		rec.Losses = append(rec.Losses, fmt.Sprintf("round %d (%s): %s", round, fault, l))
	}
	if l, err := b.chaosLeftovers(ctx, st, after, time.Minute); err != nil {
		rec.Losses = append(rec.Losses, fmt.Sprintf("round %d (%s): leftovers not checked: %v", round, fault, err))
	} else if l.Total() > 0 {
		rec.Losses = append(rec.Losses, fmt.Sprintf("round %d (%s): finished or gone pods still hold %s", round, fault, l))
	}
	return rec, nil
}

// podLosses compares the run's pods before a fault and after recovery:
// a pod that ran and was not affected by the fault must still run the same
// containers (same id, start time and restart count), or, for a Job's pod,
// have finished with exit code 0.
func podLosses(round int, fault string, before, after map[types.UID]podState, affected map[types.UID]bool) []string {
	var out []string
	lose := func(format string, args ...any) {
		out = append(out, fmt.Sprintf("round %d (%s): ", round, fault)+fmt.Sprintf(format, args...))
	}
	for uid, p := range before {
		if p.Phase != v1.PodRunning || affected[uid] {
			continue
		}
		q, ok := after[uid]
		if !ok {
			lose("pod %s (%s) is gone", p.Name, uid)
			continue
		}
		if p.Job && q.Phase == v1.PodSucceeded {
			continue
		}
		if q.Phase != v1.PodRunning {
			lose("pod %s went from Running to %s", p.Name, q.Phase)
			continue
		}
		for i, c := range p.Ctrs {
			if i >= len(q.Ctrs) {
				break
			}
			d := q.Ctrs[i]
			switch {
			case !c.Running:
			case !d.Running:
				lose("pod %s container %s no longer runs", p.Name, c.Name)
			case c.ID != d.ID:
				lose("pod %s container %s changed id %s → %s", p.Name, c.Name, c.ID, d.ID)
			case c.Restarts != d.Restarts:
				lose("pod %s container %s restarted (%d → %d)", p.Name, c.Name, c.Restarts, d.Restarts)
			case !c.StartedAt.Equal(d.StartedAt):
				lose("pod %s container %s started again (%s → %s)", p.Name, c.Name, c.StartedAt.Format(time.RFC3339), d.StartedAt.Format(time.RFC3339))
			}
		}
	}
	for uid, q := range after {
		if q.Job && q.Phase == v1.PodFailed && !affected[uid] {
			// Failed before, or Running before (reported above): not again.
			if p, ok := before[uid]; !ok || (p.Phase != v1.PodFailed && p.Phase != v1.PodRunning) {
				lose("Job pod %s failed (%s)", q.Name, ctrExits(q))
			}
		}
	}
	return out
}

func ctrExits(p podState) string {
	var s []string
	for _, c := range p.Ctrs {
		s = append(s, fmt.Sprintf("%s exit %d", c.Name, c.ExitCode))
	}
	return strings.Join(s, ", ")
}

// chaosJobLosses checks the Job between rounds: no more failures than the
// faults caused, never more successes than completions.
func (b *bench) chaosJobLosses(ctx context.Context, st *chaosState) string {
	j, err := b.kube.BatchV1().Jobs(b.ns).Get(ctx, chaosJob, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf("job %s: %v", chaosJob, err)
	}
	if int(j.Status.Failed) > st.jobFailOK {
		return fmt.Sprintf("job %s has %d failed pods, %d of them killed by faults", chaosJob, j.Status.Failed, st.jobFailOK)
	}
	if j.Status.Succeeded > *j.Spec.Completions {
		return fmt.Sprintf("job %s has %d successes for %d completions", chaosJob, j.Status.Succeeded, *j.Spec.Completions)
	}
	return ""
}

// chaosJobDone waits for the Job to complete and checks it finished with
// exactly its completions: as many succeeded pods, no extra pods.
func (b *bench) chaosJobDone(ctx context.Context, st *chaosState) []string {
	var j *batchv1.Job
	deadline := time.Now().Add(b.cfg.RecoveryTimeout + time.Duration(b.cfg.Completions)*2*time.Second)
	for {
		var err error
		j, err = b.kube.BatchV1().Jobs(b.ns).Get(ctx, chaosJob, metav1.GetOptions{})
		if err == nil && (j.Status.CompletionTime != nil || jobFailed(j)) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return []string{fmt.Sprintf("job %s did not complete (succeeded %d of %d)", chaosJob, j.Status.Succeeded, b.cfg.Completions)}
		}
		time.Sleep(time.Second)
	}
	pods, err := b.chaosPods(ctx, st)
	if err != nil {
		return []string{err.Error()}
	}
	var ok, failed, other int
	for _, p := range pods {
		if !p.Job {
			continue
		}
		switch p.Phase {
		case v1.PodSucceeded:
			ok++
		case v1.PodFailed:
			failed++
		default:
			other++
		}
	}
	var out []string
	if int(j.Status.Succeeded) != b.cfg.Completions || ok != b.cfg.Completions {
		out = append(out, fmt.Sprintf("job %s: %d succeeded (status) and %d Succeeded pods for %d completions", chaosJob, j.Status.Succeeded, ok, b.cfg.Completions))
	}
	if failed > st.jobFailOK || other > 0 {
		out = append(out, fmt.Sprintf("job %s: %d failed pods (%d killed by faults) and %d unfinished pods after completion", chaosJob, failed, st.jobFailOK, other))
	}
	return out
}

func jobFailed(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == v1.ConditionTrue {
			return true
		}
	}
	return false
}

// chaosLeftovers checks that finished pods (their sandbox released) and
// pods gone from the API hold nothing on the hosts, waiting up to timeout
// for the agents to finish cleaning.
func (b *bench) chaosLeftovers(ctx context.Context, st *chaosState, live map[types.UID]podState, timeout time.Duration) (Leftovers, error) {
	var gone, finished []types.UID
	liveIPs := map[string]bool{}
	if all, err := b.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range all.Items {
			if p.Status.Phase != v1.PodSucceeded && p.Status.Phase != v1.PodFailed && p.Status.PodIP != "" && !p.Spec.HostNetwork {
				liveIPs[p.Status.PodIP] = true
			}
		}
	} else {
		return Leftovers{}, err
	}
	var ips []string
	for uid, p := range st.seen {
		q, ok := live[uid]
		switch {
		case !ok:
			gone = append(gone, uid)
		case q.Phase == v1.PodSucceeded || q.Phase == v1.PodFailed:
			finished = append(finished, uid)
		default:
			continue
		}
		if p.IP != "" && !liveIPs[p.IP] {
			ips = append(ips, p.IP)
		}
	}
	start := time.Now()
	for {
		l, err := b.leftoversOf(ctx, gone, ips)
		if err != nil {
			return l, err
		}
		f, err := b.leftoversOf(ctx, finished, nil)
		if err != nil {
			return l, err
		}
		// A finished pod keeps its containers (for its logs) and its
		// record until it is deleted.
		f.Containers, f.PodDirs = 0, 0
		l = l.add(f)
		if l.Total() == 0 || time.Since(start) > timeout {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return l, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// chaosTeardown deletes the workload and checks that the hosts hold
// nothing for any pod of the run.
func (b *bench) chaosTeardown(ctx context.Context, st *chaosState) (Leftovers, error) {
	bg := metav1.DeletePropagationBackground
	_ = b.kube.AppsV1().Deployments(b.ns).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &bg}, metav1.ListOptions{LabelSelector: labelRun + "=" + b.runID})
	_ = b.kube.BatchV1().Jobs(b.ns).Delete(ctx, chaosJob, metav1.DeleteOptions{PropagationPolicy: &bg})
	if err := b.deletePods(ctx, 3*time.Minute); err != nil {
		return Leftovers{}, err
	}
	if _, err := b.chaosPods(ctx, st); err != nil {
		return Leftovers{}, err
	}
	return b.chaosLeftovers(ctx, st, nil, 2*time.Minute)
}

// restartCluster restarts the `cci up` child with sig and returns how long
// the new process took to answer /readyz.
func (b *bench) restartCluster(ctx context.Context, sig syscall.Signal) (time.Duration, error) {
	if _, err := b.c.Restart(sig); err != nil {
		return 0, err
	}
	return b.waitAPI(ctx, time.Now())
}

// waitAPI waits until the apiserver reports itself ready (its readyz
// checks etcd too) and returns how long that took from t0.
func (b *bench) waitAPI(ctx context.Context, t0 time.Time) (time.Duration, error) {
	deadline := t0.Add(3 * time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := b.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(cctx)
		cancel()
		if err == nil {
			return time.Since(t0), nil
		}
		select {
		case <-b.c.exited:
			return 0, fmt.Errorf("the restarted cluster process exited: %v\n%s", b.c.exitErr, b.c.logTail(30))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the API was not ready within 3 minutes of the restart (last: %v)", err)
		}
	}
}

// pidFileAlive tells whether the process a pid file names runs and its
// command line names what.
func pidFileAlive(path, what string) bool {
	pid := readPidFile(path)
	if pid == 0 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), what)
}

// killPidFile SIGKILLs the process whose pid the file holds, after checking
// its command line names what (a pid file may outlive its process).
func killPidFile(path, what string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s pid file: %w", what, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s pid file %q holds %q", what, path, raw)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), what) {
		return fmt.Errorf("%s pid %d (from %s) is not running", what, pid, path)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s %d: %w", what, pid, err)
	}
	return nil
}

// skipObject says which API objects may come and go on their own, whatever
// the faults: events expire, every apiserver start takes an identity lease
// of its own that the next one removes once it expires, and the metrics API
// is served from the agents' live readings, not stored.
func skipObject(gr schema.GroupResource, ns, name string) bool {
	switch {
	case gr.Resource == "events", gr.Group == "metrics.k8s.io":
		return true
	case gr.Group == "coordination.k8s.io" && gr.Resource == "leases" && ns == metav1.NamespaceSystem && strings.HasPrefix(name, "apiserver-"):
		return true
	case gr.Resource == "componentstatuses":
		return true
	}
	return false
}

// apiObjects lists every object of every listable resource, as
// "group/resource namespace/name uid".
func (b *bench) apiObjects(ctx context.Context) (map[string]bool, error) {
	lists, err := b.kube.Discovery().ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		return nil, err
	}
	rc := rest.CopyConfig(b.c.Rest)
	rc.WarningHandler = rest.NoWarnings{} // deprecated kinds (v1 Endpoints) are listed on purpose
	mc, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if !slices.Contains(r.Verbs, "list") || strings.Contains(r.Name, "/") {
				continue
			}
			gvr := gv.WithResource(r.Name)
			if skipObject(gvr.GroupResource(), "", "") {
				continue
			}
			list, err := mc.Resource(gvr).List(ctx, metav1.ListOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) {
					continue
				}
				return nil, fmt.Errorf("list %s: %w", gvr, err)
			}
			for i := range list.Items {
				o := &list.Items[i]
				if skipObject(gvr.GroupResource(), o.Namespace, o.Name) {
					continue
				}
				acc, _ := meta.Accessor(o)
				out[fmt.Sprintf("%s %s/%s %s", gvr.GroupResource(), acc.GetNamespace(), acc.GetName(), acc.GetUID())] = true
			}
		}
	}
	return out, nil
}

// checkRuntimeClassNamed says whether the cluster offers a RuntimeClass.
func (b *bench) checkRuntimeClassNamed(ctx context.Context, name string) error {
	if _, err := b.kube.NodeV1().RuntimeClasses().Get(ctx, name, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("RuntimeClass %q: %w", name, err)
	}
	return nil
}

func schemaGR(group, resource string) schema.GroupResource {
	return schema.GroupResource{Group: group, Resource: resource}
}
