import { describe, expect, it } from 'vitest';
import { fetchAnswer } from './api';

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
