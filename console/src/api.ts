// Calls to the console: the Kubernetes API (proxied as the user) and the
// console's own /cci endpoints. The session is an HttpOnly cookie the
// browser sends by itself; no script ever holds the token.

export class ApiError extends Error {
  // body is the API's Status when it sent one: reason, details.causes.
  constructor(public status: number, message: string, public body?: any) {
    super(message);
  }
}

// onUnauthorized is set by the app: an expired or revoked credential sends
// the user to the login page with a message, never to a blank page.
let onUnauthorized: (msg: string) => void = () => {};
export function setUnauthorizedHandler(f: (msg: string) => void) {
  onUnauthorized = f;
}

// sessionChecker returns check: ask (the console's /cci/session, whose
// 401 sends the user to login through request()) unless a check is in
// flight or one started less than minGapMs ago. It says whether it asked.
export function sessionChecker(ask: () => Promise<unknown>, minGapMs: number, now: () => number = () => Date.now()) {
  let last = -Infinity;
  let inFlight = false;
  return (): boolean => {
    const t = now();
    if (inFlight || t - last < minGapMs) return false;
    inFlight = true;
    last = t;
    ask().catch(() => {}).finally(() => { inFlight = false; });
    return true;
  };
}

// checkSession asks whether the session's credential still works. A
// revoked credential does not always show as a 401 on the page's own
// requests: when a tenant is deleted, its namespace's RoleBinding goes
// before its service account and token, and the apiserver keeps a
// token's authentication for 10 s, so the page first gets 403s; a watch
// opened before keeps streaming (authentication is checked only when a
// request starts) and shows no error at all. So the page asks on every
// 403 of the API (at most every 5 s) and every 30 s while it is open
// (App), and /cci/session answers 401 once the API refuses the token.
export const checkSession = sessionChecker(() => request('GET', '/cci/session'), 5000);

async function errorOf(resp: Response): Promise<ApiError> {
  let msg = `${resp.status} ${resp.statusText}`;
  let body: any;
  try {
    body = await resp.json();
    if (body && body.message) msg = `${resp.status}: ${body.message}`;
  } catch {
    /* not JSON */
  }
  return new ApiError(resp.status, msg, body);
}

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// getRetries are the waits before asking again when a GET got no answer.
const getRetries = [250, 1000, 3000];

// fetchAnswer makes a request (send) and, when it is a GET that got no
// answer at all, asks again a few times: the browser aborts every request
// in flight when the machine's network addresses change (Wi-Fi, a VPN, a
// container started on the same machine), and a GET changes nothing, so
// asking twice is safe. An answer, even 5xx, is the caller's; other
// methods are not asked again: the user sees the error and decides.
export async function fetchAnswer(send: () => Promise<Response>, method: string, sleep = pause): Promise<Response> {
  for (let i = 0; ; i++) {
    try {
      return await send();
    } catch (e) {
      if (method !== 'GET' || i >= getRetries.length || (e instanceof Error && e.name === 'AbortError')) throw e;
      await sleep(getRetries[i]);
    }
  }
}

// request sends one request to the console; accept, when given, is the
// Accept header (the API's metadata-only and table forms are asked so).
export async function request<T = any>(method: string, path: string, body?: unknown, contentType = 'application/json', accept?: string): Promise<T> {
  if (method !== 'GET' && !path.startsWith('/cci/')) path += (path.includes('?') ? '&' : '?') + 'fieldManager=cci-console';
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['Content-Type'] = contentType;
  if (accept) headers.Accept = accept;
  const resp = await fetchAnswer(() => fetch(path, {
    method,
    credentials: 'same-origin',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  }), method);
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && !path.startsWith('/cci/login')) onUnauthorized(err.message);
    if (resp.status === 403 && !path.startsWith('/cci/')) checkSession();
    throw err;
  }
  const text = await resp.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const get = <T = any>(path: string, accept?: string) => request<T>('GET', path, undefined, undefined, accept);
export const post = <T = any>(path: string, body: unknown) => request<T>('POST', path, body);
export const del = <T = any>(path: string) => request<T>('DELETE', path);
export const mergePatch = <T = any>(path: string, body: unknown) =>
  request<T>('PATCH', path, body, 'application/merge-patch+json');
export const jsonPatch = <T = any>(path: string, ops: unknown[]) =>
  request<T>('PATCH', path, ops, 'application/json-patch+json');

export interface Me {
  user: string;
  groups: string[];
  namespace?: string;
  operator: boolean;
  registry: string;
}

// streamLogs reads a pod's log (server-side tail, then follow) or a watch
// and hands each chunk of text to onText until the signal aborts; onOpen
// is called once the API answered.
export async function streamLogs(path: string, onText: (t: string) => void, signal: AbortSignal, onOpen?: () => void, accept?: string): Promise<void> {
  const resp = await fetchAnswer(() => fetch(path, { credentials: 'same-origin', signal, headers: accept ? { Accept: accept } : {} }), 'GET');
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401) onUnauthorized(err.message);
    if (resp.status === 403) checkSession();
    throw err;
  }
  onOpen?.();
  const reader = resp.body!.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    onText(dec.decode(value, { stream: true }));
  }
}
