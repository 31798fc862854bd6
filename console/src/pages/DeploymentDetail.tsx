import { useState } from 'react';
import { useParams } from 'react-router-dom';
import { jsonPatch, mergePatch } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { useWatch, useWatchOne } from '../live';
import { LiveBadge } from '../LiveBadge';
import { age } from '../format';
import { history, restartPatch, rollbackPatch, rolloutStatus } from '../rollout';

// DeploymentDetail: rollout status as kubectl rollout status words it,
// the history (its ReplicaSets by revision), restart and rollback to a
// revision (as kubectl rollout undo --to-revision).
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
  const rollback = async (revision: number) => {
    if (!window.confirm(`${t('rollout.rollback')}: ${name} revision ${revision}?`)) return;
    setError(null);
    try {
      // Made from the Deployment and ReplicaSets the page's watches hold,
      // as kubectl makes it from what it has just read.
      await jsonPatch(`${path}/${name}`, rollbackPatch(d, rss.items || [], revision));
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
            <thead><tr><th>Revision</th><th>ReplicaSet</th><th>Images</th><th>Pods</th><th>Restarted at</th><th>Age</th><th /></tr></thead>
            <tbody>{history(d, rss.items || []).map((r) => (
              <tr key={r.name} className={r.current ? 'current' : ''} data-revision={r.revision}>
                <td>{r.revision}{r.current ? ' ●' : ''}</td><td>{r.name}</td><td>{r.images}</td><td>{r.ready}/{r.replicas}</td><td>{r.restartedAt || '-'}</td><td>{age(r.created)}</td>
                <td>{!r.current && <button onClick={() => rollback(r.revision)} data-testid="rollback">{t('rollout.rollback')}</button>}</td>
              </tr>
            ))}</tbody>
          </table>
        </div>
      )}
    </>
  );
}
