import { useState, useSyncExternalStore } from 'react';
import { useRealtime } from './RealtimeContext';

function canAskForNotifications(): boolean {
  return typeof Notification !== 'undefined' && Notification.permission === 'default';
}

/** In-app notifications (task assigned to me…), bottom right; each stays a few seconds. */
export function Toasts() {
  const { toasts } = useRealtime();
  const items = useSyncExternalStore(toasts.subscribe, toasts.get, toasts.get);
  const [askable, setAskable] = useState(canAskForNotifications);
  if (items.length === 0) return null;
  return (
    <div className="toasts" aria-live="polite" role="status">
      {items.map((t) => (
        <div key={t.id} className={`toast toast-${t.kind}`} data-testid="toast" data-kind={t.kind} data-task-id={t.taskId}>
          <div className="toast-body">
            <div className="toast-title">{t.title}</div>
            <div className="toast-text" data-testid="toast-text">
              {t.body}
            </div>
            {t.kind === 'task-assigned' && askable && (
              <button
                type="button"
                className="btn-link"
                onClick={() => {
                  // Only ever asked when the user clicks this.
                  void Promise.resolve(Notification.requestPermission()).finally(() => setAskable(canAskForNotifications()));
                }}
              >
                Also notify me on the desktop
              </button>
            )}
          </div>
          <button type="button" className="btn-ghost btn-small" aria-label="Dismiss" onClick={() => toasts.dismiss(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
