// The Kubernetes API's exec WebSocket protocol (v5.channel.k8s.io, which
// the apiserver translates for the kubelet): every binary message starts
// with one byte naming the stream.

export const PROTOCOL = 'v5.channel.k8s.io';

export const STDIN = 0;
export const STDOUT = 1;
export const STDERR = 2;
export const ERROR = 3; // a metav1.Status in JSON when the command ends
export const RESIZE = 4;
export const CLOSE = 255;

const enc = new TextEncoder();

export function frame(channel: number, data: Uint8Array | string): Uint8Array {
  const body = typeof data === 'string' ? enc.encode(data) : data;
  const out = new Uint8Array(body.length + 1);
  out[0] = channel;
  out.set(body, 1);
  return out;
}

export function resize(cols: number, rows: number): Uint8Array {
  return frame(RESIZE, JSON.stringify({ Width: cols, Height: rows }));
}

export interface Message {
  channel: number;
  data: Uint8Array;
}

export function parse(msg: ArrayBuffer | Uint8Array): Message {
  const b = msg instanceof Uint8Array ? msg : new Uint8Array(msg);
  if (b.length === 0) throw new Error('empty exec message: no channel byte');
  return { channel: b[0], data: b.subarray(1) };
}

// isOutput says whether a message is the command's output. The apiserver
// sends an empty STDOUT frame as soon as the exec connects (to say it is
// open); that is not output, and counting it would keep the terminal from
// trying the next shell when the first is not in the container.
export function isOutput(m: Message): boolean {
  return (m.channel === STDOUT || m.channel === STDERR) && m.data.length > 0;
}

// exitStatus reads the ERROR channel's Status: the message to show, or
// null when the command exited 0.
export function exitStatus(data: Uint8Array): string | null {
  const text = new TextDecoder().decode(data);
  try {
    const st = JSON.parse(text);
    if (st.status === 'Success') return null;
    return st.message || text;
  } catch {
    return text;
  }
}

// execPath is the exec subresource's path and query.
export function execPath(ns: string, pod: string, container: string, command: string[], tty: boolean): string {
  const q = new URLSearchParams();
  if (container) q.set('container', container);
  for (const c of command) q.append('command', c);
  q.set('stdin', 'true');
  q.set('stdout', 'true');
  q.set('stderr', String(!tty));
  q.set('tty', String(tty));
  return `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}/exec?${q}`;
}

// shellMissing says whether an exec's failure means the command is not in
// the container (runc, gVisor and containerd word it differently), so the
// terminal tries the next shell.
export function shellMissing(message: string): boolean {
  return /executable file not found|no such file or directory|not found in \$PATH|command not found|not found/i.test(message);
}

// shells are tried in order when the terminal connects.
export const shells = ['bash', 'sh'];
