package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// HostIDAnnotation names the host that runs a node: a random id kept in
// the agent's data folder, so that a second host started with a node name
// already in use is told apart from the same host restarting.
const HostIDAnnotation = "node.cci.io/host-id"

// ErrNodeDeleted is returned by Run when the host's node was deleted from
// the cluster while the agent ran (kubectl delete node).
var ErrNodeDeleted = errors.New("node deleted from the cluster")

// hostID returns this data folder's host id, created on first use.
func hostID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "agent", "host-id")
	if raw, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(raw)); id != "" {
			return id, nil
		}
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("read host id: %w", err)
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create %q: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write host id: %w", err)
	}
	return id, nil
}

// nameHolder says whether an existing node of the wanted name belongs to
// another live host: the node names another host id and its Lease was
// renewed within its duration. A node without a host id (registered by an
// older agent) or whose lease lapsed (its host died) may be taken over.
// It returns the other host's id and how long ago its lease was renewed.
func nameHolder(n *v1.Node, lease *coordinationv1.Lease, self string, now time.Time) (other string, age time.Duration, inUse bool) {
	if n == nil {
		return "", 0, false
	}
	other = n.Annotations[HostIDAnnotation]
	if other == "" || other == self {
		return other, 0, false
	}
	if lease == nil || lease.Spec.RenewTime == nil {
		return other, 0, false
	}
	age = now.Sub(lease.Spec.RenewTime.Time)
	duration := 40 * time.Second
	if lease.Spec.LeaseDurationSeconds != nil {
		duration = time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
	}
	return other, age, age < duration
}

// tokenError turns the apiserver's refusal of the join token into what
// the user can do about it.
func tokenError(server string, err error) error {
	if apierrors.IsUnauthorized(err) {
		return fmt.Errorf("the apiserver at %s refused the join token (401 Unauthorized): the token is wrong or was revoked; "+
			"use the current one from the server's <data>/pki/token: %w", server, err)
	}
	return err
}

// checkJoin is the agent's first call to the API, before it touches
// anything on the host: the token must be accepted and the node name must
// not be another live host's.
func checkJoin(ctx context.Context, kube kubernetes.Interface, server, name, id string) error {
	n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up node %q: %w", name, tokenError(server, err))
	}
	lease, err := kube.CoordinationV1().Leases(v1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("look up the lease of node %q: %w", name, err)
	}
	if other, age, inUse := nameHolder(n, lease, id, time.Now()); inUse {
		return fmt.Errorf("node name %q is in use by another host (id %s, lease renewed %s ago); pass --node-name with a name of this host's own",
			name, other, age.Round(time.Second))
	}
	return nil
}

// cidrNotAvailable reports the controller-manager's CIDRNotAvailable event
// on the node, if there is one: the cluster's pod range has no subnet left
// for it.
func cidrNotAvailable(ctx context.Context, kube kubernetes.Interface, n *v1.Node) error {
	sel := fields.Set{"involvedObject.kind": "Node", "involvedObject.name": n.Name, "reason": "CIDRNotAvailable"}.AsSelector().String()
	evs, err := kube.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil
	}
	// Events outlive nodes: one about an earlier node of this name says nothing.
	recent := false
	for _, e := range evs.Items {
		t := e.LastTimestamp.Time
		if t.IsZero() {
			t = e.EventTime.Time
		}
		if !t.Before(n.CreationTimestamp.Time) {
			recent = true
		}
	}
	if !recent {
		return nil
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	held, sample := 0, ""
	if err == nil {
		for _, o := range nodes.Items {
			if o.Spec.PodCIDR != "" {
				held++
				sample = o.Spec.PodCIDR
			}
		}
	}
	rangeOf := "(the server's --cluster-cidr, default 10.42.0.0/16)"
	if cm, err := kube.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, "cci-network", metav1.GetOptions{}); err == nil && cm.Data["clusterCIDR"] != "" {
		rangeOf = cm.Data["clusterCIDR"] + " (the server's --cluster-cidr)"
	}
	return fmt.Errorf("node %q got no pod CIDR: the controller-manager reports CIDRNotAvailable: the cluster's pod range "+
		"%s has no free subnet left; %d nodes hold one (for example %s); "+
		"restart the server with a wider --cluster-cidr or a longer --node-cidr-mask-size, or delete nodes that are gone",
		n.Name, rangeOf, held, sample)
}
