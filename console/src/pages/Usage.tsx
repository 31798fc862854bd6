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
  const namespaces: any[] = [];
  for (const tu of usage.data?.tenants || []) {
    for (const n of tu.namespaces || []) {
      namespaces.push({ tenant: tu.tenant, ...n });
      for (const p of n.pods || []) rows.push({ tenant: tu.tenant, namespace: n.namespace, ...p });
    }
  }
  const cur = usage.data?.currency || '';
  const download = () => {
    const body = csv([['tenant', 'namespace', 'pod', 'cpu', 'memoryGiB', 'gpu', 'seconds', 'coreSeconds', 'gibSeconds', 'gpuSeconds', 'cost', 'currency'],
      ...rows.map((r) => [r.tenant, r.namespace, r.name, r.cpu, r.memoryGiB, r.gpu || 0, r.seconds, r.coreSeconds, r.gibSeconds, r.gpuSeconds, r.cost, cur])]);
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
          <h3>{t('usage.byNamespace')}</h3>
          <table data-testid="usage-namespaces">
            <thead><tr><th>Tenant</th><th>Namespace</th><th>Core-s</th><th>GiB-s</th><th>GPU-s</th><th>{t('usage.cost')}</th></tr></thead>
            <tbody>{namespaces.map((n) => (
              <tr key={`${n.tenant}/${n.namespace}`} data-name={n.namespace}><td>{n.tenant}</td><td>{n.namespace}</td><td>{n.coreSeconds}</td><td>{n.gibSeconds}</td><td>{n.gpuSeconds}</td><td>{money(n.cost, cur)}</td></tr>
            ))}</tbody>
          </table>
          <h3>{t('usage.byPod')}</h3>
          <table data-testid="usage-table">
            <thead><tr><th>Namespace</th><th>{t('usage.pod')}</th><th>CPU</th><th>GiB</th><th>GPU</th><th>Seconds</th><th>Core-s</th><th>GiB-s</th><th>GPU-s</th><th>{t('usage.cost')}</th></tr></thead>
            <tbody>{rows.map((r) => (
              <tr key={r.uid}><td>{r.namespace}</td><td>{r.name}{r.running ? ' ●' : ''}</td><td>{r.cpu}</td><td>{r.memoryGiB}</td><td>{r.gpu || 0}</td><td>{r.seconds}</td><td>{r.coreSeconds}</td><td>{r.gibSeconds}</td><td>{r.gpuSeconds}</td><td>{money(r.cost, cur)}</td></tr>
            ))}</tbody>
          </table>
        </>
      )}
    </div>
  );
}
