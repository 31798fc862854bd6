import { get } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { usePoll } from '../poll';
import { csv, money } from '../format';
import { BarChart } from '../Chart';
import { usageCSV, usageRows } from '../usage';

// Usage: this month per day, per namespace and per pod, from one report
// of the usage endpoint broken down by day.
export function Usage() {
  const { t } = useApp();
  const ns = useNs();
  const usage = usePoll(() => get('/cci/usage?by=day'), 15000, []);
  const { pods: rows, namespaces, days } = usageRows(usage.data);
  const cur = usage.data?.currency || '';
  const download = () => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([csv(usageCSV(usage.data))], { type: 'text/csv' }));
    a.download = `usage-${ns}.csv`;
    a.click();
  };
  const dayLabels = days.map((d) => d.date.slice(5));
  const perDay: { testid: string; title: string; unit: string; values: number[] }[] = [
    { testid: 'day-cost', title: t('usage.cost'), unit: cur, values: days.map((d) => d.cost) },
    { testid: 'day-core', title: 'Core-s', unit: 'core-seconds', values: days.map((d) => d.coreSeconds) },
    { testid: 'day-gib', title: 'GiB-s', unit: 'GiB-seconds', values: days.map((d) => d.gibSeconds) },
    { testid: 'day-gpu', title: 'GPU-s', unit: 'GPU-seconds', values: days.map((d) => d.gpuSeconds) },
  ];
  return (
    <div className="card">
      <h2>{t('usage.title')}</h2>
      <ErrorBox error={usage.error} />
      {usage.data && (
        <>
          <p>Total: <strong data-testid="usage-total">{money(usage.data.total?.cost, cur)}</strong> · {usage.data.total?.coreSeconds} core-s · {usage.data.total?.gibSeconds} GiB-s · {usage.data.total?.gpuSeconds} GPU-s</p>
          <button onClick={download} data-testid="usage-csv">{t('usage.csv')}</button>
          <h3>{t('usage.byDay')}</h3>
          {days.length > 0 && (
            <div className="charts">
              {perDay.map((c) => (
                <div key={c.testid}><h4>{c.title}</h4><BarChart testid={c.testid} label={c.unit} labels={dayLabels} values={c.values} /></div>
              ))}
            </div>
          )}
          <table data-testid="usage-days">
            <thead><tr><th>{t('usage.date')}</th><th>Core-s</th><th>GiB-s</th><th>GPU-s</th><th>{t('usage.cost')}</th></tr></thead>
            <tbody>{days.map((d) => (
              <tr key={d.date} data-date={d.date}><td>{d.date}</td><td>{d.coreSeconds}</td><td>{d.gibSeconds}</td><td>{d.gpuSeconds}</td><td>{money(d.cost, cur)}</td></tr>
            ))}</tbody>
          </table>
          <h3>{t('usage.byNamespace')}</h3>
          <table data-testid="usage-namespaces">
            <thead><tr><th>Tenant</th><th>Namespace</th><th>Core-s</th><th>GiB-s</th><th>GPU-s</th><th>{t('usage.cost')}</th></tr></thead>
            <tbody>{namespaces.map((n) => (
              <tr key={`${n.tenant}/${n.namespace}`} data-name={n.namespace}><td>{n.tenant}</td><td>{n.namespace}</td><td>{n.coreSeconds}</td><td>{n.gibSeconds}</td><td>{n.gpuSeconds}</td><td>{money(n.cost, cur)}</td></tr>
            ))}</tbody>
          </table>
          <h3>{t('usage.byPod')}</h3>
          {rows.length > 0 && <BarChart label={cur} labels={rows.map((r) => r.name)} values={rows.map((r) => r.cost)} />}
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
