// The app's first question on every load: who is the cookie's user?
import { ApiError, Me } from './api';
import { backoff } from './watch';

const sleepFor = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const id = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(id); resolve(); }, { once: true });
  });

// loadSession asks /cci/session (through ask) until it has an answer:
// the user, or null when the console says 401 (no session, or its
// credential expired or was revoked: the login page, with the message the
// 401 handler set). Anything else says nothing about the session — a
// request the network broke (the browser aborts requests in flight when
// the machine's addresses change), the control plane restarting (502) —
// so it asks again with back-off and tells onRetry why, rather than show
// the login page to a user who is logged in. undefined: aborted.
export async function loadSession(
  ask: () => Promise<Me>,
  onRetry: (why: string, inMs: number) => void,
  signal: AbortSignal,
  sleep: (ms: number, signal: AbortSignal) => Promise<void> = sleepFor,
): Promise<Me | null | undefined> {
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      const me = await ask();
      return signal.aborted ? undefined : me;
    } catch (e) {
      if (signal.aborted) return undefined;
      if (e instanceof ApiError && e.status === 401) return null;
      const wait = backoff(attempt);
      onRetry(e instanceof Error ? e.message : String(e), wait);
      await sleep(wait, signal);
    }
  }
  return undefined;
}
