import { useState } from 'react';
import { get, post } from '../api';
import { ErrorBox, useApp } from '../App';
import { useWatch } from '../live';
import { LiveBadge } from '../LiveBadge';
import { usePoll } from '../poll';
import { age, money } from '../format';
import { tenantManifest } from '../yamlapply';

const path = '/apis/cci.io/v1alpha1/tenants';

export function Tenants() {
  const { t } = useApp();
  const list = useWatch(path);
  const pools = usePoll(() => get('/cci/pools'), 60000, []);
  // The operator reads every tenant's usage this month.
  const usage = usePoll(() => get('/cci/usage'), 60000, []);
  const costOf = (tenant: string) => {
    const u = (usage.data?.tenants || []).find((x: any) => x.tenant === tenant);
    return u ? money(u.cost, usage.data.currency) : '-';
  };
  const [name, setName] = useState('');
  const [cpu, setCpu] = useState('8');
  const [memory, setMemory] = useState('32Gi');
  const [pods, setPods] = useState('50');
  const [gpu, setGpu] = useState('0');
  const [chosen, setChosen] = useState<string[]>(['general']);
  const [error, setError] = useState<unknown>(null);
  const poolNames: string[] = Array.from(new Set(['general', ...(pools.data?.pools || []).map((p: any) => p.name)]));
  const create = async (e: React.FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await post(path, tenantManifest(name, { cpu, memory, pods, 'nvidia.com/gpu': gpu }, chosen));
      setName('');
    } catch (err) {
      setError(err);
    }
  };
  const toggle = (p: string) => setChosen((c) => (c.includes(p) ? c.filter((x) => x !== p) : [...c, p]));
  return (
    <>
      <div className="card">
        <h2>{t('nav.tenants')} <LiveBadge status={list.status} /></h2>
        <ErrorBox error={list.error} />
        <table data-testid="tenants">
          <thead><tr><th>Name</th><th>Phase</th><th>Namespace</th><th>Quota</th><th>Pools</th><th>{t('tenants.cost')}</th><th>Age</th></tr></thead>
          <tbody>{(list.items || []).map((x: any) => (
            <tr key={x.metadata.name} data-name={x.metadata.name}><td>{x.metadata.name}</td><td>{x.status?.phase}</td><td>{x.status?.namespace}</td>
              <td>{Object.entries(x.spec?.quota || {}).map(([k, v]) => `${k}=${v}`).join(', ') || 'default'}</td>
              <td>{(x.spec?.pools || ['general']).join(', ')}</td><td data-testid="tenant-cost">{costOf(x.metadata.name)}</td><td>{age(x.metadata.creationTimestamp)}</td></tr>
          ))}</tbody>
        </table>
      </div>
      <form className="card" onSubmit={create} data-testid="tenant-form">
        <h3>{t('tenants.create')}</h3>
        <label>Name <input id="t-name" value={name} onChange={(e) => setName(e.target.value)} /></label>
        <label>CPU <input id="t-cpu" value={cpu} onChange={(e) => setCpu(e.target.value)} /></label>
        <label>Memory <input id="t-memory" value={memory} onChange={(e) => setMemory(e.target.value)} /></label>
        <label>Pods <input id="t-pods" value={pods} onChange={(e) => setPods(e.target.value)} /></label>
        <label>GPUs (nvidia.com/gpu) <input id="t-gpu" value={gpu} onChange={(e) => setGpu(e.target.value)} /></label>
        <fieldset><legend>{t('nav.pools')}</legend>
          {poolNames.map((p) => <label key={p} className="inline"><input type="checkbox" checked={chosen.includes(p)} onChange={() => toggle(p)} /> {p} </label>)}
        </fieldset>
        <button type="submit" data-testid="tenant-submit">{t('tenants.create')}</button>
        <p>The tenant's kubeconfig: <code>cci tenant kubeconfig NAME</code></p>
        <ErrorBox error={error} />
      </form>
    </>
  );
}
