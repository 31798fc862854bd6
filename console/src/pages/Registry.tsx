import { get } from '../api';
import { ErrorBox, useApp } from '../App';
import { usePoll } from '../poll';

// Registry: the built-in registry's repositories and tags.
export function Registry() {
  const { t } = useApp();
  const reg = usePoll(() => get('/cci/registry'), 30000, []);
  return (
    <div className="card">
      <h2>{t('nav.registry')} <code>{reg.data?.registry}</code></h2>
      <ErrorBox error={reg.error} />
      <table data-testid="registry">
        <thead><tr><th>{t('registry.repository')}</th><th>{t('registry.tags')}</th><th>{t('registry.pull')}</th></tr></thead>
        <tbody>{(reg.data?.repositories || []).map((r: any) => (
          <tr key={r.name} data-name={r.name}><td>{r.name}</td><td>{r.tags.join(', ')}</td><td><code>{r.image}</code></td></tr>
        ))}</tbody>
      </table>
    </div>
  );
}
