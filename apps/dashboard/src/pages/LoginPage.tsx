import { useEffect, useState, type FormEvent } from 'react';
import { useNow } from '../components/useNow';
import { authStore, useLogoutReason } from '../lib/auth';
import { ApiError, describeError, formatWait, login } from '../lib/api';
import { navigate } from '../lib/router';

/** Seconds left until `until` (epoch ms), or 0. */
function secondsLeft(until: number | null, now: number): number {
  return until === null ? 0 : Math.max(0, Math.ceil((until - now) / 1000));
}

/** The button's text while the server asks to wait: "Wait 0:42". */
function clock(seconds: number): string {
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}

export function LoginPage() {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  /** A 429's Retry-After, as the moment sign-in may be tried again. */
  const [waitUntil, setWaitUntil] = useState<number | null>(null);
  const reason = useLogoutReason();
  // A local one-second clock only while there is a wait to show (no request involved).
  const now = useNow(1000, waitUntil !== null);
  const wait = secondsLeft(waitUntil, now);
  useEffect(() => {
    if (waitUntil !== null && wait === 0) {
      setWaitUntil(null);
      setError('You can try to sign in again now.');
    }
  }, [wait, waitUntil]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (wait > 0) return;
    authStore.takeLogoutReason();
    if (!username.trim() || !password) {
      setError('Enter your username and password.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const session = await login(username.trim(), password);
      authStore.set(session);
      const next = new URLSearchParams(window.location.search).get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/tasks', { replace: true });
    } catch (err) {
      if (err instanceof ApiError && err.status === 429 && err.retryAfterSeconds !== null && err.retryAfterSeconds > 0) {
        setWaitUntil(Date.now() + err.retryAfterSeconds * 1000);
        setError(`Too many sign-in attempts. Try again in ${formatWait(err.retryAfterSeconds)}.`);
      } else {
        setError(describeError(err));
      }
      setBusy(false);
    }
  };

  const message = error ?? reason;
  return (
    <main className="login-screen">
      <form className="login-card" onSubmit={submit} noValidate aria-labelledby="login-title">
        <div className="login-brand">
          <span className="brand-mark" aria-hidden="true">
            <svg viewBox="0 0 24 24" width="28" height="28">
              <path d="M2 12h4l3-8 4 16 3-8h6" fill="none" stroke="currentColor" strokeWidth="2.4" strokeLinecap="round" strokeLinejoin="round" />
            </svg>
          </span>
          <span className="brand-name">Pulse</span>
        </div>
        <h1 id="login-title">Sign in</h1>
        <p className="muted">Live operations for your hotel team.</p>
        {message && (
          <div className="error-banner" role="alert" data-testid="login-error" data-wait={wait > 0 ? wait : undefined}>
            <span className="error-icon" aria-hidden="true">!</span>
            <span className="error-text">{message}</span>
          </div>
        )}
        <label className="field">
          <span>Username</span>
          <input
            data-testid="login-username"
            name="username"
            autoComplete="username"
            autoFocus
            value={username}
            onChange={(e) => setUsername(e.target.value)}
          />
        </label>
        <label className="field">
          <span>Password</span>
          <input
            data-testid="login-password"
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </label>
        <button
          type="submit"
          className="btn-primary btn-block"
          data-testid="login-submit"
          disabled={busy}
          aria-disabled={wait > 0 || undefined}
        >
          {busy ? 'Signing in…' : wait > 0 ? `Wait ${clock(wait)}` : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
