import { describe, expect, it } from 'vitest';
import { decodeSecret, history, restartPatch, rollbackPatch, rolloutStatus } from './rollout';

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

describe('rollbackPatch', () => {
  const tpl = (image: string, hash?: string) => ({
    metadata: { labels: { app: 'web', ...(hash ? { 'pod-template-hash': hash } : {}) }, annotations: { 'kubectl.kubernetes.io/restartedAt': 'x' } },
    spec: { containers: [{ name: 'app', image }] },
  });
  const d = {
    metadata: { name: 'web', uid: 'd1', annotations: { 'deployment.kubernetes.io/revision': '2', 'kubernetes.io/change-cause': 'v2', 'kubectl.kubernetes.io/last-applied-configuration': '{}' } },
    spec: { template: tpl('img:2') },
  };
  const rs = (rev: string, image: string, hash: string, owner = 'd1') => ({
    metadata: { name: `web-${hash}`, annotations: { 'deployment.kubernetes.io/revision': rev, 'kubernetes.io/change-cause': `v${rev}`, 'deployment.kubernetes.io/desired-replicas': '3' }, ownerReferences: [{ uid: owner }] },
    spec: { template: tpl(image, hash) },
  });
  const sets = [rs('1', 'img:1', 'aaa'), rs('2', 'img:2', 'bbb'), rs('1', 'img:9', 'zzz', 'other')];

  it('puts the revision\'s template back, without the hash label, with its annotations', () => {
    expect(rollbackPatch(d, sets, 1)).toEqual([
      { op: 'replace', path: '/spec/template', value: tpl('img:1') },
      { op: 'replace', path: '/metadata/annotations', value: {
        'deployment.kubernetes.io/revision': '2',
        'kubectl.kubernetes.io/last-applied-configuration': '{}',
        'kubernetes.io/change-cause': 'v1',
      } },
    ]);
    // The ReplicaSet itself is left as it was.
    expect(sets[0].spec.template.metadata.labels['pod-template-hash']).toBe('aaa');
  });
  it('refuses what kubectl refuses', () => {
    expect(() => rollbackPatch(d, sets, 2)).toThrow('already runs the template of revision 2');
    expect(() => rollbackPatch(d, sets, 7)).toThrow('no revision 7 in its history');
    expect(() => rollbackPatch({ ...d, spec: { ...d.spec, paused: true } }, sets, 1)).toThrow('paused');
  });
  it('compares templates whatever the order of their keys', () => {
    const reordered = { ...d, spec: { template: { spec: { containers: [{ image: 'img:1', name: 'app' }] }, metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': 'x' }, labels: { app: 'web' } } } } };
    expect(() => rollbackPatch(reordered, sets, 1)).toThrow('already runs');
  });
});
