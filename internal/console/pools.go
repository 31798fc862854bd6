package console

import (
	"errors"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cci-project/cci/internal/pool"
)

// PoolRow is one host pool as `cci pool list` shows it.
type PoolRow struct {
	Name       string `json:"name"`
	Hosts      int    `json:"hosts"`
	ReadyHosts int    `json:"readyHosts"`
	// Allocatable and Requested are quantities by resource name (cpu,
	// memory, pods, then devices such as nvidia.com/gpu).
	Allocatable map[string]string `json:"allocatable"`
	Requested   map[string]string `json:"requested"`
	Resources   []string          `json:"resources"`
}

// pools answers GET /cci/pools: the nodes and pods, read as the user (an
// operator; a tenant gets the API's 403), summed per pool by the same
// code as `cci pool list`.
func (s *Server) pools(w http.ResponseWriter, r *http.Request, sess session) {
	kube, err := kubernetes.NewForConfig(s.restConfig(sess.Cred))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	nodes, err := kube.CoreV1().Nodes().List(r.Context(), metav1.ListOptions{})
	if err != nil {
		writeAPIError(w, "list nodes", err)
		return
	}
	pods, err := kube.CoreV1().Pods("").List(r.Context(), metav1.ListOptions{FieldSelector: "status.phase!=Succeeded,status.phase!=Failed"})
	if err != nil {
		writeAPIError(w, "list pods", err)
		return
	}
	np := make([]*corev1.Node, len(nodes.Items))
	for i := range nodes.Items {
		np[i] = &nodes.Items[i]
	}
	pp := make([]*corev1.Pod, len(pods.Items))
	for i := range pods.Items {
		pp[i] = &pods.Items[i]
	}
	out := []PoolRow{}
	for _, p := range pool.Summarize(np, pp) {
		row := PoolRow{Name: p.Name, Hosts: p.Hosts, ReadyHosts: p.ReadyHosts, Allocatable: map[string]string{}, Requested: map[string]string{}}
		for _, name := range p.Resources() {
			row.Resources = append(row.Resources, string(name))
			a, q := p.Allocatable[name], p.Requested[name]
			row.Allocatable[string(name)] = a.String()
			row.Requested[string(name)] = q.String()
		}
		out = append(out, row)
	}
	writeJSON(w, map[string]any{"pools": out})
}

// writeAPIError passes on the API's own status and words (403 forbidden,
// 401 expired) for a call the console made as the user.
func writeAPIError(w http.ResponseWriter, what string, err error) {
	code := http.StatusBadGateway
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code = int(st.Status().Code)
	}
	writeError(w, code, fmt.Sprintf("%s: %v", what, err))
}
