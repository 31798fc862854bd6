import { useCallback, useEffect, useRef, useState } from 'react';
import { useParams } from 'react-router-dom';
import { ApiError, get, streamLogs } from '../api';
import { ErrorBox, useApp, useNs } from '../App';
import { useWatch, useWatchOne } from '../live';
import { LiveBadge } from '../LiveBadge';
import { age } from '../format';
import { ExecTerminal } from '../Terminal';
import { LineChart } from '../Chart';
import { timeline, verdict } from '../timeline';
import { podResources, podUsage } from '../quantity';
import { LineBuffer, matching, visibleRange } from '../logbuf';

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
  const evs = (events.items || []).filter((e: any) => !e.involvedObject?.kind || e.involvedObject.kind === 'Pod');
  const why = p ? verdict(p, evs) : null;

  return (
    <>
      <h2>{ns}/{name} <LiveBadge status={pod.status} /></h2>
      <ErrorBox error={pod.error} />
      {pod.item === null && <div className="error" role="alert">pod {name} is gone</div>}
      {p && (
        <div className="row">
          <div className="card">
            <h3>{t('pod.status')}</h3>
            {why && <div className="verdict" data-testid="verdict">{why}</div>}
            <table><tbody>
              <tr><td>Phase</td><td data-testid="pod-phase">{p.status?.phase}</td></tr>
              <tr><td>Node</td><td>{p.spec?.nodeName || '-'}</td></tr>
              <tr><td>IP</td><td>{p.status?.podIP || '-'}</td></tr>
              <tr><td>Runtime</td><td>{p.spec?.runtimeClassName || '-'}</td></tr>
              {(p.status?.containerStatuses || []).map((s: any) => (
                <tr key={s.name}><td>{s.name}</td><td>{Object.keys(s.state || {})[0]} {s.state?.waiting?.reason || ''} {s.state?.terminated ? `exit ${s.state.terminated.exitCode} ${s.state.terminated.reason || ''}` : ''} restarts {s.restartCount}</td></tr>
              ))}
            </tbody></table>
          </div>
          <div className="card">
            <h3>{t('pod.timeline')}</h3>
            <ErrorBox error={events.error} />
            <table data-testid="timeline"><tbody>
              {timeline(p, evs).map((e, i) => (
                <tr key={i} className={`tl-${e.level}`}><td title={e.time}>{age(e.time)}</td><td>{e.title}</td><td>{e.detail}</td></tr>
              ))}
            </tbody></table>
          </div>
        </div>
      )}
      {p && p.status?.phase === 'Running' && <Usage ns={ns} pod={p} />}
      {containers.length > 1 && (
        <select aria-label="container" value={c} onChange={(e) => setContainer(e.target.value)}>
          {containers.map((n) => <option key={n}>{n}</option>)}
        </select>
      )}
      {c && <Logs ns={ns} pod={name} container={c} restarted={(p?.status?.containerStatuses || []).some((s: any) => s.name === c && s.restartCount > 0)} />}
      {c && (
        <div className="card">
          <h3>{t('pod.terminal')}</h3>
          <ExecTerminal ns={ns} pod={name} container={c} labels={{ connect: t('pod.connect'), disconnect: t('pod.disconnect'), noShell: t('pod.noShell') }} />
        </div>
      )}
    </>
  );
}

// Usage samples the metrics API (metrics-server's PodMetrics) every 15 s
// while the page is open and draws CPU and memory with the pod's requests
// and limits as lines.
const sampleEvery = 15000;
const keepSamples = 120;
function Usage({ ns, pod }: { ns: string; pod: any }) {
  const { t } = useApp();
  const [samples, setSamples] = useState<{ time: string; cpu: number; memory: number }[]>([]);
  const [error, setError] = useState<unknown>(null);
  const name = pod.metadata.name;
  useEffect(() => {
    let stop = false;
    const sample = () => get(`/apis/metrics.k8s.io/v1beta1/namespaces/${ns}/pods/${name}`).then((m) => {
      if (stop) return;
      setError(null);
      const u = podUsage(m);
      const time = new Date(m.timestamp || Date.now()).toLocaleTimeString();
      setSamples((s) => (s.length && s[s.length - 1].time === time ? s : [...s, { time, ...u }].slice(-keepSamples)));
    }, (e) => {
      // 404: metrics-server has no sample of a pod this young yet.
      if (!stop && !(e instanceof ApiError && e.status === 404)) setError(e);
    });
    sample();
    const id = setInterval(sample, sampleEvery);
    return () => { stop = true; clearInterval(id); };
  }, [ns, name]);
  const r = podResources(pod);
  const labels = samples.map((s) => s.time);
  const flat = (v: number) => samples.map(() => v);
  const mib = 2 ** 20;
  return (
    <div className="row">
      <div className="card">
        <h3>CPU ({t('pod.cores')})</h3>
        <ErrorBox error={error} />
        {samples.length === 0 && !error && <p>{t('pod.noSamples')}</p>}
        <LineChart testid="cpu-chart" unit="cores" labels={labels} lines={[
          { label: t('pod.used'), values: samples.map((s) => s.cpu), color: '#3d6fd8' },
          { label: t('pod.request'), values: flat(r.cpuRequest), color: '#1a7f37', dashed: true },
          { label: t('pod.limit'), values: flat(r.cpuLimit), color: '#a40e26', dashed: true },
        ]} />
      </div>
      <div className="card">
        <h3>{t('pod.memory')} (MiB)</h3>
        <LineChart testid="memory-chart" unit="MiB" labels={labels} lines={[
          { label: t('pod.used'), values: samples.map((s) => s.memory / mib), color: '#3d6fd8' },
          { label: t('pod.request'), values: flat(r.memRequest / mib), color: '#1a7f37', dashed: true },
          { label: t('pod.limit'), values: flat(r.memLimit / mib), color: '#a40e26', dashed: true },
        ]} />
      </div>
    </div>
  );
}

// Logs: the server sends the last tailLines (the user picks how many) and
// follows; lines are kept in a LineBuffer and only the rows in view are in
// the page, so 100,000 lines scroll like 100. Pause stops the view (lines
// still arrive and are counted), search filters, "previous" reads the
// last run of a restarted container, download saves what is held.
const rowHeight = 16;
const viewHeight = 384;
function Logs({ ns, pod, container, restarted }: { ns: string; pod: string; container: string; restarted: boolean }) {
  const { t } = useApp();
  const buf = useRef(new LineBuffer());
  const [version, setVersion] = useState(0);
  const [paused, setPaused] = useState(false);
  const [previous, setPrevious] = useState(false);
  const [tail, setTail] = useState(1000);
  const [search, setSearch] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const box = useRef<HTMLDivElement>(null);
  // While paused, the view holds the lines there were when it paused.
  const heldCount = useRef<number | null>(null);
  const frame = useRef(0);

  // Chunks arrive many times a second: redraw at most once per frame.
  const bump = useCallback(() => {
    if (frame.current) return;
    frame.current = requestAnimationFrame(() => { frame.current = 0; setVersion((v) => v + 1); });
  }, []);

  useEffect(() => {
    const ac = new AbortController();
    buf.current.clear();
    setVersion((v) => v + 1);
    setError(null);
    const q = new URLSearchParams({ container, tailLines: String(tail) });
    if (previous) q.set('previous', 'true');
    else q.set('follow', 'true');
    streamLogs(`/api/v1/namespaces/${ns}/pods/${pod}/log?${q}`, (chunk) => { buf.current.push(chunk); bump(); }, ac.signal)
      .catch((e) => { if (!ac.signal.aborted) setError(e); });
    return () => { ac.abort(); cancelAnimationFrame(frame.current); frame.current = 0; };
  }, [ns, pod, container, previous, tail, bump]);

  const all = buf.current.all();
  const held = paused ? all.slice(0, heldCount.current ?? all.length) : all;
  if (!paused) heldCount.current = null;
  const idx = matching(held, search);
  const count = idx ? idx.length : held.length;
  const [start, end] = visibleRange(scrollTop, viewHeight, rowHeight, count);
  const rows = [];
  for (let i = start; i < end; i++) {
    const n = idx ? idx[i] : i;
    rows.push(<div key={n} className="log-line" style={{ top: i * rowHeight, height: rowHeight }}>{held[n]}</div>);
  }

  // Following: keep the newest line in view unless paused.
  useEffect(() => {
    if (!paused && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [version, paused, search]);

  const download = () => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([buf.current.all().join('\n') + '\n'], { type: 'text/plain' }));
    a.download = `${pod}-${container}${previous ? '-previous' : ''}.log`;
    a.click();
  };
  const togglePause = () => {
    heldCount.current = paused ? null : all.length;
    setPaused(!paused);
  };
  return (
    <div className="card">
      <h3>{t('pod.logs')} <span className="live" data-testid="log-count">{all.length} {t('pod.lines')}{paused && all.length > held.length ? ` (+${all.length - held.length} ${t('pod.new')})` : ''}</span></h3>
      <div className="toolbar">
        <button onClick={togglePause} data-testid="log-pause">{paused ? t('pod.follow') : t('pod.pause')}</button>
        <input aria-label="search logs" placeholder="search" value={search} onChange={(e) => setSearch(e.target.value)} />
        <label className="inline"><input type="checkbox" checked={previous} disabled={!restarted && !previous} onChange={(e) => setPrevious(e.target.checked)} data-testid="log-previous" /> {t('pod.previous')}</label>
        <label className="inline">tailLines <select value={tail} onChange={(e) => setTail(Number(e.target.value))} aria-label="tail lines">
          {[1000, 10000, 100000].map((n) => <option key={n} value={n}>{n}</option>)}
        </select></label>
        <button onClick={download} data-testid="log-download">⤓ {t('pod.download')}</button>
      </div>
      <ErrorBox error={error} />
      <div className="logs" ref={box} style={{ height: viewHeight }} onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)} data-testid="logs">
        <div style={{ height: count * rowHeight, position: 'relative' }}>{rows}</div>
      </div>
    </div>
  );
}
