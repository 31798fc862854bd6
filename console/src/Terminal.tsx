import { useEffect, useRef, useState } from 'react';
import { Terminal as XTerm } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { CLOSE, ERROR, PROTOCOL, STDERR, STDIN, STDOUT, execPath, exitStatus, frame, parse, resize } from './channel';

// ExecTerminal is a shell in a container: xterm.js over the API's exec
// WebSocket. A failed or ended session shows its reason in the terminal
// and leaves the rest of the page working; "Connect" starts a new one.
export function ExecTerminal({ ns, pod, container, labels }: { ns: string; pod: string; container: string; labels: { connect: string; disconnect: string } }) {
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<XTerm | null>(null);
  const ws = useRef<WebSocket | null>(null);
  const [connected, setConnected] = useState(false);
  const [command, setCommand] = useState('sh');

  useEffect(() => {
    const x = new XTerm({ convertEol: false, fontSize: 13, cursorBlink: true });
    const fit = new FitAddon();
    x.loadAddon(fit);
    x.open(host.current!);
    fit.fit();
    term.current = x;
    const onData = x.onData((d) => ws.current?.readyState === WebSocket.OPEN && ws.current.send(frame(STDIN, d)));
    const onResize = x.onResize(({ cols, rows }) => ws.current?.readyState === WebSocket.OPEN && ws.current.send(resize(cols, rows)));
    const onWin = () => fit.fit();
    window.addEventListener('resize', onWin);
    return () => {
      window.removeEventListener('resize', onWin);
      onData.dispose();
      onResize.dispose();
      ws.current?.close();
      x.dispose();
    };
  }, []);

  const connect = () => {
    ws.current?.close();
    const x = term.current!;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${execPath(ns, pod, container, command.split(' ').filter(Boolean), true)}`;
    const sock = new WebSocket(url, [PROTOCOL]);
    sock.binaryType = 'arraybuffer';
    ws.current = sock;
    sock.onopen = () => {
      setConnected(true);
      sock.send(resize(x.cols, x.rows));
      x.focus();
    };
    sock.onmessage = (ev) => {
      const m = parse(ev.data as ArrayBuffer);
      if (m.channel === STDOUT || m.channel === STDERR) x.write(m.data);
      else if (m.channel === ERROR) {
        const why = exitStatus(m.data);
        if (why) x.write(`\r\n\x1b[31m${why}\x1b[0m\r\n`);
      } else if (m.channel === CLOSE) sock.close();
    };
    sock.onerror = () => x.write('\r\n\x1b[31mthe exec connection failed (see the pod status; the container may have no shell)\x1b[0m\r\n');
    sock.onclose = () => {
      setConnected(false);
      x.write('\r\n[session closed]\r\n');
    };
  };

  return (
    <div>
      <div style={{ marginBottom: '.3rem' }}>
        <input aria-label="exec command" value={command} onChange={(e) => setCommand(e.target.value)} size={12} />
        {connected
          ? <button onClick={() => ws.current?.close()}>{labels.disconnect}</button>
          : <button onClick={connect} data-testid="exec-connect">{labels.connect}</button>}
        {connected && <span data-testid="exec-connected"> ●</span>}
      </div>
      <div ref={host} className="terminal" data-testid="terminal" />
    </div>
  );
}
