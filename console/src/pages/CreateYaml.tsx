import { useState } from 'react';
import { ApiError, get, post } from '../api';
import { useApp } from '../App';
import { YamlEditor } from '../YamlEditor';
import { APIResource, collectionPath, groupVersionPath, parseManifests, statusLines } from '../yamlapply';

const example = (ns: string) => `apiVersion: v1
kind: ConfigMap
metadata:
  name: example
  namespace: ${ns}
data:
  greeting: hello
`;

// CreateYaml creates what the editor holds, document by document: a
// syntax error is shown with its line and column before anything is sent;
// the API's validation or admission refusal is shown under the editor.
export function CreateYaml({ ns, onDone }: { ns: string; onDone: () => void }) {
  const { t } = useApp();
  const [text, setText] = useState(example(ns));
  const [errors, setErrors] = useState<string[]>([]);
  const [created, setCreated] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);

  const submit = async () => {
    setErrors([]);
    setCreated([]);
    const p = parseManifests(text);
    if (p.errors.length) {
      setErrors(p.errors.map((e) => `line ${e.line}, column ${e.col}: ${e.message}`));
      return;
    }
    setBusy(true);
    const done: string[] = [];
    try {
      const discovery: Record<string, APIResource[]> = {};
      for (const d of p.docs) {
        const gv = groupVersionPath(d.apiVersion);
        discovery[gv] ||= (await get(gv)).resources || [];
        const path = collectionPath(d, ns, discovery[gv]);
        await post(`${path}?fieldValidation=Strict`, d);
        done.push(`${d.kind} ${d.metadata.name || d.metadata.generateName}`);
      }
      setCreated(done);
    } catch (err) {
      setCreated(done);
      setErrors(err instanceof ApiError ? statusLines(err.body, err.message).map((l, i) => (i === 0 && err.body?.code ? `${err.body.code}: ${l}` : l)) : [String(err instanceof Error ? err.message : err)]);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="card" data-testid="create-yaml">
      <h3>{t('yaml.title')}</h3>
      <YamlEditor value={text} onChange={setText} />
      <div style={{ marginTop: '.5rem' }}>
        <button onClick={submit} disabled={busy} data-testid="yaml-submit">{t('form.submit')}</button>
        <button onClick={onDone}>{t('form.cancel')}</button>
      </div>
      {created.length > 0 && <div data-testid="yaml-created">{t('yaml.created')}: {created.join(', ')}</div>}
      {errors.length > 0 && <div className="error" role="alert" data-testid="yaml-error">{errors.join('\n')}</div>}
    </div>
  );
}
