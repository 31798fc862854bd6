package runtime

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestDecideAdoption(t *testing.T) {
	pod := func(name, uid, node string, deleting bool) *v1.Pod {
		p := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid)}, Spec: v1.PodSpec{NodeName: node}}
		if deleting {
			now := metav1.Now()
			p.DeletionTimestamp = &now
		}
		return p
	}
	api := func(ps ...*v1.Pod) map[string]*v1.Pod {
		m := map[string]*v1.Pod{}
		for _, p := range ps {
			m[key(p.Namespace, p.Name)] = p
		}
		return m
	}
	type want struct {
		uid    string
		action adoptAction
	}
	tests := []struct {
		name  string
		local []*v1.Pod
		api   map[string]*v1.Pod
		want  []want
	}{
		{"still ours", []*v1.Pod{pod("a", "u1", "n1", false)}, api(pod("a", "u1", "n1", false)), []want{{"u1", adoptKeep}}},
		{"gone from the API", []*v1.Pod{pod("a", "u1", "n1", false)}, api(), []want{{"u1", adoptRemove}}},
		{"nil entry is gone", []*v1.Pod{pod("a", "u1", "n1", false)}, map[string]*v1.Pod{"ns/a": nil}, []want{{"u1", adoptRemove}}},
		{"re-created with another UID on this node", []*v1.Pod{pod("a", "u1", "n1", false)}, api(pod("a", "u2", "n1", false)), []want{{"u1", adoptRemove}}},
		{"re-created with another UID elsewhere", []*v1.Pod{pod("a", "u1", "n1", false)}, api(pod("a", "u2", "n2", false)), []want{{"u1", adoptRemove}}},
		{"same UID bound to another node", []*v1.Pod{pod("a", "u1", "n1", false)}, api(pod("a", "u1", "n2", false)), []want{{"u1", adoptRemove}}},
		{"same UID not bound", []*v1.Pod{pod("a", "u1", "n1", false)}, api(pod("a", "u1", "", false)), []want{{"u1", adoptRemove}}},
		{"being deleted", []*v1.Pod{pod("a", "u1", "n1", false)}, api(pod("a", "u1", "n1", true)), []want{{"u1", adoptTerminate}}},
		{"another UID being deleted", []*v1.Pod{pod("a", "u1", "n1", false)}, api(pod("a", "u2", "n1", true)), []want{{"u1", adoptRemove}}},
		{
			"two records of one name: the old copy goes, the current one stays",
			[]*v1.Pod{pod("a", "u2", "n1", false), pod("a", "u1", "n1", false)},
			api(pod("a", "u2", "n1", false)),
			[]want{{"u1", adoptRemove}, {"u2", adoptKeep}},
		},
		{
			"mixed, sorted by name",
			[]*v1.Pod{pod("c", "u3", "n1", false), pod("a", "u1", "n1", false), pod("b", "u2", "n1", false)},
			api(pod("a", "u1", "n1", false), pod("b", "u2", "n1", true), pod("c", "u9", "n1", false)),
			[]want{{"u1", adoptKeep}, {"u2", adoptTerminate}, {"u3", adoptRemove}},
		},
		{"no records", nil, api(pod("a", "u1", "n1", false)), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := decideAdoption("n1", tc.local, tc.api)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d decisions %+v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				if string(got[i].UID) != w.uid || got[i].Action != w.action {
					t.Errorf("decision %d: %s %s (%s), want %s %s", i, got[i].UID, got[i].Action, got[i].Reason, w.uid, w.action)
				}
				if got[i].Reason == "" {
					t.Errorf("decision %d has no reason", i)
				}
				if got[i].Action != adoptRemove && (got[i].API == nil || got[i].API.UID != got[i].UID) {
					t.Errorf("decision %d: %s without the API's pod of its UID", i, got[i].Action)
				}
			}
		})
	}
}
