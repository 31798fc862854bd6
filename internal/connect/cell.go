package connect

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cci-project/cci/internal/tenant"
)

// cellNamespace makes sure namespace ns of the front (A) exists in the cell
// (B) before a pod's copy goes there. A tenant's namespace is made by
// copying its Tenant: the cell's own tenant controller then gives it the
// tenant's quota, limits, RBAC and network isolation, and the cell's
// admission treats its pods as the tenant's. Other namespaces are created
// with A's labels. It waits (up to a minute) for the tenant to be Ready in
// the cell; an error makes the pod controller try again.
func (c *connector) cellNamespace(ctx context.Context, ns string) error {
	if _, ok := c.cellNamespaces.Load(ns); ok {
		return nil
	}
	aNS, err := c.a.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read namespace %q of the front: %w", ns, err)
	}
	if name := aNS.Labels[tenant.Label]; name != "" {
		if err := c.cellTenant(ctx, name); err != nil {
			return err
		}
	} else if _, err := c.b.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		_, err = c.b.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: aNS.Labels}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %q in the cell behind node %s: %w", ns, c.cfg.NodeName, err)
		}
	} else if err != nil {
		return fmt.Errorf("read namespace %q in the cell behind node %s: %w", ns, c.cfg.NodeName, err)
	}
	c.cellNamespaces.Store(ns, true)
	return nil
}

// cellTenant copies the front's Tenant name (its spec: quota, flavors,
// runtime) into the cell, or brings the cell's copy in step, and waits for
// it to be Ready there.
func (c *connector) cellTenant(ctx context.Context, name string) error {
	front, err := c.aDyn.Resource(tenant.GVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read tenant %q of the front: %w", name, err)
	}
	spec, _, _ := unstructured.NestedFieldCopy(front.Object, "spec")
	tenants := c.bDyn.Resource(tenant.GVR)
	cur, err := tenants.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": tenant.Group + "/" + tenant.Version, "kind": tenant.Kind,
			"metadata": map[string]any{"name": name, "labels": map[string]any{"connect.cci.io/front": c.cluster}},
		}}
		if spec != nil {
			_ = unstructured.SetNestedField(u.Object, spec, "spec")
		}
		if _, err := tenants.Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create tenant %q in the cell behind node %s (does --to have the cell's admin rights?): %w", name, c.cfg.NodeName, err)
		}
	case err != nil:
		return fmt.Errorf("read tenant %q in the cell behind node %s: %w", name, c.cfg.NodeName, err)
	default:
		if have, _, _ := unstructured.NestedFieldCopy(cur.Object, "spec"); spec != nil && fmt.Sprint(have) != fmt.Sprint(spec) {
			_ = unstructured.SetNestedField(cur.Object, spec, "spec")
			if _, err := tenants.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("update tenant %q in the cell behind node %s: %w", name, c.cfg.NodeName, err)
			}
		}
	}
	var why string
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		u, err := tenants.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			why = err.Error()
			return false, nil
		}
		t, err := tenant.FromUnstructured(u)
		if err != nil {
			return false, err
		}
		why = "phase " + t.Status.Phase
		for _, cond := range t.Status.Conditions {
			why += "; " + cond.Reason + ": " + cond.Message
		}
		return t.Status.Phase == tenant.PhaseReady, nil
	})
	if err != nil {
		return fmt.Errorf("tenant %q is not Ready in the cell behind node %s (%s): %w", name, c.cfg.NodeName, why, err)
	}
	return nil
}
