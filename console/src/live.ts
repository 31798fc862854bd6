import { useEffect, useState } from 'react';
import { get, streamLogs } from './api';
import { ListState, Status, metadataOnly, runWatcher } from './watch';

// useWatch keeps a list current by the API's watch (see watch.ts) while
// the page is open: data is the list's items, status says whether the
// stream is live or when it tries again. With metaOnly the items are
// their metadata only (see metadataOnly in watch.ts).
export function useWatch(listPath: string | null, metaOnly = false) {
  const [state, setState] = useState<ListState | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<Status>({ state: 'connecting' });
  useEffect(() => {
    setState(undefined);
    setError(null);
    if (!listPath) return;
    const ac = new AbortController();
    const list = (p: string) => get(p, metaOnly ? metadataOnly.list : undefined);
    const stream = (p: string, onText: (t: string) => void, signal: AbortSignal, onOpen: () => void) =>
      streamLogs(p, onText, signal, onOpen, metaOnly ? metadataOnly.watch : undefined);
    runWatcher(listPath, { list, stream, onState: setState, onError: setError, onStatus: setStatus }, ac.signal);
    return () => ac.abort();
  }, [listPath, metaOnly]);
  return { items: state?.items, error, status };
}

// useWatchOne follows one object by watching its list with a name field
// selector; item is undefined while loading and null once it is gone.
export function useWatchOne(listPath: string, name: string) {
  const w = useWatch(`${listPath}?fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}`);
  return { item: w.items === undefined ? undefined : (w.items[0] ?? null), error: w.error, status: w.status };
}
