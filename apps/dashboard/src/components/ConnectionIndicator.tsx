import { useRealtime } from './RealtimeContext';

const TITLES = {
  live: 'Live: figures update the moment something changes',
  reconnecting: 'Connection lost: reconnecting… figures may be out of date',
  offline: 'Offline: figures are not updating',
} as const;

const FALLBACK_TITLE =
  'Live over the fallback connection (Server-Sent Events): this network does not let WebSocket through. ' +
  'Figures still update the moment something changes; WebSocket is tried again now and then.';

/**
 * The connection's status in words (`live`, `reconnecting`, `offline`), and while live over the
 * SSE fallback a visible "(fallback)" after it: the colour is never the only sign.
 */
export function ConnectionIndicator() {
  const { status, transport, role, reconnect } = useRealtime();
  const fallback = status === 'live' && transport === 'sse';
  return (
    <div
      className={`conn conn-${status}${fallback ? ' conn-fallback' : ''}`}
      title={fallback ? FALLBACK_TITLE : TITLES[status]}
      data-tab-role={role}
      data-transport={transport}
      aria-live="polite"
    >
      <span className="conn-dot" aria-hidden="true" />
      <span className="conn-text" data-testid="connection-status">
        {status}
      </span>
      {fallback && (
        <span className="conn-transport" data-testid="connection-transport">
          (fallback)
        </span>
      )}
      {status === 'offline' && (
        <button type="button" className="btn-ghost btn-small" onClick={reconnect}>
          Retry
        </button>
      )}
    </div>
  );
}
