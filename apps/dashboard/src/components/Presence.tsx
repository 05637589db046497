import { useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { describePath, type PresenceEntry } from '../realtime/LiveState';
import { useRealtime } from './RealtimeContext';

const MAX_AVATARS = 4;

export function initials(username: string): string {
  const parts = username.split(/[^A-Za-z0-9]+/).filter(Boolean);
  const s = parts.length >= 2 ? parts[0][0] + parts[1][0] : (parts[0] ?? username).slice(0, 2);
  return s.toUpperCase() || '?';
}

/** A stable colour per user, dark enough for white initials on any hue (≥ 4.7:1, WCAG AA). */
function avatarColour(username: string): string {
  let h = 0;
  for (const ch of username) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h} 55% 30%)`;
}

/** Who is online and on which page: avatars with a count; the list opens on click. */
export function Presence({ me }: { me: string }) {
  const { presence } = useRealtime();
  const online = useSyncExternalStore(presence.subscribe, presence.get, presence.get);
  const [open, setOpen] = useState(false);
  const ref = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!open) return;
    const close = (e: MouseEvent | KeyboardEvent) => {
      if (e instanceof KeyboardEvent ? e.key === 'Escape' : !ref.current?.contains(e.target as Node)) setOpen(false);
    };
    document.addEventListener('mousedown', close);
    document.addEventListener('keydown', close);
    return () => {
      document.removeEventListener('mousedown', close);
      document.removeEventListener('keydown', close);
    };
  }, [open]);

  if (!online) return null;
  // Me first, then the others by name.
  const list: PresenceEntry[] = [...online].sort((a, b) =>
    a.username === me ? -1 : b.username === me ? 1 : a.username.localeCompare(b.username),
  );
  const label = list.map((e) => `${e.username}: ${describePath(e.viewing)}`).join('\n');
  return (
    <div className="presence" ref={ref} data-testid="presence" data-count={list.length}>
      <button
        type="button"
        className="presence-button"
        aria-expanded={open}
        aria-haspopup="dialog"
        aria-controls="presence-list"
        title={label}
        onClick={() => setOpen((o) => !o)}
        data-testid="presence-toggle"
      >
        <span className="avatars" aria-hidden="true">
          {list.slice(0, MAX_AVATARS).map((e) => (
            <span key={e.userId} className="avatar" style={{ background: avatarColour(e.username) }}>
              {initials(e.username)}
            </span>
          ))}
          {list.length > MAX_AVATARS && <span className="avatar avatar-more">+{list.length - MAX_AVATARS}</span>}
        </span>
        <span className="presence-count" data-testid="presence-count">
          {list.length} online
        </span>
      </button>
      <div className="presence-popover" id="presence-list" role="dialog" aria-label="Who is online" hidden={!open}>
        <div className="presence-title">Online now</div>
        <ul>
          {list.map((e) => (
            <li
              key={e.userId}
              data-testid="presence-entry"
              data-username={e.username}
              data-viewing={e.viewing ?? ''}
              data-connections={e.connections}
            >
              <span className="avatar avatar-small" aria-hidden="true" style={{ background: avatarColour(e.username) }}>
                {initials(e.username)}
              </span>
              <span className="presence-name">
                {e.username}
                {e.username === me && <span className="muted"> (you)</span>}
              </span>
              <span className="presence-page">{describePath(e.viewing)}</span>
            </li>
          ))}
        </ul>
      </div>
    </div>
  );
}
