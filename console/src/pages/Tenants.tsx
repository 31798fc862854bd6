import { useState } from 'react';
import { post } from '../api';
import { ErrorBox, useApp } from '../App';
import { useWatch } from '../live';
import { age } from '../format';

const path = '/apis/cci.io/v1alpha1/tenants';

export function Tenants() {
  const { t } = useApp();
  const list = useWatch(path);
  const [name, setName] = useState('');
  const [cpu, setCpu] = useState('8');
  const [memory, setMemory] = useState('32Gi');
  const [pods, setPods] = useState('50');
  const [error, setError] = useState<unknown>(null);
  const create = async (e: React.FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await post(path, { apiVersion: 'cci.io/v1alpha1', kind: 'Tenant', metadata: { name }, spec: { quota: { cpu, memory, pods } } });
      setName('');
    } catch (err) {
      setError(err);
    }
  };
  return (
    <>
      <div className="card">
        <h2>{t('nav.tenants')}</h2>
        <ErrorBox error={list.error} />
        <table data-testid="tenants">
          <thead><tr><th>Name</th><th>Phase</th><th>Namespace</th><th>Quota</th><th>Pools</th><th>Age</th></tr></thead>
          <tbody>{(list.items || []).map((x: any) => (
            <tr key={x.metadata.name}><td>{x.metadata.name}</td><td>{x.status?.phase}</td><td>{x.status?.namespace}</td>
              <td>{Object.entries(x.spec?.quota || {}).map(([k, v]) => `${k}=${v}`).join(', ') || 'default'}</td>
              <td>{(x.spec?.pools || ['general']).join(', ')}</td><td>{age(x.metadata.creationTimestamp)}</td></tr>
          ))}</tbody>
        </table>
      </div>
      <form className="card" onSubmit={create}>
        <h3>{t('tenants.create')}</h3>
        <label>Name <input value={name} onChange={(e) => setName(e.target.value)} /></label>
        <label>CPU <input value={cpu} onChange={(e) => setCpu(e.target.value)} /></label>
        <label>Memory <input value={memory} onChange={(e) => setMemory(e.target.value)} /></label>
        <label>Pods <input value={pods} onChange={(e) => setPods(e.target.value)} /></label>
        <button type="submit">{t('tenants.create')}</button>
        <p>The tenant's kubeconfig: <code>cci tenant kubeconfig NAME</code></p>
        <ErrorBox error={error} />
      </form>
    </>
  );
}
