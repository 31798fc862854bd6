package runtime

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	v1 "k8s.io/api/core/v1"
)

// adoptAction is what an agent that starts does with a pod it finds
// recorded in its state folder.
type adoptAction int

const (
	// adoptKeep: the pod is still this node's; its worker re-attaches to the
	// containers that run (same container ids, no restart).
	adoptKeep adoptAction = iota
	// adoptTerminate: the pod is this node's but being deleted; its containers
	// are stopped within its grace period and its deletion confirmed.
	adoptTerminate
	// adoptRemove: the pod is no longer this node's (gone from the API,
	// re-created under another UID, or bound to another node): everything
	// it holds is removed at once and no status is written for it: the
	// API object of that name, if any, is another pod.
	adoptRemove
)

func (a adoptAction) String() string {
	return [...]string{"adopt", "terminate", "remove"}[a]
}

// adoptDecision is the fate of one recorded pod.
type adoptDecision struct {
	Key    string // namespace/name
	UID    types.UID
	Action adoptAction
	// Reason says why, for the log.
	Reason string
	// API is the pod as the API has it (adoptTerminate: its deletion grace).
	API *v1.Pod
}

// decideAdoption compares the pods recorded on this node with the API's
// view and says which to re-adopt, which to stop for deletion and which to
// remove. api holds the API's pods of the recorded names by namespace/name
// (whatever node they are bound to); a name missing from it is gone from
// the API. Pure: the caller does the listing and the acting, so that a pod
// that is not this node's any more never runs twice.
func decideAdoption(node string, local []*v1.Pod, api map[string]*v1.Pod) []adoptDecision {
	out := make([]adoptDecision, 0, len(local))
	for _, p := range local {
		k := key(p.Namespace, p.Name)
		d := adoptDecision{Key: k, UID: p.UID, Action: adoptRemove}
		cur, ok := api[k]
		switch {
		case !ok || cur == nil:
			d.Reason = "deleted from the API while the agent was down"
		case cur.UID != p.UID:
			d.Reason = fmt.Sprintf("deleted and created again as UID %s", cur.UID)
		case cur.Spec.NodeName != node:
			d.Reason = fmt.Sprintf("bound to node %q", cur.Spec.NodeName)
		case cur.DeletionTimestamp != nil:
			d.Action, d.Reason, d.API = adoptTerminate, "being deleted", cur
		default:
			d.Action, d.Reason, d.API = adoptKeep, "still bound to this node", cur
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].UID < out[j].UID
	})
	return out
}

// apiPodsFor looks up the API's pods of the recorded names: one list of
// this node's pods, then one get per recorded name not in it (to say where
// it went).
func (r *Runtime) apiPodsFor(ctx context.Context, local []*v1.Pod) (map[string]*v1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pods := r.cfg.Kube.CoreV1().Pods(metav1.NamespaceAll)
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", r.cfg.NodeName).String()})
	if err != nil {
		return nil, fmt.Errorf("list the pods of node %q: %w", r.cfg.NodeName, err)
	}
	api := make(map[string]*v1.Pod, len(list.Items))
	for i := range list.Items {
		p := &list.Items[i]
		api[key(p.Namespace, p.Name)] = p
	}
	for _, p := range local {
		k := key(p.Namespace, p.Name)
		if _, ok := api[k]; ok {
			continue
		}
		cur, err := r.cfg.Kube.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("look up pod %s: %w", k, err)
		default:
			api[k] = cur
		}
	}
	return api, nil
}

// reconcile decides the fate of the recorded workers (not started yet) and
// removes the pods that are not this node's any more, before anything of
// them is restarted. It returns the workers to adopt; those of pods being
// deleted start out terminating.
func (r *Runtime) reconcile(ws []*podWorker) ([]*podWorker, error) {
	local := make([]*v1.Pod, len(ws))
	byUID := make(map[types.UID]*podWorker, len(ws))
	for i, w := range ws {
		local[i] = w.pod()
		byUID[local[i].UID] = w
	}
	api, err := r.apiPodsFor(r.ctx, local)
	if err != nil {
		return nil, err
	}
	var keep []*podWorker
	var wg sync.WaitGroup
	for _, d := range decideAdoption(r.cfg.NodeName, local, api) {
		w := byUID[d.UID]
		switch d.Action {
		case adoptKeep:
			r.cfg.Log.Info("re-adopting pod", "pod", d.Key, "uid", w.pod().UID)
			keep = append(keep, w)
		case adoptTerminate:
			r.cfg.Log.Info("re-adopting pod to stop it", "pod", d.Key, "uid", w.pod().UID, "reason", d.Reason)
			w.deleting = d.API.DeepCopy()
			keep = append(keep, w)
		case adoptRemove:
			r.cfg.Log.Info("removing pod that is no longer this node's", "pod", d.Key, "uid", w.pod().UID, "reason", d.Reason)
			zero := int64(0)
			w.deleting = w.pod().DeepCopy()
			w.deleting.DeletionGracePeriodSeconds = &zero
			w.deleting.DeletionTimestamp = nil
			w.orphan = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.start()
				<-w.done
			}()
		}
	}
	wg.Wait()
	return keep, nil
}
