package connect

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corev1listers "k8s.io/client-go/listers/core/v1"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/cci-project/cci/internal/pool"
)

// ConditionQuota is the virtual node's condition that says whether the
// tenant's quota in B has room left.
const ConditionQuota v1.NodeConditionType = "TenantQuotaAvailable"

// nodeStatus is the virtual node's node.NodeProvider: capacity is what
// the tenant's quota in B leaves, Ready follows whether B answers.
type nodeStatus struct {
	c      *connector
	quotas corev1listers.ResourceQuotaLister
	wake   chan struct{}

	mu     sync.Mutex
	node   *v1.Node
	notify func(*v1.Node)
}

// Ping implements node.NodeProvider. B's reachability is a condition of
// the node rather than a failed ping: a failed ping only stops status
// updates, and the node's lease would keep it Ready.
func (s *nodeStatus) Ping(ctx context.Context) error { return ctx.Err() }

// NotifyNodeStatus implements node.NodeProvider.
func (s *nodeStatus) NotifyNodeStatus(_ context.Context, cb func(*v1.Node)) {
	s.mu.Lock()
	s.notify = cb
	s.mu.Unlock()
	s.poke()
}

func (s *nodeStatus) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run recomputes the node's status when the quota or the copies change,
// and every 10 s (B's reachability), until ctx ends.
func (s *nodeStatus) run(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	reachable, reachErr := true, ""
	var lostSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := s.c.b.CoreV1().ResourceQuotas(s.c.bNS).List(pctx, metav1.ListOptions{Limit: 1})
			cancel()
			if err == nil {
				lostSince = time.Time{}
				reachable, reachErr = true, ""
				break
			}
			if lostSince.IsZero() {
				lostSince = time.Now()
			}
			// A cell that misses a beat keeps its pods: the front
			// replaces them only once the link is down LostAfter.
			if time.Since(lostSince) >= s.c.cfg.LostAfter {
				reachable, reachErr = false, err.Error()
			}
		}
		s.update(reachable, reachErr)
	}
}

// capacity is the node's capacity and the resources with none left: the
// tenant's free quota, or a cell's free allocatable in the pool.
func (s *nodeStatus) capacity(ours []*v1.Pod) (v1.ResourceList, []string) {
	if s.c.cfg.Cell {
		nodes, _ := s.c.cellNodes.List(labels.Everything())
		pods, _ := s.c.cellPods.List(labels.Everything())
		return cellCapacity(s.c.cfg.Pool, nodes, pods, ours)
	}
	quotas, _ := s.quotas.ResourceQuotas(s.c.bNS).List(labels.Everything())
	return capacityFrom(s.c.cfg.Capacity, quotas, ours)
}

func (s *nodeStatus) update(reachable bool, reachErr string) {
	var ours []*v1.Pod
	if s.c.prov != nil {
		ours = s.c.prov.copies()
	}
	capacity, short := s.capacity(ours)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.node == nil {
		return
	}
	next := s.node.DeepCopy()
	next.Status.Capacity = capacity
	next.Status.Allocatable = capacity.DeepCopy()
	now := metav1.Now()
	set := func(t v1.NodeConditionType, st v1.ConditionStatus, reason, msg string) bool {
		for i := range next.Status.Conditions {
			c := &next.Status.Conditions[i]
			if c.Type != t {
				continue
			}
			changed := c.Status != st
			if changed {
				c.LastTransitionTime = now
			}
			c.Status, c.Reason, c.Message = st, reason, msg
			return changed
		}
		return false
	}
	if reachable {
		set(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "cci connect is serving the node")
	} else if set(v1.NodeReady, v1.ConditionFalse, "ClusterUnreachable", fmt.Sprintf("the cluster the pods run in (%s) does not answer: %s", s.c.bREST.Host, reachErr)) {
		s.c.recorder.Eventf(nodeRef(next), v1.EventTypeWarning, "ClusterUnreachable", "the cluster the pods run in (%s) does not answer: %s", s.c.bREST.Host, reachErr)
	}
	if s.c.cfg.Cell {
		// A full cell is a full node: the front's scheduler says so.
	} else if len(short) == 0 {
		set(ConditionQuota, v1.ConditionTrue, "QuotaAvailable", "the tenant's quota has room")
	} else {
		msg := fmt.Sprintf("the tenant's quota in namespace %s of %s is used up: %s; pods wait until some of the tenant's pods end or the quota is raised",
			s.c.bNS, s.c.bREST.Host, strings.Join(short, ", "))
		if set(ConditionQuota, v1.ConditionFalse, "QuotaExhausted", msg) {
			s.c.recorder.Event(nodeRef(next), v1.EventTypeWarning, "QuotaExhausted", msg)
		}
	}
	if apiequality.Semantic.DeepEqual(next.Status.Capacity, s.node.Status.Capacity) &&
		apiequality.Semantic.DeepEqual(conditionsOnly(next), conditionsOnly(s.node)) {
		return
	}
	s.node = next
	if s.notify != nil {
		s.notify(next.DeepCopy())
	}
}

func conditionsOnly(n *v1.Node) []string {
	var out []string
	for _, c := range n.Status.Conditions {
		out = append(out, string(c.Type)+"="+string(c.Status)+"/"+c.Reason+"/"+c.Message)
	}
	return out
}

func nodeRef(n *v1.Node) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: n.UID}
}

// quotaResource maps a ResourceQuota key to the node resource it caps;
// "" for what no node resource stands for (Services, limits, counts).
func quotaResource(k v1.ResourceName) v1.ResourceName {
	switch k {
	case v1.ResourceCPU, v1.ResourceRequestsCPU:
		return v1.ResourceCPU
	case v1.ResourceMemory, v1.ResourceRequestsMemory:
		return v1.ResourceMemory
	case v1.ResourcePods, "count/pods":
		return v1.ResourcePods
	case v1.ResourceEphemeralStorage, v1.ResourceRequestsEphemeralStorage:
		return v1.ResourceEphemeralStorage
	}
	if r, ok := strings.CutPrefix(string(k), "requests."); ok && strings.Contains(r, "/") {
		return v1.ResourceName(r) // extended resources: requests.nvidia.com/gpu
	}
	return ""
}

// capacityFrom is the node's capacity: per resource, the quota's hard
// limit less what is used by pods other than this node's own copies (the
// scheduler in A subtracts those itself), the least over all quotas, and
// never below zero; defaults for what no quota caps. short names the
// resources with nothing left.
func capacityFrom(defaults v1.ResourceList, quotas []*v1.ResourceQuota, ours []*v1.Pod) (v1.ResourceList, []string) {
	own := v1.ResourceList{}
	for _, p := range ours {
		if p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			continue
		}
		for k, q := range resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}) {
			cur := own[k]
			cur.Add(q)
			own[k] = cur
		}
		n := own[v1.ResourcePods]
		n.Add(resource.MustParse("1"))
		own[v1.ResourcePods] = n
	}
	out := defaults.DeepCopy()
	capped := map[v1.ResourceName]bool{}
	var short []string
	for _, q := range quotas {
		for k, hard := range q.Status.Hard {
			r := quotaResource(k)
			if r == "" {
				continue
			}
			free := hard.DeepCopy()
			if used, ok := q.Status.Used[k]; ok {
				free.Sub(used)
			}
			if o, ok := own[r]; ok {
				free.Add(o)
			}
			if free.Sign() < 0 {
				free = *resource.NewQuantity(0, hard.Format)
			}
			if cur := out[r]; !capped[r] || free.Cmp(cur) < 0 {
				out[r] = free
			}
			capped[r] = true
			remaining := hard.DeepCopy()
			remaining.Sub(q.Status.Used[k])
			// An extended resource the quota gives none of (nvidia.com/gpu=0)
			// is one the tenant does not have, not one it used up.
			basic := r == v1.ResourceCPU || r == v1.ResourceMemory || r == v1.ResourcePods
			if (basic || hard.Sign() > 0) && remaining.Sign() <= 0 {
				short = append(short, fmt.Sprintf("%s (hard %s, used %s)", k, hard.String(), q.Status.Used.Name(k, hard.Format).String()))
			}
		}
	}
	sort.Strings(short)
	return out, short
}

// cellCapacity is a cell's node's capacity: per resource, the allocatable
// of the pool's hosts that take pods (Ready, not cordoned) less what the
// pods bound to them request, summed, with this node's own copies counted
// as free (the front's scheduler subtracts its pods itself). short names
// the resources with nothing left.
func cellCapacity(name string, nodes []*v1.Node, pods, ours []*v1.Pod) (v1.ResourceList, []string) {
	var taking []*v1.Node
	for _, n := range nodes {
		if pool.Of(n) == name && pool.Ready(n) {
			taking = append(taking, n)
		}
	}
	out := v1.ResourceList{v1.ResourceCPU: resource.MustParse("0"), v1.ResourceMemory: resource.MustParse("0"), v1.ResourcePods: resource.MustParse("0")}
	all := pool.Summarize(taking, pods)
	if len(all) == 0 {
		return out, []string{"the cell has no host of pool " + name + " that takes pods"}
	}
	own := v1.ResourceList{}
	if s := pool.Summarize(taking, ours); len(s) > 0 {
		own = s[0].Requested
	}
	var short []string
	for k, q := range all[0].Allocatable {
		free := q.DeepCopy()
		free.Sub(all[0].Requested[k])
		if o, ok := own[k]; ok {
			free.Add(o)
		}
		if free.Sign() <= 0 {
			free = *resource.NewQuantity(0, q.Format)
			short = append(short, string(k))
		}
		out[k] = free
	}
	sort.Strings(short)
	return out, short
}
