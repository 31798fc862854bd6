package metering

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/cci-project/cci/internal/crdutil"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// Labels on UsageRecords, for selecting them without reading them all.
const (
	monthLabel = "cci.io/month" // 2006-01
	openLabel  = "cci.io/open"  // "true" while a line is open
)

// Group, version and resource of the UsageRecord CRD.
var UsageRecordResource = schema.GroupVersionResource{Group: "cci.io", Version: "v1alpha1", Resource: "usagerecords"}

// UsageRecord is one tenant's usage in one UTC hour, one line per pod and
// one per volume (per size it had in that hour).
// Cluster-scoped, so that deleting a tenant's namespace keeps its bill, and
// out of the tenants' reach (they read usage through the usage endpoint).
type UsageRecord struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              UsageRecordSpec `json:"spec"`
}

// UsageRecordSpec is the content of a UsageRecord.
type UsageRecordSpec struct {
	Tenant string      `json:"tenant"`
	Hour   metav1.Time `json:"hour"`
	Pods   []PodLine   `json:"pods,omitempty"`
	// Volumes are the tenant's bound PersistentVolumes, billed by their
	// provisioned size.
	Volumes []VolumeLine `json:"volumes,omitempty"`
	// Totals sum the lines, for people reading records with kubectl.
	Totals Totals `json:"totals"`
}

// VolumeLine is one PersistentVolume, at one provisioned size, inside the
// record's hour. A volume grown in the hour has a line per size; a line is
// known by UID and Since.
type VolumeLine struct {
	UID string `json:"uid"` // the PersistentVolume's
	// Name is the PersistentVolume's; Namespace and Claim name its claim.
	Name         string `json:"name"`
	Namespace    string `json:"namespace"`
	Claim        string `json:"claim"`
	StorageClass string `json:"storageClass"`
	// SizeMiB is the provisioned size (spec.capacity), rounded up to whole MiB.
	SizeMiB int64 `json:"sizeMiB"`
	// Since is when the volume got this size: its binding, or the moment
	// the meter saw it grow.
	Since metav1.Time `json:"since"`
	Start metav1.Time `json:"start"`
	End   metav1.Time `json:"end"`
	// Open marks a volume still provisioned at this size when the line was
	// written; End is then the last moment the meter saw it.
	Open   bool         `json:"open,omitempty"`
	Totals VolumeTotals `json:"totals"`
}

// VolumeTotals are a volume line's integer size-seconds.
type VolumeTotals struct {
	Seconds    int64 `json:"seconds"`
	MiBSeconds int64 `json:"mibSeconds"`
}

func (l VolumeLine) interval() Interval { return Interval{second(l.Start.Time), second(l.End.Time)} }

// PodLine is one pod's metered interval inside the record's hour.
type PodLine struct {
	UID       string      `json:"uid"`
	Namespace string      `json:"namespace"`
	Name      string      `json:"name"`
	Flavor    Flavor      `json:"flavor"`
	Start     metav1.Time `json:"start"`
	End       metav1.Time `json:"end"`
	// Open marks a pod still running when the line was written; End is
	// then the last moment the meter saw it run.
	Open   bool   `json:"open,omitempty"`
	Totals Totals `json:"totals"`
}

// Totals are integer resource-seconds: exact, so sums never drift.
type Totals struct {
	Seconds          int64 `json:"seconds"`
	MilliCoreSeconds int64 `json:"milliCoreSeconds"`
	MiBSeconds       int64 `json:"mibSeconds"`
	GPUSeconds       int64 `json:"gpuSeconds,omitempty"`
	// StorageMiBSeconds sums the volume lines (all classes); the other
	// fields are the pods'.
	StorageMiBSeconds int64 `json:"storageMiBSeconds,omitempty"`
}

func (t Totals) add(o Totals) Totals {
	return Totals{t.Seconds + o.Seconds, t.MilliCoreSeconds + o.MilliCoreSeconds, t.MiBSeconds + o.MiBSeconds, t.GPUSeconds + o.GPUSeconds, t.StorageMiBSeconds + o.StorageMiBSeconds}
}

// totalsOf is what a flavor costs over seconds.
func totalsOf(f Flavor, seconds int64) Totals {
	return Totals{seconds, seconds * f.MilliCPU, seconds * f.MemoryMiB, seconds * f.GPU, 0}
}

func (l PodLine) interval() Interval { return Interval{second(l.Start.Time), second(l.End.Time)} }

// recordName names the record of tenant for hour.
func recordName(tenant string, hour time.Time) string {
	return fmt.Sprintf("%s.%s", tenant, hour.UTC().Format("20060102-15"))
}

func newRecord(tenant string, hour time.Time) *UsageRecord {
	return &UsageRecord{
		TypeMeta: metav1.TypeMeta{APIVersion: UsageRecordResource.GroupVersion().String(), Kind: "UsageRecord"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   recordName(tenant, hour),
			Labels: map[string]string{TenantLabel: tenant, monthLabel: hour.UTC().Format("2006-01")},
		},
		Spec: UsageRecordSpec{Tenant: tenant, Hour: metav1.NewTime(hour.UTC())},
	}
}

// setLine puts (or, for an empty interval, removes) the line of uid and
// reports whether the record changed.
func (r *UsageRecord) setLine(l PodLine) bool {
	empty := l.interval().Empty()
	l.Totals = totalsOf(l.Flavor, l.interval().Seconds())
	for i, old := range r.Spec.Pods {
		if old.UID != l.UID {
			continue
		}
		if empty {
			r.Spec.Pods = append(r.Spec.Pods[:i], r.Spec.Pods[i+1:]...)
			r.settle()
			return true
		}
		if old.Open == l.Open && old.Flavor == l.Flavor && old.Start.Equal(&l.Start) && old.End.Equal(&l.End) && old.Name == l.Name && old.Namespace == l.Namespace {
			return false
		}
		r.Spec.Pods[i] = l
		r.settle()
		return true
	}
	if empty {
		return false
	}
	r.Spec.Pods = append(r.Spec.Pods, l)
	r.settle()
	return true
}

// setVolumeLine puts (or, for an empty interval, removes) the line of a
// volume at one size and reports whether the record changed.
func (r *UsageRecord) setVolumeLine(l VolumeLine) bool {
	empty := l.interval().Empty()
	secs := l.interval().Seconds()
	l.Totals = VolumeTotals{Seconds: secs, MiBSeconds: secs * l.SizeMiB}
	for i, old := range r.Spec.Volumes {
		if old.UID != l.UID || !old.Since.Equal(&l.Since) {
			continue
		}
		if empty {
			r.Spec.Volumes = append(r.Spec.Volumes[:i], r.Spec.Volumes[i+1:]...)
			r.settle()
			return true
		}
		if old.Open == l.Open && old.SizeMiB == l.SizeMiB && old.Start.Equal(&l.Start) && old.End.Equal(&l.End) &&
			old.Name == l.Name && old.Namespace == l.Namespace && old.Claim == l.Claim && old.StorageClass == l.StorageClass {
			return false
		}
		r.Spec.Volumes[i] = l
		r.settle()
		return true
	}
	if empty {
		return false
	}
	r.Spec.Volumes = append(r.Spec.Volumes, l)
	r.settle()
	return true
}

// settle recomputes totals, keeps lines in a stable order and the open label.
func (r *UsageRecord) settle() {
	sort.Slice(r.Spec.Pods, func(i, j int) bool {
		a, b := r.Spec.Pods[i], r.Spec.Pods[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.UID < b.UID
	})
	sort.Slice(r.Spec.Volumes, func(i, j int) bool {
		a, b := r.Spec.Volumes[i], r.Spec.Volumes[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Claim != b.Claim {
			return a.Claim < b.Claim
		}
		if a.UID != b.UID {
			return a.UID < b.UID
		}
		return a.Since.Before(&b.Since)
	})
	var t Totals
	open := false
	for _, l := range r.Spec.Pods {
		t = t.add(l.Totals)
		open = open || l.Open
	}
	for _, l := range r.Spec.Volumes {
		t.StorageMiBSeconds += l.Totals.MiBSeconds
		open = open || l.Open
	}
	r.Spec.Totals = t
	if r.Labels == nil {
		r.Labels = map[string]string{}
	}
	if open {
		r.Labels[openLabel] = "true"
	} else {
		delete(r.Labels, openLabel)
	}
}

// Store keeps UsageRecords. The meter is its only writer; Put may be called
// from one goroutine at a time, Get and List from any. Records returned are
// the caller's to change.
type Store interface {
	// Get returns the named record, or nil and no error when there is none.
	Get(ctx context.Context, name string) (*UsageRecord, error)
	// Put creates a record without a resourceVersion and updates one with
	// it (failing on a conflict); it returns the record as stored.
	Put(ctx context.Context, r *UsageRecord) (*UsageRecord, error)
	// List returns the records matching sel.
	List(ctx context.Context, sel labels.Selector) ([]UsageRecord, error)
}

// apiStore keeps UsageRecords in the apiserver.
type apiStore struct {
	c dynamic.NamespaceableResourceInterface
}

// NewAPIStore keeps records as usagerecords.cci.io objects.
func NewAPIStore(c dynamic.Interface) Store {
	return apiStore{c.Resource(UsageRecordResource)}
}

func (s apiStore) Get(ctx context.Context, name string) (*UsageRecord, error) {
	u, err := s.c.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get usage record %q: %w", name, err)
	}
	return fromUnstructured(u)
}

func (s apiStore) Put(ctx context.Context, r *UsageRecord) (*UsageRecord, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(r)
	if err != nil {
		return nil, fmt.Errorf("encode usage record %q: %w", r.Name, err)
	}
	u := &unstructured.Unstructured{Object: obj}
	if r.ResourceVersion == "" {
		u, err = s.c.Create(ctx, u, metav1.CreateOptions{})
	} else {
		u, err = s.c.Update(ctx, u, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("write usage record %q: %w", r.Name, err)
	}
	return fromUnstructured(u)
}

func (s apiStore) List(ctx context.Context, sel labels.Selector) ([]UsageRecord, error) {
	l, err := s.c.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list usage records: %w", err)
	}
	out := make([]UsageRecord, 0, len(l.Items))
	for i := range l.Items {
		r, err := fromUnstructured(&l.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
	return out, nil
}

func fromUnstructured(u *unstructured.Unstructured) (*UsageRecord, error) {
	r := &UsageRecord{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, r); err != nil {
		return nil, fmt.Errorf("decode usage record %q: %w", u.GetName(), err)
	}
	return r, nil
}

// InstallCRD creates or updates the UsageRecord CRD and waits until the
// apiserver serves it.
func InstallCRD(ctx context.Context, c apiextensions.Interface) error {
	crd := usageRecordCRD()
	crds := c.ApiextensionsV1().CustomResourceDefinitions()
	old, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = crds.Create(ctx, crd, metav1.CreateOptions{})
	case err == nil:
		crd.ResourceVersion = old.ResourceVersion
		_, err = crds.Update(ctx, crd, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("install CRD %q: %w", crd.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return crdutil.WaitEstablished(ctx, crds, crd.Name)
}

func usageRecordCRD() *apiextensionsv1.CustomResourceDefinition {
	str := apiextensionsv1.JSONSchemaProps{Type: "string"}
	date := apiextensionsv1.JSONSchemaProps{Type: "string", Format: "date-time"}
	integer := apiextensionsv1.JSONSchemaProps{Type: "integer", Format: "int64"}
	totals := apiextensionsv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
		"seconds": integer, "milliCoreSeconds": integer, "mibSeconds": integer, "gpuSeconds": integer, "storageMiBSeconds": integer,
	}}
	volume := apiextensionsv1.JSONSchemaProps{
		Type:     "object",
		Required: []string{"uid", "name", "namespace", "claim", "storageClass", "sizeMiB", "since", "start", "end"},
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"uid": str, "name": str, "namespace": str, "claim": str, "storageClass": str, "sizeMiB": integer,
			"since": date, "start": date, "end": date, "open": {Type: "boolean"},
			"totals": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{"seconds": integer, "mibSeconds": integer}},
		},
	}
	line := apiextensionsv1.JSONSchemaProps{
		Type:     "object",
		Required: []string{"uid", "namespace", "name", "flavor", "start", "end"},
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"uid": str, "namespace": str, "name": str, "start": date, "end": date,
			"open": {Type: "boolean"},
			"flavor": {Type: "object", Properties: map[string]apiextensionsv1.JSONSchemaProps{
				"milliCPU": integer, "memoryMiB": integer, "gpu": integer,
			}},
			"totals": totals,
		},
	}
	spec := apiextensionsv1.JSONSchemaProps{
		Type:     "object",
		Required: []string{"tenant", "hour"},
		Properties: map[string]apiextensionsv1.JSONSchemaProps{
			"tenant": str, "hour": date, "totals": totals,
			"pods":    {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &line}},
			"volumes": {Type: "array", Items: &apiextensionsv1.JSONSchemaPropsOrArray{Schema: &volume}},
		},
	}
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: UsageRecordResource.Resource + "." + UsageRecordResource.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: UsageRecordResource.Group,
			Scope: apiextensionsv1.ClusterScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Plural: "usagerecords", Singular: "usagerecord", Kind: "UsageRecord", ListKind: "UsageRecordList",
				ShortNames: []string{"usage"}, Categories: []string{"cci"},
			},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: UsageRecordResource.Version, Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", Required: []string{"spec"},
					Properties: map[string]apiextensionsv1.JSONSchemaProps{"spec": spec},
				}},
				AdditionalPrinterColumns: []apiextensionsv1.CustomResourceColumnDefinition{
					{Name: "Tenant", Type: "string", JSONPath: ".spec.tenant"},
					{Name: "Hour", Type: "string", JSONPath: ".spec.hour"},
					{Name: "Seconds", Type: "integer", JSONPath: ".spec.totals.seconds"},
					{Name: "mCore-s", Type: "integer", JSONPath: ".spec.totals.milliCoreSeconds"},
					{Name: "MiB-s", Type: "integer", JSONPath: ".spec.totals.mibSeconds"},
					{Name: "Storage-MiB-s", Type: "integer", JSONPath: ".spec.totals.storageMiBSeconds"},
					{Name: "Open", Type: "string", JSONPath: ".metadata.labels.cci\\.io/open"},
				},
			}},
		},
	}
}
