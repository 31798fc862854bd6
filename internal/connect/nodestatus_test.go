package connect

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cci-project/cci/internal/pool"
)

func host(name, poolName, cpu string, ready, cordoned bool) *v1.Node {
	st := v1.ConditionFalse
	if ready {
		st = v1.ConditionTrue
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{pool.Label: poolName}},
		Spec:       v1.NodeSpec{Unschedulable: cordoned},
		Status: v1.NodeStatus{
			Allocatable: v1.ResourceList{v1.ResourceCPU: resource.MustParse(cpu), v1.ResourceMemory: resource.MustParse("8Gi"), v1.ResourcePods: resource.MustParse("10")},
			Conditions:  []v1.NodeCondition{{Type: v1.NodeReady, Status: st}},
		},
	}
}

func boundPod(name, node, cpu string, phase v1.PodPhase) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c", Resources: v1.ResourceRequirements{
			Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse(cpu), v1.ResourceMemory: resource.MustParse("1Gi")}}}}},
		Status: v1.PodStatus{Phase: phase},
	}
}

func TestCellCapacity(t *testing.T) {
	hosts := []*v1.Node{
		host("h1", "general", "4", true, false),
		host("h2", "general", "2", true, false),
		host("down", "general", "8", false, false),
		host("cordoned", "general", "8", true, true),
		host("g1", "gpu", "16", true, false),
	}
	own := boundPod("own", "h1", "1", v1.PodRunning)
	other := boundPod("other", "h2", "500m", v1.PodRunning)
	done := boundPod("done", "h2", "2", v1.PodSucceeded)
	onGPU := boundPod("gpu", "g1", "4", v1.PodRunning)
	pending := boundPod("pending", "", "3", v1.PodPending)
	for _, tc := range []struct {
		name      string
		pool      string
		pods      []*v1.Pod
		ours      []*v1.Pod
		cpu, free string
		short     int
	}{
		// Ready, schedulable hosts of the pool only; finished and unbound
		// pods take nothing; the node's own copies count as free.
		{name: "general", pool: "general", pods: []*v1.Pod{own, other, done, onGPU, pending}, ours: []*v1.Pod{own}, cpu: "5500m", free: "19"},
		{name: "general, no copies of ours", pool: "general", pods: []*v1.Pod{own, other}, cpu: "4500m", free: "18"},
		{name: "other pool", pool: "gpu", pods: []*v1.Pod{own, onGPU}, cpu: "12", free: "9"},
		{name: "pool without hosts", pool: "ascend", cpu: "0", free: "0", short: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, short := cellCapacity(tc.pool, hosts, tc.pods, tc.ours)
			if c := got[v1.ResourceCPU]; c.Cmp(resource.MustParse(tc.cpu)) != 0 {
				t.Errorf("cpu %s, want %s", c.String(), tc.cpu)
			}
			if p := got[v1.ResourcePods]; p.Cmp(resource.MustParse(tc.free)) != 0 {
				t.Errorf("pods %s, want %s", p.String(), tc.free)
			}
			if len(short) != tc.short {
				t.Errorf("short %v, want %d", short, tc.short)
			}
		})
	}
}
