package e2e

import "testing"

// runtimeClasses are the RuntimeClass names every pod-semantics test runs
// under; "" is the node's default (runc).
var runtimeClasses = []string{"", "gvisor"}

// forEachRuntime runs f once per runtime class, as a subtest named after it.
func forEachRuntime(t *testing.T, f func(t *testing.T, runtimeClass string)) {
	t.Helper()
	for _, rc := range runtimeClasses {
		name := rc
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) { f(t, rc) })
	}
}

// runtimeClassPtr is the pod spec value for a runtime class name.
func runtimeClassPtr(rc string) *string {
	if rc == "" {
		return nil
	}
	return &rc
}

// webDeployment is the Deployment the deployment, restart and delete tests
// share under a runtime class: its name (also its app label) and replicas.
func webDeployment(rc string) (name string, replicas int) {
	if rc == "" {
		return "web", 3
	}
	// gVisor sandboxes cost more memory and CPU: two replicas show the same.
	return "web-" + rc, 2
}
