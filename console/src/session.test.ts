import { describe, expect, it } from 'vitest';
import { ApiError, Me } from './api';
import { loadSession } from './session';

const me: Me = { user: 'system:serviceaccount:a:tenant', groups: [], namespace: 'a', operator: false, registry: 'r:5000' };

// answers plays the console's answers in order; each is a value or an error.
function answers(...list: (Me | Error)[]) {
  let i = 0;
  const ask = async () => {
    const a = list[Math.min(i++, list.length - 1)];
    if (a instanceof Error) throw a;
    return a;
  };
  return { ask, calls: () => i };
}

const noSleep = async () => {};

describe('loadSession', () => {
  it('answers the user', async () => {
    const a = answers(me);
    expect(await loadSession(a.ask, () => {}, new AbortController().signal, noSleep)).toEqual(me);
  });
  it('sends to login on 401 only', async () => {
    const a = answers(new ApiError(401, '401: not logged in'));
    const retries: string[] = [];
    expect(await loadSession(a.ask, (why) => retries.push(why), new AbortController().signal, noSleep)).toBeNull();
    expect(retries).toEqual([]);
  });
  it('asks again after a broken request or a 502, saying why, until the user is known', async () => {
    // Chromium's fetch rejects with TypeError when the network changes under it.
    const a = answers(new TypeError('network error'), new ApiError(502, '502: the API could not say who this session is'), me);
    const retries: [string, number][] = [];
    const got = await loadSession(a.ask, (why, ms) => retries.push([why, ms]), new AbortController().signal, noSleep);
    expect(got).toEqual(me);
    expect(a.calls()).toBe(3);
    expect(retries.map((r) => r[0])).toEqual(['network error', '502: the API could not say who this session is']);
    expect(retries[1][1]).toBeGreaterThan(retries[0][1] * 1.5);
  });
  it('stops when aborted', async () => {
    const ac = new AbortController();
    const a = answers(new TypeError('network error'));
    const got = await loadSession(a.ask, () => {}, ac.signal, async () => { ac.abort(); });
    expect(got).toBeUndefined();
    expect(a.calls()).toBe(1);
  });
});
