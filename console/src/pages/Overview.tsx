import { Link } from 'react-router-dom';
import { get } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { usePoll } from '../poll';
import { useWatch } from '../live';
import { LiveBadge } from '../LiveBadge';
import { money } from '../format';
import { BarChart } from '../Chart';
import { pendingReason } from '../timeline';
import { gpuQuota } from '../quantity';

export function Overview() {
  const { t } = useApp();
  const ns = useNs();
  const pods = useWatch(`/api/v1/namespaces/${ns}/pods`);
  const quotas = useWatch(`/api/v1/namespaces/${ns}/resourcequotas`);
  const usage = usePoll(() => get('/cci/usage'), 30000, []);
  const daily = usePoll(() => get(`/cci/usage/daily?namespace=${encodeURIComponent(ns)}`), 60000, [ns]);

  const items: any[] = pods.items || [];
  const running = items.filter((p) => p.status?.phase === 'Running');
  const pending = items.filter((p) => p.status?.phase === 'Pending');
  const nsUsage = (usage.data?.tenants || []).flatMap((tu: any) => tu.namespaces || []).find((n: any) => n.namespace === ns);
  const podsCost: any[] = nsUsage?.pods || [];
  const gpu = gpuQuota(quotas.items || []);
  const days: any[] = daily.data?.days || [];
  return (
    <>
      <ErrorBox error={pods.error} />
      <div className="cards">
        <div className="card"><div>{t('overview.running')} <LiveBadge status={pods.status} /></div><div className="big" data-testid="running">{running.length}</div></div>
        <div className="card"><div>{t('overview.pending')}</div><div className="big" data-testid="pending-count">{pending.length}</div></div>
        <div className="card">
          <div>{t('overview.gpu')}</div>
          <div className="big" data-testid="gpu">{gpu ? `${gpu.used} / ${gpu.hard}` : t('overview.none')}</div>
        </div>
        <div className="card">
          <div>{t('overview.cost')}</div>
          <div className="big" data-testid="cost">{money(nsUsage?.cost ?? usage.data?.total?.cost, usage.data?.currency || '')}</div>
          {usage.error ? <ErrorBox error={usage.error} /> : null}
        </div>
      </div>
      <div className="card">
        <h3>{t('overview.pending')}</h3>
        {pending.length === 0 ? t('overview.none') : (
          <table data-testid="pending"><tbody>{pending.map((p) => (
            <tr key={p.metadata.name} data-name={p.metadata.name}><td><Link to={`/ns/${ns}/pods/${p.metadata.name}`}>{p.metadata.name}</Link></td><td>{pendingReason(p)}</td></tr>
          ))}</tbody></table>
        )}
      </div>
      <div className="card">
        <h3>{t('overview.byDay')}</h3>
        <ErrorBox error={daily.error} />
        {days.length > 0 && <BarChart testid="cost-by-day" label={daily.data.currency} labels={days.map((d) => d.date.slice(5))} values={days.map((d) => d.cost)} />}
      </div>
      <div className="card">
        <h3>{t('overview.quota')}</h3>
        <ErrorBox error={quotas.error} />
        <table><tbody>
          {(quotas.items || []).flatMap((q: any) => Object.keys(q.status?.hard || {}).map((k) => (
            <tr key={q.metadata.name + k}><td>{k}</td><td>{q.status.used?.[k] ?? '0'} / {q.status.hard[k]}</td></tr>
          )))}
        </tbody></table>
      </div>
      {podsCost.length > 0 && (
        <div className="card">
          <h3>{t('overview.costPerPod')}</h3>
          <BarChart label={usage.data.currency} labels={podsCost.map((p) => p.name)} values={podsCost.map((p) => p.cost)} />
        </div>
      )}
    </>
  );
}
