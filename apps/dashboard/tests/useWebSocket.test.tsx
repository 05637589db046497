import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { act, cleanup, render, renderHook, screen, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { useTaskStats } from '../src/lib/resources';
import { StatsHistory } from '../src/realtime/StatsHistory';
import { useWebSocket, type RealtimeDeps } from '../src/realtime/useWebSocket';
import type { AuthCheck } from '../src/realtime/types';
import { FakeChannelHub, FakeLockRegistry, socketFactory } from './fakes';

function wrapperFor(qc: QueryClient) {
  return ({ children }: { children: ReactNode }) => <QueryClientProvider client={qc}>{children}</QueryClientProvider>;
}

const taskStats = (pending: number, seq: number) => ({
  type: 'stats:tasks',
  seq,
  payload: { pending, inProgress: 1, completed: 0, total: pending + 1 },
});
const connected = { type: 'connected', payload: { userId: 1, username: 'admin', role: 'admin' } };

function baseDeps(f: ReturnType<typeof socketFactory>, extra: Partial<RealtimeDeps> = {}): Partial<RealtimeDeps> {
  return {
    createSocket: f.create,
    locks: null,
    createChannel: null,
    checkAuth: async () => 'ok',
    wsUrl: (token) => `ws://pulse.test/ws?ticket=ticket-for-${token}`,
    random: () => 0, // reconnect immediately (delay 0) so tests run on real timers
    socketOptions: { pingIntervalMs: 0 },
    ...extra,
  };
}

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe('useWebSocket', () => {
  it('writes each stats message into its query key (approvals as {stats}) and reports live', async () => {
    const qc = new QueryClient();
    const f = socketFactory();
    const onUnauthorized = vi.fn();
    const { result } = renderHook(() => useWebSocket({ token: 'tok', onUnauthorized, deps: baseDeps(f) }), {
      wrapper: wrapperFor(qc),
    });
    expect(f.sockets).toHaveLength(1);
    expect(f.last().url).toBe('ws://pulse.test/ws?ticket=ticket-for-tok');
    expect(result.current.status).toBe('reconnecting');
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(4, 1));
      f.last().serverSend({
        type: 'stats:approvals',
        seq: 1,
        payload: { pending: 2, approved: 0, rejected: 0, executed: 0, total: 2 },
      });
      f.last().serverSend({
        type: 'stats:conversations',
        seq: 1,
        payload: { active: 1, escalated: 5, resolved: 0, total: 6 },
      });
      f.last().serverSend({ type: 'something:new', payload: {} });
    });
    expect(result.current.status).toBe('live');
    expect(result.current.role).toBe('solo');
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 4, inProgress: 1, completed: 0, total: 5 });
    expect(qc.getQueryData(['approvalStats'])).toEqual({
      stats: { pending: 2, approved: 0, rejected: 0, executed: 0, total: 2 },
    });
    expect(qc.getQueryData(['conversationStats'])).toEqual({ active: 1, escalated: 5, resolved: 0, total: 6 });
    expect(onUnauthorized).not.toHaveBeenCalled();
  });

  it('drops stale seq and lets a new connection snapshot replace the values', async () => {
    const qc = new QueryClient();
    const f = socketFactory();
    renderHook(() => useWebSocket({ token: 'tok', onUnauthorized: vi.fn(), deps: baseDeps(f) }), {
      wrapper: wrapperFor(qc),
    });
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(10, 41));
      f.last().serverSend(taskStats(3, 40)); // stale
    });
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(10);
    // Server restarts (1006), client reconnects, seq starts over.
    act(() => f.last().serverClose(1006));
    await waitFor(() => expect(f.sockets).toHaveLength(2));
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(1, 1));
    });
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(1);
  });

  it('unmount closes with 1000 and does not reconnect', async () => {
    const f = socketFactory();
    const { unmount } = renderHook(() => useWebSocket({ token: 'tok', onUnauthorized: vi.fn(), deps: baseDeps(f) }), {
      wrapper: wrapperFor(new QueryClient()),
    });
    act(() => f.last().serverOpen());
    unmount();
    expect(f.last().closedWith?.code).toBe(1000);
    await new Promise((r) => setTimeout(r, 30));
    expect(f.sockets).toHaveLength(1);
  });

  it('no token: no connection, offline', () => {
    const f = socketFactory();
    const { result } = renderHook(() => useWebSocket({ token: null, onUnauthorized: vi.fn(), deps: baseDeps(f) }), {
      wrapper: wrapperFor(new QueryClient()),
    });
    expect(f.sockets).toHaveLength(0);
    expect(result.current.status).toBe('offline');
  });

  it.each([
    [4401, 'rejected'],
    [4403, 'deactivated'],
  ])('%i → onUnauthorized(%s), offline, no retry', async (code, why) => {
    const f = socketFactory();
    const onUnauthorized = vi.fn();
    const { result } = renderHook(() => useWebSocket({ token: 'tok', onUnauthorized, deps: baseDeps(f) }), {
      wrapper: wrapperFor(new QueryClient()),
    });
    act(() => {
      f.last().serverOpen();
      f.last().serverClose(code);
    });
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(onUnauthorized).toHaveBeenCalledWith(why);
    expect(result.current.status).toBe('offline');
    await new Promise((r) => setTimeout(r, 30));
    expect(f.sockets).toHaveLength(1);
  });

  it('refused upgrade (1006 before open) + GET /me 401 → onUnauthorized, no retry loop', async () => {
    const f = socketFactory();
    const onUnauthorized = vi.fn();
    const checkAuth = vi.fn(async (): Promise<AuthCheck> => 'unauthorized');
    renderHook(() => useWebSocket({ token: 'bad', onUnauthorized, deps: baseDeps(f, { checkAuth }) }), {
      wrapper: wrapperFor(new QueryClient()),
    });
    act(() => f.last().fail());
    await waitFor(() => expect(onUnauthorized).toHaveBeenCalledTimes(1));
    expect(checkAuth).toHaveBeenCalledWith('bad');
    await new Promise((r) => setTimeout(r, 30));
    expect(f.sockets).toHaveLength(1);
  });

  it('the default token check calls GET /api/v1/me with the bearer token', async () => {
    const fetchMock = vi.fn(async () => new Response('{"error":{"code":"unauthorized","message":"x"}}', { status: 401 }));
    vi.stubGlobal('fetch', fetchMock);
    const f = socketFactory();
    const onUnauthorized = vi.fn();
    const deps = baseDeps(f);
    delete deps.checkAuth;
    renderHook(() => useWebSocket({ token: 'expired', onUnauthorized, deps }), {
      wrapper: wrapperFor(new QueryClient()),
    });
    act(() => f.last().fail());
    await waitFor(() => expect(onUnauthorized).toHaveBeenCalledTimes(1));
    expect(fetchMock).toHaveBeenCalledWith('/api/v1/me', { headers: { Authorization: 'Bearer expired' } });
  });

  it('the stats query fetches once; pushed values update it without refetching', async () => {
    const fetchMock = vi.fn(
      async () =>
        new Response(JSON.stringify({ pending: 7, inProgress: 0, completed: 0, total: 7 }), {
          status: 200,
          headers: { 'Content-Type': 'application/json' },
        }),
    );
    vi.stubGlobal('fetch', fetchMock);
    const qc = new QueryClient();
    const f = socketFactory();
    function Probe() {
      useWebSocket({ token: 'tok', onUnauthorized: () => {}, deps: baseDeps(f) });
      const q = useTaskStats();
      return <div data-testid="pending">{q.data?.pending ?? '-'}</div>;
    }
    render(
      <QueryClientProvider client={qc}>
        <Probe />
      </QueryClientProvider>,
    );
    await waitFor(() => expect(screen.getByTestId('pending').textContent).toBe('7'));
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(8, 1));
    });
    await waitFor(() => expect(screen.getByTestId('pending').textContent).toBe('8'));
    act(() => f.last().serverSend(taskStats(9, 2)));
    await waitFor(() => expect(screen.getByTestId('pending').textContent).toBe('9'));
    await new Promise((r) => setTimeout(r, 50));
    const statsCalls = fetchMock.mock.calls.filter((c) => String(c[0 as never]).includes('/stats'));
    expect(statsCalls).toHaveLength(1);
    const observers = qc.getQueryCache().find({ queryKey: ['taskStats'] })?.observers ?? [];
    expect(observers.length).toBeGreaterThan(0);
    observers.forEach((o) => {
      expect(o.options.refetchInterval).toBeFalsy();
      expect(o.options.staleTime).toBe(Infinity);
    });
  });

  it('records pushed values for the live charts', () => {
    // Pushes 20 s apart (the history keeps one point per 15 s).
    let t = Date.UTC(2026, 11, 6, 10);
    vi.spyOn(Date, 'now').mockImplementation(() => (t += 20_000));
    const f = socketFactory();
    const history = new StatsHistory();
    renderHook(() => useWebSocket({ token: 'tok', onUnauthorized: vi.fn(), history, deps: baseDeps(f) }), {
      wrapper: wrapperFor(new QueryClient()),
    });
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(taskStats(1, 1));
      f.last().serverSend(taskStats(2, 2));
    });
    expect(history.get('stats:tasks').map((p) => p.payload.pending)).toEqual([1, 2]);
  });
});

describe('useWebSocket across tabs', () => {
  function renderTabs(n: number, shared: { locks: FakeLockRegistry | null; hub: FakeChannelHub | null }) {
    const f = socketFactory();
    return {
      f,
      tabs: Array.from({ length: n }, (_, i) => {
        const qc = new QueryClient();
        const deps = baseDeps(f, {
          locks: shared.locks ? shared.locks.forTab(`tab${i}`) : null,
          createChannel: shared.hub ? shared.hub.create : null,
        });
        const hook = renderHook(() => useWebSocket({ token: 'tok', onUnauthorized: vi.fn(), deps }), {
          wrapper: wrapperFor(qc),
        });
        return { qc, hook, id: `tab${i}` };
      }),
    };
  }

  const pendingOf = (qc: QueryClient) => qc.getQueryData<{ pending: number }>(['taskStats'])?.pending;

  it('one WebSocket for three tabs; every tab gets the values and the status', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const { f, tabs } = renderTabs(3, { locks, hub });
    await waitFor(() => expect(tabs[0].hook.result.current.role).toBe('leader'));
    expect(f.sockets).toHaveLength(1);
    await act(async () => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(5, 1));
    });
    await waitFor(() => tabs.forEach((t) => expect(pendingOf(t.qc)).toBe(5)));
    tabs.forEach((t) => expect(t.hook.result.current.status).toBe('live'));
    expect(tabs.map((t) => t.hook.result.current.role)).toEqual(['leader', 'follower', 'follower']);
    expect(f.sockets).toHaveLength(1);
  });

  it('leader tab closes → a follower connects and the others keep updating', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const { f, tabs } = renderTabs(3, { locks, hub });
    await waitFor(() => expect(tabs[0].hook.result.current.role).toBe('leader'));
    await act(async () => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(5, 1));
    });
    // The leader tab is closed: its React tree unmounts and the browser frees its lock.
    tabs[0].hook.unmount();
    locks.crashTab('tab0');
    await waitFor(() => expect(f.sockets).toHaveLength(2));
    const leader = tabs.findIndex((t, i) => i > 0 && t.hook.result.current.role === 'leader');
    expect(leader).toBeGreaterThan(0);
    await act(async () => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(6, 1));
    });
    await waitFor(() => {
      expect(pendingOf(tabs[1].qc)).toBe(6);
      expect(pendingOf(tabs[2].qc)).toBe(6);
    });
    tabs.slice(1).forEach((t) => expect(t.hook.result.current.status).toBe('live'));
    expect(f.sockets).toHaveLength(2);
  });

  it('followers show the leader reconnecting', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const { f, tabs } = renderTabs(2, { locks, hub });
    await waitFor(() => expect(tabs[0].hook.result.current.role).toBe('leader'));
    await act(async () => {
      f.last().serverOpen();
      f.last().serverSend(connected);
    });
    await waitFor(() => expect(tabs[1].hook.result.current.status).toBe('live'));
    await act(async () => {
      f.last().serverClose(1012);
    });
    await waitFor(() => expect(tabs[1].hook.result.current.status).toBe('reconnecting'));
  });

  it('without Web Locks / BroadcastChannel each tab connects on its own', async () => {
    const { f, tabs } = renderTabs(3, { locks: null, hub: null });
    expect(f.sockets).toHaveLength(3);
    tabs.forEach((t) => expect(t.hook.result.current.role).toBe('solo'));
    act(() => {
      f.sockets.forEach((s, i) => {
        s.serverOpen();
        s.serverSend(taskStats(10 + i, 1));
      });
    });
    expect(tabs.map((t) => pendingOf(t.qc))).toEqual([10, 11, 12]);
  });
});
