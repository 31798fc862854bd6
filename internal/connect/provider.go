package connect

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	authv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// provider runs the pods of the virtual node as copies in B. It is
// virtual-kubelet's PodLifecycleHandler and PodNotifier: the pod
// controller calls it from many workers at once; what it returns is its
// own copy.
//
// A pod's path:
//
//	A: bound to the node ─► CreatePod: objects copied, copy created in B
//	B: copy's status changes ─► queue ─► notify: A's pod status = B's
//	A: deleted ─► DeletePod: copy deleted in B with the same grace
//	B: copy gone ─► notify: terminal status ─► pod controller removes A's pod
type provider struct {
	c *connector
	// A's pods, ConfigMaps and Secrets (virtual-kubelet's informers).
	aPods    corev1listers.PodLister
	aConfigs corev1listers.ConfigMapLister
	aSecrets corev1listers.SecretLister
	// B's copies: pods, ConfigMaps, Secrets labelled with this node.
	bPods    corev1listers.PodLister
	bConfigs corev1listers.ConfigMapLister
	bSecrets corev1listers.SecretLister
	recorder record.EventRecorder

	queue workqueue.TypedRateLimitingInterface[string]

	mu     sync.Mutex
	notify func(*v1.Pod)
	// refusedPods are A's pods that cannot pass (by A key), with the
	// Failed status they were given.
	refusedPods map[string]*v1.Pod
	// gone is the last copy of pods whose copy left B, until A hears of it.
	gone map[string]*v1.Pod
}

// nsFor is the namespace in B of the copies of A's pods in namespace ns:
// the tenant's one namespace, or, in a cell, A's own namespace.
func (p *provider) nsFor(ns string) string {
	if p.c.cfg.Cell {
		return ns
	}
	return p.c.bNS
}

func (p *provider) target(ns string) target { return p.c.copyTarget(ns) }

// copyTarget is where the copy of a pod of A's namespace ns goes.
func (c *connector) copyTarget(ns string) target {
	bNS := c.bNS
	if c.cfg.Cell {
		bNS = ns
	}
	return target{Namespace: bNS, Node: c.cfg.NodeName, Cluster: c.cluster, NodeIP: c.cfg.NodeIP, DNS: c.dns, APIHost: c.apiHost, APIPort: c.apiPort}
}

// deletionCost is the ReplicaSet controller's annotation: lower goes first.
const deletionCost = "controller.kubernetes.io/pod-deletion-cost"

// withDeletionCost gives a pod the webhook sent here (cci.io/burst) the
// lowest deletion cost, so that a scaled-down ReplicaSet removes its pods in
// the tenant's cluster before those on A's own nodes. It rides on the
// status writes: virtual-kubelet writes the whole pod it is given to
// pods/status, which keeps labels and annotations from it, so a separate
// patch would be undone by the next status write built before it.
func withDeletionCost(pod *v1.Pod) {
	if pod.Labels[BurstLabel] == "" {
		return
	}
	if _, set := pod.Annotations[deletionCost]; set {
		return
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[deletionCost] = "-100"
}

// aKey is the A pod a copy in B stands for ("namespace/name").
func aKey(b *v1.Pod) (string, bool) {
	ns, name := b.Annotations[AnnotNamespace], b.Annotations[AnnotName]
	if ns == "" || name == "" {
		return "", false
	}
	return ns + "/" + name, true
}

// copyOf is the copy in B of A's pod ns/name, if B has one.
func (p *provider) copyOf(ns, name string) (*v1.Pod, bool) {
	b, err := p.bPods.Pods(p.nsFor(ns)).Get(copyName(p.c.cluster, ns, name))
	if err != nil {
		return nil, false
	}
	return b, true
}

// watchCopies queues the A pod of each copy whose state changes.
func (p *provider) watchCopies(inf cache.SharedIndexInformer) {
	enqueue := func(obj any) {
		if b, ok := obj.(*v1.Pod); ok {
			if k, ok := aKey(b); ok {
				p.queue.Add(k)
			}
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if b, ok := obj.(*v1.Pod); ok {
				if k, ok := aKey(b); ok {
					p.mu.Lock()
					p.gone[k] = b
					p.mu.Unlock()
					p.queue.Add(k)
				}
			}
		},
	})
}

// runStatus sends A the status of each queued pod's copy until ctx ends.
func (p *provider) runStatus(ctx context.Context, workers int) {
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				key, quit := p.queue.Get()
				if quit {
					return
				}
				p.sendStatus(key)
				p.queue.Done(key)
			}
		})
	}
	wg.Wait()
}

// sendStatus tells the pod controller the status of A's pod key.
func (p *provider) sendStatus(key string) {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	a, err := p.aPods.Pods(ns).Get(name)
	if err != nil {
		p.mu.Lock()
		delete(p.gone, key)
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	notify := p.notify
	gone := p.gone[key]
	p.mu.Unlock()
	if notify == nil {
		return
	}
	out := a.DeepCopy()
	if b, ok := p.copyOf(ns, name); ok {
		if b.Labels[LabelPodUID] != string(a.UID) {
			return // an earlier pod's copy, being replaced
		}
		out.Status = statusFor(a, b, p.c.cfg.NodeIP)
		withDeletionCost(out)
		notify(out)
		return
	}
	if gone == nil || gone.Labels[LabelPodUID] != string(a.UID) {
		return
	}
	p.mu.Lock()
	delete(p.gone, key)
	p.mu.Unlock()
	msg := fmt.Sprintf("the pod's copy %s/%s was deleted in the cluster behind node %s", gone.Namespace, gone.Name, p.c.cfg.NodeName)
	out.Status = goneStatus(statusFor(a, gone, p.c.cfg.NodeIP), a.DeletionTimestamp != nil, msg)
	notify(out)
}

// NotifyPods implements node.PodNotifier.
func (p *provider) NotifyPods(_ context.Context, f func(*v1.Pod)) {
	p.mu.Lock()
	p.notify = f
	p.mu.Unlock()
	// Copies found at start (a restarted connect) get their status sent.
	for _, b := range p.copies() {
		if k, ok := aKey(b); ok {
			p.queue.Add(k)
		}
	}
}

func (p *provider) copies() []*v1.Pod {
	list, _ := p.bPods.Pods(p.c.bNS).List(p.c.copySelector())
	return list
}

// refuse fails A's pod that cannot pass, with an event naming why, as a
// kubelet fails a pod it cannot admit.
func (p *provider) refuse(a *v1.Pod, err error) {
	reason := "NotPassable"
	var r *refused
	if errors.As(err, &r) && r.Field == "admission" {
		reason = "RefusedByCell"
	}
	p.recorder.Event(a, v1.EventTypeWarning, reason, err.Error())
	out := a.DeepCopy()
	now := metav1.Now()
	out.Status = v1.PodStatus{Phase: v1.PodFailed, Reason: reason, Message: err.Error(), StartTime: &now,
		HostIP: p.c.cfg.NodeIP, HostIPs: []v1.HostIP{{IP: p.c.cfg.NodeIP}}}
	p.mu.Lock()
	p.refusedPods[a.Namespace+"/"+a.Name] = out
	notify := p.notify
	p.mu.Unlock()
	if notify != nil {
		notify(out)
	}
}

// CreatePod implements node.PodLifecycleHandler.
func (p *provider) CreatePod(ctx context.Context, a *v1.Pod) error {
	pl, err := translate(a, p.target(a.Namespace))
	var r *refused
	if errors.As(err, &r) {
		p.refuse(a, err)
		return nil
	}
	if err != nil {
		return err
	}
	bNS := p.nsFor(a.Namespace)
	if p.c.cfg.Cell {
		if err := p.c.cellNamespace(ctx, a.Namespace); err != nil {
			return err
		}
	}
	pods := p.c.b.CoreV1().Pods(bNS)
	if cur, err := pods.Get(ctx, pl.Pod.Name, metav1.GetOptions{}); err == nil {
		if cur.Labels[LabelPodUID] == string(a.UID) {
			// Re-adopted: created before this connect started.
			if err := p.syncObjects(ctx, a, pl, cur); err != nil {
				return err
			}
			p.queue.Add(a.Namespace + "/" + a.Name)
			return nil
		}
		// A pod of the same name that A has replaced (a StatefulSet's).
		zero := int64(0)
		if err := pods.Delete(ctx, cur.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &cur.UID}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove the copy %s/%s of an earlier pod %s/%s: %w", bNS, cur.Name, a.Namespace, a.Name, err)
		}
		return fmt.Errorf("the copy %s/%s of an earlier pod %s/%s is being removed; retrying", bNS, cur.Name, a.Namespace, a.Name)
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("look up the copy of pod %s/%s in %s: %w", a.Namespace, a.Name, bNS, err)
	}
	// The objects first, so that the copy finds them when it starts;
	// they are owned by the copy once it exists.
	if err := p.syncObjects(ctx, a, pl, nil); err != nil {
		return err
	}
	created, err := pods.Create(ctx, pl.Pod, metav1.CreateOptions{})
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota"):
		// Capacity is B's free quota; another pod took it meanwhile.
		return fmt.Errorf("create the copy of pod %s/%s: %w", a.Namespace, a.Name, err)
	case apierrors.IsForbidden(err), apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		p.refuse(a, &refused{Field: "admission", Why: fmt.Sprintf("the cluster behind node %s refused the pod: %s", p.c.cfg.NodeName, apiMessage(err))})
		p.deleteObjects(ctx, pl)
		return nil
	case err != nil:
		return fmt.Errorf("create the copy of pod %s/%s in %s: %w", a.Namespace, a.Name, bNS, err)
	}
	return p.syncObjects(ctx, a, pl, created)
}

func apiMessage(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Message
	}
	return err.Error()
}

// UpdatePod implements node.PodLifecycleHandler: the copy's objects and
// the fields a pod may change (labels, annotations, images, deadline).
func (p *provider) UpdatePod(ctx context.Context, a *v1.Pod) error {
	pl, err := translate(a, p.target(a.Namespace))
	if err != nil {
		return nil // refused when created
	}
	cur, ok := p.copyOf(a.Namespace, a.Name)
	if !ok || cur.Labels[LabelPodUID] != string(a.UID) {
		return p.CreatePod(ctx, a)
	}
	if err := p.syncObjects(ctx, a, pl, cur); err != nil {
		return err
	}
	want := cur.DeepCopy()
	want.Labels, want.Annotations = pl.Pod.Labels, pl.Pod.Annotations
	for i := range want.Spec.Containers {
		if i < len(pl.Pod.Spec.Containers) {
			want.Spec.Containers[i].Image = pl.Pod.Spec.Containers[i].Image
		}
	}
	for i := range want.Spec.InitContainers {
		if i < len(pl.Pod.Spec.InitContainers) {
			want.Spec.InitContainers[i].Image = pl.Pod.Spec.InitContainers[i].Image
		}
	}
	want.Spec.ActiveDeadlineSeconds = pl.Pod.Spec.ActiveDeadlineSeconds
	if apiequality.Semantic.DeepEqual(want.ObjectMeta, cur.ObjectMeta) && apiequality.Semantic.DeepEqual(want.Spec, cur.Spec) {
		return nil
	}
	if _, err := p.c.b.CoreV1().Pods(cur.Namespace).Update(ctx, want, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update the copy %s/%s of pod %s/%s: %w", cur.Namespace, cur.Name, a.Namespace, a.Name, err)
	}
	return nil
}

// DeletePod implements node.PodLifecycleHandler: the copy is deleted with
// A's grace period; the terminal status follows when it is gone.
func (p *provider) DeletePod(ctx context.Context, a *v1.Pod) error {
	key := a.Namespace + "/" + a.Name
	p.mu.Lock()
	_, wasRefused := p.refusedPods[key]
	delete(p.refusedPods, key)
	p.mu.Unlock()
	name := copyName(p.c.cluster, a.Namespace, a.Name)
	opts := metav1.DeleteOptions{GracePeriodSeconds: a.DeletionGracePeriodSeconds}
	if cur, ok := p.copyOf(a.Namespace, a.Name); ok && a.UID != "" {
		if cur.Labels[LabelPodUID] != string(a.UID) {
			return nil
		}
		uid := cur.UID
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	bNS := p.nsFor(a.Namespace)
	err := p.c.b.CoreV1().Pods(bNS).Delete(ctx, name, opts)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		if wasRefused {
			return nil
		}
		return errdefs.NotFoundf("pod %s/%s has no copy in %s", a.Namespace, a.Name, bNS)
	}
	if err != nil {
		return fmt.Errorf("delete the copy %s/%s of pod %s/%s: %w", bNS, name, a.Namespace, a.Name, err)
	}
	return nil
}

// GetPod implements node.PodLifecycleHandler.
func (p *provider) GetPod(_ context.Context, ns, name string) (*v1.Pod, error) {
	key := ns + "/" + name
	p.mu.Lock()
	r := p.refusedPods[key]
	p.mu.Unlock()
	if r != nil {
		return r.DeepCopy(), nil
	}
	b, ok := p.copyOf(ns, name)
	if !ok {
		return nil, errdefs.NotFoundf("pod %s/%s has no copy in %s", ns, name, p.nsFor(ns))
	}
	return p.asA(b), nil
}

// asA is A's view of a copy: A's pod with the copy's status, or, where A
// has no such pod any more, a pod of A's name and UID.
func (p *provider) asA(b *v1.Pod) *v1.Pod {
	ns, name := b.Annotations[AnnotNamespace], b.Annotations[AnnotName]
	if a, err := p.aPods.Pods(ns).Get(name); err == nil && string(a.UID) == b.Labels[LabelPodUID] {
		out := a.DeepCopy()
		out.Status = statusFor(a, b, p.c.cfg.NodeIP)
		return out
	}
	out := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(b.Labels[LabelPodUID])}}
	out.Status = statusFor(out, b, p.c.cfg.NodeIP)
	return out
}

// GetPodStatus implements node.PodLifecycleHandler.
func (p *provider) GetPodStatus(ctx context.Context, ns, name string) (*v1.PodStatus, error) {
	pod, err := p.GetPod(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods implements node.PodLifecycleHandler: every copy this node has in
// B, as A's pods. The pod controller deletes those A no longer has (pods
// deleted in A while connect was down).
func (p *provider) GetPods(context.Context) ([]*v1.Pod, error) {
	var out []*v1.Pod
	for _, b := range p.copies() {
		if _, ok := aKey(b); ok {
			out = append(out, p.asA(b))
		}
	}
	p.mu.Lock()
	for _, r := range p.refusedPods {
		out = append(out, r.DeepCopy())
	}
	p.mu.Unlock()
	return out, nil
}

// syncObjects creates or updates in B the copies of the ConfigMaps and
// Secrets A's pod uses and its pod data Secret (tokens minted by A,
// downward API values), owned by the pod copy when there is one.
func (p *provider) syncObjects(ctx context.Context, a *v1.Pod, pl *plan, owner *v1.Pod) error {
	meta := func(name, source string) metav1.ObjectMeta {
		m := metav1.ObjectMeta{
			Name: name, Namespace: p.nsFor(a.Namespace),
			Labels:      map[string]string{LabelNode: p.c.cfg.NodeName, LabelCluster: p.c.cluster, LabelPodUID: string(a.UID)},
			Annotations: map[string]string{AnnotSource: source},
		}
		if owner != nil {
			m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: owner.Name, UID: owner.UID}}
		}
		return m
	}
	for _, from := range sortedKeys(pl.ConfigMaps) {
		src, err := p.aConfigs.ConfigMaps(a.Namespace).Get(from)
		if apierrors.IsNotFound(err) && pl.Optional["ConfigMap/"+from] {
			continue
		}
		if err != nil {
			return fmt.Errorf("ConfigMap %s/%s of pod %s: %w", a.Namespace, from, a.Name, err)
		}
		want := &v1.ConfigMap{ObjectMeta: meta(pl.ConfigMaps[from], "ConfigMap/"+from), Data: src.Data, BinaryData: src.BinaryData}
		if err := p.putConfigMap(ctx, want); err != nil {
			return err
		}
	}
	for _, from := range sortedKeys(pl.Secrets) {
		src, err := p.aSecrets.Secrets(a.Namespace).Get(from)
		if apierrors.IsNotFound(err) && pl.Optional["Secret/"+from] {
			continue
		}
		if err != nil {
			return fmt.Errorf("Secret %s/%s of pod %s: %w", a.Namespace, from, a.Name, err)
		}
		typ := src.Type
		if typ == v1.SecretTypeServiceAccountToken {
			typ = v1.SecretTypeOpaque // B would fill it with its own token
		}
		want := &v1.Secret{ObjectMeta: meta(pl.Secrets[from], "Secret/"+from), Data: src.Data, Type: typ}
		if err := p.putSecret(ctx, want); err != nil {
			return err
		}
	}
	if len(pl.Tokens) == 0 && len(pl.Downward) == 0 {
		return nil
	}
	data := &v1.Secret{ObjectMeta: meta(pl.PodData, "Pod/"+a.Name), Data: map[string][]byte{}, Type: v1.SecretTypeOpaque}
	for k, v := range pl.Downward {
		data.Data[k] = []byte(v)
	}
	cur, _ := p.bSecrets.Secrets(p.nsFor(a.Namespace)).Get(pl.PodData)
	for _, key := range sortedKeys(pl.Tokens) {
		// A token is kept until 70 % of its life is over, then minted
		// again (a kubelet renews at 80 %; the copy's kubelet in B needs a
		// moment to see the new one).
		refreshAt := "connect.cci.io/refresh-" + key
		if cur != nil && len(cur.Data[key]) > 0 {
			if t, err := time.Parse(time.RFC3339, cur.Annotations[refreshAt]); err == nil && time.Now().Before(t) {
				data.Data[key] = cur.Data[key]
				data.Annotations[refreshAt] = cur.Annotations[refreshAt]
				continue
			}
		}
		ts := pl.Tokens[key]
		req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
			ExpirationSeconds: &ts.ExpirationSeconds,
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: a.Name, UID: a.UID},
		}}
		if ts.Audience != "" {
			req.Spec.Audiences = []string{ts.Audience}
		}
		sa := a.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		tok, err := p.c.a.CoreV1().ServiceAccounts(a.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("mint a token of service account %s/%s for pod %s: %w", a.Namespace, sa, a.Name, err)
		}
		life := tok.Status.ExpirationTimestamp.Sub(time.Now())
		data.Data[key] = []byte(tok.Status.Token)
		data.Annotations[refreshAt] = time.Now().Add(life * 7 / 10).UTC().Format(time.RFC3339)
	}
	return p.putSecret(ctx, data)
}

func (p *provider) putConfigMap(ctx context.Context, want *v1.ConfigMap) error {
	api := p.c.b.CoreV1().ConfigMaps(want.Namespace)
	cur, err := p.bConfigs.ConfigMaps(want.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("copy %s to %s: %w", want.Annotations[AnnotSource], want.Namespace, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(cur.Data, want.Data) && apiequality.Semantic.DeepEqual(cur.BinaryData, want.BinaryData) &&
		sameOwners(cur.OwnerReferences, want.OwnerReferences) {
		return nil
	}
	next := cur.DeepCopy()
	next.Data, next.BinaryData = want.Data, want.BinaryData
	if len(want.OwnerReferences) > 0 {
		next.OwnerReferences = want.OwnerReferences
	}
	if _, err := api.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update the copy of %s in %s: %w", want.Annotations[AnnotSource], want.Namespace, err)
	}
	return nil
}

func (p *provider) putSecret(ctx context.Context, want *v1.Secret) error {
	api := p.c.b.CoreV1().Secrets(want.Namespace)
	cur, err := p.bSecrets.Secrets(want.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		if _, err := api.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("copy %s to %s: %w", want.Annotations[AnnotSource], want.Namespace, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(cur.Data, want.Data) && maps.Equal(cur.Annotations, want.Annotations) &&
		sameOwners(cur.OwnerReferences, want.OwnerReferences) {
		return nil
	}
	next := cur.DeepCopy()
	next.Data, next.Annotations = want.Data, want.Annotations
	if len(want.OwnerReferences) > 0 {
		next.OwnerReferences = want.OwnerReferences
	}
	if _, err := api.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update the copy of %s in %s: %w", want.Annotations[AnnotSource], want.Namespace, err)
	}
	return nil
}

// sameOwners tells whether want adds no owner to cur (an empty want keeps
// what is there).
func sameOwners(cur, want []metav1.OwnerReference) bool {
	return len(want) == 0 || apiequality.Semantic.DeepEqual(cur, want)
}

// deleteObjects removes the objects copied for a pod B refused.
func (p *provider) deleteObjects(ctx context.Context, pl *plan) {
	ns := pl.Pod.Namespace
	for _, n := range pl.ConfigMaps {
		_ = p.c.b.CoreV1().ConfigMaps(ns).Delete(ctx, n, metav1.DeleteOptions{})
	}
	for _, n := range pl.Secrets {
		_ = p.c.b.CoreV1().Secrets(ns).Delete(ctx, n, metav1.DeleteOptions{})
	}
	_ = p.c.b.CoreV1().Secrets(ns).Delete(ctx, pl.PodData, metav1.DeleteOptions{})
}

// resync keeps every copy's objects in step with A (an updated ConfigMap,
// changed labels for the downward API, tokens due for renewal) until ctx
// ends.
func (p *provider) resync(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.collectOrphans(ctx)
		for _, b := range p.copies() {
			ns, name := b.Annotations[AnnotNamespace], b.Annotations[AnnotName]
			a, err := p.aPods.Pods(ns).Get(name)
			if err != nil || string(a.UID) != b.Labels[LabelPodUID] || a.DeletionTimestamp != nil {
				continue
			}
			if drifted(a, b) {
				// Another writer changed A's status: A's node controller
				// marks the pods of a node NotReady while connect is down,
				// and B's status, unchanged, would not correct it.
				p.queue.Add(ns + "/" + name)
			}
			pl, err := translate(a, p.target(a.Namespace))
			if err != nil {
				continue
			}
			if err := p.syncObjects(ctx, a, pl, b); err != nil {
				p.c.log.Warn("keep the copied objects of a pod in step", "pod", ns+"/"+name, "err", err)
			}
		}
	}
}

// collectOrphans deletes the copied objects of pods that have no copy in
// B: a connect stopped between copying a pod's objects and creating the
// pod leaves them without an owner for B's garbage collector. A minute's
// grace keeps those of a pod being created.
func (p *provider) collectOrphans(ctx context.Context) {
	live := map[string]bool{}
	for _, b := range p.copies() {
		live[b.Labels[LabelPodUID]] = true
	}
	old := func(m metav1.ObjectMeta) bool {
		return len(m.OwnerReferences) == 0 && !live[m.Labels[LabelPodUID]] && time.Since(m.CreationTimestamp.Time) > time.Minute
	}
	cms, _ := p.bConfigs.ConfigMaps(p.c.bNS).List(p.c.copySelector())
	for _, o := range cms {
		if old(o.ObjectMeta) {
			_ = p.c.b.CoreV1().ConfigMaps(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &o.UID}})
		}
	}
	secs, _ := p.bSecrets.Secrets(p.c.bNS).List(p.c.copySelector())
	for _, o := range secs {
		if old(o.ObjectMeta) {
			_ = p.c.b.CoreV1().Secrets(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &o.UID}})
		}
	}
}

// drifted tells whether A's pod shows another phase, condition or
// container readiness than its copy in B.
func drifted(a, b *v1.Pod) bool {
	if _, set := a.Annotations[deletionCost]; a.Labels[BurstLabel] != "" && !set {
		return true
	}
	if a.Status.Phase != b.Status.Phase || len(a.Status.ContainerStatuses) != len(b.Status.ContainerStatuses) {
		return true
	}
	conds := map[v1.PodConditionType]v1.ConditionStatus{}
	for _, c := range b.Status.Conditions {
		conds[c.Type] = c.Status
	}
	for _, c := range a.Status.Conditions {
		if want, ok := conds[c.Type]; ok && want != c.Status {
			return true
		}
	}
	for i, c := range a.Status.ContainerStatuses {
		if c.Ready != b.Status.ContainerStatuses[i].Ready || c.RestartCount != b.Status.ContainerStatuses[i].RestartCount {
			return true
		}
	}
	return false
}
