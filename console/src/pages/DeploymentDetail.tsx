import { useState } from 'react';
import { useParams } from 'react-router-dom';
import { mergePatch } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { useWatch, useWatchOne } from '../live';
import { LiveBadge } from '../LiveBadge';
import { age } from '../format';
import { history, restartPatch, rolloutStatus } from '../rollout';

// DeploymentDetail: rollout status as kubectl rollout status words it,
// the history (its ReplicaSets by revision) and restart.
export function DeploymentDetail() {
  const { t } = useApp();
  const ns = useNs();
  const name = useParams().name!;
  const path = `/apis/apps/v1/namespaces/${ns}/deployments`;
  const dep = useWatchOne(path, name);
  const rss = useWatch(`/apis/apps/v1/namespaces/${ns}/replicasets`);
  const [error, setError] = useState<unknown>(null);
  const d = dep.item;
  const restart = async () => {
    setError(null);
    try {
      await mergePatch(`${path}/${name}`, restartPatch(new Date()));
    } catch (e) {
      setError(e);
    }
  };
  const st = d ? rolloutStatus(d) : null;
  return (
    <>
      <h2>{ns}/{name} <LiveBadge status={dep.status} /></h2>
      <ErrorBox error={dep.error || error} />
      {d === null && <div className="error" role="alert">deployment {name} is gone</div>}
      {d && st && (
        <div className="card">
          <h3>{t('rollout.status')}</h3>
          <p data-testid="rollout-status" className={st.done ? 'ok' : 'waiting'}>{st.message}</p>
          <p>{t('form.replicas')}: {d.status?.readyReplicas || 0} ready, {d.status?.updatedReplicas || 0} up to date, {d.status?.availableReplicas || 0} available of {d.spec.replicas}</p>
          <button onClick={restart} data-testid="restart">{t('rollout.restart')}</button>
          <table><tbody>
            {(d.status?.conditions || []).map((c: any) => <tr key={c.type}><td>{c.type}</td><td>{c.status}</td><td>{c.reason}</td><td>{c.message}</td></tr>)}
          </tbody></table>
        </div>
      )}
      {d && (
        <div className="card">
          <h3>{t('rollout.history')}</h3>
          <ErrorBox error={rss.error} />
          <table data-testid="history">
            <thead><tr><th>Revision</th><th>ReplicaSet</th><th>Images</th><th>Pods</th><th>Restarted at</th><th>Age</th></tr></thead>
            <tbody>{history(d, rss.items || []).map((r) => (
              <tr key={r.name} className={r.current ? 'current' : ''} data-revision={r.revision}>
                <td>{r.revision}{r.current ? ' ●' : ''}</td><td>{r.name}</td><td>{r.images}</td><td>{r.ready}/{r.replicas}</td><td>{r.restartedAt || '-'}</td><td>{age(r.created)}</td>
              </tr>
            ))}</tbody>
          </table>
        </div>
      )}
    </>
  );
}
