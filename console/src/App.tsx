import { useCallback, useEffect, useState, createContext, useContext } from 'react';
import { NavLink, Navigate, Route, Routes, useLocation, useNavigate, useParams } from 'react-router-dom';
import { checkSession, get, post, setUnauthorizedHandler, Me } from './api';
import { Key, Lang, defaultLang, translate } from './i18n';
import { Login } from './pages/Login';
import { Overview } from './pages/Overview';
import { Workloads } from './pages/Workloads';
import { PodDetail } from './pages/PodDetail';
import { DeploymentDetail } from './pages/DeploymentDetail';
import { Usage } from './pages/Usage';
import { Tenants } from './pages/Tenants';
import { Hosts } from './pages/Hosts';
import { Pools } from './pages/Pools';
import { Registry } from './pages/Registry';
import { loadSession } from './session';

interface Ctx {
  me: Me | null;
  lang: Lang;
  t: (k: Key) => string;
}
export const AppContext = createContext<Ctx>({ me: null, lang: 'en', t: (k) => k });
export const useApp = () => useContext(AppContext);

export function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const [lang, setLang] = useState<Lang>(defaultLang(navigator.language, localStorage.getItem('cci.lang')));
  const [loginMessage, setLoginMessage] = useState('');
  const [sessionRetry, setSessionRetry] = useState('');
  const navigate = useNavigate();
  const location = useLocation();
  const t = useCallback((k: Key) => translate(lang, k), [lang]);

  useEffect(() => {
    setUnauthorizedHandler((msg) => {
      setMe(null);
      setLoginMessage(`${translate(lang, 'login.expired')} (${msg})`);
      navigate('/login', { state: { from: location.pathname } });
    });
  }, [lang, navigate, location.pathname]);

  useEffect(() => {
    const ac = new AbortController();
    loadSession(() => get<Me>('/cci/session'), (why, ms) => setSessionRetry(`${why} — ${translate(lang, 'session.retry')} ${Math.ceil(ms / 1000)} s`), ac.signal)
      .then((m) => { if (m !== undefined) setMe(m); });
    return () => ac.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  // While someone is logged in, ask every 30 s (and when the tab is shown
  // again) whether the credential still works: an open watch does not
  // notice a revoked token (see checkSession).
  useEffect(() => {
    if (!me) return;
    const id = setInterval(checkSession, 30000);
    const onShow = () => document.visibilityState === 'visible' && checkSession();
    document.addEventListener('visibilitychange', onShow);
    return () => {
      clearInterval(id);
      document.removeEventListener('visibilitychange', onShow);
    };
  }, [me]);

  const switchLang = () => {
    const next = lang === 'en' ? 'zh' : 'en';
    localStorage.setItem('cci.lang', next);
    setLang(next);
  };
  const logout = async () => {
    await post('/cci/logout', {}).catch(() => {});
    setMe(null);
    setLoginMessage('');
    navigate('/login');
  };

  if (me === undefined) {
    return (
      <main>
        {t('common.loading')}
        {sessionRetry && <div className="error" role="status" data-testid="session-retry">{sessionRetry}</div>}
      </main>
    );
  }
  const home = me ? `/ns/${me.namespace || 'default'}/overview` : '/login';
  return (
    <AppContext.Provider value={{ me, lang, t }}>
      {me && <Header me={me} onLogout={logout} onLang={switchLang} />}
      <main>
        <Routes>
          <Route path="/login" element={me ? <Navigate to={(location.state as any)?.from || home} /> : <Login message={loginMessage} onLogin={(m) => { setLoginMessage(''); setMe(m); }} />} />
          {me && (
            <>
              <Route path="/ns/:ns/overview" element={<Overview />} />
              <Route path="/ns/:ns/workloads" element={<Workloads />} />
              <Route path="/ns/:ns/pods/:name" element={<PodDetail />} />
              <Route path="/ns/:ns/deployments/:name" element={<DeploymentDetail />} />
              <Route path="/ns/:ns/usage" element={<Usage />} />
              <Route path="/operator/tenants" element={<Tenants />} />
              <Route path="/operator/hosts" element={<Hosts />} />
              <Route path="/operator/pools" element={<Pools />} />
              <Route path="/operator/registry" element={<Registry />} />
            </>
          )}
          <Route path="*" element={<Navigate to={me ? home : '/login'} state={{ from: location.pathname }} />} />
        </Routes>
      </main>
    </AppContext.Provider>
  );
}

function Header({ me, onLogout, onLang }: { me: Me; onLogout: () => void; onLang: () => void }) {
  const { t } = useApp();
  const location = useLocation();
  const navigate = useNavigate();
  const m = location.pathname.match(/^\/ns\/([^/]+)\/([^/]+)/);
  const ns = m ? decodeURIComponent(m[1]) : me.namespace || 'default';
  const page = m ? m[2] : 'overview';
  const [nsInput, setNsInput] = useState(ns);
  useEffect(() => setNsInput(ns), [ns]);
  return (
    <header>
      <strong>{t('app.title')}</strong>
      <NavLink to={`/ns/${ns}/overview`}>{t('nav.overview')}</NavLink>
      <NavLink to={`/ns/${ns}/workloads`}>{t('nav.workloads')}</NavLink>
      <NavLink to={`/ns/${ns}/usage`}>{t('nav.usage')}</NavLink>
      {me.operator && <NavLink to="/operator/tenants">{t('nav.tenants')}</NavLink>}
      {me.operator && <NavLink to="/operator/hosts">{t('nav.hosts')}</NavLink>}
      {me.operator && <NavLink to="/operator/pools">{t('nav.pools')}</NavLink>}
      {me.operator && <NavLink to="/operator/registry">{t('nav.registry')}</NavLink>}
      <span className="spacer" />
      <form onSubmit={(e) => { e.preventDefault(); navigate(`/ns/${encodeURIComponent(nsInput)}/${page === 'pods' || page === 'deployments' ? 'workloads' : page}`); }}>
        <label style={{ display: 'inline', marginRight: '.3rem' }}>{t('nav.namespace')}</label>
        <input aria-label="namespace" value={nsInput} onChange={(e) => setNsInput(e.target.value)} />
      </form>
      <span title={me.groups.join(', ')}>{me.user}</span>
      <button onClick={onLang}>{t('common.language')}</button>
      <button onClick={onLogout}>{t('nav.logout')}</button>
    </header>
  );
}

export function useNs(): string {
  return useParams().ns || 'default';
}

export function ErrorBox({ error }: { error: unknown }) {
  const { t } = useApp();
  if (!error) return null;
  return <div className="error" role="alert">{t('common.error')}: {error instanceof Error ? error.message : String(error)}</div>;
}
