// Package runtime runs the pods bound to this host: it is the agent's one
// real implementation of the virtual-kubelet provider interface, built on
// containerd (through its Go client) and CNI.
//
// Each pod gets a worker goroutine that drives it, kubelet-style, through
//
//	Pending ──► sandbox (netns + IP, volumes, /etc files)
//	        ──► images pulled ──► init containers, one by one, each to exit 0
//	        ──► app containers running ◄──┐ restart per restartPolicy,
//	                    │                 └─ with back-off (10 s doubling to 5 min)
//	                    ▼
//	        Succeeded / Failed (sandbox released at once, logs kept)
//	any state ──DeletePod──► containers stopped (SIGTERM, grace, SIGKILL)
//	        ──► containers, snapshots, netns, IP lease, mounts removed ──► gone
//
// Beside each running container run its probes (liveness, readiness, startup;
// probe.go, with the kubelet's own probers) and lifecycle hooks (lifecycle.go,
// with the kubelet's hook runner). They report to the pod's worker through its
// event channel: the worker goroutine is the only writer of the record.
//
// A pod's record (spec, IPs, container states, restart counts, probe results) is written to
// <state>/pods/<uid>/record.json at every transition, so an agent that starts
// again re-adopts the containers still running in containerd, with their
// restart counts and start times, and reports the ones that exited meanwhile.
//
// A pod's spec may change while it runs, as on a kubelet: a new
// activeDeadlineSeconds is enforced at the next sync (DeadlineExceeded),
// status.observedGeneration follows each spec the worker takes, and an
// in-place resize is admitted and actuated on the containers' cgroups
// (resize.go). clusterTrustBundle and podCertificate projections are
// served by the kubelet's own managers, which the agent hands in.
//
// Resource usage (/stats/summary, /metrics/resource) is read from the
// containers' cgroups through a CgroupReader at each request; pods whose
// containers share one sandbox cgroup are read from that cgroup.
package runtime
