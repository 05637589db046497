import { useRealtime } from './RealtimeContext';

const TITLES = {
  live: 'Live: figures update the moment something changes',
  reconnecting: 'Connection lost: reconnecting… figures may be out of date',
  offline: 'Offline: figures are not updating',
} as const;

export function ConnectionIndicator() {
  const { status, role, reconnect } = useRealtime();
  return (
    <div className={`conn conn-${status}`} title={TITLES[status]} data-tab-role={role} aria-live="polite">
      <span className="conn-dot" aria-hidden="true" />
      <span className="conn-text" data-testid="connection-status">
        {status}
      </span>
      {status === 'offline' && (
        <button type="button" className="btn-ghost btn-small" onClick={reconnect}>
          Retry
        </button>
      )}
    </div>
  );
}
