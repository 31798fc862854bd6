import { Status } from './watch';
import { useApp } from './App';

// LiveBadge says whether a page's watch is live or when it reconnects.
export function LiveBadge({ status }: { status: Status }) {
  const { t } = useApp();
  if (status.state === 'live') return <span className="live on" data-testid="live">● {t('live.on')}</span>;
  if (status.state === 'connecting') return <span className="live">○ {t('live.connecting')}</span>;
  return <span className="live off" data-testid="live-retry" title={status.why}>○ {t('live.retry')} {Math.ceil(status.inMs / 1000)}s</span>;
}
