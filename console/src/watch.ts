// Live lists by the API's watches: list once (which gives a
// resourceVersion), then stream ?watch=1 from that version through the
// console's proxy and apply each event. When the stream ends or breaks —
// the apiserver closes watches every few minutes, the network drops, the
// control plane restarts — the watcher reconnects by itself from the last
// version it saw, waiting longer after each failure; a version the API no
// longer keeps (410 Gone) means listing again.

// metadataOnly is what the API is asked for to list and watch objects
// without their contents (client-go's metadata client asks the same):
// each item is a PartialObjectMetadata, its metadata only. There is no
// fallback to the full form: a server that cannot answer so refuses
// (406) rather than sending Secrets' values.
export const metadataOnly = {
  list: 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1',
  watch: 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1',
};

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
export interface WatchEvent {
  type: EventType;
  object: any;
}

export interface ListState {
  items: any[];
  resourceVersion: string;
}

const key = (o: any) => o?.metadata?.uid || `${o?.metadata?.namespace}/${o?.metadata?.name}`;

// applyEvent returns the list after one event; items keep the list's
// order (new ones go last, as the API lists by name only on a relist).
// A BOOKMARK moves only the version. ERROR events are the caller's.
export function applyEvent(s: ListState, ev: WatchEvent): ListState {
  const rv = ev.object?.metadata?.resourceVersion || s.resourceVersion;
  switch (ev.type) {
    case 'BOOKMARK':
      return { items: s.items, resourceVersion: rv };
    case 'ADDED':
    case 'MODIFIED': {
      const k = key(ev.object);
      const i = s.items.findIndex((o) => key(o) === k);
      const items = i < 0 ? [...s.items, ev.object] : s.items.map((o, j) => (j === i ? ev.object : o));
      return { items, resourceVersion: rv };
    }
    case 'DELETED': {
      const k = key(ev.object);
      return { items: s.items.filter((o) => key(o) !== k), resourceVersion: rv };
    }
    default:
      return s;
  }
}

// LineSplitter cuts a stream of text into whole lines: a watch sends one
// JSON event per line, and a network chunk may end in the middle of one.
export class LineSplitter {
  private rest = '';
  push(chunk: string): string[] {
    const parts = (this.rest + chunk).split('\n');
    this.rest = parts.pop() ?? '';
    return parts.filter((l) => l.trim() !== '');
  }
}

// backoff is how long to wait before the attempt-th reconnection (0 first):
// 0.5 s doubling to 30 s, with up to a fifth added at random so that many
// pages do not come back at the same instant after a restart.
export function backoff(attempt: number, rand = Math.random): number {
  const base = Math.min(30000, 500 * 2 ** Math.min(attempt, 10));
  return Math.round(base + base * 0.2 * rand());
}

// watchURL is a list path with the watch parameters added.
export function watchURL(listPath: string, resourceVersion: string): string {
  const [p, q] = listPath.split('?', 2);
  const params = new URLSearchParams(q || '');
  params.set('watch', '1');
  params.set('resourceVersion', resourceVersion);
  params.set('allowWatchBookmarks', 'true');
  return `${p}?${params}`;
}

// isGone says whether an ERROR event's Status is the API's 410: the
// version is too old to watch from, list again.
export function isGone(ev: WatchEvent): boolean {
  return ev.type === 'ERROR' && (ev.object?.code === 410 || ev.object?.reason === 'Expired' || ev.object?.reason === 'Gone');
}

export type Status = { state: 'live' } | { state: 'connecting' } | { state: 'retrying'; inMs: number; why: string };

export interface WatcherHooks {
  // list GETs the list path (throws ApiError on a refusal).
  list: (path: string) => Promise<any>;
  // stream opens the watch, calls onOpen once the API answered it, and
  // hands each text chunk to onText; it ends when the server ends the
  // stream and throws when it breaks.
  stream: (path: string, onText: (t: string) => void, signal: AbortSignal, onOpen: () => void) => Promise<void>;
  onState: (s: ListState) => void;
  onError: (e: unknown) => void;
  onStatus: (s: Status) => void;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const defaultSleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const id = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(id); resolve(); }, { once: true });
  });

// runWatcher keeps listPath's state current until signal aborts. A
// refusal of the list (403, 404) is reported and retried like a broken
// connection, so a page recovers when access is granted or the API is back.
export async function runWatcher(listPath: string, h: WatcherHooks, signal: AbortSignal): Promise<void> {
  const sleep = h.sleep || defaultSleep;
  let state: ListState | null = null;
  let attempt = 0;
  while (!signal.aborted) {
    try {
      if (!state) {
        h.onStatus({ state: 'connecting' });
        const l = await h.list(listPath);
        if (signal.aborted) return;
        state = { items: l.items || [], resourceVersion: l.metadata?.resourceVersion || '' };
        h.onState(state);
        h.onError(null);
      }
      const lines = new LineSplitter();
      let gone = false;
      let got = 0;
      // Live only once the API answered the watch: an error of a broken
      // stream (kept with the last version, not listed again) is cleared
      // then, not left on the page beside a live badge.
      let opened = false;
      const open = () => {
        if (opened) return;
        opened = true;
        h.onStatus({ state: 'live' });
        h.onError(null);
      };
      await h.stream(watchURL(listPath, state.resourceVersion), (text) => {
        open();
        for (const line of lines.push(text)) {
          const ev = JSON.parse(line) as WatchEvent;
          if (isGone(ev)) { gone = true; continue; }
          if (ev.type === 'ERROR') throw new Error(ev.object?.message || 'watch error');
          state = applyEvent(state!, ev);
          got++;
          attempt = 0;
          if (ev.type !== 'BOOKMARK') h.onState(state);
        }
      }, signal, open);
      if (gone) {
        state = null;
        continue;
      }
      // A stream the server ended after some events is picked up again at
      // once; one that ended empty waits, so a server that keeps closing
      // at once is not asked in a tight loop.
      if (got === 0) await sleep(backoff(attempt++), signal);
    } catch (e) {
      if (signal.aborted) return;
      h.onError(e);
      const wait = backoff(attempt++);
      h.onStatus({ state: 'retrying', inMs: wait, why: e instanceof Error ? e.message : String(e) });
      // After a failure the version may be stale or the list refused: list again.
      if ((e as any)?.status !== undefined) state = null;
      await sleep(wait, signal);
    }
  }
}
