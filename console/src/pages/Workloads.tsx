import { useState } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { del, get, mergePatch } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { useWatch } from '../live';
import { LiveBadge } from '../LiveBadge';
import { age } from '../format';
import { Key } from '../i18n';
import { decodeSecret } from '../rollout';
import { CreateForm } from './CreateForm';
import { CreateYaml } from './CreateYaml';

// metaOnly: the list and its watch carry metadata only (Secrets: their
// values reach the browser only when the user asks for them).
const kinds: Record<string, { path: (ns: string) => string; label: Key; scalable?: boolean; metaOnly?: boolean }> = {
  deployments: { path: (ns) => `/apis/apps/v1/namespaces/${ns}/deployments`, label: 'workloads.deployments', scalable: true },
  statefulsets: { path: (ns) => `/apis/apps/v1/namespaces/${ns}/statefulsets`, label: 'workloads.statefulsets', scalable: true },
  pods: { path: (ns) => `/api/v1/namespaces/${ns}/pods`, label: 'workloads.pods' },
  services: { path: (ns) => `/api/v1/namespaces/${ns}/services`, label: 'workloads.services' },
  jobs: { path: (ns) => `/apis/batch/v1/namespaces/${ns}/jobs`, label: 'workloads.jobs' },
  cronjobs: { path: (ns) => `/apis/batch/v1/namespaces/${ns}/cronjobs`, label: 'workloads.cronjobs' },
  configmaps: { path: (ns) => `/api/v1/namespaces/${ns}/configmaps`, label: 'workloads.configmaps' },
  secrets: { path: (ns) => `/api/v1/namespaces/${ns}/secrets`, label: 'workloads.secrets', metaOnly: true },
  pvcs: { path: (ns) => `/api/v1/namespaces/${ns}/persistentvolumeclaims`, label: 'workloads.pvcs' },
};
type Kind = keyof typeof kinds;

export function Workloads() {
  const { t } = useApp();
  const ns = useNs();
  const [params, setParams] = useSearchParams();
  const tab: Kind = (params.get('tab') || '') in kinds ? params.get('tab')! : 'deployments';
  const [creating, setCreating] = useState<'' | 'form' | 'yaml'>(params.get('create') === '1' ? 'form' : params.get('create') === 'yaml' ? 'yaml' : '');
  const [actionError, setActionError] = useState<unknown>(null);
  const [open, setOpen] = useState<string | null>(null);
  const list = useWatch(kinds[tab].path(ns), !!kinds[tab].metaOnly);

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
    act(() => mergePatch(`${kinds[tab].path(ns)}/${name}/scale`, { spec: { replicas: Number(v) } }));
  };
  const remove = (name: string) => {
    if (!window.confirm(`${t('workloads.delete')} ${name}?`)) return;
    act(() => del(`${kinds[tab].path(ns)}/${name}`));
  };
  const suspend = (name: string, on: boolean) => act(() => mergePatch(`${kinds[tab].path(ns)}/${name}`, { spec: { suspend: on } }));

  const items: any[] = list.items || [];
  const expandable = tab === 'configmaps' || tab === 'secrets';
  return (
    <>
      <div className="card tabs">
        {Object.keys(kinds).map((k) => (
          <button key={k} className={k === tab ? 'on' : ''} onClick={() => { setOpen(null); setParams({ tab: k }); }}>{t(kinds[k].label)}</button>
        ))}
        <button onClick={() => setCreating('form')} data-testid="create">+ {t('workloads.create')}</button>
        <button onClick={() => setCreating('yaml')} data-testid="create-yaml-open">+ YAML</button>
        <LiveBadge status={list.status} />
      </div>
      {creating === 'form' && <CreateForm ns={ns} onDone={() => setCreating('')} />}
      {creating === 'yaml' && <CreateYaml ns={ns} onDone={() => setCreating('')} />}
      <ErrorBox error={actionError} />
      <div className="card">
        <ErrorBox error={list.error} />
        {!list.error && items.length === 0 && list.items && <p>{t('workloads.empty')}</p>}
        {items.length > 0 && (
          <table data-testid={`list-${tab}`}>
            <thead><tr>{header(tab).map((h) => <th key={h}>{h}</th>)}<th /></tr></thead>
            <tbody>
              {items.flatMap((o) => {
                const name = o.metadata.name;
                const rows = [
                  <tr key={o.metadata.uid} data-name={name}>
                    {row(tab, ns, o).map((c, i) => <td key={i}>{c}</td>)}
                    <td>
                      {expandable && <button onClick={() => setOpen(open === name ? null : name)}>{open === name ? '▾' : '▸'} {t('workloads.data')}</button>}
                      {kinds[tab].scalable && <button onClick={() => scale(name, o.spec.replicas)}>{t('workloads.scale')}</button>}
                      {tab === 'cronjobs' && <button onClick={() => suspend(name, !o.spec.suspend)}>{o.spec.suspend ? t('workloads.resume') : t('workloads.suspend')}</button>}
                      <button onClick={() => remove(name)}>{t('workloads.delete')}</button>
                    </td>
                  </tr>,
                ];
                if (expandable && open === name) {
                  rows.push(<tr key={o.metadata.uid + '-data'}><td colSpan={header(tab).length + 1}>
                    {tab === 'secrets' ? <SecretData ns={ns} name={name} /> : <DataTable data={o.data || {}} />}
                  </td></tr>);
                }
                return rows;
              })}
            </tbody>
          </table>
        )}
      </div>
    </>
  );
}

function DataTable({ data }: { data: Record<string, string> }) {
  return <table className="data"><tbody>{Object.entries(data).map(([k, v]) => <tr key={k}><td>{k}</td><td><pre>{v}</pre></td></tr>)}</tbody></table>;
}

// SecretData shows nothing of a Secret until "Reveal": the list holds
// its metadata only, so the Secret is read (GET) then and its keys and
// decoded values shown; "Hide" forgets them.
function SecretData({ ns, name }: { ns: string; name: string }) {
  const { t } = useApp();
  const [secret, setSecret] = useState<{ type: string; values: Record<string, string> } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const reveal = async () => {
    setError(null);
    try {
      const s = await get(`/api/v1/namespaces/${ns}/secrets/${name}`);
      setSecret({ type: s.type, values: decodeSecret(s.data) });
    } catch (e) {
      setError(e);
    }
  };
  return (
    <div data-testid="secret-data">
      {secret ? <button onClick={() => setSecret(null)}>{t('secret.hide')}</button> : <button onClick={reveal} data-testid="secret-reveal">{t('secret.reveal')}</button>}
      <ErrorBox error={error} />
      {secret ? (
        <table className="data"><tbody>
          <tr><td>type</td><td data-testid="secret-type">{secret.type}</td></tr>
          {Object.entries(secret.values).map(([k, v]) => <tr key={k}><td>{k}</td><td data-testid="secret-value"><pre>{v}</pre></td></tr>)}
        </tbody></table>
      ) : <p data-testid="secret-value">•••••• {t('secret.hidden')}</p>}
    </div>
  );
}

function header(k: Kind): string[] {
  switch (k) {
    case 'deployments': return ['Name', 'Ready', 'Up to date', 'Image', 'Age'];
    case 'statefulsets': return ['Name', 'Ready', 'Image', 'Age'];
    case 'pods': return ['Name', 'Phase', 'Restarts', 'IP', 'Age'];
    case 'services': return ['Name', 'Type', 'Cluster IP', 'External', 'Ports'];
    case 'jobs': return ['Name', 'Succeeded', 'Failed', 'Age'];
    case 'cronjobs': return ['Name', 'Schedule', 'Suspended', 'Active', 'Last schedule', 'Age'];
    case 'configmaps': return ['Name', 'Keys', 'Age'];
    case 'secrets': return ['Name', 'Labels', 'Age'];
    case 'pvcs': return ['Name', 'Status', 'Capacity', 'Access modes', 'Storage class', 'Age'];
  }
  return [];
}

const images = (tpl: any) => (tpl?.spec?.containers || []).map((c: any) => c.image).join(', ');

function row(k: Kind, ns: string, o: any): React.ReactNode[] {
  const created = age(o.metadata.creationTimestamp);
  switch (k) {
    case 'deployments':
      return [<Link to={`/ns/${ns}/deployments/${o.metadata.name}`}>{o.metadata.name}</Link>, `${o.status?.readyReplicas || 0}/${o.spec.replicas}`,
        o.status?.updatedReplicas || 0, images(o.spec.template), created];
    case 'statefulsets':
      return [o.metadata.name, `${o.status?.readyReplicas || 0}/${o.spec.replicas}`, images(o.spec.template), created];
    case 'pods': {
      const restarts = (o.status?.containerStatuses || []).reduce((n: number, s: any) => n + (s.restartCount || 0), 0);
      const waiting = (o.status?.containerStatuses || []).map((s: any) => s.state?.waiting?.reason).filter(Boolean)[0];
      return [<Link to={`/ns/${ns}/pods/${o.metadata.name}`}>{o.metadata.name}</Link>,
        <span data-testid="phase">{o.metadata.deletionTimestamp ? 'Terminating' : waiting || o.status?.phase}</span>,
        restarts, o.status?.podIP || '-', created];
    }
    case 'services':
      return [o.metadata.name, o.spec.type, o.spec.clusterIP,
        (o.status?.loadBalancer?.ingress || []).map((i: any) => i.ip || i.hostname).join(', ') || '-',
        (o.spec.ports || []).map((p: any) => `${p.port}/${p.protocol}`).join(', ')];
    case 'jobs':
      return [o.metadata.name, o.status?.succeeded || 0, o.status?.failed || 0, created];
    case 'cronjobs':
      return [o.metadata.name, <code>{o.spec.schedule}</code>, o.spec.suspend ? 'yes' : 'no', (o.status?.active || []).length,
        o.status?.lastScheduleTime ? age(o.status.lastScheduleTime) : '-', created];
    case 'configmaps':
      return [o.metadata.name, Object.keys({ ...o.data, ...o.binaryData }).join(', '), created];
    case 'secrets':
      // Metadata only: no type, keys or values here (see SecretData).
      return [o.metadata.name, Object.entries(o.metadata.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ') || '-', created];
    case 'pvcs':
      return [o.metadata.name, o.status?.phase, o.status?.capacity?.storage || o.spec?.resources?.requests?.storage || '-',
        (o.spec?.accessModes || []).join(', '), o.spec?.storageClassName || '-', created];
  }
  return [];
}
