import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { act, cleanup, render, renderHook, screen, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConnectionIndicator } from '../src/components/ConnectionIndicator';
import { RealtimeContext, type RealtimeState } from '../src/components/RealtimeContext';
import { ToastStore } from '../src/lib/notifications';
import { PresenceStore, TypingStore } from '../src/realtime/LiveState';
import { StatsHistory } from '../src/realtime/StatsHistory';
import type { AuthCheck } from '../src/realtime/types';
import {
  browserSseUrl,
  postRealtimeMessage,
  ticketSseUrl,
  useWebSocket,
  WS_TICKET_PATH,
  type RealtimeDeps,
} from '../src/realtime/useWebSocket';
import { eventSourceFactory, FakeChannelHub, FakeLockRegistry, socketFactory } from './fakes';

afterEach(() => {
  cleanup();
});

const connected = (connectionId?: string) => ({
  type: 'connected',
  payload: { userId: 1, username: 'admin', role: 'admin', ...(connectionId ? { connectionId } : {}) },
});
const taskStats = (pending: number, seq: number) => ({
  type: 'stats:tasks',
  seq,
  payload: { pending, inProgress: 0, completed: 0, total: pending },
});

describe('SSE URLs and client messages (browser deps)', () => {
  it('/sse?ticket=…&topics=… on the page origin, the JWT never in it', () => {
    expect(browserSseUrl('abc', ['stats:tasks', 'conversation:7'])).toBe('/sse?ticket=abc&topics=stats%3Atasks,conversation%3A7');
    expect(browserSseUrl('a b')).toBe('/sse?ticket=a%20b');
  });

  it('every SSE attempt fetches a fresh single-use ticket with the JWT', async () => {
    let n = 0;
    const fetchImpl = vi.fn(async () => new Response(JSON.stringify({ ticket: `t${++n}`, expiresAt: 'x' }), { status: 200 }));
    const url = ticketSseUrl(fetchImpl);
    await expect(url('jwt', ['stats:tasks'])).resolves.toBe('/sse?ticket=t1&topics=stats%3Atasks');
    await expect(url('jwt', ['stats:tasks'])).resolves.toBe('/sse?ticket=t2&topics=stats%3Atasks');
    expect(fetchImpl.mock.calls[0][0 as never]).toBe(WS_TICKET_PATH);
  });

  it('a client message is POST /api/v1/realtime/{connectionId} with the bearer token and the JSON as on a WebSocket', async () => {
    const fetchImpl = vi.fn(async (_input: string, _init?: RequestInit) => new Response(null, { status: 202 }));
    const body = JSON.stringify({ type: 'viewing', payload: { path: '/tasks' } });
    await expect(postRealtimeMessage('jwt', 'node-1/42', body, undefined, fetchImpl)).resolves.toBe(202);
    const [input, init] = fetchImpl.mock.calls[0];
    expect(input).toBe('/api/v1/realtime/node-1%2F42');
    expect(init?.method).toBe('POST');
    expect(init?.body).toBe(body);
    expect((init?.headers as Record<string, string>).Authorization).toBe('Bearer jwt');
    expect((init?.headers as Record<string, string>)['Content-Type']).toBe('application/json');
  });
});

describe('useWebSocket over the SSE fallback', () => {
  function renderTabs(n: number) {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const f = socketFactory();
    const es = eventSourceFactory();
    const posts: { token: string; id: string; body: string }[] = [];
    let ticket = 0;
    const tabs = Array.from({ length: n }, (_, i) => {
      const qc = new QueryClient();
      const deps: Partial<RealtimeDeps> = {
        createSocket: f.create,
        locks: locks.forTab(`tab${i}`),
        createChannel: hub.create,
        checkAuth: async (): Promise<AuthCheck> => 'ok',
        wsUrl: () => `ws://pulse.test/ws?ticket=w${++ticket}`,
        createEventSource: es.create,
        sseUrl: (_token, topics) => `/sse?ticket=s${++ticket}&topics=${(topics ?? []).join(',')}`,
        postRealtime: async (token, id, body) => {
          posts.push({ token, id, body });
          return 202;
        },
        random: () => 0,
        socketOptions: { pingIntervalMs: 0 },
      };
      const wrapper = ({ children }: { children: ReactNode }) => <QueryClientProvider client={qc}>{children}</QueryClientProvider>;
      const hook = renderHook(
        ({ viewing }: { viewing: string }) => useWebSocket({ token: 'jwt', onUnauthorized: vi.fn(), deps, viewing }),
        { wrapper, initialProps: { viewing: `/page-${i}` } },
      );
      return { qc, hook };
    });
    return { f, es, posts, tabs };
  }

  it('one connection per browser whichever the transport: the leader falls back, the followers show "live" over SSE', async () => {
    const { f, es, posts, tabs } = renderTabs(3);
    await waitFor(() => expect(tabs[0].hook.result.current.role).toBe('leader'));
    for (let i = 0; i < 3; i++) {
      await waitFor(() => expect(f.sockets).toHaveLength(i + 1));
      act(() => f.last().fail());
    }
    await waitFor(() => expect(es.sources).toHaveLength(1));
    expect(f.sockets).toHaveLength(3);
    await act(async () => {
      es.last().serverOpen();
      es.last().serverSend(connected('c-1'));
      es.last().serverSend(taskStats(6, 1));
    });
    await waitFor(() =>
      tabs.forEach((t) => {
        expect(t.hook.result.current.status).toBe('live');
        expect(t.hook.result.current.transport).toBe('sse');
        expect(t.qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(6);
      }),
    );
    // The leader's own `viewing` went as a POST for the connection, and a follower's through the leader.
    await waitFor(() => expect(posts.map((p) => JSON.parse(p.body).payload?.path)).toContain('/page-0'));
    tabs[1].hook.rerender({ viewing: '/approvals' });
    await waitFor(() => expect(posts.map((p) => JSON.parse(p.body).payload?.path)).toContain('/approvals'));
    expect(posts.every((p) => p.id === 'c-1' && p.token === 'jwt')).toBe(true);
    expect(es.sources).toHaveLength(1);
    expect(f.sockets).toHaveLength(3);
  });
});

describe('ConnectionIndicator', () => {
  const state = (over: Partial<RealtimeState>): RealtimeState => ({
    status: 'live',
    transport: 'websocket',
    role: 'leader',
    reconnect: () => {},
    history: new StatsHistory(),
    send: () => false,
    presence: new PresenceStore(),
    typing: new TypingStore(),
    toasts: new ToastStore(),
    topicError: null,
    ...over,
  });
  const show = (over: Partial<RealtimeState>) =>
    render(
      <RealtimeContext.Provider value={state(over)}>
        <ConnectionIndicator />
      </RealtimeContext.Provider>,
    );

  it('says "(fallback)" in words while live over SSE, nothing extra over WebSocket', () => {
    show({ transport: 'sse' });
    expect(screen.getByTestId('connection-status').textContent).toBe('live');
    expect(screen.getByTestId('connection-transport').textContent).toBe('(fallback)');
    cleanup();
    show({ transport: 'websocket' });
    expect(screen.getByTestId('connection-status').textContent).toBe('live');
    expect(screen.queryByTestId('connection-transport')).toBeNull();
    cleanup();
    show({ status: 'reconnecting', transport: 'sse' });
    expect(screen.queryByTestId('connection-transport')).toBeNull();
  });
});
