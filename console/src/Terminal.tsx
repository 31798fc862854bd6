import { useEffect, useRef, useState } from 'react';
import { Terminal as XTerm } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { CLOSE, ERROR, PROTOCOL, STDERR, STDIN, STDOUT, execPath, exitStatus, frame, isOutput, parse, resize, shellMissing, shells } from './channel';

// ExecTerminal is a shell in a container: xterm.js over the API's exec
// WebSocket. A failed or ended session shows its reason in the terminal
// and leaves the rest of the page working; "Connect" starts a new one.
export function ExecTerminal({ ns, pod, container, labels }: { ns: string; pod: string; container: string; labels: { connect: string; disconnect: string; noShell: string } }) {
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<XTerm | null>(null);
  const ws = useRef<WebSocket | null>(null);
  // connecting: the socket is open but the command has not shown that it
  // runs (the apiserver opens the socket before it knows); connected: it
  // has written something (a shell, its prompt).
  const [connecting, setConnecting] = useState('');
  const [connected, setConnected] = useState('');
  const [command, setCommand] = useState('');
  const [noShell, setNoShell] = useState('');

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

  // connect runs the command typed, or else bash, then sh when bash is not
  // in the container; a container with neither gets a message beside the
  // terminal and the rest of the page goes on working.
  const connect = () => {
    setNoShell('');
    const typed = command.split(' ').filter(Boolean);
    tryShell(typed.length ? [typed] : shells.map((s) => [s]), 0);
  };
  const tryShell = (candidates: string[][], i: number) => {
    ws.current?.close();
    const x = term.current!;
    const cmd = candidates[i];
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${execPath(ns, pod, container, cmd, true)}`;
    const sock = new WebSocket(url, [PROTOCOL]);
    sock.binaryType = 'arraybuffer';
    ws.current = sock;
    let output = false;
    let missing = '';
    sock.onopen = () => {
      setConnecting(cmd.join(' '));
      sock.send(resize(x.cols, x.rows));
      x.focus();
    };
    sock.onmessage = (ev) => {
      const m = parse(ev.data as ArrayBuffer);
      if (m.channel === STDOUT || m.channel === STDERR) {
        if (isOutput(m) && !output) {
          output = true;
          setConnecting('');
          setConnected(cmd.join(' '));
        }
        x.write(m.data);
      } else if (m.channel === ERROR) {
        const why = exitStatus(m.data);
        if (why && !output && shellMissing(why)) missing = why;
        else if (why) x.write(`\r\n\x1b[31m${why}\x1b[0m\r\n`);
      } else if (m.channel === CLOSE) sock.close();
    };
    sock.onerror = () => {
      if (!output) missing ||= 'the exec connection failed';
    };
    sock.onclose = () => {
      if (ws.current !== sock) return;
      setConnecting('');
      setConnected('');
      if (missing && !output) {
        if (i + 1 < candidates.length) {
          x.write(`\r\n\x1b[33m${cmd.join(' ')}: not in this container, trying ${candidates[i + 1].join(' ')}\x1b[0m\r\n`);
          tryShell(candidates, i + 1);
          return;
        }
        setNoShell(`${candidates.map((c) => c.join(' ')).join(', ')}: ${missing}`);
      }
      x.write('\r\n[session closed]\r\n');
    };
  };

  return (
    <div>
      <div style={{ marginBottom: '.3rem' }}>
        <input aria-label="exec command" placeholder="bash, else sh" value={command} onChange={(e) => setCommand(e.target.value)} size={12} />
        {connected || connecting
          ? <button onClick={() => ws.current?.close()}>{labels.disconnect}</button>
          : <button onClick={connect} data-testid="exec-connect">{labels.connect}</button>}
        {connecting && <span data-testid="exec-connecting"> … {connecting}</span>}
        {connected && <span data-testid="exec-connected"> ● {connected}</span>}
      </div>
      {noShell && <div className="notice" role="status" data-testid="no-shell">{labels.noShell} ({noShell})</div>}
      <div ref={host} className="terminal" data-testid="terminal" />
    </div>
  );
}
