// Package bench measures CCI on the machine it runs on: pod start latency,
// burst throughput, churn, density, control-plane scale, the pod network
// (one host and across hosts) and the gateway (against the pod straight),
// each against the
// floor of the same machine measured in the same run (the same image started
// straight through containerd), so that figures are ratios that hold on any
// hardware. `cci bench SCENARIO` is its command line; docs/bench.md explains
// every figure.
//
// A run goes
//
//	cluster ──► namespace ──► floor ──► warm-up pod ──► measure ──► delete pods
//	(own `cci up` child,        (containerd               (watch     ──► host clean?
//	 or --kubeconfig)            direct)                   events)    ──► namespace gone
//	                                                                  ──► report: table, JSON, HTML
//
// and cleans up on every path, Ctrl-C included: pods deleted, host checked
// for leftovers (containers, shims, netns, IP leases, mounts, iptables
// rules), the cluster child stopped and its folder and bridge removed.
//
// Times are taken in the bench's own clock: a pod is Running when the
// bench's watch sees it so, as any API client would; its first instruction
// is the microsecond stamp the container writes, read back through the
// logs API (the container shares the host's clock).
package bench
