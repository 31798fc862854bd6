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
