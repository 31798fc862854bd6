import { get } from '../api';
import { ErrorBox, useApp } from '../App';
import { usePoll } from '../poll';

// Pools: what `cci pool list` shows, from GET /cci/pools.
export function Pools() {
  const { t } = useApp();
  const pools = usePoll(() => get('/cci/pools'), 10000, []);
  return (
    <div className="card">
      <h2>{t('nav.pools')}</h2>
      <ErrorBox error={pools.error} />
      <table data-testid="pools">
        <thead><tr><th>{t('hosts.pool')}</th><th>{t('nav.hosts')}</th><th>Ready</th><th>{t('pools.requested')}</th></tr></thead>
        <tbody>{(pools.data?.pools || []).map((p: any) => (
          <tr key={p.name} data-name={p.name}><td>{p.name}</td><td>{p.hosts}</td><td>{p.readyHosts}</td>
            <td>{(p.resources || []).map((r: string) => <div key={r}>{r}: {p.requested[r]} / {p.allocatable[r]}</div>)}</td></tr>
        ))}</tbody>
      </table>
    </div>
  );
}
