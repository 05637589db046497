import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { act, cleanup, renderHook, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ReconnectingSocket } from '../src/realtime/ReconnectingSocket';
import { UnauthorizedError, isUnauthorizedError, type AuthCheck } from '../src/realtime/types';
import { fetchWsTicket, ticketWsUrl, useWebSocket, WS_TICKET_PATH } from '../src/realtime/useWebSocket';
import { flush, socketFactory } from './fakes';

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const LOC = { protocol: 'http:', host: 'pulse.test' };
const hex = (n: number) => n.toString(16).padStart(64, '0');

/**
 * A fake `fetch` for POST /api/v1/ws-ticket: every call gets the next answer from `script`
 * ('ok' → a new ticket, a number → that status, 'network' → a rejected fetch, 'hang' → never settles).
 */
function fakeTicketFetch(script: (call: number) => 'ok' | number | 'network' | 'hang' = () => 'ok') {
  const issued: string[] = [];
  const calls: { input: string; init?: RequestInit }[] = [];
  const fetchImpl = vi.fn(async (input: string, init?: RequestInit): Promise<Response> => {
    calls.push({ input, init });
    const step = script(calls.length);
    if (step === 'network') throw new TypeError('Failed to fetch');
    if (step === 'hang') return new Promise<Response>(() => {});
    if (typeof step === 'number') {
      return new Response(JSON.stringify({ error: { code: 'x', message: 'x' } }), { status: step });
    }
    const ticket = hex(issued.length + 1);
    issued.push(ticket);
    return new Response(JSON.stringify({ ticket, expiresAt: '2030-01-01T00:00:30Z' }), {
      status: 200,
      headers: { 'Content-Type': 'application/json' },
    });
  });
  return { fetchImpl, issued, calls };
}

/** The url() of one socket, as the hook builds it: a fresh ticket for the JWT, then the URL. */
const attemptUrl =
  (fetchImpl: ReturnType<typeof fakeTicketFetch>['fetchImpl'], token = 'jwt') =>
  (signal?: AbortSignal) =>
    ticketWsUrl(fetchImpl, LOC)(token, undefined, signal);

function socketWith(
  url: (signal?: AbortSignal) => string | Promise<string>,
  extra: { checkAuth?: () => Promise<AuthCheck>; urlTimeoutMs?: number } = {},
) {
  const f = socketFactory();
  const onUnauthorized = vi.fn();
  const checkAuth = vi.fn(extra.checkAuth ?? (async (): Promise<AuthCheck> => 'ok'));
  const socket = new ReconnectingSocket({
    url,
    createSocket: f.create,
    onMessage: () => {},
    onUnauthorized,
    checkAuth,
    random: () => 0.5,
    pingIntervalMs: 0,
    ...(extra.urlTimeoutMs !== undefined ? { urlTimeoutMs: extra.urlTimeoutMs } : {}),
  });
  return { f, socket, onUnauthorized, checkAuth };
}

describe('fetchWsTicket', () => {
  it('POSTs /api/v1/ws-ticket with the bearer token and returns the ticket', async () => {
    const t = fakeTicketFetch();
    await expect(fetchWsTicket('jwt-1', t.fetchImpl)).resolves.toBe(hex(1));
    expect(t.calls[0].input).toBe(WS_TICKET_PATH);
    expect(t.calls[0].init?.method).toBe('POST');
    expect((t.calls[0].init?.headers as Record<string, string>).Authorization).toBe('Bearer jwt-1');
  });

  it('401 → UnauthorizedError; 5xx, network errors and bodies without a ticket → plain errors', async () => {
    const e401 = await fetchWsTicket('x', fakeTicketFetch(() => 401).fetchImpl).catch((e: unknown) => e);
    expect(isUnauthorizedError(e401)).toBe(true);
    for (const step of [500, 503, 'network'] as const) {
      const e = await fetchWsTicket('x', fakeTicketFetch(() => step).fetchImpl).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(Error);
      expect(isUnauthorizedError(e)).toBe(false);
    }
    const noTicket = vi.fn(async () => new Response('{}', { status: 200 }));
    await expect(fetchWsTicket('x', noTicket)).rejects.toThrow(/no ticket/);
  });

  it('the default wsUrl of the browser builds /ws?ticket=…&topics=… and never puts the token in it', async () => {
    const t = fakeTicketFetch();
    const url = await ticketWsUrl(t.fetchImpl, { protocol: 'https:', host: 'h' })('secret-jwt', ['stats:tasks', 'presence']);
    expect(url).toBe(`wss://h/ws?ticket=${hex(1)}&topics=stats%3Atasks,presence`);
    expect(url).not.toContain('token=');
    expect(url).not.toContain('secret-jwt');
  });
});

describe('ReconnectingSocket with a ticket per attempt', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fetches a fresh ticket for every attempt and connects with it (no token= in any URL)', async () => {
    const t = fakeTicketFetch();
    const { f, socket } = socketWith(attemptUrl(t.fetchImpl));
    socket.start();
    expect(socket.status).toBe('reconnecting'); // fetching the ticket
    expect(f.sockets).toHaveLength(0);
    await flush(10);
    expect(t.fetchImpl).toHaveBeenCalledTimes(1);
    expect(f.sockets).toHaveLength(1);
    expect(f.last().url).toBe(`ws://pulse.test/ws?ticket=${hex(1)}`);
    f.last().serverOpen();
    expect(socket.status).toBe('live');

    // Dropped after open → backoff (0.5 × 500 ms) → a NEW ticket for the new attempt.
    f.last().serverClose(1006);
    await vi.advanceTimersByTimeAsync(250);
    await flush(10);
    expect(t.fetchImpl).toHaveBeenCalledTimes(2);
    expect(f.sockets).toHaveLength(2);
    expect(f.last().url).toBe(`ws://pulse.test/ws?ticket=${hex(2)}`);

    // Refused upgrade (reused/expired ticket → 401 before open) → /me ok → retry with yet another ticket.
    f.last().fail();
    await flush(10);
    await vi.advanceTimersByTimeAsync(30_000);
    await flush(10);
    expect(f.sockets).toHaveLength(3);
    expect(f.last().url).toBe(`ws://pulse.test/ws?ticket=${hex(3)}`);
    const urls = f.sockets.map((s) => s.url);
    expect(new Set(urls).size).toBe(urls.length);
    for (const u of urls) {
      expect(u).toContain('ticket=');
      expect(u).not.toContain('token=');
    }
    socket.stop();
  });

  it('401 from the ticket endpoint → unauthorized once, no socket, no retry', async () => {
    const t = fakeTicketFetch(() => 401);
    const { f, socket, onUnauthorized } = socketWith(attemptUrl(t.fetchImpl));
    socket.start();
    await flush(10);
    expect(socket.state).toBe('unauthorized');
    expect(socket.status).toBe('offline');
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(t.fetchImpl).toHaveBeenCalledTimes(1);
    expect(f.sockets).toHaveLength(0);
  });

  it.each(['network', 503] as const)('%s from the ticket endpoint → a failed attempt: backoff with full jitter, then a new ticket', async (failure) => {
    const t = fakeTicketFetch((n) => (n <= 3 ? failure : 'ok'));
    const { f, socket, onUnauthorized, checkAuth } = socketWith(attemptUrl(t.fetchImpl));
    socket.start();
    await flush(10);
    expect(socket.state).toBe('backoff');
    expect(socket.status).toBe('reconnecting');
    expect(socket.scheduledDelays).toEqual([250]); // random 0.5 × min(30 s, 500 ms × 2^0)
    await vi.advanceTimersByTimeAsync(249);
    expect(t.fetchImpl).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    await flush(10);
    expect(t.fetchImpl).toHaveBeenCalledTimes(2);
    expect(socket.scheduledDelays).toEqual([250, 500]);
    await vi.advanceTimersByTimeAsync(500);
    await flush(10);
    expect(socket.scheduledDelays).toEqual([250, 500, 1000]);
    await vi.advanceTimersByTimeAsync(1000);
    await flush(10);
    expect(t.fetchImpl).toHaveBeenCalledTimes(4);
    expect(f.sockets).toHaveLength(1);
    expect(f.last().url).toBe(`ws://pulse.test/ws?ticket=${hex(1)}`);
    f.last().serverOpen();
    expect(socket.status).toBe('live');
    expect(onUnauthorized).not.toHaveBeenCalled();
    expect(checkAuth).not.toHaveBeenCalled();
    socket.stop();
  });

  it('stop() while the ticket is being fetched: nothing opens afterwards, the fetch is aborted', async () => {
    const d = deferred<string>();
    let signal: AbortSignal | undefined;
    const url = vi.fn((s?: AbortSignal) => {
      signal = s;
      return d.promise;
    });
    const { f, socket } = socketWith(url);
    socket.start();
    expect(url).toHaveBeenCalledTimes(1);
    socket.stop();
    expect(signal?.aborted).toBe(true);
    d.resolve('ws://pulse.test/ws?ticket=late');
    await flush(10);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(f.sockets).toHaveLength(0);
    expect(socket.state).toBe('stopped');
    expect(url).toHaveBeenCalledTimes(1);
  });

  it('a failing fetch after stop() does not schedule a retry either', async () => {
    const d = deferred<string>();
    const url = vi.fn(() => d.promise);
    const { f, socket, onUnauthorized } = socketWith(url);
    socket.start();
    socket.stop();
    d.reject(new UnauthorizedError());
    await flush(10);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(socket.state).toBe('stopped');
    expect(onUnauthorized).not.toHaveBeenCalled();
    expect(url).toHaveBeenCalledTimes(1);
    expect(f.sockets).toHaveLength(0);
  });

  it('stop() then start() during a fetch: only the new attempt’s ticket is used', async () => {
    const first = deferred<string>();
    const second = deferred<string>();
    const url = vi.fn().mockReturnValueOnce(first.promise).mockReturnValueOnce(second.promise);
    const { f, socket } = socketWith(url);
    socket.start();
    socket.stop();
    socket.start();
    first.resolve('ws://pulse.test/ws?ticket=old');
    await flush(10);
    expect(f.sockets).toHaveLength(0);
    second.resolve('ws://pulse.test/ws?ticket=new');
    await flush(10);
    expect(f.sockets.map((s) => s.url)).toEqual(['ws://pulse.test/ws?ticket=new']);
    socket.stop();
  });

  it('a ticket fetch that never answers times out and counts as a failed attempt', async () => {
    const t = fakeTicketFetch((n) => (n === 1 ? 'hang' : 'ok'));
    let firstSignal: AbortSignal | undefined;
    const wsUrl = ticketWsUrl(t.fetchImpl, LOC);
    const { f, socket } = socketWith(
      (signal) => {
        firstSignal ??= signal;
        return wsUrl('jwt', undefined, signal);
      },
      { urlTimeoutMs: 5000 },
    );
    socket.start();
    await vi.advanceTimersByTimeAsync(4999);
    expect(socket.state).toBe('connecting');
    await vi.advanceTimersByTimeAsync(1);
    expect(firstSignal?.aborted).toBe(true);
    expect(socket.state).toBe('backoff');
    await vi.advanceTimersByTimeAsync(250);
    await flush(10);
    expect(f.sockets).toHaveLength(1);
    expect(f.last().url).toBe(`ws://pulse.test/ws?ticket=${hex(1)}`);
    socket.stop();
  });

  it('sync URLs still work', () => {
    const { f, socket } = socketWith(() => 'ws://pulse.test/ws?ticket=sync');
    socket.start();
    expect(f.last().url).toBe('ws://pulse.test/ws?ticket=sync');
    socket.stop();
  });
});

describe('useWebSocket with tickets', () => {
  afterEach(() => {
    cleanup();
  });
  const wrapper = ({ children }: { children: ReactNode }) => (
    <QueryClientProvider client={new QueryClient()}>{children}</QueryClientProvider>
  );

  function deps(fetchImpl: ReturnType<typeof fakeTicketFetch>['fetchImpl'], f: ReturnType<typeof socketFactory>) {
    return {
      createSocket: f.create,
      locks: null,
      createChannel: null,
      checkAuth: async (): Promise<AuthCheck> => 'ok',
      wsUrl: ticketWsUrl(fetchImpl, LOC),
      random: () => 0,
      socketOptions: { pingIntervalMs: 0 },
    };
  }

  it('connects with a ticket fetched with the JWT, and a new one after a drop', async () => {
    const t = fakeTicketFetch();
    const f = socketFactory();
    const onUnauthorized = vi.fn();
    const { result } = renderHook(() => useWebSocket({ token: 'jwt-abc', onUnauthorized, deps: deps(t.fetchImpl, f) }), {
      wrapper,
    });
    await waitFor(() => expect(f.sockets).toHaveLength(1));
    expect((t.calls[0].init?.headers as Record<string, string>).Authorization).toBe('Bearer jwt-abc');
    expect(f.last().url).toBe(
      `ws://pulse.test/ws?ticket=${hex(1)}&topics=stats%3Aapprovals,stats%3Aconversations,stats%3Atasks`,
    );
    act(() => f.last().serverOpen());
    // Live once the server said `connected` (an open socket that says nothing is not live).
    expect(result.current.status).toBe('reconnecting');
    act(() => f.last().serverSend({ type: 'connected', payload: { userId: 1, username: 'admin', role: 'admin' } }));
    expect(result.current.status).toBe('live');
    act(() => f.last().serverClose(1012));
    await waitFor(() => expect(f.sockets).toHaveLength(2));
    expect(f.last().url).toContain(`ticket=${hex(2)}`);
    for (const s of f.sockets) expect(s.url).not.toMatch(/token=|jwt-abc/);
  });

  it('401 from the ticket endpoint → onUnauthorized, offline, no socket and no retry', async () => {
    const t = fakeTicketFetch(() => 401);
    const f = socketFactory();
    const onUnauthorized = vi.fn();
    const { result } = renderHook(() => useWebSocket({ token: 'expired', onUnauthorized, deps: deps(t.fetchImpl, f) }), {
      wrapper,
    });
    await waitFor(() => expect(onUnauthorized).toHaveBeenCalledTimes(1));
    expect(result.current.status).toBe('offline');
    await new Promise((r) => setTimeout(r, 50));
    expect(t.fetchImpl).toHaveBeenCalledTimes(1);
    expect(f.sockets).toHaveLength(0);
  });

  it('logout (token → null) while the ticket is being fetched opens no socket', async () => {
    const d = deferred<Response>();
    const fetchImpl = vi.fn(() => d.promise);
    const f = socketFactory();
    const onUnauthorized = vi.fn();
    const { rerender } = renderHook(
      ({ token }: { token: string | null }) => useWebSocket({ token, onUnauthorized, deps: deps(fetchImpl, f) }),
      { wrapper, initialProps: { token: 'jwt' as string | null } },
    );
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    rerender({ token: null });
    d.resolve(new Response(JSON.stringify({ ticket: hex(9), expiresAt: 'x' }), { status: 200 }));
    await new Promise((r) => setTimeout(r, 50));
    expect(f.sockets).toHaveLength(0);
    expect(onUnauthorized).not.toHaveBeenCalled();
  });
});
