package policy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/cci-project/cci/internal/pool"
)

func annotated(name string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Annotations = map[string]string{pool.Annotation: name} }
}

// TestPoolAdmission is the pool choice's table: the pool a pod gets, or
// why it is refused.
func TestPoolAdmission(t *testing.T) {
	acme := func(pools ...string) Rules {
		return Rules{Tenant: "acme", Pools: pools, ExistingPools: []string{"general", "gpu", "ascend"}}
	}
	cases := []struct {
		name    string
		pod     *corev1.Pod
		rules   Rules
		pool    string   // chosen pool, when admitted
		refused []string // substrings of the refusal
	}{
		{name: "nothing asked: general", pod: pod(), rules: acme(), pool: "general"},
		{name: "general by annotation", pod: pod(annotated("general")), rules: acme("general"), pool: "general"},
		{name: "gpu by annotation, allowed", pod: pod(annotated("gpu")), rules: acme("general", "gpu"), pool: "gpu"},
		{name: "gpu not allowed", pod: pod(annotated("gpu")), rules: acme(),
			refused: []string{`pool "gpu" is not allowed for tenant acme; allowed pools: general`}},
		{name: "implicit gpu by limit", pod: pod(limits("nvidia.com/gpu", "1")), rules: acme("gpu"), pool: "gpu"},
		{name: "implicit gpu by request, not allowed", pod: pod(requests("nvidia.com/gpu", "1")), rules: acme("general"),
			refused: []string{`pool "gpu" is not allowed for tenant acme; allowed pools: general`}},
		{name: "implicit ascend", pod: pod(limits("huawei.com/ascend-910", "1")), rules: acme("general", "ascend"), pool: "ascend"},
		{name: "implicit ascend in an init container", pod: pod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "i", Image: "i", Resources: corev1.ResourceRequirements{Limits: res("huawei.com/ascend-310", "1")}}}
		}), rules: acme("ascend"), pool: "ascend"},
		{name: "annotation wins over the device", pod: pod(annotated("general"), limits("nvidia.com/gpu", "1")), rules: acme("general"), pool: "general"},
		{name: "pool without hosts", pod: pod(annotated("fpga")), rules: Rules{Tenant: "acme", Pools: []string{"general", "fpga"}, ExistingPools: []string{"gpu"}},
			refused: []string{`pool "fpga" does not exist: no host is in it; pools with hosts: general, gpu`}},
		{name: "general exists without hosts", pod: pod(), rules: Rules{ExistingPools: []string{}}, pool: "general"},
		{name: "existence not checked", pod: pod(annotated("fpga")), rules: Rules{Pools: []string{"fpga"}}, pool: "fpga"},
		{name: "bad pool name", pod: pod(annotated("GPU_1")), rules: acme(), refused: []string{`annotation cci.io/pool: pool name "GPU_1"`}},
		{name: "own nodeSelector agrees", pod: pod(annotated("gpu"), func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{pool.Label: "gpu"} }),
			rules: acme("gpu"), pool: "gpu"},
		{name: "own nodeSelector contradicts", pod: pod(func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{pool.Label: "gpu"} }),
			rules: acme("general", "gpu"), refused: []string{`nodeSelector cci.io/pool=gpu contradicts the pod's pool "general"`}},
		{name: "own affinity contradicts", pod: pod(annotated("gpu"), func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: pool.Label, Operator: corev1.NodeSelectorOpIn, Values: []string{"general"}}}}}}}}
		}), rules: acme("general", "gpu"), refused: []string{`node affinity cci.io/pool In [general] contradicts the pod's pool "gpu"`}},
		{name: "own affinity agrees", pod: pod(annotated("gpu"), func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
				Weight: 1, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: pool.Label, Operator: corev1.NodeSelectorOpNotIn, Values: []string{"general"}}}}}}}}
		}), rules: acme("gpu"), pool: "gpu"},
		{name: "own toleration of another pool", pod: pod(func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: pool.TaintKey, Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
		}), rules: acme(), refused: []string{`toleration cci.io/pool=gpu contradicts the pod's pool "general"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pod.DeepCopy()
			err := AdmitPod(p, tc.rules)
			if len(tc.refused) > 0 {
				if err == nil {
					t.Fatalf("admitted to pool %q, want refused", p.Spec.NodeSelector[pool.Label])
				}
				for _, w := range tc.refused {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("refusal %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := p.Spec.NodeSelector[pool.Label]; got != tc.pool {
				t.Errorf("nodeSelector %s = %q, want %q", pool.Label, got, tc.pool)
			}
			if got := p.Annotations[pool.Annotation]; got != tc.pool {
				t.Errorf("annotation %s = %q, want %q", pool.Annotation, got, tc.pool)
			}
			tolerates := false
			for _, tol := range p.Spec.Tolerations {
				if tol.Key == pool.TaintKey && tol.Value == tc.pool && tol.Effect == corev1.TaintEffectNoSchedule && tol.Operator == corev1.TolerationOpEqual {
					tolerates = true
				}
			}
			if want := tc.pool != pool.Default; tolerates != want {
				t.Errorf("tolerates the pool's taint: %v, want %v (%+v)", tolerates, want, p.Spec.Tolerations)
			}
			// Admission is idempotent (the webhook may be called again),
			// and its result passes the last check.
			again := p.DeepCopy()
			if err := AdmitPod(again, tc.rules); err != nil || len(again.Spec.Tolerations) != len(p.Spec.Tolerations) {
				t.Errorf("second admission: %v, tolerations %v", err, again.Spec.Tolerations)
			}
			if err := CheckAdmitted(p, tc.rules); err != nil {
				t.Errorf("CheckAdmitted refuses the admitted pod: %v", err)
			}
		})
	}
}

// TestPoolCheckedAfterMutation: a pod whose pool binding was taken off
// after admission is refused, and so is a change of its pool annotation.
func TestPoolCheckedAfterMutation(t *testing.T) {
	r := Rules{Pools: []string{"gpu"}}
	p := pod(annotated("gpu"))
	if err := AdmitPod(p, r); err != nil {
		t.Fatal(err)
	}
	stripped := p.DeepCopy()
	stripped.Spec.Tolerations = nil
	delete(stripped.Spec.NodeSelector, pool.Label)
	err := CheckAdmitted(stripped, r)
	if err == nil || !strings.Contains(err.Error(), "nodeSelector cci.io/pool must be gpu") || !strings.Contains(err.Error(), "toleration") {
		t.Errorf("CheckAdmitted: %v", err)
	}
	changed := p.DeepCopy()
	changed.Annotations[pool.Annotation] = "general"
	if err := CheckPodUpdate(p, changed); err == nil || !strings.Contains(err.Error(), "annotation cci.io/pool is set by CCI") {
		t.Errorf("CheckPodUpdate: %v", err)
	}
}

// TestTemplatePool: a workload template is held to its pods' pool rules,
// its annotation included.
func TestTemplatePool(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{Spec: pod().Spec}
	tmpl.Annotations = map[string]string{pool.Annotation: "gpu"}
	err := CheckTemplate(tmpl, Rules{Tenant: "acme"})
	if err == nil || !strings.Contains(err.Error(), `pool "gpu" is not allowed for tenant acme; allowed pools: general`) {
		t.Errorf("template: %v", err)
	}
	if tmpl.Spec.NodeSelector != nil {
		t.Error("CheckTemplate changed the template")
	}
}
