import { get } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { usePoll } from '../poll';
import { useWatch } from '../live';
import { money } from '../format';
import { BarChart } from '../Chart';

export function Overview() {
  const { t } = useApp();
  const ns = useNs();
  const pods = useWatch(`/api/v1/namespaces/${ns}/pods`);
  const quotas = useWatch(`/api/v1/namespaces/${ns}/resourcequotas`);
  const usage = usePoll(() => get('/cci/usage'), 30000, []);

  const items: any[] = pods.items || [];
  const running = items.filter((p) => p.status?.phase === 'Running');
  const pending = items.filter((p) => p.status?.phase === 'Pending');
  const nsUsage = (usage.data?.tenants || []).flatMap((tu: any) => tu.namespaces || []).find((n: any) => n.namespace === ns);
  const podsCost: any[] = nsUsage?.pods || [];
  return (
    <>
      <ErrorBox error={pods.error} />
      <div className="cards">
        <div className="card"><div>{t('overview.running')}</div><div className="big" data-testid="running">{running.length}</div></div>
        <div className="card"><div>{t('overview.pending')}</div><div className="big">{pending.length}</div></div>
        <div className="card">
          <div>{t('overview.cost')}</div>
          <div className="big" data-testid="cost">{money(nsUsage?.cost ?? usage.data?.total?.cost, usage.data?.currency || '')}</div>
          {usage.error ? <ErrorBox error={usage.error} /> : null}
        </div>
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
      <div className="card">
        <h3>{t('overview.pending')}</h3>
        {pending.length === 0 ? t('overview.none') : (
          <table><tbody>{pending.map((p) => {
            const c = (p.status?.conditions || []).find((c: any) => c.status === 'False');
            const w = (p.status?.containerStatuses || []).map((s: any) => s.state?.waiting?.reason).filter(Boolean).join(', ');
            return <tr key={p.metadata.name}><td>{p.metadata.name}</td><td>{w || c?.reason} {c?.message}</td></tr>;
          })}</tbody></table>
        )}
      </div>
      {podsCost.length > 0 && (
        <div className="card">
          <h3>{t('overview.cost')}</h3>
          <BarChart label={usage.data.currency} labels={podsCost.map((p) => p.name)} values={podsCost.map((p) => p.cost)} />
        </div>
      )}
    </>
  );
}
