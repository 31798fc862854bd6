import { get } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { usePoll } from '../poll';
import { csv, money } from '../format';
import { BarChart } from '../Chart';

export function Usage() {
  const { t } = useApp();
  const ns = useNs();
  const usage = usePoll(() => get('/cci/usage'), 15000, []);
  const rows: any[] = [];
  for (const tu of usage.data?.tenants || []) {
    for (const n of tu.namespaces || []) {
      for (const p of n.pods || []) rows.push({ tenant: tu.tenant, namespace: n.namespace, ...p });
    }
  }
  const cur = usage.data?.currency || '';
  const download = () => {
    const body = csv([['tenant', 'namespace', 'pod', 'cpu', 'memoryGiB', 'seconds', 'coreSeconds', 'gibSeconds', 'gpuSeconds', 'cost', 'currency'],
      ...rows.map((r) => [r.tenant, r.namespace, r.name, r.cpu, r.memoryGiB, r.seconds, r.coreSeconds, r.gibSeconds, r.gpuSeconds, r.cost, cur])]);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([body], { type: 'text/csv' }));
    a.download = `usage-${ns}.csv`;
    a.click();
  };
  return (
    <div className="card">
      <h2>{t('usage.title')}</h2>
      <ErrorBox error={usage.error} />
      {usage.data && (
        <>
          <p>Total: <strong data-testid="usage-total">{money(usage.data.total?.cost, cur)}</strong> · {usage.data.total?.coreSeconds} core-s · {usage.data.total?.gibSeconds} GiB-s · {usage.data.total?.gpuSeconds} GPU-s</p>
          <button onClick={download}>{t('usage.csv')}</button>
          {rows.length > 0 && <BarChart label={cur} labels={rows.map((r) => r.name)} values={rows.map((r) => r.cost)} />}
          <table data-testid="usage-table">
            <thead><tr><th>Namespace</th><th>{t('usage.pod')}</th><th>CPU</th><th>GiB</th><th>Seconds</th><th>Core-s</th><th>GiB-s</th><th>{t('usage.cost')}</th></tr></thead>
            <tbody>{rows.map((r) => (
              <tr key={r.uid}><td>{r.namespace}</td><td>{r.name}{r.running ? ' ●' : ''}</td><td>{r.cpu}</td><td>{r.memoryGiB}</td><td>{r.seconds}</td><td>{r.coreSeconds}</td><td>{r.gibSeconds}</td><td>{money(r.cost, cur)}</td></tr>
            ))}</tbody>
          </table>
        </>
      )}
    </div>
  );
}
