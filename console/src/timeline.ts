// A pod's story, to answer "why is it Pending?" and "why did it die?":
// its conditions, events and container states merged into one timeline,
// and a verdict that names the most telling reason.

export type Level = 'ok' | 'warn' | 'error';
export interface Entry { time: string; level: Level; title: string; detail: string }

const warnReasons = /BackOff|Failed|Unhealthy|Evicted|OOM|Killing|Preempt|FailedScheduling|Unschedulable|ErrImage|InvalidImageName|CreateContainerConfigError/;

// timeline lists what happened to the pod, oldest first.
export function timeline(pod: any, events: any[]): Entry[] {
  const out: Entry[] = [];
  if (pod?.metadata?.creationTimestamp) out.push({ time: pod.metadata.creationTimestamp, level: 'ok', title: 'Created', detail: '' });
  for (const c of pod?.status?.conditions || []) {
    if (!c.lastTransitionTime) continue;
    const bad = c.status !== 'True';
    // A condition that is False without a reason is only "not yet": events say why.
    if (bad && !c.reason) continue;
    out.push({ time: c.lastTransitionTime, level: bad ? 'warn' : 'ok', title: `${c.type}${bad ? ` = ${c.status}` : ''}${c.reason ? ` (${c.reason})` : ''}`, detail: c.message || '' });
  }
  for (const e of events) {
    const time = e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata?.creationTimestamp;
    const level: Level = e.type === 'Warning' ? (warnReasons.test(e.reason) ? 'error' : 'warn') : 'ok';
    out.push({ time, level, title: `${e.reason}${e.count > 1 ? ` ×${e.count}` : ''}`, detail: e.message || '' });
  }
  for (const s of [...(pod?.status?.initContainerStatuses || []), ...(pod?.status?.containerStatuses || [])]) {
    for (const [which, st] of [['last', s.lastState], ['now', s.state]] as const) {
      const term = st?.terminated;
      if (term) {
        const level: Level = term.exitCode === 0 ? 'ok' : 'error';
        const t = term.finishedAt || term.startedAt;
        if (term.startedAt) out.push({ time: term.startedAt, level: 'ok', title: `${s.name} started`, detail: '' });
        if (t) out.push({ time: t, level, title: `${s.name} ${term.reason === 'OOMKilled' ? 'was OOMKilled' : 'exited'} (exit code ${term.exitCode}${term.signal ? `, signal ${term.signal}` : ''})`, detail: [term.reason, term.message].filter(Boolean).join(': ') + (which === 'last' ? ' — previous run' : '') });
      }
      if (which === 'now' && st?.running?.startedAt) out.push({ time: st.running.startedAt, level: 'ok', title: `${s.name} running`, detail: s.ready ? 'ready' : 'not ready yet' });
    }
  }
  return out.filter((e) => e.time).sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
}

// verdict is one sentence on why the pod is not running well, or null
// when it runs (or finished) well.
export function verdict(pod: any, events: any[]): string | null {
  if (!pod) return null;
  const phase = pod.status?.phase;
  const statuses = [...(pod.status?.initContainerStatuses || []), ...(pod.status?.containerStatuses || [])];
  for (const s of statuses) {
    const w = s.state?.waiting;
    if (w && /ErrImagePull|ImagePullBackOff|InvalidImageName/.test(w.reason)) {
      const pull = lastEvent(events, (e) => e.reason === 'Failed' && /pull|image/i.test(e.message || ''));
      return `Container ${s.name} cannot start: its image ${s.image} cannot be pulled (${w.reason}): ${pull?.message || w.message || ''}`.trim();
    }
    if (w?.reason === 'CrashLoopBackOff') {
      const last = s.lastState?.terminated;
      const why = last ? (last.reason === 'OOMKilled' ? 'it was OOMKilled (out of memory: raise its memory limit)' : `it exited with code ${last.exitCode}${last.reason ? ` (${last.reason})` : ''}`) : 'it keeps exiting';
      return `Container ${s.name} keeps restarting (${s.restartCount} restarts): ${why}`;
    }
    if (w?.reason && w.reason !== 'ContainerCreating' && w.reason !== 'PodInitializing') return `Container ${s.name} is waiting: ${w.reason}${w.message ? `: ${w.message}` : ''}`;
  }
  for (const s of statuses) {
    const term = s.state?.terminated;
    if (term && term.exitCode !== 0) {
      return term.reason === 'OOMKilled'
        ? `Container ${s.name} was OOMKilled (exit code ${term.exitCode}): it used more memory than its limit`
        : `Container ${s.name} exited with code ${term.exitCode}${term.reason ? ` (${term.reason})` : ''}${term.message ? `: ${term.message}` : ''}`;
    }
  }
  if (phase === 'Pending') {
    const sched = (pod.status?.conditions || []).find((c: any) => c.type === 'PodScheduled' && c.status === 'False');
    if (sched) return `Not scheduled (${sched.reason || 'Unschedulable'}): ${sched.message || lastEvent(events, (e) => e.reason === 'FailedScheduling')?.message || ''}`.trim();
    const failed = lastEvent(events, (e) => e.type === 'Warning');
    if (failed) return `Pending: ${failed.reason}: ${failed.message}`;
    return 'Pending: the pod is scheduled and its containers are being created';
  }
  if (phase === 'Failed') return `Failed${pod.status?.reason ? ` (${pod.status.reason})` : ''}${pod.status?.message ? `: ${pod.status.message}` : ''}`;
  if (phase === 'Running') {
    const probe = lastEvent(events, (e) => e.reason === 'Unhealthy');
    const notReady = statuses.find((s) => !s.ready);
    if (notReady && probe) return `Container ${notReady.name} is not ready: ${probe.message}`;
  }
  return null;
}

function lastEvent(events: any[], f: (e: any) => boolean): any | undefined {
  const t = (e: any) => Date.parse(e.lastTimestamp || e.eventTime || e.metadata?.creationTimestamp || 0);
  return events.filter(f).sort((a, b) => t(a) - t(b)).pop();
}

// podReason is the short reason a list shows for a Pending pod.
export function pendingReason(pod: any): string {
  const w = (pod.status?.containerStatuses || []).map((s: any) => s.state?.waiting).find((w: any) => w?.reason);
  if (w) return `${w.reason}${w.message ? `: ${w.message}` : ''}`;
  const c = (pod.status?.conditions || []).find((c: any) => c.status === 'False' && c.reason);
  if (c) return `${c.reason}${c.message ? `: ${c.message}` : ''}`;
  return 'ContainerCreating';
}
