package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

func TestNameHolder(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	node := func(id string) *v1.Node {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "h1"}}
		if id != "" {
			n.Annotations = map[string]string{HostIDAnnotation: id}
		}
		return n
	}
	lease := func(ago time.Duration) *coordinationv1.Lease {
		d := int32(40)
		return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{
			HolderIdentity: new("h1"), LeaseDurationSeconds: &d, RenewTime: &metav1.MicroTime{Time: now.Add(-ago)},
		}}
	}
	tests := []struct {
		name  string
		node  *v1.Node
		lease *coordinationv1.Lease
		inUse bool
	}{
		{"no node", nil, nil, false},
		{"same host restarting", node("me"), lease(time.Second), false},
		{"node of an older agent without id", node(""), lease(time.Second), false},
		{"another host, lease fresh", node("other"), lease(5 * time.Second), true},
		{"another host, lease just lapsed", node("other"), lease(41 * time.Second), false},
		{"another host, no lease yet", node("other"), nil, false},
		{"another host, lease never renewed", node("other"), &coordinationv1.Lease{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			other, age, inUse := nameHolder(tc.node, tc.lease, "me", now)
			if inUse != tc.inUse {
				t.Fatalf("in use %v (holder %q, %s ago), want %v", inUse, other, age, tc.inUse)
			}
			if inUse && (other != "other" || age != 5*time.Second) {
				t.Errorf("holder %q renewed %s ago, want other, 5s", other, age)
			}
		})
	}
}

func TestHostIDPersists(t *testing.T) {
	dir := t.TempDir()
	a, err := hostID(dir)
	if err != nil || len(a) != 16 {
		t.Fatalf("host id %q: %v", a, err)
	}
	b, err := hostID(dir)
	if err != nil || b != a {
		t.Fatalf("second read %q (%v), want %q", b, err, a)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "agent", "host-id")); strings.TrimSpace(string(raw)) != a {
		t.Errorf("file holds %q", raw)
	}
	if c, _ := hostID(t.TempDir()); c == a {
		t.Errorf("two data folders share host id %q", a)
	}
}

func TestTokenError(t *testing.T) {
	err := tokenError("https://10.0.0.1:6443", apierrors.NewUnauthorized("Unauthorized"))
	if !strings.Contains(err.Error(), "wrong or was revoked") || !strings.Contains(err.Error(), "<data>/pki/token") || !apierrors.IsUnauthorized(errors.Unwrap(err)) {
		t.Errorf("401: %v", err)
	}
	other := apierrors.NewForbidden(v1.Resource("nodes"), "h1", errors.New("no"))
	if got := tokenError("https://10.0.0.1:6443", other); got != other {
		t.Errorf("403 changed: %v", got)
	}
}

func TestCIDRNotAvailable(t *testing.T) {
	created := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "h9", CreationTimestamp: metav1.NewTime(created)}}
	event := func(at time.Time) *v1.Event {
		return &v1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: "h9." + at.Format("150405"), Namespace: "default"},
			InvolvedObject: v1.ObjectReference{Kind: "Node", Name: "h9"},
			Reason:         "CIDRNotAvailable", LastTimestamp: metav1.NewTime(at),
		}
	}
	other := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "h1"}, Spec: v1.NodeSpec{PodCIDR: "10.42.0.0/24"}}
	tests := []struct {
		name    string
		objects []runtime.Object
		want    bool
	}{
		{"no event", []runtime.Object{node, other}, false},
		{"event about an earlier node of the name", []runtime.Object{node, other, event(created.Add(-time.Hour))}, false},
		{"event about this node", []runtime.Object{node, other, event(created.Add(time.Second))}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := cidrNotAvailable(context.Background(), fake.NewClientset(tc.objects...), node)
			if (err != nil) != tc.want {
				t.Fatalf("got %v, want an error: %v", err, tc.want)
			}
			if err != nil {
				for _, s := range []string{"CIDRNotAvailable", "--cluster-cidr", "--node-cidr-mask-size", "1 nodes hold one (for example 10.42.0.0/24)"} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("message lacks %q: %v", s, err)
					}
				}
			}
		})
	}
}
