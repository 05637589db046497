import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ReconnectingSocket } from '../src/realtime/ReconnectingSocket';
import type { ServerMessage } from '../src/realtime/messages';
import type { AuthCheck, ConnectionStatus } from '../src/realtime/types';
import { flush, socketFactory } from './fakes';

function setup(opts: { random?: () => number; checkAuth?: () => Promise<AuthCheck>; pingIntervalMs?: number } = {}) {
  const f = socketFactory();
  const messages: ServerMessage[] = [];
  const statuses: ConnectionStatus[] = [];
  const onUnauthorized = vi.fn();
  const checkAuth = vi.fn(opts.checkAuth ?? (async () => 'ok' as AuthCheck));
  const socket = new ReconnectingSocket({
    url: () => 'ws://test/ws?ticket=abc',
    createSocket: f.create,
    onMessage: (m) => messages.push(m),
    onStatus: (s) => statuses.push(s),
    onUnauthorized,
    checkAuth,
    random: opts.random ?? (() => 0.5),
    pingIntervalMs: opts.pingIntervalMs ?? 0,
  });
  return { f, socket, messages, statuses, onUnauthorized, checkAuth };
}

describe('ReconnectingSocket', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('connects to the URL, reports live on open and passes parsed messages on', () => {
    const { f, socket, messages, statuses } = setup();
    socket.start();
    expect(f.sockets).toHaveLength(1);
    expect(f.last().url).toBe('ws://test/ws?ticket=abc');
    expect(socket.status).toBe('reconnecting');
    f.last().serverOpen();
    expect(socket.status).toBe('live');
    expect(statuses.at(-1)).toBe('live');
    f.last().serverSend({ type: 'stats:tasks', seq: 1, payload: { pending: 1, inProgress: 0, completed: 0, total: 1 } });
    expect(messages).toEqual([
      { type: 'stats:tasks', seq: 1, payload: { pending: 1, inProgress: 0, completed: 0, total: 1 } },
    ]);
  });

  it('ignores malformed frames, non-objects and pong', () => {
    const { f, socket, messages } = setup();
    socket.start();
    f.last().serverOpen();
    f.last().serverSend('not json');
    f.last().serverSend('[1,2]');
    f.last().serverSend('{"no":"type"}');
    f.last().serverSend({ type: 'pong' });
    f.last().onmessage?.({ data: new ArrayBuffer(2) });
    expect(messages).toEqual([]);
  });

  it('stop() closes with 1000 and never reconnects', async () => {
    const { f, socket } = setup();
    socket.start();
    f.last().serverOpen();
    socket.stop();
    expect(f.last().closedWith?.code).toBe(1000);
    expect(socket.status).toBe('offline');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(f.sockets).toHaveLength(1);
  });

  it('a server close 1000 does not reconnect', async () => {
    const { f, socket } = setup();
    socket.start();
    f.last().serverOpen();
    f.last().serverClose(1000);
    expect(socket.state).toBe('stopped');
    expect(socket.status).toBe('offline');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(f.sockets).toHaveLength(1);
  });

  it.each([
    [4401, 'rejected'],
    [4403, 'deactivated'],
  ])('%i → unauthorized (%s), onUnauthorized called once, no retry', async (code, why) => {
    const { f, socket, onUnauthorized } = setup();
    socket.start();
    f.last().serverOpen();
    f.last().serverClose(code);
    expect(socket.state).toBe('unauthorized');
    expect(socket.status).toBe('offline');
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(onUnauthorized).toHaveBeenCalledWith(why);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(f.sockets).toHaveLength(1);
  });

  it.each([1001, 1006, 1012, 1013])('close %i after open → reconnect with backoff', async (code) => {
    const { f, socket, statuses, checkAuth } = setup({ random: () => 0.5 });
    socket.start();
    f.last().serverOpen();
    f.last().serverClose(code);
    expect(socket.status).toBe('reconnecting');
    expect(statuses.at(-1)).toBe('reconnecting');
    expect(checkAuth).not.toHaveBeenCalled(); // it had opened: no token check needed
    // attempt 0: delay = 0.5 * 500 = 250 ms
    await vi.advanceTimersByTimeAsync(249);
    expect(f.sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(f.sockets).toHaveLength(2);
    f.last().serverOpen();
    expect(socket.status).toBe('live');
  });

  it('close before open: checks the token; 401 from /me → unauthorized, no retry loop', async () => {
    const { f, socket, onUnauthorized, checkAuth } = setup({ checkAuth: async () => 'unauthorized' });
    socket.start();
    f.last().fail();
    expect(socket.state).toBe('checking');
    await flush();
    expect(checkAuth).toHaveBeenCalledTimes(1);
    expect(socket.state).toBe('unauthorized');
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(onUnauthorized).toHaveBeenCalledWith('rejected');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(f.sockets).toHaveLength(1);
  });

  it('close before open with a valid token (server down) → keeps retrying with growing ceilings', async () => {
    const { f, socket, checkAuth } = setup({ random: () => 0.999, checkAuth: async () => 'unknown' });
    socket.start();
    for (let i = 0; i < 8; i++) {
      f.last().fail();
      await flush();
      await vi.advanceTimersByTimeAsync(30_000);
    }
    expect(checkAuth).toHaveBeenCalledTimes(8);
    expect(f.sockets).toHaveLength(9);
    const d = socket.scheduledDelays;
    // 0.999 * [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
    expect(d).toEqual([499, 999, 1998, 3996, 7992, 15984, 29970, 29970]);
    expect(Math.max(...d)).toBeLessThanOrEqual(30_000);
  });

  it('delays stay within [0, ceiling] with real randomness', async () => {
    const { f, socket } = setup({ random: Math.random, checkAuth: async () => 'ok' });
    socket.start();
    for (let i = 0; i < 12; i++) {
      f.last().fail();
      await flush();
      await vi.advanceTimersByTimeAsync(30_000);
    }
    socket.scheduledDelays.forEach((delay, attempt) => {
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThanOrEqual(Math.min(30_000, 500 * 2 ** attempt));
    });
  });

  it('resets the attempt counter after ~10 s of healthy connection, not before', async () => {
    const { f, socket } = setup({ random: () => 0.999 });
    socket.start();
    // Fail a few times to grow the attempt counter.
    for (let i = 0; i < 4; i++) {
      f.last().fail();
      await flush();
      await vi.advanceTimersByTimeAsync(30_000);
    }
    expect(socket.attempt).toBe(4);
    // Open briefly (less than 10 s): the counter stays.
    f.last().serverOpen();
    await vi.advanceTimersByTimeAsync(5_000);
    f.last().serverClose(1006);
    expect(socket.attempt).toBe(5);
    expect(socket.scheduledDelays.at(-1)).toBe(Math.floor(0.999 * 8000));
    await vi.advanceTimersByTimeAsync(30_000);
    // Open and stay healthy for 10 s: reset.
    f.last().serverOpen();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(socket.attempt).toBe(0);
    f.last().serverClose(1001);
    expect(socket.scheduledDelays.at(-1)).toBe(Math.floor(0.999 * 500));
  });

  it('reconnectNow skips the backoff wait', async () => {
    const { f, socket } = setup({ random: () => 0.999 });
    socket.start();
    f.last().serverOpen();
    f.last().serverClose(1006);
    expect(f.sockets).toHaveLength(1);
    socket.reconnectNow();
    expect(f.sockets).toHaveLength(2);
  });

  it('sends {"type":"ping"} periodically and drops a connection that stays silent', async () => {
    const { f, socket } = setup({ pingIntervalMs: 25_000 });
    socket.start();
    const first = f.last();
    first.serverOpen();
    await vi.advanceTimersByTimeAsync(25_000);
    expect(first.sent).toEqual(['{"type":"ping"}']);
    first.serverSend({ type: 'pong' });
    await vi.advanceTimersByTimeAsync(25_000);
    expect(first.sent).toHaveLength(2);
    // No answer within 10 s → considered dead, closed and replaced.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(first.closedWith?.code).toBe(4000);
    expect(socket.status).toBe('reconnecting');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(f.sockets).toHaveLength(2);
  });

  it('send() only works while open', () => {
    const { f, socket } = setup();
    socket.start();
    expect(socket.send({ type: 'ping' })).toBe(false);
    f.last().serverOpen();
    expect(socket.send({ type: 'ping' })).toBe(true);
    expect(f.last().sent).toEqual(['{"type":"ping"}']);
  });

  it('a close event from an old socket after stop is ignored', async () => {
    const { f, socket } = setup();
    socket.start();
    const s = f.last();
    s.serverOpen();
    socket.stop();
    s.serverClose(1006);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(f.sockets).toHaveLength(1);
    expect(socket.status).toBe('offline');
  });
});
