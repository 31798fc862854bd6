import { useCallback, useEffect, useRef, useState } from 'react';

// usePoll loads data now and every `every` ms while the page is open, so
// lists follow the cluster and recover by themselves once the control
// plane is back after a restart.
export function usePoll<T>(load: () => Promise<T>, every: number, deps: unknown[]) {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reload = useCallback(() => {
    loadRef.current().then(
      (d) => { setData(d); setError(null); },
      (e) => setError(e),
    );
  }, []);
  useEffect(() => {
    setData(undefined);
    setError(null);
    reload();
    const id = setInterval(reload, every);
    return () => clearInterval(id);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return { data, error, reload };
}
