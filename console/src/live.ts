import { useEffect, useState } from 'react';
import { get, streamLogs } from './api';
import { ListState, Status, runWatcher } from './watch';

// useWatch keeps a list current by the API's watch (see watch.ts) while
// the page is open: data is the list's items, status says whether the
// stream is live or when it tries again.
export function useWatch(listPath: string | null) {
  const [state, setState] = useState<ListState | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<Status>({ state: 'connecting' });
  useEffect(() => {
    setState(undefined);
    setError(null);
    if (!listPath) return;
    const ac = new AbortController();
    runWatcher(listPath, { list: get, stream: streamLogs, onState: setState, onError: setError, onStatus: setStatus }, ac.signal);
    return () => ac.abort();
  }, [listPath]);
  return { items: state?.items, error, status };
}

// useWatchOne follows one object by watching its list with a name field
// selector; item is undefined while loading and null once it is gone.
export function useWatchOne(listPath: string, name: string) {
  const w = useWatch(`${listPath}?fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}`);
  return { item: w.items === undefined ? undefined : (w.items[0] ?? null), error: w.error, status: w.status };
}
