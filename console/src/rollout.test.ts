import { describe, expect, it } from 'vitest';
import { decodeSecret, history, restartPatch, rolloutStatus } from './rollout';

const dep = (over: any = {}) => ({
  metadata: { name: 'web', uid: 'd1', generation: 2, annotations: { 'deployment.kubernetes.io/revision': '2' } },
  spec: { replicas: 3 },
  status: { observedGeneration: 2, replicas: 3, updatedReplicas: 3, availableReplicas: 3, readyReplicas: 3 },
  ...over,
});

describe('rolloutStatus', () => {
  it('words each stage as kubectl rollout status', () => {
    expect(rolloutStatus(dep())).toEqual({ done: true, message: 'deployment web successfully rolled out' });
    expect(rolloutStatus(dep({ status: { observedGeneration: 1 } })).message).toMatch(/spec update to be observed/);
    expect(rolloutStatus(dep({ status: { observedGeneration: 2, replicas: 4, updatedReplicas: 1 } })).message).toMatch(/1 out of 3 new replicas/);
    expect(rolloutStatus(dep({ status: { observedGeneration: 2, replicas: 4, updatedReplicas: 3 } })).message).toMatch(/1 old replicas are pending termination/);
    expect(rolloutStatus(dep({ status: { observedGeneration: 2, replicas: 3, updatedReplicas: 3, availableReplicas: 2 } })).message).toMatch(/2 of 3 updated replicas are available/);
    const stuck = rolloutStatus(dep({ status: { observedGeneration: 2, conditions: [{ type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded' }] } }));
    expect(stuck).toEqual({ done: false, message: 'deployment web exceeded its progress deadline' });
  });
});

describe('history', () => {
  it('lists only owned ReplicaSets, newest revision first, marking the current', () => {
    const rs = (name: string, rev: string, owner: string, image: string) => ({
      metadata: { name, creationTimestamp: '2026-01-01T00:00:00Z', annotations: { 'deployment.kubernetes.io/revision': rev }, ownerReferences: [{ uid: owner }] },
      spec: { template: { spec: { containers: [{ image }] } } },
      status: { replicas: rev === '2' ? 3 : 0, readyReplicas: rev === '2' ? 3 : 0 },
    });
    const h = history(dep(), [rs('web-a', '1', 'd1', 'img:1'), rs('other', '5', 'x', 'img:9'), rs('web-b', '2', 'd1', 'img:2')]);
    expect(h.map((r) => [r.revision, r.name, r.images, r.current])).toEqual([[2, 'web-b', 'img:2', true], [1, 'web-a', 'img:1', false]]);
  });
});

describe('restartPatch', () => {
  it('sets the pod template annotation kubectl rollout restart sets', () => {
    expect(restartPatch(new Date('2026-03-01T10:00:00Z'))).toEqual({ spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': '2026-03-01T10:00:00.000Z' } } } } });
  });
});

describe('decodeSecret', () => {
  it('decodes UTF-8 and names binary data', () => {
    expect(decodeSecret({ password: btoa('s3cr3t'), key: btoa(String.fromCharCode(0xff, 0xfe)) })).toEqual({ password: 's3cr3t', key: '(2 bytes of binary data)' });
  });
});
