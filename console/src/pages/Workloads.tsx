import { useState } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { del, mergePatch } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { useWatch } from '../live';
import { LiveBadge } from '../LiveBadge';
import { age } from '../format';
import { CreateForm } from './CreateForm';

const kinds = {
  deployments: { path: (ns: string) => `/apis/apps/v1/namespaces/${ns}/deployments`, label: 'workloads.deployments' },
  pods: { path: (ns: string) => `/api/v1/namespaces/${ns}/pods`, label: 'workloads.pods' },
  services: { path: (ns: string) => `/api/v1/namespaces/${ns}/services`, label: 'workloads.services' },
  jobs: { path: (ns: string) => `/apis/batch/v1/namespaces/${ns}/jobs`, label: 'workloads.jobs' },
} as const;
type Kind = keyof typeof kinds;

export function Workloads() {
  const { t } = useApp();
  const ns = useNs();
  const [params, setParams] = useSearchParams();
  const tab = (params.get('tab') as Kind) in kinds ? (params.get('tab') as Kind) : 'deployments';
  const [creating, setCreating] = useState(params.get('create') === '1');
  const [actionError, setActionError] = useState<unknown>(null);
  const list = useWatch(kinds[tab].path(ns));

  const act = async (f: () => Promise<unknown>) => {
    setActionError(null);
    try {
      await f();
    } catch (e) {
      setActionError(e);
    }
  };
  const scale = (name: string, current: number) => {
    const v = window.prompt(`${t('workloads.scale')} ${name}`, String(current));
    if (v === null) return;
    act(() => mergePatch(`/apis/apps/v1/namespaces/${ns}/deployments/${name}/scale`, { spec: { replicas: Number(v) } }));
  };
  const remove = (name: string) => {
    if (!window.confirm(`${t('workloads.delete')} ${name}?`)) return;
    act(() => del(`${kinds[tab].path(ns)}/${name}`));
  };

  const items: any[] = list.items || [];
  return (
    <>
      <div className="card tabs">
        {(Object.keys(kinds) as Kind[]).map((k) => (
          <button key={k} className={k === tab ? 'on' : ''} onClick={() => setParams({ tab: k })}>{t(kinds[k].label)}</button>
        ))}
        <button onClick={() => setCreating(true)} data-testid="create">+ {t('workloads.create')}</button>
        <LiveBadge status={list.status} />
      </div>
      {creating && <CreateForm ns={ns} onDone={() => setCreating(false)} />}
      <ErrorBox error={actionError} />
      <div className="card">
        <ErrorBox error={list.error} />
        {!list.error && items.length === 0 && list.items && <p>{t('workloads.empty')}</p>}
        {items.length > 0 && (
          <table data-testid={`list-${tab}`}>
            <thead><tr>{header(tab).map((h) => <th key={h}>{h}</th>)}<th /></tr></thead>
            <tbody>
              {items.map((o) => (
                <tr key={o.metadata.uid} data-name={o.metadata.name}>
                  {row(tab, ns, o).map((c, i) => <td key={i}>{c}</td>)}
                  <td>
                    {tab === 'deployments' && <button onClick={() => scale(o.metadata.name, o.spec.replicas)}>{t('workloads.scale')}</button>}
                    <button onClick={() => remove(o.metadata.name)}>{t('workloads.delete')}</button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </div>
    </>
  );
}

function header(k: Kind): string[] {
  switch (k) {
    case 'deployments': return ['Name', 'Ready', 'Image', 'Age'];
    case 'pods': return ['Name', 'Phase', 'Restarts', 'IP', 'Age'];
    case 'services': return ['Name', 'Type', 'Cluster IP', 'External', 'Ports'];
    case 'jobs': return ['Name', 'Succeeded', 'Failed', 'Age'];
  }
}

function row(k: Kind, ns: string, o: any): React.ReactNode[] {
  switch (k) {
    case 'deployments':
      return [o.metadata.name, `${o.status?.readyReplicas || 0}/${o.spec.replicas}`,
        o.spec.template.spec.containers.map((c: any) => c.image).join(', '), age(o.metadata.creationTimestamp)];
    case 'pods': {
      const restarts = (o.status?.containerStatuses || []).reduce((n: number, s: any) => n + (s.restartCount || 0), 0);
      const waiting = (o.status?.containerStatuses || []).map((s: any) => s.state?.waiting?.reason).filter(Boolean)[0];
      return [<Link to={`/ns/${ns}/pods/${o.metadata.name}`}>{o.metadata.name}</Link>,
        <span data-testid="phase">{o.metadata.deletionTimestamp ? 'Terminating' : waiting || o.status?.phase}</span>,
        restarts, o.status?.podIP || '-', age(o.metadata.creationTimestamp)];
    }
    case 'services':
      return [o.metadata.name, o.spec.type, o.spec.clusterIP,
        (o.status?.loadBalancer?.ingress || []).map((i: any) => i.ip || i.hostname).join(', ') || '-',
        (o.spec.ports || []).map((p: any) => `${p.port}/${p.protocol}`).join(', ')];
    case 'jobs':
      return [o.metadata.name, o.status?.succeeded || 0, o.status?.failed || 0, age(o.metadata.creationTimestamp)];
  }
}
