import { useState, type FormEvent } from 'react';
import { authStore } from '../lib/auth';
import { describeError, login } from '../lib/api';
import { navigate } from '../lib/router';

export function LoginPage() {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(() => authStore.peekLogoutReason());

  const submit = async (e: FormEvent) => {
    e.preventDefault();
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
      setError(describeError(err));
      setBusy(false);
    }
  };

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
        {error && (
          <div className="error-banner" role="alert" data-testid="login-error">
            <span className="error-icon" aria-hidden="true">!</span>
            <span className="error-text">{error}</span>
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
        <button type="submit" className="btn-primary btn-block" data-testid="login-submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
