// Package tenant is CCI's tenancy: the Tenant custom resource (a
// cluster-scoped CRD the control plane installs) and the controller that
// gives each Tenant its namespace, identity, RBAC, quota and limits, and
// takes all of it away when the Tenant is deleted.
//
// A Tenant's life:
//
//	created ─► Pending (namespace, service account, token, RBAC, quota made;
//	   │        waiting for the token and the quota to be live)
//	   │          │
//	   │          ▼
//	   │        Ready ◄─► Failed (e.g. its namespace belongs to someone else)
//	   ▼
//	deleted ─► Terminating (namespace deleted: its pods stop) ─► gone
//	           (finalizer removed once the namespace is gone)
package tenant

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// API names.
const (
	Group    = "cci.io"
	Version  = "v1alpha1"
	Kind     = "Tenant"
	Resource = "tenants"
	CRDName  = Resource + "." + Group
)

// GVR is the Tenant resource for dynamic clients.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// Names of what the controller makes for a tenant.
const (
	// Label marks a tenant's namespace: cci.io/tenant=<tenant name>. The
	// admission policy applies to namespaces with it; metering finds a
	// pod's tenant by it.
	Label = "cci.io/tenant"
	// Finalizer keeps a deleted Tenant until its namespace is gone.
	Finalizer = "cci.io/tenant-cleanup"
	// ServiceAccount is the tenant's identity in its namespace.
	ServiceAccount = "tenant"
	// TokenSecret holds the service account's long-lived token.
	TokenSecret = "tenant-token"
	// RoleName names the Role, RoleBinding, ResourceQuota and LimitRange.
	RoleName = "cci-tenant"
	// PullSecret holds the tenant's credentials for the built-in registry
	// (type kubernetes.io/dockerconfigjson); admission adds it to every
	// pod of the tenant as an imagePullSecret.
	PullSecret = "cci-registry"
)

// Phases of a Tenant.
const (
	PhasePending     = "Pending"
	PhaseReady       = "Ready"
	PhaseFailed      = "Failed"
	PhaseTerminating = "Terminating"
)

// DefaultQuota applies to every quota resource a Tenant does not name.
var DefaultQuota = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("8"),
	corev1.ResourceMemory: resource.MustParse("32Gi"),
	corev1.ResourcePods:   resource.MustParse("50"),
	"nvidia.com/gpu":      resource.MustParse("0"),
	// What the tenant's PersistentVolumeClaims may ask for in all.
	corev1.ResourceStorage: resource.MustParse("100Gi"),
}

// Tenant is one customer: a namespace and an identity to run pods with.
type Tenant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              Spec   `json:"spec,omitempty"`
	Status            Status `json:"status,omitempty"`
}

// Spec is what the admin asks for.
type Spec struct {
	// Quota caps the tenant's namespace: cpu, memory, pods and
	// nvidia.com/gpu (requests, which admission makes equal to limits);
	// storage (what its PersistentVolumeClaims ask for), per StorageClass
	// as <class>.storageclass.storage.k8s.io/requests.storage, and
	// persistentvolumeclaims (their number). Missing keys take DefaultQuota.
	Quota corev1.ResourceList `json:"quota,omitempty"`
	// AllowRunc lets the tenant's pods use the runc runtime class (no sandbox).
	AllowRunc bool `json:"allowRunc,omitempty"`
	// RuntimeClassName is set on the tenant's pods that name none. Default "gvisor".
	RuntimeClassName string `json:"runtimeClassName,omitempty"`
	// Pools are the host pools the tenant's pods may run in (a pod picks
	// one with the annotation cci.io/pool or by asking for a device).
	// Default ["general"].
	Pools []string `json:"pools,omitempty"`
}

// Status is what the controller reports.
type Status struct {
	// Namespace is the tenant's namespace (named after the tenant).
	Namespace string `json:"namespace,omitempty"`
	// Phase: Pending, Ready, Failed or Terminating.
	Phase string `json:"phase,omitempty"`
	// TokenSecret is the Secret in Namespace with the tenant's token and CA
	// (keys token, ca.crt), from which `cci tenant create` writes a kubeconfig.
	TokenSecret string `json:"tokenSecret,omitempty"`
	// ObservedGeneration is the spec generation this status is about.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Quota is the tenant's quota with defaults filled in.
func (t *Tenant) Quota() corev1.ResourceList {
	q := corev1.ResourceList{}
	for k, v := range DefaultQuota {
		q[k] = v.DeepCopy()
	}
	for k, v := range t.Spec.Quota {
		q[k] = v.DeepCopy()
	}
	return q
}

// FromUnstructured reads a Tenant from a dynamic client's object.
func FromUnstructured(u *unstructured.Unstructured) (*Tenant, error) {
	raw, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	t := &Tenant{}
	if err := json.Unmarshal(raw, t); err != nil {
		return nil, fmt.Errorf("decode tenant %q: %w", u.GetName(), err)
	}
	return t, nil
}

// ToUnstructured writes a Tenant for a dynamic client.
func ToUnstructured(t *Tenant) (*unstructured.Unstructured, error) {
	t.APIVersion = Group + "/" + Version
	t.Kind = Kind
	raw, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("encode tenant %q: %w", t.Name, err)
	}
	return u, nil
}
