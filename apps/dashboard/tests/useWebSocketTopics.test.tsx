import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { act, cleanup, renderHook, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { topicsForPath } from '../src/realtime/topics';
import { browserWsUrl, useWebSocket, type RealtimeDeps } from '../src/realtime/useWebSocket';
import { FakeChannelHub, FakeLockRegistry, socketFactory, type FakeWebSocket } from './fakes';

const wrapperFor = (qc: QueryClient) =>
  function Wrapper({ children }: { children: ReactNode }) {
    return <QueryClientProvider client={qc}>{children}</QueryClientProvider>;
  };

const connected = { type: 'connected', payload: { userId: 1, username: 'admin', role: 'admin' } };
const taskStats = (pending: number, seq: number) => ({
  type: 'stats:tasks',
  seq,
  payload: { pending, inProgress: 0, completed: 0, total: pending },
});

function deps(f: ReturnType<typeof socketFactory>, extra: Partial<RealtimeDeps> = {}): Partial<RealtimeDeps> {
  return {
    createSocket: f.create,
    locks: null,
    createChannel: null,
    checkAuth: async () => 'ok',
    wsUrl: (token, topics) => `ws://pulse.test/ws?ticket=ticket-for-${token}${topics ? `&topics=${topics.join(',')}` : ''}`,
    random: () => 0,
    socketOptions: { pingIntervalMs: 0 },
    ...extra,
  };
}

const sentOf = (s: FakeWebSocket) => s.sent.map((x) => JSON.parse(x));

afterEach(() => cleanup());

describe('useWebSocket: topics, viewing and client messages', () => {
  it('connects with ?topics= of the page; a route change subscribes/unsubscribes on the same socket', () => {
    const f = socketFactory();
    const qc = new QueryClient();
    const { rerender } = renderHook(
      ({ path }) => useWebSocket({ token: 'tok', onUnauthorized: vi.fn(), deps: deps(f), topics: topicsForPath(path), viewing: path }),
      { wrapper: wrapperFor(qc), initialProps: { path: '/tasks' } },
    );
    expect(f.sockets).toHaveLength(1);
    expect(f.last().url).toBe(
      'ws://pulse.test/ws?ticket=ticket-for-tok&topics=presence,stats:approvals,stats:conversations,stats:tasks',
    );
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(connected);
    });
    // viewing on connect
    expect(sentOf(f.last())).toEqual([{ type: 'viewing', payload: { path: '/tasks' } }]);

    rerender({ path: '/conversations/7' });
    expect(sentOf(f.last()).slice(1)).toEqual([
      { type: 'subscribe', topics: ['conversation:7'] },
      { type: 'viewing', payload: { path: '/conversations/7' } },
    ]);
    act(() =>
      f.last().serverSend({
        type: 'subscribed',
        payload: { topics: ['stats:tasks', 'stats:approvals', 'stats:conversations', 'presence', 'conversation:7'] },
      }),
    );
    rerender({ path: '/conversations' });
    expect(sentOf(f.last()).slice(3)).toEqual([
      { type: 'unsubscribe', topics: ['conversation:7'] },
      { type: 'viewing', payload: { path: '/conversations' } },
    ]);
    expect(f.sockets).toHaveLength(1); // never reconnected
  });

  it('a `subscribed` reply does not reset seq (stale frames still dropped); `connected` does', () => {
    const f = socketFactory();
    const qc = new QueryClient();
    renderHook(() => useWebSocket({ token: 'tok', onUnauthorized: vi.fn(), deps: deps(f), topics: topicsForPath('/tasks') }), {
      wrapper: wrapperFor(qc),
    });
    const pending = () => qc.getQueryData<{ pending: number }>(['taskStats'])?.pending;
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(5, 10));
      f.last().serverSend({ type: 'subscribed', payload: { topics: ['stats:tasks', 'presence'] } });
      f.last().serverSend(taskStats(3, 9)); // stale
    });
    expect(pending()).toBe(5);
    act(() => {
      f.last().serverSend(connected);
      f.last().serverSend(taskStats(1, 1));
    });
    expect(pending()).toBe(1);
  });

  it('an unknown_topic error is surfaced and the good topics are still subscribed', () => {
    const f = socketFactory();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const { result, rerender } = renderHook(
      ({ topics }) => useWebSocket({ token: 'tok', onUnauthorized: vi.fn(), deps: deps(f), topics }),
      { wrapper: wrapperFor(new QueryClient()), initialProps: { topics: ['stats:tasks'] } },
    );
    act(() => {
      f.last().serverOpen();
      f.last().serverSend(connected);
    });
    rerender({ topics: ['stats:tasks', 'rooms:1', 'presence'] });
    // An unknown name never goes into a URL; it is asked for with a message.
    expect(sentOf(f.last())).toEqual([{ type: 'subscribe', topics: ['presence', 'rooms:1'] }]);
    act(() => f.last().serverSend({ type: 'error', payload: { code: 'unknown_topic', message: 'unknown topic "rooms:1"' } }));
    expect(result.current.topicError).toEqual({ code: 'unknown_topic', message: 'unknown topic "rooms:1"' });
    expect(warn).toHaveBeenCalled();
    expect(sentOf(f.last())[1]).toEqual({ type: 'subscribe', topics: ['presence'] });
  });

  it('send() goes through the leader tab from a follower', async () => {
    const f = socketFactory();
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const tab = (id: string) =>
      renderHook(
        () =>
          useWebSocket({
            token: 'tok',
            onUnauthorized: vi.fn(),
            deps: deps(f, { locks: locks.forTab(id), createChannel: hub.create }),
            topics: topicsForPath('/tasks'),
          }),
        { wrapper: wrapperFor(new QueryClient()) },
      );
    const a = tab('a');
    await waitFor(() => expect(a.result.current.role).toBe('leader'));
    await act(async () => {
      f.last().serverOpen();
      f.last().serverSend(connected);
    });
    const b = tab('b');
    await waitFor(() => expect(b.result.current.role).toBe('follower'));
    await act(async () => {
      b.result.current.send({ type: 'typing', payload: { conversationId: 4, typing: true } });
    });
    await waitFor(() => expect(sentOf(f.last())).toContainEqual({ type: 'typing', payload: { conversationId: 4, typing: true } }));
    expect(f.sockets).toHaveLength(1);
  });

  it('the browser URL carries the topics', () => {
    expect(browserWsUrl('t k', ['stats:tasks', 'presence'], { protocol: 'https:', host: 'h' })).toBe(
      'wss://h/ws?ticket=t%20k&topics=stats%3Atasks,presence',
    );
    expect(browserWsUrl('t', undefined, { protocol: 'http:', host: 'h' })).toBe('ws://h/ws?ticket=t');
  });
});
