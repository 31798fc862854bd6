import { ErrorBox, useApp } from '../App';
import { useWatch } from '../live';

export function Hosts() {
  const { t } = useApp();
  const nodes = useWatch('/api/v1/nodes');
  const pods = useWatch(`/api/v1/pods?fieldSelector=${encodeURIComponent('status.phase=Running')}`);
  const perNode: Record<string, number> = {};
  for (const p of pods.items || []) perNode[p.spec.nodeName] = (perNode[p.spec.nodeName] || 0) + 1;
  return (
    <div className="card">
      <h2>{t('nav.hosts')}</h2>
      <ErrorBox error={nodes.error} />
      <table data-testid="hosts">
        <thead><tr><th>Name</th><th>{t('hosts.pool')}</th><th>Ready</th><th>CPU</th><th>Memory</th><th>{t('hosts.pods')}</th></tr></thead>
        <tbody>{(nodes.items || []).map((n: any) => {
          const ready = (n.status?.conditions || []).find((c: any) => c.type === 'Ready')?.status;
          return (
            <tr key={n.metadata.name}><td>{n.metadata.name}</td><td>{n.metadata.labels?.['cci.io/pool'] || '-'}</td><td>{ready}</td>
              <td>{n.status?.allocatable?.cpu}</td><td>{n.status?.allocatable?.memory}</td>
              <td>{perNode[n.metadata.name] || 0} / {n.status?.allocatable?.pods}</td></tr>
          );
        })}</tbody>
      </table>
    </div>
  );
}
