import { describe, expect, it, vi } from 'vitest';
import { stepPath } from '../src/components/Sparkline';
import { ApiError, describeError, errorFromResponse, NetworkError } from '../src/lib/api';
import { AuthStore, STORAGE_KEY } from '../src/lib/auth';

describe('stepPath (live chart)', () => {
  it('draws a step line over the window, holding each value until the next point', () => {
    const now = 100_000;
    const { line, max } = stepPath(
      [
        { t: now - 60_000, v: 0 },
        { t: now - 30_000, v: 10 },
      ],
      now,
      60_000,
      100,
      50,
    );
    expect(max).toBe(10);
    // starts at the left edge at value 0 (bottom), steps up halfway, runs to the right edge
    expect(line.startsWith('M0,')).toBe(true);
    expect(line).toContain('H50');
    expect(line.endsWith('H100')).toBe(true);
  });

  it('a value older than the window is carried in from the left edge; empty input draws nothing', () => {
    const r = stepPath([{ t: 0, v: 3 }], 1_000_000, 60_000, 100, 50);
    expect(r.line.startsWith('M0,')).toBe(true);
    expect(stepPath([], 0, 60_000, 100, 50).line).toBe('');
  });
});

describe('API errors in plain words', () => {
  it('reads the {"error":{"code","message"}} body', async () => {
    const res = new Response(JSON.stringify({ error: { code: 'conflict', message: 'task is already completed' } }), {
      status: 409,
    });
    const err = await errorFromResponse(res);
    expect(err).toBeInstanceOf(ApiError);
    expect(err.code).toBe('conflict');
    expect(describeError(err)).toBe('Task is already completed.');
  });

  it('falls back to a sentence per status when the body is not JSON', async () => {
    const err = await errorFromResponse(new Response('oops', { status: 503 }));
    expect(err.code).toBe('unavailable');
    expect(describeError(err)).toMatch(/cannot reach its database/);
    expect(describeError(new ApiError(403, 'forbidden', ''))).toMatch(/role doesn't allow/);
    expect(describeError(new NetworkError())).toMatch(/Can't reach the Pulse server/);
  });
});

describe('AuthStore', () => {
  it('keeps the session in storage (shared by tabs) and clears it on logout', () => {
    const storage = new Map<string, string>();
    const fake = {
      getItem: (k: string) => storage.get(k) ?? null,
      setItem: (k: string, v: string) => void storage.set(k, v),
      removeItem: (k: string) => void storage.delete(k),
    } as unknown as Storage;
    const store = new AuthStore(fake);
    const listener = vi.fn();
    store.subscribe(listener);
    expect(store.get()).toBeNull();
    const session = { token: 't', expiresAt: new Date(Date.now() + 60_000).toISOString(), user: { id: 1, username: 'a', role: 'staff' as const } };
    store.set(session);
    expect(JSON.parse(storage.get(STORAGE_KEY)!)).toEqual(session);
    expect(store.get()).toEqual(session);
    expect(store.get()).toBe(store.get()); // stable snapshot
    store.clear('bye');
    expect(storage.has(STORAGE_KEY)).toBe(false);
    expect(store.get()).toBeNull();
    expect(store.takeLogoutReason()).toBe('bye');
    expect(listener).toHaveBeenCalledTimes(2);
  });

  it('ignores an expired session', () => {
    const storage = new Map<string, string>([
      [STORAGE_KEY, JSON.stringify({ token: 't', expiresAt: '2000-01-01T00:00:00Z', user: { id: 1, username: 'a', role: 'admin' } })],
    ]);
    const store = new AuthStore({ getItem: (k: string) => storage.get(k) ?? null } as unknown as Storage);
    expect(store.get()).toBeNull();
  });
});
