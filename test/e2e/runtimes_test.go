package e2e

import "testing"

// runtimeClasses are the RuntimeClass names every pod-semantics test runs
// under; "" is the node's default (runc).
var runtimeClasses = []string{""}

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
