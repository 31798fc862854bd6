import { useEffect, useRef, useState } from 'react';
import { useParams } from 'react-router-dom';
import { streamLogs } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { useWatch, useWatchOne } from '../live';
import { LiveBadge } from '../LiveBadge';
import { age } from '../format';
import { ExecTerminal } from '../Terminal';

// At most this many lines stay on the page; the server sends only the
// last tailLines of a long log.
const keepLines = 5000;
const tailLines = 1000;

export function PodDetail() {
  const { t } = useApp();
  const ns = useNs();
  const name = useParams().name!;
  const pod = useWatchOne(`/api/v1/namespaces/${ns}/pods`, name);
  const events = useWatch(`/api/v1/namespaces/${ns}/events?fieldSelector=${encodeURIComponent(`involvedObject.name=${name}`)}`);
  const p = pod.item;
  const containers: string[] = (p?.spec?.containers || []).map((c: any) => c.name);
  const [container, setContainer] = useState('');
  const c = container || containers[0] || '';

  return (
    <>
      <h2>{ns}/{name} <LiveBadge status={pod.status} /></h2>
      {pod.item === null && <div className="error" role="alert">pod {name} is gone</div>}
      <ErrorBox error={pod.error} />
      {p && (
        <div className="row">
          <div className="card">
            <h3>{t('pod.status')}</h3>
            <table><tbody>
              <tr><td>Phase</td><td data-testid="pod-phase">{p.status?.phase}</td></tr>
              <tr><td>Node</td><td>{p.spec?.nodeName || '-'}</td></tr>
              <tr><td>IP</td><td>{p.status?.podIP || '-'}</td></tr>
              <tr><td>Runtime</td><td>{p.spec?.runtimeClassName || '-'}</td></tr>
              {(p.status?.containerStatuses || []).map((s: any) => (
                <tr key={s.name}><td>{s.name}</td><td>{Object.keys(s.state || {})[0]} {s.state?.waiting?.reason || ''} {s.state?.terminated ? `exit ${s.state.terminated.exitCode} ${s.state.terminated.reason || ''}` : ''} restarts {s.restartCount}</td></tr>
              ))}
            </tbody></table>
            <h3>{t('pod.conditions')}</h3>
            <table><tbody>
              {(p.status?.conditions || []).map((c: any) => <tr key={c.type}><td>{c.type}</td><td>{c.status}</td><td>{c.reason} {c.message}</td></tr>)}
            </tbody></table>
          </div>
          <div className="card">
            <h3>{t('pod.events')}</h3>
            <ErrorBox error={events.error} />
            <table><tbody>
              {(events.items || []).map((e: any) => (
                <tr key={e.metadata.uid}><td>{age(e.lastTimestamp || e.eventTime || e.metadata.creationTimestamp)}</td><td>{e.type}</td><td>{e.reason}</td><td>{e.message}</td></tr>
              ))}
            </tbody></table>
          </div>
        </div>
      )}
      {containers.length > 1 && (
        <select aria-label="container" value={c} onChange={(e) => setContainer(e.target.value)}>
          {containers.map((n) => <option key={n}>{n}</option>)}
        </select>
      )}
      {c && <Logs ns={ns} pod={name} container={c} />}
      {c && (
        <div className="card">
          <h3>{t('pod.terminal')}</h3>
          <ExecTerminal ns={ns} pod={name} container={c} labels={{ connect: t('pod.connect'), disconnect: t('pod.disconnect') }} />
        </div>
      )}
    </>
  );
}

function Logs({ ns, pod, container }: { ns: string; pod: string; container: string }) {
  const { t } = useApp();
  const [text, setText] = useState('');
  const [follow, setFollow] = useState(true);
  const [search, setSearch] = useState('');
  const [error, setError] = useState<unknown>(null);
  const pre = useRef<HTMLPreElement>(null);

  useEffect(() => {
    if (!follow) return;
    const ac = new AbortController();
    setText('');
    setError(null);
    const path = `/api/v1/namespaces/${ns}/pods/${pod}/log?container=${encodeURIComponent(container)}&tailLines=${tailLines}&follow=true`;
    streamLogs(path, (chunk) => setText((old) => {
      const lines = (old + chunk).split('\n');
      return lines.length > keepLines ? lines.slice(-keepLines).join('\n') : old + chunk;
    }), ac.signal).catch((e) => { if (!ac.signal.aborted) setError(e); });
    return () => ac.abort();
  }, [ns, pod, container, follow]);

  useEffect(() => {
    if (follow && pre.current) pre.current.scrollTop = pre.current.scrollHeight;
  }, [text, follow]);

  const shown = search ? text.split('\n').filter((l) => l.includes(search)).join('\n') : text;
  const download = () => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
    a.download = `${pod}-${container}.log`;
    a.click();
  };
  return (
    <div className="card">
      <h3>{t('pod.logs')}</h3>
      <button onClick={() => setFollow(!follow)}>{follow ? t('pod.pause') : t('pod.follow')}</button>
      <input aria-label="search logs" placeholder="search" value={search} onChange={(e) => setSearch(e.target.value)} />
      <button onClick={download}>⤓</button>
      <ErrorBox error={error} />
      <pre className="logs" ref={pre} data-testid="logs">{shown}</pre>
    </div>
  );
}
