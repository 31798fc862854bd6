import { useEffect, useMemo, useState } from 'react';
import { get, post, ApiError } from '../api';
import { useApp } from '../App';
import { FieldErrors, Flavor, Form, deployment, kubectlCommand, serverErrors, service, toYAML, validate } from '../manifest';
import { money } from '../format';

interface Repo { name: string; tags: string[]; image: string }

export function CreateForm({ ns, onDone }: { ns: string; onDone: () => void }) {
  const { t, me } = useApp();
  const [form, setForm] = useState<Form>({ name: '', image: '', flavor: null, replicas: 1, port: '', env: '', command: '' });
  const [flavors, setFlavors] = useState<{ currency: string; flavors: Flavor[] } | null>(null);
  const [repos, setRepos] = useState<Repo[]>([]);
  const [serverError, setServerError] = useState('');
  // The API's or admission's refusal, placed next to the field it is about.
  const [serverFields, setServerFields] = useState<FieldErrors>({});
  const [touched, setTouched] = useState(false);

  useEffect(() => {
    get('/cci/flavors').then((f) => { setFlavors(f); setForm((x) => ({ ...x, flavor: x.flavor || f.flavors[0] })); }, () => {});
    get('/cci/registry').then((r) => setRepos(r.repositories || []), () => {});
  }, []);

  const errors = touched ? validate(form) : {};
  const yaml = useMemo(() => toYAML(form), [form]);
  const set = <K extends keyof Form>(k: K, v: Form[K]) => {
    setForm((f) => ({ ...f, [k]: v }));
    setServerFields((s) => ({ ...s, [k]: undefined }));
  };
  const fieldError = (k: keyof Form) => (
    <>
      {errors[k] && <div className="field-error">{errors[k]}</div>}
      {serverFields[k] && <div className="field-error" data-testid={`server-error-${k}`}>{serverFields[k]}</div>}
    </>
  );

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (Object.keys(validate(form)).length) return;
    setServerError('');
    setServerFields({});
    try {
      await post(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment(form));
      const svc = service(form);
      if (svc) await post(`/api/v1/namespaces/${ns}/services`, svc);
      onDone();
    } catch (err) {
      // The API's or admission's own words (name taken, flavor refused,
      // quota), next to the field they are about.
      if (err instanceof ApiError) {
        const placed = serverErrors(err.body, err.message);
        setServerFields(placed.fields);
        setServerError(placed.rest);
      } else setServerError(String(err));
    }
  };

  const images = repos.flatMap((r) => r.tags.map((tag) => `${me?.registry}/${r.name}:${tag}`));
  return (
    <div className="card">
      <div className="row">
        <form onSubmit={submit} data-testid="create-form">
          <label htmlFor="f-name">{t('form.name')}</label>
          <input id="f-name" value={form.name} onChange={(e) => set('name', e.target.value)} />
          {fieldError('name')}

          <label htmlFor="f-image">{t('form.image')}</label>
          <input id="f-image" list="images" size={40} value={form.image} onChange={(e) => set('image', e.target.value)} />
          <datalist id="images">{images.map((i) => <option key={i} value={i} />)}</datalist>
          <select aria-label="registry images" value="" onChange={(e) => e.target.value && set('image', e.target.value)}>
            <option value="">…</option>
            {images.map((i) => <option key={i} value={i}>{i}</option>)}
          </select>
          {fieldError('image')}

          <label htmlFor="f-flavor">{t('form.flavor')}</label>
          <select id="f-flavor" value={form.flavor?.name || ''} onChange={(e) => set('flavor', flavors?.flavors.find((f) => f.name === e.target.value) || null)}>
            {(flavors?.flavors || []).map((f) => (
              <option key={f.name} value={f.name}>{f.name} — {money(f.pricePerHour, flavors!.currency)} {t('form.perHour')}</option>
            ))}
          </select>
          {fieldError('flavor')}

          <label htmlFor="f-replicas">{t('form.replicas')}</label>
          <input id="f-replicas" type="number" min={0} value={form.replicas} onChange={(e) => set('replicas', Number(e.target.value))} />
          {fieldError('replicas')}

          <label htmlFor="f-port">{t('form.port')}</label>
          <input id="f-port" value={form.port} onChange={(e) => set('port', e.target.value)} />
          {fieldError('port')}

          <label htmlFor="f-command">{t('form.command')}</label>
          <input id="f-command" size={40} value={form.command} onChange={(e) => set('command', e.target.value)} />
          {fieldError('command')}

          <label htmlFor="f-env">{t('form.env')}</label>
          <textarea id="f-env" rows={3} cols={40} value={form.env} onChange={(e) => set('env', e.target.value)} />
          {fieldError('env')}

          <div style={{ marginTop: '1rem' }}>
            <button type="submit" data-testid="submit">{t('form.submit')}</button>
            <button type="button" onClick={onDone}>{t('form.cancel')}</button>
          </div>
          {serverError && <div className="error" role="alert" data-testid="create-error">{serverError}</div>}
        </form>
        <div>
          <label>{t('form.yaml')}</label>
          <pre className="yaml" data-testid="yaml">{yaml}</pre>
          <code>{kubectlCommand(ns)}</code>
        </div>
      </div>
    </div>
  );
}
