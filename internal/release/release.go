// Package release runs blue-green and canary releases of a Deployment
// behind an HTTPRoute (`cci release`). Its whole state is Kubernetes
// objects a user can read and change with kubectl: two Deployments and
// two Services (the stable one and the candidate, e.g. web-blue and
// web-green), the weights of the route's backendRefs, and two annotations
// on the route naming which backend is which.
//
//	start  ─► candidate Deployment + Service, wait until Ready, weight 0
//	shift N ─► candidate N %, stable 100-N %
//	promote ─► candidate 100 %, it becomes the stable one; the old one is scaled to 0 after a delay
//	abort   ─► stable 100 % at once; the candidate is scaled to 0 after a delay
package release

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

const (
	// AnnoStable and AnnoCandidate on the HTTPRoute name the backends.
	AnnoStable    = "release.cci.io/stable"
	AnnoCandidate = "release.cci.io/candidate"
	// LabelVariant tells the candidate's pods from the stable ones.
	LabelVariant = "release.cci.io/variant"
)

// Release acts on the HTTPRoute Route in Namespace, whose first rule
// sends the app's traffic. The stable backend is a Service and a
// Deployment of the same name.
type Release struct {
	Kube      kubernetes.Interface
	Gateway   gatewayclient.Interface
	Namespace string
	Route     string
	Out       io.Writer
}

type state struct {
	route             *gatewayv1.HTTPRoute
	stable, candidate string
}

func (r *Release) state(ctx context.Context) (*state, error) {
	rt, err := r.Gateway.GatewayV1().HTTPRoutes(r.Namespace).Get(ctx, r.Route, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("HTTPRoute %s/%s not found: create the route that sends the app's traffic to its Service first (docs/gateway.md)", r.Namespace, r.Route)
	}
	if err != nil {
		return nil, fmt.Errorf("get HTTPRoute %s/%s: %w", r.Namespace, r.Route, err)
	}
	if len(rt.Spec.Rules) == 0 || len(rt.Spec.Rules[0].BackendRefs) == 0 {
		return nil, fmt.Errorf("HTTPRoute %s/%s has no backendRefs in its first rule: give it the app's Service", r.Namespace, r.Route)
	}
	st := &state{route: rt, stable: rt.Annotations[AnnoStable], candidate: rt.Annotations[AnnoCandidate]}
	if st.stable == "" {
		// The backend with the largest weight is the stable one.
		best := int32(-1)
		for _, b := range rt.Spec.Rules[0].BackendRefs {
			if w := ptr.Deref(b.Weight, 1); w > best {
				best, st.stable = w, string(b.Name)
			}
		}
	}
	return st, nil
}

// candidateName is the other color of stable: web-blue ↔ web-green; a
// name without a color gets -green.
func candidateName(stable string) string {
	if base, ok := strings.CutSuffix(stable, "-green"); ok {
		return base + "-blue"
	}
	return strings.TrimSuffix(stable, "-blue") + "-green"
}

// color is the color suffix of a backend name ("blue" of "web-blue").
func color(name string) string {
	for _, c := range []string{"blue", "green"} {
		if strings.HasSuffix(name, "-"+c) {
			return c
		}
	}
	return ""
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Start makes the candidate from the stable Deployment with image (in
// container, or the first container), waits until all its replicas are
// Ready, and adds it to the route with weight 0.
func (r *Release) Start(ctx context.Context, image, container string, timeout time.Duration) error {
	st, err := r.state(ctx)
	if err != nil {
		return err
	}
	if st.candidate != "" {
		return fmt.Errorf("a release of %s is in progress (candidate %s): promote or abort it first", st.stable, st.candidate)
	}
	cand := candidateName(st.stable)
	dep, err := r.Kube.AppsV1().Deployments(r.Namespace).Get(ctx, st.stable, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the stable Deployment %s/%s (named as the route's backend Service): %w", r.Namespace, st.stable, err)
	}
	svc, err := r.Kube.CoreV1().Services(r.Namespace).Get(ctx, st.stable, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the stable Service %s/%s: %w", r.Namespace, st.stable, err)
	}

	// The candidate's labels are the stable ones with its color for the
	// stable's (color: blue → green) and a variant label, so that neither
	// Service selects the other's pods.
	recolor := func(in map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range in {
			if sc, cc := color(st.stable), color(cand); sc != "" && v == sc {
				v = cc
			}
			out[k] = v
		}
		out[LabelVariant] = cand
		return out
	}
	want := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: cand, Namespace: r.Namespace, Labels: maps.Clone(dep.Labels)}, Spec: *dep.Spec.DeepCopy()}
	want.Spec.Selector = &metav1.LabelSelector{MatchLabels: recolor(dep.Spec.Selector.MatchLabels), MatchExpressions: dep.Spec.Selector.MatchExpressions}
	want.Spec.Template.Labels = recolor(want.Spec.Template.Labels)
	if sel := labels.SelectorFromSet(svc.Spec.Selector); len(svc.Spec.Selector) == 0 || sel.Matches(labels.Set(want.Spec.Template.Labels)) {
		return fmt.Errorf("Service %s (selector %v) would select the candidate's pods too: give the stable pods a label of their own that names their color (e.g. color: %s) and select it in the Service", st.stable, svc.Spec.Selector, or(color(st.stable), "blue"))
	}
	cs := want.Spec.Template.Spec.Containers
	found := false
	for i := range cs {
		if container == "" && i == 0 || cs[i].Name == container {
			cs[i].Image, found = image, true
			break
		}
	}
	if !found {
		return fmt.Errorf("Deployment %s has no container %q; name one of its containers with --container", st.stable, container)
	}
	cur, err := r.Kube.AppsV1().Deployments(r.Namespace).Get(ctx, cand, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = r.Kube.AppsV1().Deployments(r.Namespace).Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		// Left by an earlier release (scaled to 0): its selector cannot
		// change, so it is made again.
		if err = r.Kube.AppsV1().Deployments(r.Namespace).Delete(ctx, cur.Name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err == nil {
			err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := r.Kube.AppsV1().Deployments(r.Namespace).Get(ctx, cand, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			if err == nil {
				_, err = r.Kube.AppsV1().Deployments(r.Namespace).Create(ctx, want, metav1.CreateOptions{})
			}
		}
	}
	if err != nil {
		return fmt.Errorf("candidate Deployment %s: %w", cand, err)
	}
	fmt.Fprintf(r.Out, "deployment %s created with image %s\n", cand, image)

	wantSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: cand, Namespace: r.Namespace, Labels: maps.Clone(svc.Labels)},
		Spec: corev1.ServiceSpec{Selector: maps.Clone(want.Spec.Template.Labels), Ports: svc.Spec.Ports}}
	for i := range wantSvc.Spec.Ports {
		wantSvc.Spec.Ports[i].NodePort = 0
	}
	if _, err := r.Kube.CoreV1().Services(r.Namespace).Create(ctx, wantSvc, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := r.Kube.CoreV1().Services(r.Namespace).Get(ctx, cand, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Spec.Selector, cur.Spec.Ports = wantSvc.Spec.Selector, wantSvc.Spec.Ports
			_, err = r.Kube.CoreV1().Services(r.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("candidate Service %s: %w", cand, err)
		}
	} else if err != nil {
		return fmt.Errorf("candidate Service %s: %w", cand, err)
	}

	fmt.Fprintf(r.Out, "waiting until every replica of %s is Ready …\n", cand)
	if err := r.waitReady(ctx, cand, timeout); err != nil {
		return err
	}
	return r.update(ctx, func(rt *gatewayv1.HTTPRoute) error {
		setWeight(rt, st.stable, -1)
		setWeight(rt, cand, 0)
		rt.Annotations[AnnoStable], rt.Annotations[AnnoCandidate] = st.stable, cand
		fmt.Fprintf(r.Out, "%s is Ready and on route %s with weight 0; send it traffic with `cci release shift %s PERCENT`\n", cand, r.Route, r.Route)
		return nil
	})
}

func (r *Release) waitReady(ctx context.Context, name string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := r.Kube.AppsV1().Deployments(r.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		want := ptr.Deref(d.Spec.Replicas, 1)
		last = fmt.Sprintf("%d of %d replicas Ready", d.Status.ReadyReplicas, want)
		return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want && d.Status.ReadyReplicas == want && d.Status.AvailableReplicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("candidate %s not Ready within %s (%s); no traffic was sent to it: see `kubectl describe deployment %s`, then `cci release abort %s`: %w", name, timeout, last, name, r.Route, err)
	}
	return nil
}

// Shift sends percent of the traffic to the candidate.
func (r *Release) Shift(ctx context.Context, percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("percent %d: give a number from 0 to 100", percent)
	}
	st, err := r.state(ctx)
	if err != nil {
		return err
	}
	if st.candidate == "" {
		return fmt.Errorf("no release of route %s is in progress: start one with `cci release start %s --image IMAGE`", r.Route, r.Route)
	}
	return r.update(ctx, func(rt *gatewayv1.HTTPRoute) error {
		setWeight(rt, st.stable, int32(100-percent))
		setWeight(rt, st.candidate, int32(percent))
		fmt.Fprintf(r.Out, "route %s: %s %d %%, %s %d %%\n", r.Route, st.stable, 100-percent, st.candidate, percent)
		return nil
	})
}

// Promote sends all traffic to the candidate, which becomes the stable
// backend; the old one is scaled to 0 after delay.
func (r *Release) Promote(ctx context.Context, delay time.Duration) error {
	st, err := r.state(ctx)
	if err != nil {
		return err
	}
	if st.candidate == "" {
		return fmt.Errorf("no release of route %s is in progress: start one with `cci release start %s --image IMAGE`", r.Route, r.Route)
	}
	if err := r.update(ctx, func(rt *gatewayv1.HTTPRoute) error {
		setWeight(rt, st.candidate, 100)
		setWeight(rt, st.stable, 0)
		rt.Annotations[AnnoStable] = st.candidate
		delete(rt.Annotations, AnnoCandidate)
		return nil
	}); err != nil {
		return err
	}
	fmt.Fprintf(r.Out, "route %s: %s 100 %% (now the stable one)\n", r.Route, st.candidate)
	return r.scaleDown(ctx, st.stable, delay)
}

// Abort sends all traffic back to the stable backend at once; the
// candidate is scaled to 0 after delay.
func (r *Release) Abort(ctx context.Context, delay time.Duration) error {
	st, err := r.state(ctx)
	if err != nil {
		return err
	}
	if st.candidate == "" {
		return fmt.Errorf("no release of route %s is in progress", r.Route)
	}
	if err := r.update(ctx, func(rt *gatewayv1.HTTPRoute) error {
		setWeight(rt, st.stable, 100)
		setWeight(rt, st.candidate, 0)
		delete(rt.Annotations, AnnoCandidate)
		return nil
	}); err != nil {
		return err
	}
	fmt.Fprintf(r.Out, "route %s: %s 100 %% again\n", r.Route, st.stable)
	return r.scaleDown(ctx, st.candidate, delay)
}

// scaleDown waits delay (requests in flight to the backend finish) and
// scales its Deployment to 0.
func (r *Release) scaleDown(ctx context.Context, name string, delay time.Duration) error {
	if delay > 0 {
		fmt.Fprintf(r.Out, "scaling %s to 0 in %s …\n", name, delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := r.Kube.AppsV1().Deployments(r.Namespace).GetScale(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Replicas = 0
		_, err = r.Kube.AppsV1().Deployments(r.Namespace).UpdateScale(ctx, name, s, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("scale %s to 0: %w", name, err)
	}
	fmt.Fprintf(r.Out, "deployment %s scaled to 0\n", name)
	return nil
}

// update changes the route, retrying on conflicts.
func (r *Release) update(ctx context.Context, change func(*gatewayv1.HTTPRoute) error) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rt, err := r.Gateway.GatewayV1().HTTPRoutes(r.Namespace).Get(ctx, r.Route, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if rt.Annotations == nil {
			rt.Annotations = map[string]string{}
		}
		if len(rt.Spec.Rules) == 0 {
			return errors.New("the route lost its rules")
		}
		if err := change(rt); err != nil {
			return err
		}
		_, err = r.Gateway.GatewayV1().HTTPRoutes(r.Namespace).Update(ctx, rt, metav1.UpdateOptions{})
		return err
	})
}

// setWeight sets a backend's weight in the route's first rule, adding the
// backend (port of the first backend) when missing; a negative weight
// only makes sure it is there.
func setWeight(rt *gatewayv1.HTTPRoute, name string, w int32) {
	refs := rt.Spec.Rules[0].BackendRefs
	for i := range refs {
		if string(refs[i].Name) == name {
			if w >= 0 {
				refs[i].Weight = ptr.To(w)
			}
			return
		}
	}
	ref := gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: refs[0].Port}, Weight: ptr.To(max(w, 0))}}
	rt.Spec.Rules[0].BackendRefs = append(refs, ref)
}
