import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { fetchAnswer, get, sessionChecker, setUnauthorizedHandler, streamLogs } from './api';
import { metadataOnly } from './watch';

// sends plays fetch: each entry a Response or an error to reject with.
function sends(...list: (Response | Error)[]) {
  let i = 0;
  const send = async () => {
    const a = list[Math.min(i++, list.length - 1)];
    if (a instanceof Error) throw a;
    return a;
  };
  return { send, calls: () => i };
}
const noSleep = async () => {};
const broken = () => new TypeError('Failed to fetch');

describe('fetchAnswer', () => {
  it('asks a GET again when the network broke it', async () => {
    const s = sends(broken(), broken(), new Response('{}', { status: 200 }));
    expect((await fetchAnswer(s.send, 'GET', noSleep)).status).toBe(200);
    expect(s.calls()).toBe(3);
  });
  it('gives up on a GET after a few tries', async () => {
    const s = sends(broken());
    await expect(fetchAnswer(s.send, 'GET', noSleep)).rejects.toThrow('Failed to fetch');
    expect(s.calls()).toBe(4);
  });
  it('passes an answer on, 5xx too', async () => {
    const s = sends(new Response('', { status: 502 }));
    expect((await fetchAnswer(s.send, 'GET', noSleep)).status).toBe(502);
    expect(s.calls()).toBe(1);
  });
  it('does not send a change twice', async () => {
    for (const m of ['POST', 'PATCH', 'DELETE']) {
      const s = sends(broken(), new Response('{}'));
      await expect(fetchAnswer(s.send, m, noSleep)).rejects.toThrow('Failed to fetch');
      expect(s.calls()).toBe(1);
    }
  });
  it('does not retry what the page aborted', async () => {
    const s = sends(new DOMException('aborted', 'AbortError'), new Response('{}'));
    await expect(fetchAnswer(s.send, 'GET', noSleep)).rejects.toThrow('aborted');
    expect(s.calls()).toBe(1);
  });
});

describe('sessionChecker', () => {
  it('asks once at a time and at most once per gap', async () => {
    let now = 0;
    let asked = 0;
    let answer: () => void = () => {};
    const check = sessionChecker(() => { asked++; return new Promise<void>((r) => { answer = r; }); }, 5000, () => now);
    expect(check()).toBe(true);
    now = 6000;
    expect(check()).toBe(false); // the first is still asking
    answer();
    await new Promise((r) => setTimeout(r, 0));
    expect(check()).toBe(true);
    answer();
    await new Promise((r) => setTimeout(r, 0));
    now = 9000;
    expect(check()).toBe(false); // 3 s after the last
    expect(asked).toBe(2);
  });
  it('does not let a failed check escape', async () => {
    const check = sessionChecker(async () => { throw new TypeError('network error'); }, 0);
    expect(check()).toBe(true);
    await new Promise((r) => setTimeout(r, 0));
    expect(check()).toBe(true);
  });
});

// A revoked token: the API answers 403 (the tenant's RoleBinding is gone,
// the token still authenticates for a while), then /cci/session says 401.
describe('a 403 of the API', () => {
  // checkSession asks at most every 5 s: each test is a minute later.
  let clock = Date.now();
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime((clock += 60000));
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
    setUnauthorizedHandler(() => {});
  });
  const revoked = (sessionStatus: number) => {
    const asked: string[] = [];
    vi.stubGlobal('fetch', async (path: string) => {
      asked.push(path);
      if (path === '/cci/session') {
        return sessionStatus === 401
          ? new Response(JSON.stringify({ kind: 'Status', code: 401, message: 'the API no longer accepts this session\'s credential (expired or revoked); log in again' }), { status: 401 })
          : new Response(JSON.stringify({ user: 'u', groups: [], operator: false, registry: '' }), { status: 200 });
      }
      return new Response(JSON.stringify({ kind: 'Status', code: 403, message: 'pods is forbidden' }), { status: 403 });
    });
    return asked;
  };
  it('asks /cci/session, whose 401 goes to login with the reason', async () => {
    const asked = revoked(401);
    const sent: string[] = [];
    setUnauthorizedHandler((m) => sent.push(m));
    await expect(get('/api/v1/namespaces/a/pods')).rejects.toMatchObject({ status: 403 });
    await vi.waitFor(() => expect(sent).toHaveLength(1));
    expect(sent[0]).toMatch(/^401: .*expired or revoked/);
    expect(asked).toEqual(['/api/v1/namespaces/a/pods', '/cci/session']);
  });
  it('stays on the page while the session is still good (a 403 of another namespace)', async () => {
    const asked = revoked(200);
    const sent: string[] = [];
    setUnauthorizedHandler((m) => sent.push(m));
    await expect(streamLogs('/api/v1/namespaces/b/pods?watch=1', () => {}, new AbortController().signal)).rejects.toMatchObject({ status: 403 });
    await vi.waitFor(() => expect(asked).toContain('/cci/session'));
    await new Promise((r) => setTimeout(r, 0));
    expect(sent).toEqual([]);
  });
});

describe('metadata only', () => {
  afterEach(() => vi.unstubAllGlobals());
  it('asks the API for the list and the watch without contents', async () => {
    const accepts: string[] = [];
    vi.stubGlobal('fetch', async (_path: string, init: RequestInit) => {
      accepts.push((init.headers as Record<string, string>).Accept);
      return new Response('{"kind":"PartialObjectMetadataList","items":[]}', { status: 200 });
    });
    await get('/api/v1/namespaces/a/secrets', metadataOnly.list);
    await streamLogs('/api/v1/namespaces/a/secrets?watch=1', () => {}, new AbortController().signal, undefined, metadataOnly.watch);
    await get('/api/v1/namespaces/a/secrets/db');
    expect(accepts).toEqual([
      'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1',
      'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1',
      undefined,
    ]);
  });
});
