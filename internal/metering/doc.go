// Package metering bills tenant pods by the resource-second, and tenant
// volumes by their provisioned size per second (volume.go): it watches every
// pod in a tenant namespace (one labelled cci.io/tenant=<name>), turns the
// time it held a sandbox into CPU-core-seconds, GiB-seconds and GPU-seconds
// of its flavor, writes that durably as UsageRecord objects (usagerecords.cci.io,
// cluster-scoped, one per tenant per UTC hour with one line per pod), prices
// it with a price table, and serves it as JSON over HTTPS to the tenant that
// owns it.
//
// A pod is metered over one interval of whole seconds:
//
//	no status.startTime ──────────────────────────────► never billed
//	startTime set (sandbox preparation, image pull included)
//	    │ open: billed up to now, written every FlushInterval
//	    ├─► phase Succeeded/Failed ─► closed at the latest container finishedAt
//	    ├─► vanished, all containers terminated ─► closed at their latest finishedAt
//	    ├─► vanished while running ─► closed when the meter saw it go
//	    └─► vanished while the meter was down ─► closed at the last moment the
//	        meter had written it as running (never billed for time not seen)
//
// Durability without gaps or double counting: a pod's interval is recomputed
// from its API object (startTime and container finish times survive restarts
// of server and agent), and each hourly record holds, per pod UID, that
// interval clipped to the hour. Writing a line replaces the pod's previous
// line in that hour, so processing the same pod any number of times, before
// or after a restart, yields the same records. Lines of pods still running
// carry open=true and their record the label cci.io/open=true; on start the
// meter reads them back, so a pod that vanished meanwhile is closed rather
// than billed forever or forgotten.
package metering
