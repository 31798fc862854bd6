import { useState } from 'react';
import { post, Me } from '../api';
import { useApp } from '../App';

export function Login({ message, onLogin }: { message: string; onLogin: (m: Me) => void }) {
  const { t } = useApp();
  const [token, setToken] = useState('');
  const [kubeconfig, setKubeconfig] = useState('');
  const [fileName, setFileName] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const me = await post<Me>('/cci/login', token.trim() ? { token } : { kubeconfig });
      setToken('');
      onLogin(me);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const onFile = async (f: File | undefined) => {
    if (!f) return;
    setFileName(f.name);
    setKubeconfig(await f.text());
  };
  return (
    <div className="login card">
      <h2>{t('login.title')}</h2>
      <p>{t('login.hint')}</p>
      {message && <div className="error" role="status">{message}</div>}
      <form onSubmit={submit}>
        <label htmlFor="token">{t('login.token')}</label>
        <textarea id="token" name="token" autoComplete="off" spellCheck={false} value={token} onChange={(e) => setToken(e.target.value)} />
        <label htmlFor="kubeconfig">{t('login.kubeconfig')}</label>
        <input id="kubeconfig" type="file" onChange={(e) => onFile(e.target.files?.[0])} />
        {fileName && <span> {fileName}</span>}
        <div style={{ marginTop: '1rem' }}>
          <button type="submit" disabled={busy || (!token.trim() && !kubeconfig)}>{t('login.submit')}</button>
        </div>
      </form>
      {error && <div className="error" role="alert" data-testid="login-error">{error}</div>}
    </div>
  );
}
