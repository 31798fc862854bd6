// The usage page's rows, out of the usage endpoint's report by day
// (GET /cci/usage?by=day: tenants, their namespaces and pods over this
// month, and the month's days, each per namespace).

export interface Quantities { seconds?: number; coreSeconds: number; gibSeconds: number; gpuSeconds: number; cost: number }
export interface PodRow extends Quantities { tenant: string; namespace: string; name: string; uid: string; cpu: number; memoryGiB: number; gpu: number; running: boolean }
export interface NamespaceRow extends Quantities { tenant: string; namespace: string }
export interface DayRow extends Quantities { date: string }

export interface UsageRows { pods: PodRow[]; namespaces: NamespaceRow[]; days: DayRow[] }

const quantities = (u: any): Quantities => ({
  seconds: u?.seconds || 0,
  coreSeconds: u?.coreSeconds || 0,
  gibSeconds: u?.gibSeconds || 0,
  gpuSeconds: u?.gpuSeconds || 0,
  cost: u?.cost || 0,
});

// usageRows flattens a report into the page's three tables. The days are
// the whole report's (all the namespaces the user may read, as the other
// two tables), every day of the month so far, days without usage as zero.
export function usageRows(rep: any): UsageRows {
  const out: UsageRows = { pods: [], namespaces: [], days: [] };
  for (const tu of rep?.tenants || []) {
    for (const n of tu.namespaces || []) {
      out.namespaces.push({ tenant: tu.tenant, namespace: n.namespace, ...quantities(n) });
      for (const p of n.pods || []) {
        out.pods.push({ tenant: tu.tenant, namespace: n.namespace, name: p.name, uid: p.uid, cpu: p.cpu || 0, memoryGiB: p.memoryGiB || 0, gpu: p.gpu || 0, running: !!p.running, ...quantities(p) });
      }
    }
  }
  for (const d of rep?.days || []) out.days.push({ date: d.date, ...quantities(d) });
  return out;
}

export const csvHeader = ['kind', 'date', 'tenant', 'namespace', 'pod', 'cpu', 'memoryGiB', 'gpu', 'seconds', 'coreSeconds', 'gibSeconds', 'gpuSeconds', 'cost', 'currency'];

// usageCSV is one table for a spreadsheet: a row per pod over the month
// (kind "pod") and a row per namespace per day (kind "day"; the days'
// rows of a namespace add up to its pods' rows, give or take the last
// rounded digit of cost).
export function usageCSV(rep: any): (string | number)[][] {
  const cur = rep?.currency || '';
  const rows: (string | number)[][] = [csvHeader];
  for (const p of usageRows(rep).pods) {
    rows.push(['pod', '', p.tenant, p.namespace, p.name, p.cpu, p.memoryGiB, p.gpu, p.seconds ?? 0, p.coreSeconds, p.gibSeconds, p.gpuSeconds, p.cost, cur]);
  }
  for (const d of rep?.days || []) {
    for (const n of d.namespaces || []) {
      const q = quantities(n);
      rows.push(['day', d.date, n.tenant, n.namespace, '', '', '', '', q.seconds ?? 0, q.coreSeconds, q.gibSeconds, q.gpuSeconds, q.cost, cur]);
    }
  }
  return rows;
}
