import { useEffect, useRef, type ReactNode } from 'react';
import { canManageUsers, type Session } from '../lib/auth';
import { Link, usePathname } from '../lib/router';
import { VisuallyHidden } from './common';
import { ConnectionIndicator } from './ConnectionIndicator';
import { Presence } from './Presence';
import { Toasts } from './Toasts';
import { StatBadges } from './StatBadges';

const NAV = [
  { to: '/overview', label: 'Overview' },
  { to: '/tasks', label: 'Tasks' },
  { to: '/approvals', label: 'Approvals' },
  { to: '/conversations', label: 'Conversations' },
];
/** Admins manage users. */
const ADMIN_NAV = [{ to: '/users', label: 'Users' }];

/**
 * After a route change the focus goes to the new page's heading (or the main region while it
 * loads): keyboard users continue from there, and screen readers announce the page.
 */
function useFocusOnRouteChange(path: string) {
  const main = useRef<HTMLElement>(null);
  const previous = useRef(path);
  useEffect(() => {
    if (previous.current === path) return;
    previous.current = path;
    const region = main.current;
    (region?.querySelector<HTMLElement>('h1[tabindex]') ?? region)?.focus();
  }, [path]);
  return main;
}

export function Layout({ session, onLogout, children }: { session: Session; onLogout: () => void; children: ReactNode }) {
  const path = usePathname();
  const main = useFocusOnRouteChange(path);
  return (
    <div className="app">
      <a className="skip-link" href="#main">
        Skip to the page
      </a>
      <header className="topbar">
        <Link to="/tasks" className="brand" aria-label="Pulse home">
          <span className="brand-mark" aria-hidden="true">
            <svg viewBox="0 0 24 24" width="22" height="22">
              <path d="M2 12h4l3-8 4 16 3-8h6" fill="none" stroke="currentColor" strokeWidth="2.4" strokeLinecap="round" strokeLinejoin="round" />
            </svg>
          </span>
          <span className="brand-name">Pulse</span>
        </Link>
        <nav className="nav" aria-label="Main">
          {[...NAV, ...(canManageUsers(session.user.role) ? ADMIN_NAV : [])].map((n) => (
            <Link
              key={n.to}
              to={n.to}
              className={path.startsWith(n.to) ? 'nav-link active' : 'nav-link'}
              aria-current={path.startsWith(n.to) ? 'page' : undefined}
              data-testid={`nav-${n.label.toLowerCase()}`}
            >
              {n.label}
            </Link>
          ))}
        </nav>
        <div className="topbar-right">
          <Presence me={session.user.username} />
          <ConnectionIndicator />
          <Link
            to="/account"
            className="user"
            data-testid="current-user"
            aria-current={path === '/account' ? 'page' : undefined}
            title="Your account: change your password"
          >
            <VisuallyHidden>Your account: </VisuallyHidden>
            <span className="user-name">{session.user.username}</span>
            <span className={`role role-${session.user.role}`}>{session.user.role}</span>
          </Link>
          <button type="button" className="btn-ghost" onClick={onLogout} data-testid="logout">
            Log out
          </button>
        </div>
      </header>
      <main className="main" id="main" tabIndex={-1} ref={main}>
        <StatBadges />
        {children}
      </main>
      <Toasts />
    </div>
  );
}
