// Rollouts of a Deployment as kubectl rollout status / history / restart
// show and do them.

export const revisionAnnotation = 'deployment.kubernetes.io/revision';
export const restartedAtAnnotation = 'kubectl.kubernetes.io/restartedAt';

export interface RolloutStatus { done: boolean; message: string }

// rolloutStatus says what kubectl rollout status would: waiting for the
// controller, for new replicas, for old ones to go, for availability, or
// done; a rollout past its progress deadline failed.
export function rolloutStatus(d: any): RolloutStatus {
  const spec = d.spec || {};
  const st = d.status || {};
  const name = d.metadata?.name;
  if ((d.metadata?.generation || 0) > (st.observedGeneration || 0)) return { done: false, message: 'Waiting for the deployment spec update to be observed' };
  const progressing = (st.conditions || []).find((c: any) => c.type === 'Progressing');
  if (progressing?.reason === 'ProgressDeadlineExceeded') return { done: false, message: `deployment ${name} exceeded its progress deadline` };
  const want = spec.replicas ?? 1;
  const updated = st.updatedReplicas || 0;
  const total = st.replicas || 0;
  const available = st.availableReplicas || 0;
  if (updated < want) return { done: false, message: `Waiting for deployment ${name} rollout to finish: ${updated} out of ${want} new replicas have been updated` };
  if (total > updated) return { done: false, message: `Waiting for deployment ${name} rollout to finish: ${total - updated} old replicas are pending termination` };
  if (available < updated) return { done: false, message: `Waiting for deployment ${name} rollout to finish: ${available} of ${updated} updated replicas are available` };
  return { done: true, message: `deployment ${name} successfully rolled out` };
}

export interface Revision { revision: number; name: string; images: string; replicas: number; ready: number; created: string; current: boolean; restartedAt?: string }

// history lists the ReplicaSets a Deployment owns by revision, newest
// first; the current one is the Deployment's revision.
export function history(d: any, replicaSets: any[]): Revision[] {
  const uid = d.metadata?.uid;
  const current = d.metadata?.annotations?.[revisionAnnotation];
  return replicaSets
    .filter((rs) => (rs.metadata?.ownerReferences || []).some((o: any) => o.uid === uid))
    .map((rs) => ({
      revision: Number(rs.metadata?.annotations?.[revisionAnnotation] || 0),
      name: rs.metadata.name,
      images: (rs.spec?.template?.spec?.containers || []).map((c: any) => c.image).join(', '),
      replicas: rs.status?.replicas || 0,
      ready: rs.status?.readyReplicas || 0,
      created: rs.metadata.creationTimestamp,
      current: rs.metadata?.annotations?.[revisionAnnotation] === current,
      restartedAt: rs.spec?.template?.metadata?.annotations?.[restartedAtAnnotation],
    }))
    .sort((a, b) => b.revision - a.revision);
}

// restartPatch is the merge patch kubectl rollout restart sends: a new
// pod template annotation, so the Deployment rolls its pods.
export function restartPatch(now: Date): any {
  return { spec: { template: { metadata: { annotations: { [restartedAtAnnotation]: now.toISOString() } } } } };
}

// Deployment annotations kubectl rollout undo keeps from the Deployment
// rather than taking from the ReplicaSet rolled back to: the
// controller's own bookkeeping and kubectl apply's record.
const keptAnnotations = new Set([
  'kubectl.kubernetes.io/last-applied-configuration',
  revisionAnnotation,
  'deployment.kubernetes.io/revision-history',
  'deployment.kubernetes.io/desired-replicas',
  'deployment.kubernetes.io/max-replicas',
  'deprecated.deployment.rollback.to',
]);

export const podTemplateHashLabel = 'pod-template-hash';

// stable is JSON with object keys sorted, to compare templates.
function stable(v: any): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stable(v[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

function withoutHash(tpl: any): any {
  const c = structuredClone(tpl || {});
  if (c.metadata?.labels) {
    delete c.metadata.labels[podTemplateHashLabel];
    if (Object.keys(c.metadata.labels).length === 0) delete c.metadata.labels;
  }
  return c;
}

// rollbackPatch is what kubectl rollout undo --to-revision sends: a JSON
// patch putting the chosen revision's ReplicaSet's pod template (less
// the controller's pod-template-hash label) back into the Deployment,
// with the ReplicaSet's annotations (change-cause and the like) in place
// of the Deployment's own, less those kubectl keeps. The controller
// then rolls to that ReplicaSet and gives it the next revision number.
// It throws, as kubectl does, for a paused Deployment, a revision that
// is not in the history, and the revision already running.
export function rollbackPatch(d: any, replicaSets: any[], revision: number): any[] {
  const name = d.metadata?.name;
  if (d.spec?.paused) throw new Error(`deployment ${name} is paused: resume it before rolling it back`);
  const rs = replicaSets.find((r) =>
    (r.metadata?.ownerReferences || []).some((o: any) => o.uid === d.metadata?.uid) &&
    Number(r.metadata?.annotations?.[revisionAnnotation]) === revision);
  if (!rs) throw new Error(`deployment ${name} has no revision ${revision} in its history`);
  const template = withoutHash(rs.spec?.template);
  if (stable(template) === stable(withoutHash(d.spec?.template))) throw new Error(`deployment ${name} already runs the template of revision ${revision}`);
  const annotations: Record<string, string> = {};
  for (const [k, v] of Object.entries<string>(d.metadata?.annotations || {})) if (keptAnnotations.has(k)) annotations[k] = v;
  for (const [k, v] of Object.entries<string>(rs.metadata?.annotations || {})) if (!keptAnnotations.has(k)) annotations[k] = v;
  return [
    { op: 'replace', path: '/spec/template', value: template },
    { op: 'replace', path: '/metadata/annotations', value: annotations },
  ];
}

// decodeSecret turns a Secret's base64 data into text (or says it is binary).
export function decodeSecret(data: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(data || {})) {
    const bytes = Uint8Array.from(atob(v), (c) => c.charCodeAt(0));
    try {
      out[k] = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      out[k] = `(${bytes.length} bytes of binary data)`;
    }
  }
  return out;
}
