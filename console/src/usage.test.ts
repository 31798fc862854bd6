import { describe, expect, it } from 'vitest';
import { csvHeader, usageCSV, usageRows } from './usage';

const report = {
  currency: 'CNY',
  tenants: [{
    tenant: 'acme',
    namespaces: [{
      namespace: 'acme', seconds: 100, coreSeconds: 50, gibSeconds: 100, gpuSeconds: 10, cost: 0.5,
      pods: [{ name: 'web-1', uid: 'u1', cpu: 0.5, memoryGiB: 1, gpu: 1, running: true, seconds: 100, coreSeconds: 50, gibSeconds: 100, gpuSeconds: 10, cost: 0.5 }],
    }],
  }],
  days: [
    { date: '2026-03-01', seconds: 0, coreSeconds: 0, gibSeconds: 0, gpuSeconds: 0, cost: 0, namespaces: [] },
    { date: '2026-03-02', seconds: 100, coreSeconds: 50, gibSeconds: 100, gpuSeconds: 10, cost: 0.5, namespaces: [{ tenant: 'acme', namespace: 'acme', seconds: 100, coreSeconds: 50, gibSeconds: 100, gpuSeconds: 10, cost: 0.5 }] },
  ],
};

describe('usageRows', () => {
  it('gives pods, namespaces and every day, GPU-seconds included', () => {
    const r = usageRows(report);
    expect(r.pods.map((p) => [p.namespace, p.name, p.gpuSeconds, p.running])).toEqual([['acme', 'web-1', 10, true]]);
    expect(r.namespaces.map((n) => [n.tenant, n.namespace, n.cost])).toEqual([['acme', 'acme', 0.5]]);
    expect(r.days.map((d) => [d.date, d.coreSeconds, d.gibSeconds, d.gpuSeconds, d.cost])).toEqual([['2026-03-01', 0, 0, 0, 0], ['2026-03-02', 50, 100, 10, 0.5]]);
  });
  it('takes a report without days or tenants', () => {
    expect(usageRows({ tenants: [] })).toEqual({ pods: [], namespaces: [], days: [] });
    expect(usageRows(undefined)).toEqual({ pods: [], namespaces: [], days: [] });
  });
});

describe('usageCSV', () => {
  it('has a row per pod and a row per namespace per day', () => {
    const rows = usageCSV(report);
    expect(rows[0]).toEqual(csvHeader);
    expect(rows.slice(1)).toEqual([
      ['pod', '', 'acme', 'acme', 'web-1', 0.5, 1, 1, 100, 50, 100, 10, 0.5, 'CNY'],
      ['day', '2026-03-02', 'acme', 'acme', '', '', '', '', 100, 50, 100, 10, 0.5, 'CNY'],
    ]);
  });
});
