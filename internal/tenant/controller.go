package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/cci-project/cci/internal/isolation"
	"github.com/cci-project/cci/internal/policy"
	"github.com/cci-project/cci/internal/registry"
)

// Rules is the workload API a tenant may use in its own namespace.
var Rules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods", "services", "endpoints", "configmaps", "secrets", "persistentvolumeclaims", "events"}, Verbs: allVerbs},
	{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach", "pods/portforward"}, Verbs: []string{"get", "create"}},
	{APIGroups: []string{"apps"}, Resources: []string{"deployments", "replicasets", "statefulsets"}, Verbs: allVerbs},
	{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale", "replicasets/scale", "statefulsets/scale"}, Verbs: []string{"get", "update", "patch"}},
	{APIGroups: []string{"batch"}, Resources: []string{"jobs", "cronjobs"}, Verbs: allVerbs},
	{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: allVerbs},
	{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: allVerbs},
	{APIGroups: []string{"autoscaling"}, Resources: []string{"horizontalpodautoscalers"}, Verbs: allVerbs},
	{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: allVerbs},
	// Gateway API in its own namespace only (a Role): a Gateway of class
	// cci gets an address of the load-balancer pool; a route reaches
	// another namespace's Service only where a ReferenceGrant there says so.
	{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gateways", "httproutes", "grpcroutes", "referencegrants"}, Verbs: allVerbs},
	// Read only: a tenant sees its quota and defaults (the console's
	// overview, kubectl describe quota) but cannot change them.
	{APIGroups: []string{""}, Resources: []string{"resourcequotas", "limitranges"}, Verbs: []string{"get", "list", "watch"}},
	// Its pods' CPU and memory (kubectl top pod, the console's charts).
	{APIGroups: []string{"metrics.k8s.io"}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
}

var allVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}

// Controller reconciles Tenants. Run it once; Lookup is safe for concurrent
// use once Run has synced (see Synced).
type Controller struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	log    *slog.Logger
	queue  workqueue.TypedRateLimitingInterface[string]
	tenant cache.SharedIndexInformer
	synced chan struct{}
	// registry issues the tenants' registry credentials; nil: none.
	registry *RegistryAccess
}

// RegistryAccess is how tenants get credentials for the built-in registry.
type RegistryAccess struct {
	// Hosts are the registry's host:port names, as images spell them.
	Hosts []string
	// Password returns the password of the tenant of that name and UID;
	// the user name is the tenant's name.
	Password func(name, uid string) string
}

// WithRegistry makes the controller write each tenant's registry
// credentials into the Secret PullSecret of its namespace. Call before Run.
func (c *Controller) WithRegistry(r RegistryAccess) *Controller {
	c.registry = &r
	return c
}

// UID returns the UID of the Tenant named name; ok is false when there is
// none or it is being deleted (its credentials stop working then).
func (c *Controller) UID(name string) (uid string, ok bool) {
	t, ok := c.Lookup(name)
	if !ok || t.DeletionTimestamp != nil || t.UID == "" {
		return "", false
	}
	return string(t.UID), true
}

// NewController makes a controller that talks to the apiserver with kube and
// dyn (admin credentials).
func NewController(kube kubernetes.Interface, dyn dynamic.Interface, log *slog.Logger) *Controller {
	c := &Controller{
		kube:   kube,
		dyn:    dyn,
		log:    log,
		queue:  workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "tenants"}),
		synced: make(chan struct{}),
	}
	c.tenant = dynamicinformer.NewFilteredDynamicInformer(dyn, GVR, "", 10*time.Minute, cache.Indexers{}, nil).Informer()
	return c
}

// Synced is closed once the controller has read every Tenant.
func (c *Controller) Synced() <-chan struct{} { return c.synced }

// Lookup returns the Tenant named name from the controller's cache.
func (c *Controller) Lookup(name string) (*Tenant, bool) {
	obj, ok, err := c.tenant.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, false
	}
	t, err := FromUnstructured(u)
	if err != nil {
		return nil, false
	}
	return t, true
}

// PolicyRules are the admission rules for the pods of the tenant whose
// namespace is ns (tenant namespaces are named after their tenant).
func (c *Controller) PolicyRules(ns string) policy.Rules {
	t, ok := c.Lookup(ns)
	if !ok {
		return policy.Rules{}
	}
	r := policy.Rules{DefaultRuntimeClass: t.Spec.RuntimeClassName, AllowRunc: t.Spec.AllowRunc, Tenant: t.Name, Pools: t.Spec.Pools}
	if c.registry != nil {
		r.PullSecret = PullSecret
	}
	return r
}

// Run watches Tenants and their namespaces and reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer c.queue.ShutDown()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	if _, err := c.tenant.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	// A tenant namespace's changes (above all its deletion) requeue its tenant.
	nsFactory := informers.NewSharedInformerFactoryWithOptions(c.kube, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = Label }))
	nsInformer := nsFactory.Core().V1().Namespaces().Informer()
	byLabel := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if ns, ok := obj.(*corev1.Namespace); ok && ns.Labels[Label] != "" {
			c.queue.Add(ns.Labels[Label])
		}
	}
	if _, err := nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    byLabel,
		UpdateFunc: func(_, obj any) { byLabel(obj) },
		DeleteFunc: byLabel,
	}); err != nil {
		return err
	}
	go c.tenant.Run(ctx.Done())
	nsFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.tenant.HasSynced, nsInformer.HasSynced) {
		return ctx.Err()
	}
	close(c.synced)
	c.log.Info("tenant controller running")
	for range workers {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) worker(ctx context.Context) {
	for {
		name, quit := c.queue.Get()
		if quit {
			return
		}
		requeue, err := c.reconcile(ctx, name)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				c.log.Warn("reconcile tenant", "tenant", name, "err", err)
			}
			c.queue.AddRateLimited(name)
		case requeue > 0:
			c.queue.Forget(name)
			c.queue.AddAfter(name, requeue)
		default:
			c.queue.Forget(name)
		}
		c.queue.Done(name)
	}
}

// errNotOurs: the tenant's namespace exists and is not the tenant's.
var errNotOurs = errors.New("namespace exists and does not belong to this tenant")

// reconcile brings one tenant to its wanted state; a positive duration asks
// to look again after it.
func (c *Controller) reconcile(ctx context.Context, name string) (time.Duration, error) {
	obj, ok, err := c.tenant.GetStore().GetByKey(name)
	if err != nil || !ok {
		return 0, err
	}
	t, err := FromUnstructured(obj.(*unstructured.Unstructured))
	if err != nil {
		return 0, err
	}
	log := c.log.With("tenant", name)
	if t.DeletionTimestamp != nil {
		return c.finalize(ctx, log, t)
	}
	if !slices.Contains(t.Finalizers, Finalizer) {
		t.Finalizers = append(t.Finalizers, Finalizer)
		u, err := ToUnstructured(t)
		if err != nil {
			return 0, err
		}
		// The update comes back through the informer and reconciles again.
		_, err = c.dyn.Resource(GVR).Update(ctx, u, metav1.UpdateOptions{})
		return 0, err
	}

	status := Status{Namespace: name, TokenSecret: TokenSecret, ObservedGeneration: t.Generation, Conditions: slices.Clone(t.Status.Conditions)}
	ready, why, err := c.ensure(ctx, t)
	requeue := time.Duration(0)
	switch {
	case errors.Is(err, errNotOurs):
		status.Phase = PhaseFailed
		setReady(&status, t.Generation, metav1.ConditionFalse, "NamespaceTaken", fmt.Sprintf("namespace %q exists and does not belong to tenant %q; delete the tenant and choose another name", name, name))
		err = nil
	case err != nil:
		status.Phase = PhasePending
		setReady(&status, t.Generation, metav1.ConditionFalse, "Reconciling", err.Error())
	case !ready:
		status.Phase = PhasePending
		setReady(&status, t.Generation, metav1.ConditionFalse, "Waiting", why)
		requeue = 500 * time.Millisecond
	default:
		status.Phase = PhaseReady
		setReady(&status, t.Generation, metav1.ConditionTrue, "Ready", "namespace, identity, RBAC and quota in place")
	}
	wasReady := t.Status.Phase == PhaseReady
	if serr := c.writeStatus(ctx, t, status); serr != nil && err == nil {
		err = serr
	}
	if err == nil && status.Phase == PhaseReady && !wasReady {
		log.Info("tenant ready", "namespace", name)
	}
	return requeue, err
}

func setReady(s *Status, gen int64, st metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: "Ready", Status: st, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func (c *Controller) writeStatus(ctx context.Context, t *Tenant, s Status) error {
	if apiequality.Semantic.DeepEqual(t.Status, s) {
		return nil
	}
	t.Status = s
	u, err := ToUnstructured(t)
	if err != nil {
		return err
	}
	_, err = c.dyn.Resource(GVR).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer version is on its way through the informer
	}
	return err
}

// finalize deletes the tenant's namespace (which stops its pods and removes
// everything in it) and lets the Tenant go once the namespace is gone.
func (c *Controller) finalize(ctx context.Context, log *slog.Logger, t *Tenant) (time.Duration, error) {
	if !slices.Contains(t.Finalizers, Finalizer) {
		return 0, nil
	}
	ns, err := c.kube.CoreV1().Namespaces().Get(ctx, t.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return 0, err
	case ns.Labels[Label] != t.Name:
		// Not ours: leave it alone.
	default:
		if t.Status.Phase != PhaseTerminating {
			s := t.Status
			s.Conditions = slices.Clone(s.Conditions)
			s.Phase = PhaseTerminating
			setReady(&s, t.Generation, metav1.ConditionFalse, "Terminating", "deleting namespace "+t.Name)
			if err := c.writeStatus(ctx, t, s); err != nil {
				return 0, err
			}
		}
		if ns.DeletionTimestamp == nil {
			log.Info("deleting tenant namespace", "namespace", t.Name)
			if err := c.kube.CoreV1().Namespaces().Delete(ctx, t.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return 0, fmt.Errorf("delete namespace %q: %w", t.Name, err)
			}
		}
		// The namespace informer requeues on its deletion; poll as well.
		return 2 * time.Second, nil
	}
	u, err := c.dyn.Resource(GVR).Get(ctx, t.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	u.SetFinalizers(slices.DeleteFunc(u.GetFinalizers(), func(f string) bool { return f == Finalizer }))
	if _, err := c.dyn.Resource(GVR).Update(ctx, u, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("remove finalizer: %w", err)
	}
	log.Info("tenant deleted")
	return 0, nil
}

// ensure makes everything of the tenant exist as wanted; ready says whether
// the token and the quota are live, why says what is awaited.
func (c *Controller) ensure(ctx context.Context, t *Tenant) (ready bool, why string, err error) {
	name := t.Name
	core := c.kube.CoreV1()
	ns, err := core.Namespaces().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		ns, err = core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			// Tenants are isolated from each other by default.
			Name: name, Labels: map[string]string{Label: name, isolation.Label: isolation.DefaultDeny},
		}}, metav1.CreateOptions{})
		if err != nil {
			return false, "", fmt.Errorf("create namespace: %w", err)
		}
	case err != nil:
		return false, "", err
	case ns.Labels[Label] != name:
		return false, "", errNotOurs
	}
	if ns.DeletionTimestamp != nil {
		return false, "namespace " + name + " is still being deleted", nil
	}

	if _, err := core.ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ServiceAccount}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, "", fmt.Errorf("create service account: %w", err)
	}
	if _, err := core.Secrets(name).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: TokenSecret, Annotations: map[string]string{corev1.ServiceAccountNameKey: ServiceAccount}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, "", fmt.Errorf("create token secret: %w", err)
	}

	if c.registry != nil {
		pass := c.registry.Password(t.Name, string(t.UID))
		want := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: PullSecret, Namespace: name},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: registry.DockerConfig(c.registry.Hosts, t.Name, pass)},
		}
		// The tenant may edit Secrets of its namespace: a changed or
		// deleted one is put back at the next reconcile.
		if err := upsert(ctx, core.Secrets(name).Get, core.Secrets(name).Create, core.Secrets(name).Update, want,
			func(cur, want *corev1.Secret) bool {
				return cur.Type == want.Type && apiequality.Semantic.DeepEqual(cur.Data, want.Data)
			},
			func(cur, want *corev1.Secret) { cur.Data = want.Data }); err != nil {
			return false, "", err
		}
	}

	rbac := c.kube.RbacV1()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: RoleName, Namespace: name}, Rules: Rules}
	if err := upsert(ctx, rbac.Roles(name).Get, rbac.Roles(name).Create, rbac.Roles(name).Update, role,
		func(cur, want *rbacv1.Role) bool { return apiequality.Semantic.DeepEqual(cur.Rules, want.Rules) },
		func(cur, want *rbacv1.Role) { cur.Rules = want.Rules }); err != nil {
		return false, "", err
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: RoleName, Namespace: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: RoleName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: ServiceAccount, Namespace: name}},
	}
	if _, err := rbac.RoleBindings(name).Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, "", fmt.Errorf("create role binding: %w", err)
	}

	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: RoleName, Namespace: name}, Spec: corev1.ResourceQuotaSpec{Hard: quotaHard(t.Quota())}}
	rq := core.ResourceQuotas(name)
	if err := upsert(ctx, rq.Get, rq.Create, rq.Update, quota,
		func(cur, want *corev1.ResourceQuota) bool { return apiequality.Semantic.DeepEqual(cur.Spec, want.Spec) },
		func(cur, want *corev1.ResourceQuota) { cur.Spec = want.Spec }); err != nil {
		return false, "", err
	}
	limits := &corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Name: RoleName, Namespace: name}, Spec: limitRange()}
	lr := core.LimitRanges(name)
	if err := upsert(ctx, lr.Get, lr.Create, lr.Update, limits,
		func(cur, want *corev1.LimitRange) bool { return apiequality.Semantic.DeepEqual(cur.Spec, want.Spec) },
		func(cur, want *corev1.LimitRange) { cur.Spec = want.Spec }); err != nil {
		return false, "", err
	}

	// Live: the token controller filled the secret, the quota controller
	// published the quota's hard limits (admission enforces only those).
	sec, err := core.Secrets(name).Get(ctx, TokenSecret, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	if len(sec.Data[corev1.ServiceAccountTokenKey]) == 0 {
		return false, "waiting for the service account token", nil
	}
	cur, err := rq.Get(ctx, RoleName, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	if !apiequality.Semantic.DeepEqual(cur.Status.Hard, cur.Spec.Hard) {
		return false, "waiting for the resource quota to be enforced", nil
	}
	if t.Status.Phase != PhaseReady && !c.policyActive(ctx, name) {
		return false, "waiting for the apiserver to apply the admission policy", nil
	}
	return true, "", nil
}

// policyActive says whether the apiserver sends the namespace's requests
// through the tenant admission policy: a dry run of something it refuses
// (a NodePort Service) must come back refused by it. Right after the
// control plane's first start the apiserver may not have loaded the
// webhook configurations yet; a tenant is not Ready (and gets no
// kubeconfig) before they apply to it.
func (c *Controller) policyActive(ctx context.Context, ns string) bool {
	_, err := c.kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cci-policy-probe"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err != nil && strings.Contains(err.Error(), policy.RefusalPrefix)
}

// GatewayCount is ResourceQuota's object count of Gateways.
const GatewayCount corev1.ResourceName = "count/gateways.gateway.networking.k8s.io"

// quotaHard maps the tenant's quota to ResourceQuota keys. Admission makes
// requests equal to limits, so requests are what is counted.
func quotaHard(q corev1.ResourceList) corev1.ResourceList {
	hard := corev1.ResourceList{}
	for k, v := range q {
		switch k {
		case corev1.ResourceCPU:
			hard[corev1.ResourceRequestsCPU] = v
		case corev1.ResourceMemory:
			hard[corev1.ResourceRequestsMemory] = v
		case corev1.ResourcePods, corev1.ResourcePersistentVolumeClaims:
			hard[k] = v
		case corev1.ResourceServicesLoadBalancers:
			// A Gateway takes an address of the same pool, through a
			// Service in cci-gateways, outside the namespace's count:
			// Gateways are counted apart, to the same number.
			hard[k] = v
			hard[GatewayCount] = v
		case corev1.ResourceStorage:
			// What the tenant's claims ask for, of every StorageClass.
			hard[corev1.ResourceRequestsStorage] = v
		default:
			if strings.HasSuffix(string(k), ".storageclass.storage.k8s.io/requests.storage") ||
				strings.HasSuffix(string(k), ".storageclass.storage.k8s.io/persistentvolumeclaims") {
				// Per StorageClass, as ResourceQuota spells it.
				hard[k] = v
				continue
			}
			hard[corev1.ResourceName("requests."+string(k))] = v
		}
	}
	return hard
}

// limitRange gives containers without requests the default flavor's share
// before admission runs, so that quota always sees requests. It sets no
// limits and no maximum (a LimitRange's max would become every container's
// default limit): admission makes limits equal to requests and bounds the
// pod by the flavor table.
func limitRange() corev1.LimitRangeSpec {
	return corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{
		Type:           corev1.LimitTypeContainer,
		DefaultRequest: corev1.ResourceList{corev1.ResourceCPU: policy.DefaultCPU, corev1.ResourceMemory: policy.DefaultMemory},
	}}}
}

// upsert creates want or updates the existing object when same says it differs.
func upsert[T metav1.Object](ctx context.Context,
	get func(context.Context, string, metav1.GetOptions) (T, error),
	create func(context.Context, T, metav1.CreateOptions) (T, error),
	update func(context.Context, T, metav1.UpdateOptions) (T, error),
	want T, same func(cur, want T) bool, set func(cur, want T)) error {
	cur, err := get(ctx, want.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if _, err := create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", want.GetName(), err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if same(cur, want) {
		return nil
	}
	set(cur, want)
	if _, err := update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update %s: %w", want.GetName(), err)
	}
	return nil
}
