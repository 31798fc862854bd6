package runtime

// Ephemeral containers.
//
// `kubectl debug` adds a container to a running pod through the pod's
// ephemeralcontainers subresource; the node learns of it as an update of the
// pod's spec. As the kubelet does, the agent starts each one once in the
// pod's sandbox (its network namespace, volumes and /etc files, and for a
// gvisor pod its gVisor sandbox, where one with a terminal cannot start and
// says so in its status), in the process namespace of its
// targetContainerName where the runtime can give one, and never restarts
// it. Its status is in status.ephemeralContainerStatuses; logs, exec and
// attach reach it like any container. It has no part in the pod's phase or
// readiness.

import (
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	v1 "k8s.io/api/core/v1"
)

// errGVisorEphemeralTTY is the status of an ephemeral container with a
// terminal added to a gvisor pod.
const errGVisorEphemeralTTY = "ephemeral containers with a terminal (tty: true, kubectl debug -t) cannot start in gVisor pods on this node: the runtime (runsc) does not return from starting one; add it without -t (kubectl debug -i), or debug a copy of the pod (kubectl debug --copy-to)"

// syncEphemeral starts the ephemeral containers that have not run yet; it
// returns how long until one should be tried again (0: on an event).
func (w *podWorker) syncEphemeral() time.Duration {
	pod := w.pod()
	var next time.Duration
	for i := range pod.Spec.EphemeralContainers {
		ec := &pod.Spec.EphemeralContainers[i]
		cr := w.rec.ctr(ec.Name)
		if cr == nil {
			cr = &ctrRecord{
				Name: ec.Name, Ephemeral: true, ID: containerID(pod, ec.Name),
				State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}},
			}
			w.update(func(rec *podRecord) { rec.Containers = append(rec.Containers, cr) })
		}
		st := w.state(cr)
		if st.Running != nil || st.Terminated != nil {
			continue // runs, or ran: never again
		}
		w.mu.Lock()
		gvisorPod := sandboxRoot(w.rec) != ""
		w.mu.Unlock()
		if gvisorPod && ec.TTY {
			// runsc (2022-12) does not come back from starting a
			// container with a terminal in a running sandbox: the start
			// would hang the pod's worker. The container waits with the
			// reason instead, as the kubelet shows one it cannot create.
			w.update(func(*podRecord) {
				cr.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{
					Reason:  "CreateContainerError",
					Message: errGVisorEphemeralTTY,
				}}
			})
			continue
		}
		c := v1.Container(ec.EphemeralContainerCommon)
		if d := w.ensureStarted(&c, cr, false); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// targetNamespaceOpts puts an ephemeral container in the process namespace
// of its target container, as containerd's CRI does for a target
// (NamespaceMode_TARGET): the namespace of the target's running process.
// A gvisor pod's containers share the sandbox's kernel, whose process
// namespaces the host cannot name: there the option is not honoured, as a
// runtime without the feature does.
func (w *podWorker) targetNamespaceOpts(pod *v1.Pod, name string) ([]oci.SpecOpts, error) {
	var target string
	for _, ec := range pod.Spec.EphemeralContainers {
		if ec.Name == name {
			target = ec.TargetContainerName
		}
	}
	w.mu.Lock()
	root := sandboxRoot(w.rec)
	w.mu.Unlock()
	if target == "" || root != "" {
		return nil, nil
	}
	lt := w.tasks[target]
	if lt == nil {
		return nil, fmt.Errorf("target container %q of ephemeral container %q is not running", target, name)
	}
	pid := lt.task.Pid()
	if pid == 0 {
		return nil, fmt.Errorf("target container %q of ephemeral container %q has no process", target, name)
	}
	return []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{
		Type: specs.PIDNamespace,
		Path: fmt.Sprintf("/proc/%d/ns/pid", pid),
	})}, nil
}
