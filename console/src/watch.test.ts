import { describe, expect, it } from 'vitest';
import { LineSplitter, ListState, applyEvent, backoff, runWatcher, watchURL } from './watch';
import { ApiError } from './api';

const pod = (name: string, rv: string, phase = 'Pending') => ({ metadata: { name, uid: `uid-${name}`, resourceVersion: rv }, status: { phase } });

describe('applyEvent', () => {
  it('adds, modifies in place, deletes and moves the version on bookmarks', () => {
    let s: ListState = { items: [pod('a', '1')], resourceVersion: '1' };
    s = applyEvent(s, { type: 'ADDED', object: pod('b', '2') });
    expect(s.items.map((o) => o.metadata.name)).toEqual(['a', 'b']);
    s = applyEvent(s, { type: 'MODIFIED', object: pod('a', '3', 'Running') });
    expect(s.items[0].status.phase).toBe('Running');
    expect(s.items.map((o) => o.metadata.name)).toEqual(['a', 'b']);
    s = applyEvent(s, { type: 'DELETED', object: pod('b', '4') });
    expect(s.items.map((o) => o.metadata.name)).toEqual(['a']);
    s = applyEvent(s, { type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } });
    expect(s).toEqual({ items: [pod('a', '3', 'Running')], resourceVersion: '9' });
  });
});

describe('LineSplitter', () => {
  it('keeps a line cut between chunks until its end arrives', () => {
    const l = new LineSplitter();
    expect(l.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(l.push(':2}\n\n')).toEqual(['{"b":2}']);
    expect(l.push('')).toEqual([]);
  });
});

describe('backoff', () => {
  it('doubles from half a second to at most 30 s plus a fifth', () => {
    expect(backoff(0, () => 0)).toBe(500);
    expect(backoff(1, () => 0)).toBe(1000);
    expect(backoff(3, () => 0)).toBe(4000);
    expect(backoff(20, () => 0)).toBe(30000);
    expect(backoff(20, () => 1)).toBe(36000);
  });
});

describe('watchURL', () => {
  it('keeps the selector and adds the version', () => {
    const u = new URL('http://x' + watchURL('/api/v1/namespaces/a/events?fieldSelector=involvedObject.name%3Dp', '42'));
    expect(u.pathname).toBe('/api/v1/namespaces/a/events');
    expect(u.searchParams.get('fieldSelector')).toBe('involvedObject.name=p');
    expect(u.searchParams.get('watch')).toBe('1');
    expect(u.searchParams.get('resourceVersion')).toBe('42');
  });
});

describe('runWatcher', () => {
  it('reconnects from the last version after a break, and lists again after 410 Gone', async () => {
    const ac = new AbortController();
    const lists: string[] = [];
    const watches: string[] = [];
    const states: string[][] = [];
    const waits: number[] = [];
    const streams: ((on: (t: string) => void) => Promise<void>)[] = [
      // First stream: one event, then the connection breaks (control plane restart).
      async (on) => { on(JSON.stringify({ type: 'ADDED', object: pod('b', '11') }) + '\n'); throw new TypeError('network error'); },
      // Second: the version is too old now.
      async (on) => { on(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } }) + '\n'); },
      // Third, after the relist: an event, then the test ends.
      async (on) => { on(JSON.stringify({ type: 'DELETED', object: pod('a', '21') }) + '\n'); ac.abort(); },
    ];
    let listRV = 10;
    await runWatcher('/api/v1/namespaces/n/pods', {
      list: async (p) => { lists.push(p); const rv = String(listRV); listRV = 20; return { metadata: { resourceVersion: rv }, items: [pod('a', rv)] }; },
      stream: async (p, on) => { watches.push(new URL('http://x' + p).searchParams.get('resourceVersion')!); await streams.shift()!(on); },
      onState: (s) => states.push(s.items.map((o) => o.metadata.name)),
      onError: () => {},
      onStatus: () => {},
      sleep: async (ms) => { waits.push(ms); },
    }, ac.signal);
    expect(lists.length).toBe(2);
    expect(watches).toEqual(['10', '11', '20']);
    expect(states).toEqual([['a'], ['a', 'b'], ['a'], []]);
    expect(waits.length).toBe(1);
  });

  it('clears the error of a broken stream and says live once the API answers again', async () => {
    const ac = new AbortController();
    const log: string[] = [];
    let n = 0;
    await runWatcher('/api/v1/namespaces/n/pods', {
      list: async () => ({ metadata: { resourceVersion: '1' }, items: [] }),
      stream: async (_p, _on, _signal, onOpen) => {
        if (++n === 1) throw new TypeError('network error'); // the control plane is away
        onOpen();
        ac.abort();
      },
      onState: () => {},
      onError: (e) => log.push(`error ${e ? (e as Error).message : 'cleared'}`),
      onStatus: (s) => log.push(s.state),
      sleep: async () => {},
    }, ac.signal);
    // Not live before the API answered the watch.
    expect(log).toEqual(['connecting', 'error cleared', 'error network error', 'retrying', 'live', 'error cleared']);
  });

  it('reports a refused list and tries again', async () => {
    const ac = new AbortController();
    const errors: unknown[] = [];
    let n = 0;
    await runWatcher('/api/v1/namespaces/other/pods', {
      list: async () => { if (++n === 2) ac.abort(); throw new ApiError(403, '403: pods is forbidden'); },
      stream: async () => {},
      onState: () => {},
      onError: (e) => errors.push(e),
      onStatus: () => {},
      sleep: async () => {},
    }, ac.signal);
    expect(n).toBe(2);
    expect((errors[0] as Error).message).toContain('forbidden');
  });
});
