package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"

	"github.com/cci-project/cci/internal/network"
)

// Network gives each pod its own network namespace and IP. It is satisfied
// by *network.Manager; calls with different ids may run concurrently.
type Network interface {
	Setup(ctx context.Context, id string, ports []network.PortMapping) (*network.Sandbox, error)
	Teardown(ctx context.Context, id string) error
}

// PodAddresses is told of each pod's IPs as soon as its network is set up,
// before any of its containers starts, and when its network is about to be
// torn down. The tenant containment fits: it trusts an operator's pod from
// its first packet. Safe for concurrent use.
type PodAddresses interface {
	PodAddressed(ctx context.Context, pod *v1.Pod, ips []netip.Addr) error
	PodReleased(ctx context.Context, uid types.UID)
}

// TrustBundles gives the trust anchors of ClusterTrustBundles. It is
// satisfied by the kubelet's clustertrustbundle.Manager; safe for
// concurrent use; the returned bytes are the caller's.
type TrustBundles interface {
	GetTrustAnchorsByName(ctx context.Context, name string, allowMissing bool) ([]byte, error)
	GetTrustAnchorsBySigner(ctx context.Context, signerName string, labelSelector *metav1.LabelSelector, allowMissing bool) ([]byte, error)
}

// PodCertificates issues the credentials of podCertificate projections:
// the runtime tells it of each pod it runs (TrackPod) and of each it has
// let go (ForgetPod), and reads a projection's key and certificate chain
// (PEM) when it writes the volume; an error means not issued yet, or
// denied. It is satisfied by the kubelet's podcertificate.IssuingManager;
// safe for concurrent use.
type PodCertificates interface {
	TrackPod(ctx context.Context, pod *v1.Pod)
	ForgetPod(ctx context.Context, pod *v1.Pod)
	GetPodCertificateCredentialBundle(ctx context.Context, namespace, podName, podUID, volumeName string, sourceIndex int) (privKey []byte, certChain []byte, err error)
}

// Config is what the runtime needs from the agent.
type Config struct {
	// NodeName and HostIP are published in every pod's status.
	NodeName string
	HostIP   string
	// StateDir holds pod records, volumes and container logs, e.g. <data>/agent.
	StateDir string
	// Namespace is the containerd namespace of every container. Default "cci".
	Namespace string
	// Snapshotter unpacks images. Default "overlayfs".
	Snapshotter string
	// InsecureRegistries are host:port registries reached over plain HTTP
	// (localhost and 127.0.0.1 always are).
	InsecureRegistries []string
	// RegistryMirrors maps a registry's host:port, as image names spell it,
	// to the host:port that serves it from this host; mirrors are reached
	// over plain HTTP when the registry they stand for is.
	RegistryMirrors map[string]string
	// RegistryCredentials are the host's credentials for the built-in
	// registry, used for the pods of namespaces that are not a tenant's.
	// Nil: those pods pull with their own pull secrets or anonymously.
	RegistryCredentials *RegistryCredentials
	// ClusterDomain is the DNS suffix of Services. Default "cluster.local".
	ClusterDomain string
	// ClusterDNS is the cluster DNS server pods of dnsPolicy ClusterFirst
	// use. Default: the ClusterIP of the Service kube-system/kube-dns when
	// it exists (looked up for each pod), else the host's resolvers.
	ClusterDNS []string
	// HostResolvConf is the host's resolver file, for dnsPolicy Default.
	// Default "/etc/resolv.conf".
	HostResolvConf string
	// Allocatable is the node's allocatable resources as published in its
	// status: the downward API's limits.cpu and limits.memory of a
	// container without limits read them, as on a kubelet, and an in-place
	// resize that does not fit beside the other pods waits (Deferred).
	// Empty: every resize fits.
	Allocatable v1.ResourceList

	// HostEtcHosts is the node's hosts file, which hostNetwork pods see.
	// Default "/etc/hosts".
	HostEtcHosts string
	// Runsc runs the pods of the gvisor runtime handler.
	Runsc RunscConfig
	// Cgroups reads containers' and the host's resource usage for
	// /stats/summary and /metrics/resource. Default: CgroupFS at /sys/fs/cgroup.
	Cgroups CgroupReader

	Containerd *containerd.Client
	Network    Network
	// Devices gives pods the host's accelerators; nil: the host has none
	// (a pod asking for some is refused by the admission).
	Devices Devices
	// AdjustNode, if set, lays the agent's current view of the node over
	// the Node the admission reads from the API: the devices' capacity
	// and allocatable, which change (a device fails, or is healthy again)
	// a moment before the API has them.
	AdjustNode func(*v1.Node)
	// Addresses is told of the pods' IPs; nil: nobody is.
	Addresses  PodAddresses
	Kube       kubernetes.Interface
	ConfigMaps corev1listers.ConfigMapLister
	Secrets    corev1listers.SecretLister
	Services   corev1listers.ServiceLister
	Recorder   record.EventRecorder
	Log        *slog.Logger
	// TrustBundles serves clusterTrustBundle projections; the kubelet's
	// clustertrustbundle.Manager fits. Nil: such volumes fail to mount.
	TrustBundles TrustBundles
	// PodCertificates serves podCertificate projections; the kubelet's
	// podcertificate.IssuingManager fits. Nil: such volumes fail to mount.
	PodCertificates PodCertificates
	// Claims stages the disks behind persistentVolumeClaim and ephemeral
	// volumes on this host (internal/evs). Nil: such volumes fail to mount.
	Claims ClaimVolumes
	// Prober runs liveness, readiness and startup probes. Default: the
	// kubelet's probers, exec probes through containerd.
	Prober Prober
	// PodPidsLimit is the most processes (threads included) a pod may
	// have, as the kubelet's --pod-max-pids: a fork bomb fails inside its
	// pod. A gVisor pod's sandbox (whose own threads count too) gets it as
	// a whole; a runc pod, which has no pod cgroup here, gets it on each
	// container. Default DefaultPodPidsLimit; negative: no limit.
	PodPidsLimit int64
	// ContainerLogMaxSize is the size at which a container's log file is
	// rotated, and ContainerLogMaxFiles how many files of one container
	// run are kept, the current one included, as the kubelet's
	// containerLogMaxSize and containerLogMaxFiles. Defaults 10 MiB and 5.
	ContainerLogMaxSize  int64
	ContainerLogMaxFiles int
	// ParallelStarts is how many pod sandboxes and containers are set up
	// at the same time; the others wait their turn. Default four per CPU.
	ParallelStarts int
}

// Defaults of Config.
const (
	DefaultPodPidsLimit         = 4096
	DefaultContainerLogMaxSize  = 10 << 20
	DefaultContainerLogMaxFiles = 5
)

// startSlotHold is how long one set-up keeps its start slot at most: one
// that hangs (a runtime that does not answer) must not hold up the node.
const startSlotHold = 10 * time.Second

// turn waits for a free start slot; the returned func gives it back, as
// startSlotHold does if the caller has not by then.
func (r *Runtime) turn() (done func()) {
	if r.starts == nil {
		return func() {}
	}
	r.starts <- struct{}{}
	var once sync.Once
	release := func() { once.Do(func() { <-r.starts }) }
	t := time.AfterFunc(startSlotHold, release)
	return func() {
		t.Stop()
		release()
	}
}

// Runtime runs pods; it implements nodeutil.Provider and node.PodNotifier.
// All methods are safe for concurrent use.
type Runtime struct {
	cfg Config

	mu     sync.Mutex
	pods   map[string]*podWorker // by namespace/name
	notify func(*v1.Pod)
	ctx    context.Context
	pulls  *puller
	tokens map[string]tokenEntry // service-account tokens by pod UID/volume/path
	execer execRunner            // exec probes and hooks
	gvisor *gvisor
	usage  *usageTracker
	// admit is the kubelet's pod admission; admitMu makes it one pod at a time.
	admit   *admitter
	admitMu sync.Mutex
	// starts bounds the sandbox and container set-ups in flight: in a
	// burst of 200 pods every worker would otherwise start at once, and
	// containerd, the shims and the CNI plugins share two cores (150
	// containerd calls in flight were seen) queueing on each other's locks.
	starts chan struct{}
	// stopping is set by StopAll: the node is gone and takes no new pods.
	stopping bool
}

// New prepares the runtime and re-adopts every pod recorded in StateDir.
// Pods are driven only after Start.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "cci"
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = "overlayfs"
	}
	if cfg.HostResolvConf == "" {
		cfg.HostResolvConf = "/etc/resolv.conf"
	}
	if cfg.HostEtcHosts == "" {
		cfg.HostEtcHosts = "/etc/hosts"
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.PodPidsLimit == 0 {
		cfg.PodPidsLimit = DefaultPodPidsLimit
	}
	if cfg.ContainerLogMaxSize <= 0 {
		cfg.ContainerLogMaxSize = DefaultContainerLogMaxSize
	}
	if cfg.ContainerLogMaxFiles < 2 {
		// The kubelet refuses fewer than 2: the current file and one rotated.
		cfg.ContainerLogMaxFiles = DefaultContainerLogMaxFiles
	}
	if cfg.Cgroups == nil {
		cfg.Cgroups = CgroupFS{}
	}
	if cfg.Recorder == nil {
		cfg.Recorder = &record.FakeRecorder{}
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "pods"), 0o700); err != nil {
		return nil, fmt.Errorf("create state folder: %w", err)
	}
	r := &Runtime{
		cfg:    cfg,
		pods:   map[string]*podWorker{},
		ctx:    namespaces.WithNamespace(ctx, cfg.Namespace),
		tokens: map[string]tokenEntry{},
	}
	if cfg.ParallelStarts <= 0 {
		cfg.ParallelStarts = 4 * goruntime.NumCPU()
	}
	r.starts = make(chan struct{}, cfg.ParallelStarts)
	r.usage = newUsageTracker()
	r.pulls = newPuller(cfg.Containerd, cfg.Snapshotter, cfg.InsecureRegistries, cfg.RegistryMirrors)
	r.execer = execRunner{client: cfg.Containerd, namespace: cfg.Namespace}
	if r.cfg.Prober == nil {
		r.cfg.Prober = newKubeProber(r.execer)
	}
	r.gvisor = setupGVisor(filepath.Join(cfg.StateDir, "runsc"), cfg.Runsc)
	if r.gvisor.fellBack {
		cfg.Log.Info("the current runsc is not installed (make setup builds it): gVisor pods run with runsc in PATH", "missing", CurrentRunsc)
	}
	if r.gvisor.err != nil {
		cfg.Log.Warn("gVisor pods cannot run on this node", "err", r.gvisor.err)
	} else {
		cfg.Log.Info("gVisor pods run with runsc", "runsc", r.gvisor.path, "platform", r.gvisor.platform)
	}
	if cfg.Kube != nil {
		a, err := newAdmitter(ctx, r.kubeNode, cfg.AdjustNode)
		if err != nil {
			return nil, err
		}
		r.admit = a
	}
	if err := r.recover(); err != nil {
		return nil, err
	}
	return r, nil
}

// recover loads the pod records left by an earlier agent and prepares
// their workers, which re-attach to the containers that still run once
// started. A recorded pod that is no longer this node's in the API is
// removed here, before any worker runs (see reconcile.go).
func (r *Runtime) recover() error {
	dir := filepath.Join(r.cfg.StateDir, "pods")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read pod records: %w", err)
	}
	var ws []*podWorker
	for _, e := range entries {
		path := filepath.Join(dir, e.Name(), recordFile)
		raw, err := os.ReadFile(path)
		if err != nil {
			r.cfg.Log.Warn("skipping pod folder without record", "dir", e.Name(), "err", err)
			continue
		}
		var rec podRecord
		if err := json.Unmarshal(raw, &rec); err != nil || rec.Pod == nil {
			r.cfg.Log.Warn("skipping unreadable pod record", "path", path, "err", err)
			continue
		}
		ws = append(ws, newWorker(r, &rec, true))
	}
	if r.cfg.Kube != nil {
		// Pods deleted, re-created or moved while the agent was down go
		// first, before anything of them restarts.
		if ws, err = r.reconcile(ws); err != nil {
			return fmt.Errorf("compare this node's pod records with the API: %w", err)
		}
	}
	r.adoptDevices(ws)
	for _, w := range ws {
		p := w.pod()
		r.pods[key(p.Namespace, p.Name)] = w
	}
	return nil
}

// Start runs the workers of re-adopted pods.
func (r *Runtime) Start() {
	r.mu.Lock()
	pods := make([]*v1.Pod, 0, len(r.pods))
	for _, w := range r.pods {
		w.start()
		pods = append(pods, w.pod())
	}
	r.mu.Unlock()
	for _, p := range pods {
		r.trackPod(p)
	}
	// Views of image volumes whose pod record is gone (a crash between
	// removing the folder and the view) would hold their image forever.
	// A pod is looked up as its view is met: one created meanwhile has its
	// worker before it pulls.
	if err := r.sweepImageVolumes(r.ctx, func(uid types.UID) bool { _, ok := r.PodByUID(uid); return ok }); err != nil {
		r.cfg.Log.Warn("sweep image volume views", "err", err)
	}
	r.sweepNetworks()
}

// sweepNetworks tears down the pod networks this host made for pods it no
// longer has: a crash (of the agent, or of the machine) between a pod's
// removal and its network's leaves them, with their address and rules.
// Only the network's own record of what it made counts: other hosts and
// clusters of the machine share the namespace folder. A pod created
// meanwhile has its worker before its network, so it is not swept.
func (r *Runtime) sweepNetworks() {
	owned, ok := r.cfg.Network.(interface{ Owned() ([]string, error) })
	if !ok {
		return
	}
	ids, err := owned.Owned()
	if err != nil {
		r.cfg.Log.Warn("list this host's pod networks", "err", err)
		return
	}
	for _, id := range ids {
		uid := types.UID(id)
		if _, running := r.PodByUID(uid); running {
			continue
		}
		r.cfg.Log.Info("tearing down the network of a pod this host no longer has", "uid", uid)
		r.retryTeardown(uid)
	}
}

// trackPod hands a pod this node now runs to the pod certificate issuer,
// as the kubelet does when a pod is added. Called without r.mu: the
// issuer looks pods up through PodByUID.
func (r *Runtime) trackPod(p *v1.Pod) {
	if r.cfg.PodCertificates != nil {
		r.cfg.PodCertificates.TrackPod(r.ctx, p)
	}
}

// PodByUID returns the spec of a pod this node runs; the caller must not
// change it.
func (r *Runtime) PodByUID(uid types.UID) (*v1.Pod, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.pods {
		if p := w.pod(); p.UID == uid {
			return p, true
		}
	}
	return nil, false
}

// Pods returns the specs of the pods this node runs; the caller must not
// change them.
func (r *Runtime) Pods() []*v1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*v1.Pod, 0, len(r.pods))
	for _, w := range r.pods {
		out = append(out, w.pod())
	}
	return out
}

// WakePod makes the pod's worker sync now, for example to mount a volume
// whose source has just become available.
func (r *Runtime) WakePod(uid types.UID) {
	r.mu.Lock()
	var target *podWorker
	for _, w := range r.pods {
		if w.pod().UID == uid {
			target = w
			break
		}
	}
	r.mu.Unlock()
	if target != nil {
		target.post(event{kind: evWake})
	}
}

// Reattach makes every worker re-attach to its tasks; called after
// containerd came back from a crash.
func (r *Runtime) Reattach() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.pods {
		w.post(event{kind: evReattach})
	}
}

func key(ns, name string) string { return ns + "/" + name }

func (r *Runtime) worker(ns, name string) *podWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pods[key(ns, name)]
}

func (r *Runtime) forget(w *podWorker) {
	r.mu.Lock()
	defer func() {
		r.mu.Unlock()
		if r.cfg.PodCertificates != nil {
			r.cfg.PodCertificates.ForgetPod(r.ctx, w.pod())
		}
	}()
	k := key(w.pod().Namespace, w.pod().Name)
	if r.pods[k] == w {
		delete(r.pods, k)
	}
	prefix := string(w.pod().UID) + "/"
	for t := range r.tokens {
		if strings.HasPrefix(t, prefix) {
			delete(r.tokens, t)
		}
	}
}

// NotifyPods registers the callback that receives every pod status change.
func (r *Runtime) NotifyPods(_ context.Context, f func(*v1.Pod)) {
	r.mu.Lock()
	r.notify = f
	r.mu.Unlock()
}

// publish hands a status to the node's pod controller; false when none is
// registered yet.
func (r *Runtime) publish(p *v1.Pod) bool {
	r.mu.Lock()
	f := r.notify
	r.mu.Unlock()
	if f == nil {
		return false
	}
	f(p)
	return true
}

// Republish makes every worker publish its pod's status again. The node's
// pod controller drops a status it receives for a pod it does not know yet
// (while its informer syncs at start-up); re-adopted pods publish before
// that, so the agent calls this once the controller is ready.
func (r *Runtime) Republish() {
	r.mu.Lock()
	ws := make([]*podWorker, 0, len(r.pods))
	for _, w := range r.pods {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	for _, w := range ws {
		w.post(event{kind: evRepublish})
	}
}

// CreatePod starts driving pod. It returns at once; progress shows in the
// pod's status.
// A pod the kubelet's admission refuses (see admit.go) fails at once.
func (r *Runtime) CreatePod(ctx context.Context, pod *v1.Pod) error {
	// One admission at a time, as the kubelet admits pods one by one: two
	// pods asking for the same host port cannot both pass.
	r.admitMu.Lock()
	defer r.admitMu.Unlock()
	k := key(pod.Namespace, pod.Name)
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return fmt.Errorf("pod %s: node %q is shutting down", k, r.cfg.NodeName)
	}
	if old, ok := r.pods[k]; ok && old.pod().UID == pod.UID {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()

	rec := r.admitPod(ctx, pod)
	if rec.Rejected && r.waitTerminating(ctx) {
		// What a deleted pod held may be what this one needs: the node
		// controller removes a deleted pod's API object once its grace
		// period is over, before the pod's containers and devices are
		// let go here, and the scheduler may bind the next pod at once.
		rec = r.admitPod(ctx, pod)
	}
	if rec.Rejected {
		r.cfg.Log.Info("pod rejected", "pod", k, "reason", rec.Reason, "message", rec.Message)
		r.cfg.Recorder.Eventf(pod, v1.EventTypeWarning, rec.Reason, "%s", strings.TrimPrefix(rec.Message, "Pod was rejected: "))
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.pods[k]; ok {
		// A pod of the same name but another UID: the old one is on its way out.
		old.post(event{kind: evDelete})
	}
	w := newWorker(r, rec, false)
	r.pods[k] = w
	w.start()
	go r.trackPod(w.pod()) // the issuer looks the pod up under r.mu
	return nil
}

// admitPod runs the kubelet's admission and gives the pod its devices:
// the pod's new record, rejected when it may not run here.
func (r *Runtime) admitPod(ctx context.Context, pod *v1.Pod) *podRecord {
	r.mu.Lock()
	others := r.activePods(pod)
	r.mu.Unlock()
	if r.admit != nil {
		if ok, reason, message := r.admit.admit(ctx, pod, others); !ok {
			return rejectedRecord(pod, reason, message)
		}
	}
	devs, ok, reason, message := r.allocateDevices(pod)
	if !ok {
		return rejectedRecord(pod, reason, message)
	}
	if ok, reason, message := r.admitDevicesUnder(ctx, pod, devs); !ok {
		r.cfg.Devices.Release(pod.UID)
		return rejectedRecord(pod, reason, message)
	}
	rec := newRecord(pod)
	rec.Devices = devs
	return rec
}

// terminatingWait bounds how long an admission waits for deleted pods to
// let go of what they hold.
const terminatingWait = 30 * time.Second

// waitTerminating waits until the pods the API deleted are gone from this
// node; false when there were none.
func (r *Runtime) waitTerminating(ctx context.Context) bool {
	r.mu.Lock()
	var waits []*podWorker
	for _, w := range r.pods {
		if w.terminating.Load() {
			waits = append(waits, w)
		}
	}
	r.mu.Unlock()
	if len(waits) == 0 {
		return false
	}
	deadline := time.NewTimer(terminatingWait)
	defer deadline.Stop()
	for _, w := range waits {
		select {
		case <-w.done:
		case <-deadline.C:
			return true
		case <-ctx.Done():
			return true
		}
	}
	return true
}

// UpdatePod takes a new version of a running pod's spec (only the fields
// Kubernetes allows to change, such as images and activeDeadlineSeconds).
//
// The pod controller calls it when GetPod finds a pod of that name. The pod
// found may be an earlier pod of the same name (a StatefulSet's, or any pod
// deleted and made again) whose API object is gone while the node still
// releases what it held, or one that went between the two calls: the pod
// handed in is then new to the node and is created. (An error here would
// have the controller mark the new pod ProviderFailed, and Failed when its
// restartPolicy is Never.)
func (r *Runtime) UpdatePod(ctx context.Context, pod *v1.Pod) error {
	w := r.worker(pod.Namespace, pod.Name)
	if w == nil || w.pod().UID != pod.UID {
		return r.CreatePod(ctx, pod)
	}
	w.post(event{kind: evUpdate, pod: pod.DeepCopy()})
	return nil
}

// CheckAPIStatus hands the runtime a pod's status as the API has it; if
// another writer changed the conditions the agent owns (Ready,
// ContainersReady, …), the agent writes its own status again. pod is only
// read (an informer's object may be handed in as is).
func (r *Runtime) CheckAPIStatus(pod *v1.Pod) {
	w := r.worker(pod.Namespace, pod.Name)
	if w == nil || w.pod().UID != pod.UID {
		return
	}
	w.post(event{kind: evAPIStatus, pod: pod})
}

// DeletePod stops the pod's containers within its grace period and releases
// everything it holds. It returns at once; the terminal status is notified
// when the pod is gone.
func (r *Runtime) DeletePod(_ context.Context, pod *v1.Pod) error {
	w := r.worker(pod.Namespace, pod.Name)
	if w == nil {
		return errdefs.NotFoundf("pod %s/%s is not on this node", pod.Namespace, pod.Name)
	}
	w.terminating.Store(true)
	w.post(event{kind: evDelete, pod: pod.DeepCopy()})
	return nil
}

// GetPod returns the pod as this node runs it, status included.
func (r *Runtime) GetPod(_ context.Context, ns, name string) (*v1.Pod, error) {
	w := r.worker(ns, name)
	if w == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not on this node", ns, name)
	}
	return w.snapshot(), nil
}

// GetPodStatus returns the pod's current status.
func (r *Runtime) GetPodStatus(ctx context.Context, ns, name string) (*v1.PodStatus, error) {
	p, err := r.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &p.Status, nil
}

// GetPods returns every pod this node runs.
func (r *Runtime) GetPods(context.Context) ([]*v1.Pod, error) {
	r.mu.Lock()
	ws := make([]*podWorker, 0, len(r.pods))
	for _, w := range r.pods {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	out := make([]*v1.Pod, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.snapshot())
	}
	return out, nil
}

// StopAll stops every pod within its grace period and removes everything
// it holds (containers, network, mounts, record), as when each is deleted,
// but leaves the API objects alone; from then on the runtime takes no new
// pods. Used when this host's node is deleted from the cluster. It returns
// when every pod is gone or ctx ends.
func (r *Runtime) StopAll(ctx context.Context) error {
	r.mu.Lock()
	r.stopping = true
	ws := make([]*podWorker, 0, len(r.pods))
	for _, w := range r.pods {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	now := metav1.Now()
	for _, w := range ws {
		p := w.pod().DeepCopy()
		p.DeletionTimestamp = nil // the API object is not this runtime's to delete
		// As the kubelet's graceful node shutdown ends a pod: Failed, with
		// a DisruptionTarget that a Job's pod failure policy can match.
		p.Status.Conditions = []v1.PodCondition{{
			Type: v1.DisruptionTarget, Status: v1.ConditionTrue, LastTransitionTime: now,
			Reason: "TerminationByKubelet", Message: nodeGoneMessage,
		}}
		w.post(event{kind: evDelete, pod: p, message: nodeGoneMessage})
	}
	for _, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			return fmt.Errorf("stop the pods of node %q: %w", r.cfg.NodeName, ctx.Err())
		}
	}
	// The node's pod controller sends statuses in the background and the
	// agent is about to exit: each pod's final status goes to the API now,
	// so that a pod stopped here never looks Running to the next agent.
	var errs []error
	for _, w := range ws {
		final := w.final
		if final == nil || w.orphan {
			continue
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := r.cfg.Kube.CoreV1().Pods(final.Namespace).Get(ctx, final.Name, metav1.GetOptions{})
			if err != nil || cur.UID != final.UID {
				return err
			}
			cur.Status = final.Status
			_, err = r.cfg.Kube.CoreV1().Pods(final.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("final status of pod %s/%s: %w", final.Namespace, final.Name, err))
		}
	}
	return errors.Join(errs...)
}

// nodeGoneMessage ends the pods of an agent whose node was deleted.
const nodeGoneMessage = "Pod was terminated because its node was deleted from the cluster."

// Shutdown stops every worker without touching containers: they keep
// running and are re-adopted by the next agent.
func (r *Runtime) Shutdown() {
	r.mu.Lock()
	ws := make([]*podWorker, 0, len(r.pods))
	for _, w := range r.pods {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}

// errPodGone is returned by stream calls on a pod or container that does not run.
var errPodGone = errors.New("not running")

func (r *Runtime) podDir(uid types.UID) string {
	return filepath.Join(r.cfg.StateDir, "pods", string(uid))
}

// timeNow is the runtime's clock; a var so that tests of pure logic can fix it.
var timeNow = time.Now
