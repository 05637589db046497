import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { act, cleanup, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { formatWait, parseRetryAfter } from '../src/lib/api';
import type { User } from '../src/lib/apiTypes';
import { authStore, LOGOUT_REASONS } from '../src/lib/auth';
import { AccountPage } from '../src/pages/AccountPage';
import { LoginPage } from '../src/pages/LoginPage';
import { UsersPage } from '../src/pages/UsersPage';

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
const error = (status: number, code: string, message: string, headers: Record<string, string> = {}) =>
  json({ error: { code, message } }, status, headers);

interface Call {
  method: string;
  url: string;
  body: unknown;
}

/** fetch answered by `route(method, path, body)`; every call is recorded. */
function mockFetch(route: (method: string, path: string, body: unknown) => Response | Promise<Response>) {
  const calls: Call[] = [];
  vi.stubGlobal(
    'fetch',
    vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
      const url = String(input);
      const method = init.method ?? 'GET';
      const body = init.body ? JSON.parse(String(init.body)) : undefined;
      calls.push({ method, url, body });
      return route(method, url.split('?')[0], body);
    }),
  );
  return calls;
}

const user = (id: number, username: string, role: User['role'], active = true): User => ({
  id,
  username,
  role,
  active,
  createdAt: '2025-01-01T10:00:00Z',
});

function signIn(role: User['role'] = 'admin', username = 'admin', id = 1) {
  authStore.set({ token: `tok-${username}`, expiresAt: new Date(Date.now() + 3_600_000).toISOString(), user: { id, username, role } });
}

function renderPage(ui: ReactNode) {
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  render(<QueryClientProvider client={qc}>{ui}</QueryClientProvider>);
  return qc;
}

const row = (username: string) => document.querySelector(`[data-testid="user-row"][data-username="${username}"]`) as HTMLElement;

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
  vi.useRealTimers();
  authStore.clear();
  authStore.takeLogoutReason();
});

describe('Users page (admins)', () => {
  it('lists the users; a role change is sent as PATCH {role} and the row shows the answer', async () => {
    signIn();
    let sam = user(2, 'sam', 'staff');
    const calls = mockFetch((method, path, body) => {
      if (method === 'GET' && path === '/api/v1/users') return json({ items: [user(1, 'admin', 'admin'), sam] });
      if (method === 'PATCH' && path === '/api/v1/users/2') {
        sam = { ...sam, ...(body as object) };
        return json(sam);
      }
      return error(404, 'not_found', 'no route');
    });
    renderPage(<UsersPage />);
    await waitFor(() => expect(row('sam')).toBeTruthy());
    expect(row('admin').textContent).toContain('(you)');
    fireEvent.click(within(row('sam')).getByTestId('user-role-edit'));
    const select = within(row('sam')).getByTestId('user-role-select') as HTMLSelectElement;
    expect(document.activeElement).toBe(select);
    fireEvent.change(select, { target: { value: 'manager' } });
    fireEvent.click(within(row('sam')).getByTestId('user-role-save'));
    await waitFor(() => expect(row('sam').dataset.role).toBe('manager'));
    expect(calls.find((c) => c.method === 'PATCH')).toEqual({ method: 'PATCH', url: '/api/v1/users/2', body: { role: 'manager' } });
    expect(screen.getByTestId('users-status').textContent).toBe('sam is now a manager.');
    // The focus comes back to the row's actions.
    expect(document.activeElement).toBe(within(row('sam')).getByTestId('user-role-edit'));
  });

  it('the last active admin: a 409 says so plainly and nothing changes on screen', async () => {
    signIn();
    mockFetch((method, path) => {
      if (method === 'GET' && path === '/api/v1/users') return json({ items: [user(1, 'admin', 'admin'), user(2, 'sam', 'staff')] });
      if (method === 'PATCH') return error(409, 'conflict', 'the last active admin cannot be demoted or deactivated');
      return error(404, 'not_found', 'no route');
    });
    renderPage(<UsersPage />);
    await waitFor(() => expect(row('admin')).toBeTruthy());
    fireEvent.click(within(row('admin')).getByTestId('user-role-edit'));
    expect(within(row('admin')).getByText('Changing your own role signs you out.')).toBeTruthy();
    fireEvent.change(within(row('admin')).getByTestId('user-role-select'), { target: { value: 'staff' } });
    fireEvent.click(within(row('admin')).getByTestId('user-role-save'));
    const banner = await screen.findByTestId('error-banner');
    expect(banner.textContent).toContain('admin is the last active admin and must stay one. Make another user an admin first.');
    expect(banner.getAttribute('role')).toBe('alert');
    expect(row('admin').dataset.role).toBe('admin');

    fireEvent.click(within(row('admin')).getByTestId('user-deactivate'));
    await waitFor(() =>
      expect(screen.getByTestId('error-banner').textContent).toContain('admin is the last active admin and cannot be deactivated.'),
    );
    expect(row('admin').dataset.active).toBe('true');
  });

  it('deactivate then reactivate: PATCH {active}, the row and its button follow', async () => {
    signIn();
    let sam = user(2, 'sam', 'staff');
    const calls = mockFetch((method, path, body) => {
      if (method === 'GET' && path === '/api/v1/users') return json({ items: [user(1, 'admin', 'admin'), sam] });
      if (method === 'PATCH' && path === '/api/v1/users/2') {
        sam = { ...sam, ...(body as object) };
        return json(sam);
      }
      return error(404, 'not_found', 'no route');
    });
    renderPage(<UsersPage />);
    await waitFor(() => expect(row('sam')).toBeTruthy());
    fireEvent.click(within(row('sam')).getByTestId('user-deactivate'));
    await waitFor(() => expect(row('sam').dataset.active).toBe('false'));
    expect(within(row('sam')).getByText('Deactivated')).toBeTruthy();
    expect(screen.getByTestId('users-status').textContent).toContain('sam is deactivated');
    fireEvent.click(within(row('sam')).getByTestId('user-reactivate'));
    await waitFor(() => expect(row('sam').dataset.active).toBe('true'));
    expect(calls.filter((c) => c.method === 'PATCH').map((c) => c.body)).toEqual([{ active: false }, { active: true }]);
  });

  it('reset a password: too short is refused before sending; a 400 shows the server’s reason at the field', async () => {
    signIn();
    let answer: Response = error(400, 'validation_failed', 'password: too common');
    const calls = mockFetch((method, path) => {
      if (method === 'GET' && path === '/api/v1/users') return json({ items: [user(1, 'admin', 'admin'), user(2, 'sam', 'staff')] });
      if (method === 'PATCH') return answer;
      return error(404, 'not_found', 'no route');
    });
    renderPage(<UsersPage />);
    await waitFor(() => expect(row('sam')).toBeTruthy());
    fireEvent.click(within(row('sam')).getByTestId('user-password-reset'));
    const input = within(row('sam')).getByTestId('user-password-input');
    expect(input.getAttribute('aria-label')).toBe('New password for sam');
    fireEvent.change(input, { target: { value: 'short' } });
    fireEvent.click(within(row('sam')).getByTestId('user-password-save'));
    expect(within(row('sam')).getByTestId('user-password-error').textContent).toBe('A password needs at least 8 characters.');
    expect(input.getAttribute('aria-invalid')).toBe('true');
    expect(calls.filter((c) => c.method === 'PATCH')).toEqual([]);

    fireEvent.change(input, { target: { value: 'password123' } });
    fireEvent.click(within(row('sam')).getByTestId('user-password-save'));
    await waitFor(() => expect(within(row('sam')).getByTestId('user-password-error').textContent).toContain('Password: too common.'));
    expect(calls.filter((c) => c.method === 'PATCH').map((c) => c.body)).toEqual([{ password: 'password123' }]);

    answer = json(user(2, 'sam', 'staff'));
    fireEvent.click(within(row('sam')).getByTestId('user-password-save'));
    await waitFor(() => expect(screen.getByTestId('users-status').textContent).toContain("sam's password was reset"));
    expect(within(row('sam')).queryByTestId('user-password-input')).toBeNull();
  });

  it('adds a user (POST /api/v1/users) after checking the name and password', async () => {
    signIn();
    const created: unknown[] = [];
    mockFetch((method, path, body) => {
      if (method === 'GET' && path === '/api/v1/users') return json({ items: [user(1, 'admin', 'admin')] });
      if (method === 'POST' && path === '/api/v1/users') {
        created.push(body);
        return json(user(3, 'kim', 'manager'), 201);
      }
      return error(404, 'not_found', 'no route');
    });
    renderPage(<UsersPage />);
    await waitFor(() => expect(row('admin')).toBeTruthy());
    fireEvent.change(screen.getByTestId('user-create-username'), { target: { value: 'k' } });
    fireEvent.click(screen.getByTestId('user-create-submit'));
    expect(screen.getByRole('alert').textContent).toContain('3 to 64 letters');
    fireEvent.change(screen.getByTestId('user-create-username'), { target: { value: 'kim' } });
    fireEvent.change(screen.getByTestId('user-create-password'), { target: { value: 'kim-password-1' } });
    fireEvent.change(screen.getByTestId('user-create-role'), { target: { value: 'manager' } });
    fireEvent.click(screen.getByTestId('user-create-submit'));
    await waitFor(() => expect(screen.getByTestId('users-status').textContent).toBe('kim can now sign in as manager.'));
    expect(created).toEqual([{ username: 'kim', password: 'kim-password-1', role: 'manager' }]);
  });

  it('is for admins only: others see why, and nothing is fetched', async () => {
    signIn('manager', 'mia', 5);
    const calls = mockFetch(() => error(403, 'forbidden', 'admins only'));
    renderPage(<UsersPage />);
    expect(screen.getByText('Only admins manage users.')).toBeTruthy();
    await act(async () => {});
    expect(calls).toEqual([]);
  });
});

describe('Account page: change your own password', () => {
  it('checks the form before sending: missing current, short new, different confirmation', () => {
    signIn('staff', 'sam', 2);
    const calls = mockFetch(() => json(null, 204));
    renderPage(<AccountPage />);
    fireEvent.click(screen.getByTestId('account-submit'));
    expect(screen.getByTestId('account-error').textContent).toBe('Enter your current password.');
    expect(document.activeElement).toBe(screen.getByTestId('account-current-password'));
    fireEvent.change(screen.getByTestId('account-current-password'), { target: { value: 'old-password' } });
    fireEvent.change(screen.getByTestId('account-new-password'), { target: { value: 'short' } });
    fireEvent.click(screen.getByTestId('account-submit'));
    expect(screen.getByTestId('account-error').textContent).toBe('A password needs at least 8 characters.');
    fireEvent.change(screen.getByTestId('account-new-password'), { target: { value: 'new-password-1' } });
    fireEvent.change(screen.getByTestId('account-confirm-password'), { target: { value: 'new-password-2' } });
    fireEvent.click(screen.getByTestId('account-submit'));
    expect(screen.getByTestId('account-error').textContent).toBe('The two new passwords differ.');
    expect(screen.getByTestId('account-confirm-password').getAttribute('aria-invalid')).toBe('true');
    expect(calls).toEqual([]);
  });

  it('a wrong current password (403) says so at that field; the session stays', async () => {
    signIn('staff', 'sam', 2);
    const calls = mockFetch(() => error(403, 'forbidden', 'the current password is wrong'));
    renderPage(<AccountPage />);
    fireEvent.change(screen.getByTestId('account-current-password'), { target: { value: 'not-it-at-all' } });
    fireEvent.change(screen.getByTestId('account-new-password'), { target: { value: 'new-password-1' } });
    fireEvent.change(screen.getByTestId('account-confirm-password'), { target: { value: 'new-password-1' } });
    fireEvent.click(screen.getByTestId('account-submit'));
    await waitFor(() =>
      expect(screen.getByTestId('account-error').textContent).toBe('Your current password is not right. Nothing was changed.'),
    );
    expect(document.activeElement).toBe(screen.getByTestId('account-current-password'));
    expect(calls).toEqual([
      { method: 'POST', url: '/api/v1/me/password', body: { currentPassword: 'not-it-at-all', newPassword: 'new-password-1' } },
    ]);
    expect(authStore.get()?.user.username).toBe('sam');
  });

  it('204: signed out with a message to sign in with the new password', async () => {
    signIn('staff', 'sam', 2);
    mockFetch(() => json(null, 204));
    renderPage(<AccountPage />);
    fireEvent.change(screen.getByTestId('account-current-password'), { target: { value: 'old-password' } });
    fireEvent.change(screen.getByTestId('account-new-password'), { target: { value: 'new-password-1' } });
    fireEvent.change(screen.getByTestId('account-confirm-password'), { target: { value: 'new-password-1' } });
    fireEvent.click(screen.getByTestId('account-submit'));
    await waitFor(() => expect(authStore.get()).toBeNull());
    expect(authStore.peekLogoutReason()).toBe(LOGOUT_REASONS.passwordChanged);
  });
});

describe('Login page', () => {
  it('a 429 says how long to wait (Retry-After) and counts down before sign-in can be tried again', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const calls = mockFetch(() => error(429, 'too_many_requests', 'too many failed logins', { 'Retry-After': '65' }));
    renderPage(<LoginPage />);
    fireEvent.change(screen.getByTestId('login-username'), { target: { value: 'sam' } });
    fireEvent.change(screen.getByTestId('login-password'), { target: { value: 'guess-again' } });
    fireEvent.click(screen.getByTestId('login-submit'));
    await waitFor(() =>
      expect(screen.getByTestId('login-error').textContent).toContain('Too many sign-in attempts. Try again in 1 minute 5 seconds.'),
    );
    const button = screen.getByTestId('login-submit');
    expect(button.getAttribute('aria-disabled')).toBe('true');
    expect(button.textContent).toMatch(/^Wait 1:0[45]$/);
    // Trying anyway sends nothing.
    fireEvent.click(button);
    expect(calls).toHaveLength(1);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(30_000);
    });
    expect(button.textContent).toMatch(/^Wait 0:3[45]$/);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(36_000);
    });
    expect(button.textContent).toBe('Sign in');
    expect(button.getAttribute('aria-disabled')).toBeNull();
    expect(screen.getByTestId('login-error').textContent).toContain('You can try to sign in again now.');
  });

  it('says why the session ended: a deactivated account is told so', () => {
    authStore.clear(LOGOUT_REASONS.deactivated);
    mockFetch(() => error(404, 'not_found', ''));
    renderPage(<LoginPage />);
    expect(screen.getByTestId('login-error').textContent).toContain('Your account has been deactivated');
    // A reason given while the page is open shows too (a password change racing its own 4401).
    act(() => authStore.clear(LOGOUT_REASONS.passwordChanged));
    expect(screen.getByTestId('login-error').textContent).toContain('Your password was changed');
  });

  it('Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2025-03-01T10:00:00Z');
    expect(parseRetryAfter('120', now)).toBe(120);
    expect(parseRetryAfter('Sat, 01 Mar 2025 10:00:30 GMT', now)).toBe(30);
    expect(parseRetryAfter('Sat, 01 Mar 2025 09:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
    expect([1, 45, 60, 61, 270].map(formatWait)).toEqual(['1 second', '45 seconds', '1 minute', '1 minute 1 second', '4 minutes 30 seconds']);
  });
});
