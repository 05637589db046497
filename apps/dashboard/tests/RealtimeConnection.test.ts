import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RealtimeConnection } from '../src/realtime/RealtimeConnection';
import type { ServerMessage } from '../src/realtime/messages';
import type { AuthCheck } from '../src/realtime/types';
import { eventSourceFactory, flush, socketFactory, type FakeEventSource } from './fakes';

const connected = (connectionId?: string) => ({
  type: 'connected',
  payload: { userId: 1, username: 'admin', role: 'admin', ...(connectionId ? { connectionId } : {}) },
});
const taskStats = (pending: number, seq: number) => ({
  type: 'stats:tasks',
  seq,
  payload: { pending, inProgress: 0, completed: 0, total: pending },
});

interface PendingPost {
  id: string;
  body: string;
  resolve(status: number): void;
  reject(err: unknown): void;
}

function setup(
  o: {
    checkAuth?: () => Promise<AuthCheck>;
    wsUrl?: () => Promise<string>;
    noEventSource?: boolean;
    pingIntervalMs?: number;
    probeEveryMs?: number;
  } = {},
) {
  const f = socketFactory();
  const es = eventSourceFactory();
  let ticket = 0;
  const posts: PendingPost[] = [];
  const post = vi.fn(
    (id: string, body: string) => new Promise<number>((resolve, reject) => posts.push({ id, body, resolve, reject })),
  );
  const messages: ServerMessage[] = [];
  const statuses: string[] = [];
  const onUnauthorized = vi.fn();
  const checkAuth = vi.fn(o.checkAuth ?? (async (): Promise<AuthCheck> => 'ok'));
  const conn = new RealtimeConnection({
    wsUrl: o.wsUrl ?? (async () => `ws://pulse.test/ws?ticket=t${++ticket}`),
    sseUrl: async (topics) => `/sse?ticket=t${++ticket}&topics=${topics.join(',')}`,
    createSocket: f.create,
    createEventSource: o.noEventSource ? null : es.create,
    post,
    checkAuth,
    onMessage: (m) => messages.push(m),
    onStatus: (s, t) => statuses.push(`${s}/${t}`),
    onUnauthorized,
    topics: () => ['stats:tasks', 'presence'],
    // Backoff delays: half the ceiling (250 ms, 500 ms, 1 s…); probes exactly every probeEveryMs.
    random: () => 0.5,
    socketOptions: { pingIntervalMs: o.pingIntervalMs ?? 0 },
    probeEveryMs: o.probeEveryMs ?? 60_000,
  });
  /** Lets the async ticket fetch resolve (the socket or stream of the attempt then exists). */
  const settle = () => vi.advanceTimersByTimeAsync(0);
  /** Waits out the backoff delay drawn last (and not a millisecond more than needed). */
  const waitBackoff = () => vi.advanceTimersByTimeAsync((conn.socket.scheduledDelays.at(-1) ?? 0) + 1);
  /** The next WebSocket attempt fails before open (refused upgrade) and the token check runs. */
  const refuseWs = async () => {
    await settle();
    f.last().fail();
    await flush();
    await waitBackoff();
  };
  /** The current SSE attempt goes live with connection id `id`. */
  const sseLive = (s: FakeEventSource, id = 'c1') => {
    s.serverOpen();
    s.serverSend(connected(id));
    s.serverSend(taskStats(3, 1));
  };
  return { f, es, conn, posts, post, messages, statuses, onUnauthorized, checkAuth, settle, waitBackoff, refuseWs, sseLive };
}

describe('RealtimeConnection: WebSocket first, Server-Sent Events when WebSocket cannot get through', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('three refused WebSockets while the API answers → the next attempt is SSE, live "over the fallback"', async () => {
    const t = setup();
    t.conn.start();
    await t.refuseWs();
    await t.refuseWs();
    expect(t.es.sources).toHaveLength(0); // two failures are not enough
    await t.refuseWs();
    expect(t.checkAuth).toHaveBeenCalledTimes(3);
    expect(t.f.sockets).toHaveLength(3);
    expect(t.es.sources).toHaveLength(1);
    const s = t.es.last();
    // A fresh ticket, and the connection's topics, as on /ws.
    expect(s.url).toBe('/sse?ticket=t4&topics=stats:tasks,presence');
    expect(t.conn.socket.status).toBe('reconnecting');
    t.sseLive(s);
    expect(t.statuses.at(-1)).toBe('live/sse');
    expect(t.conn.transport).toBe('sse');
    expect(t.messages.map((m) => m.type)).toEqual(['connected', 'stats:tasks']);
    // Nothing else was opened meanwhile.
    await vi.advanceTimersByTimeAsync(30_000);
    expect(t.f.sockets).toHaveLength(3);
    expect(t.es.sources).toHaveLength(1);
  });

  it('API down (token check cannot reach it) → WebSocket keeps being retried, never SSE, never live', async () => {
    const t = setup({ checkAuth: async () => 'unknown' });
    t.conn.start();
    for (let i = 0; i < 10; i++) await t.refuseWs();
    expect(t.f.sockets.length).toBe(11);
    expect(t.es.sources).toHaveLength(0);
    expect(t.statuses.some((s) => s.startsWith('live'))).toBe(false);
    expect(t.statuses.at(-1)).toBe('reconnecting/websocket');
  });

  it('API down (no ticket: network error) → retried with backoff, not counted towards the fallback', async () => {
    let up = false;
    let n = 0;
    const t = setup({
      wsUrl: async () => {
        if (!up) throw new TypeError('Failed to fetch');
        return `ws://pulse.test/ws?ticket=w${++n}`;
      },
    });
    t.conn.start();
    for (let i = 0; i < 6; i++) await t.waitBackoff();
    expect(t.f.sockets).toHaveLength(0);
    expect(t.es.sources).toHaveLength(0);
    expect(t.checkAuth).not.toHaveBeenCalled();
    // The server is back and WebSocket works: live over WebSocket.
    up = true;
    await t.waitBackoff();
    await t.waitBackoff();
    expect(t.f.sockets).toHaveLength(1);
    t.f.last().serverOpen();
    t.f.last().serverSend(connected());
    expect(t.statuses.at(-1)).toBe('live/websocket');
  });

  it('a WebSocket that opens but never says `connected` is a failure; three of them → SSE', async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) {
      await t.settle();
      t.f.last().serverOpen();
      expect(t.conn.socket.status).toBe('reconnecting'); // open is not live: `connected` is
      await vi.advanceTimersByTimeAsync(14_000);
      expect(t.f.last().closedWith).toBeNull();
      await vi.advanceTimersByTimeAsync(1_000); // 15 s after the socket was created
      expect(t.f.last().closedWith?.code).toBe(4000);
      await flush();
      await t.waitBackoff();
    }
    expect(t.checkAuth).toHaveBeenCalledTimes(3);
    expect(t.es.sources).toHaveLength(1);
  });

  it('an SSE request that hangs (no answer at all, e.g. a proxy holding the response back) is given up after 15 s', async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    await vi.advanceTimersByTimeAsync(15_000); // no open, no error, nothing
    expect(s.closed).toBe(true);
    expect(t.checkAuth).toHaveBeenCalledTimes(4);
    expect(t.statuses.at(-1)).toMatch(/^reconnecting/);
  });

  it('a WebSocket that says `connected` resets the count: failures must be in a row', async () => {
    const t = setup();
    t.conn.start();
    await t.refuseWs();
    await t.refuseWs();
    await t.settle();
    t.f.last().serverOpen();
    t.f.last().serverSend(connected());
    t.f.last().serverClose(1006);
    await t.waitBackoff();
    await t.refuseWs();
    await t.refuseWs();
    expect(t.es.sources).toHaveLength(0);
    await t.refuseWs();
    expect(t.es.sources).toHaveLength(1);
  });

  it('without EventSource there is no fallback', async () => {
    const t = setup({ noEventSource: true });
    t.conn.start();
    for (let i = 0; i < 6; i++) await t.refuseWs();
    expect(t.f.sockets).toHaveLength(7);
  });

  it('client messages go as POSTs to /realtime/{connectionId}, one at a time and in order', async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    expect(t.conn.send({ type: 'ping' })).toBe(false); // not connected yet
    t.sseLive(t.es.last(), 'conn-42');
    expect(t.conn.send({ type: 'subscribe', topics: ['stats:sla'] })).toBe(true);
    expect(t.conn.send({ type: 'viewing', payload: { path: '/overview' } })).toBe(true);
    expect(t.posts).toHaveLength(1);
    expect(t.posts[0].id).toBe('conn-42');
    expect(JSON.parse(t.posts[0].body)).toEqual({ type: 'subscribe', topics: ['stats:sla'] });
    t.posts[0].resolve(202);
    await flush();
    expect(t.posts).toHaveLength(2);
    expect(JSON.parse(t.posts[1].body)).toEqual({ type: 'viewing', payload: { path: '/overview' } });
    t.posts[1].resolve(202);
    await flush();
    // Replies come on the stream.
    t.es.last().serverSend({ type: 'subscribed', payload: { topics: ['presence', 'stats:sla', 'stats:tasks'] } });
    expect(t.messages.at(-1)).toEqual({ type: 'subscribed', payload: { topics: ['presence', 'stats:sla', 'stats:tasks'] } });
    expect(t.es.last().closed).toBe(false);
  });

  it('a POST answered 404 (the connection is gone) → the stream is closed and a new connection made with a new ticket', async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const first = t.es.last();
    t.sseLive(first, 'gone');
    t.conn.send({ type: 'viewing', payload: { path: '/tasks' } });
    t.posts[0].resolve(404);
    await flush();
    expect(first.closed).toBe(true);
    expect(t.statuses.at(-1)).toMatch(/^reconnecting/);
    // A live SSE session ended: one WebSocket attempt first, then (refused) straight back to SSE.
    await t.waitBackoff();
    expect(t.f.sockets).toHaveLength(4);
    await t.refuseWs();
    expect(t.es.sources).toHaveLength(2);
    expect(t.es.last().url).not.toBe(first.url);
    t.sseLive(t.es.last(), 'c2');
    expect(t.statuses.at(-1)).toBe('live/sse');
  });

  it('a POST refused with 401 ends the session (sign in again); 400 only drops that message', async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    t.sseLive(t.es.last());
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    t.conn.send({ type: 'ping' });
    t.posts[0].resolve(400);
    await flush();
    expect(t.es.last().closed).toBe(false);
    expect(warn).toHaveBeenCalled();
    t.conn.send({ type: 'ping' });
    t.posts[1].resolve(401);
    await flush();
    expect(t.es.last().closed).toBe(true);
    expect(t.onUnauthorized).toHaveBeenCalledWith('rejected');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(t.es.sources).toHaveLength(1);
    expect(t.f.sockets).toHaveLength(3);
  });

  it.each([
    [4401, 'rejected'],
    [4403, 'deactivated'],
  ])('a close event %i ends the stream and the session (%s), no reconnect', async (code, why) => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    s.serverSend({ type: 'close', payload: { code } });
    expect(s.closed).toBe(true);
    expect(t.onUnauthorized).toHaveBeenCalledWith(why);
    expect(t.statuses.at(-1)).toMatch(/^offline/);
    expect(t.messages.some((m) => m.type === 'close')).toBe(false);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(t.es.sources).toHaveLength(1);
    expect(t.f.sockets).toHaveLength(3);
  });

  it.each([1001, 1008, 1013])('a close event %i ends the stream; reconnects after a backoff with a fresh ticket', async (code) => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    const delaysBefore = t.conn.socket.scheduledDelays.length;
    s.serverSend({ type: 'close', payload: { code } });
    expect(s.closed).toBe(true);
    expect(t.onUnauthorized).not.toHaveBeenCalled();
    expect(t.statuses.at(-1)).toMatch(/^reconnecting/);
    // A backoff delay was drawn (full jitter) before the next attempt: nothing opens at once.
    expect(t.conn.socket.scheduledDelays.length).toBe(delaysBefore + 1);
    const delay = t.conn.socket.scheduledDelays.at(-1)!;
    expect(delay).toBeGreaterThan(0);
    await vi.advanceTimersByTimeAsync(delay - 1);
    await flush();
    expect(t.f.sockets).toHaveLength(3);
    await t.waitBackoff();
    expect(t.f.sockets).toHaveLength(4); // the WebSocket is tried once first
    await t.refuseWs();
    expect(t.es.sources).toHaveLength(2);
    expect(t.es.last().url).toMatch(/^\/sse\?ticket=t\d+/);
    expect(t.es.last().url).not.toBe(s.url);
  });

  it("EventSource's own reconnection is never used: an error closes the stream and the policy reconnects", async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    s.fail(); // a browser would now retry the same URL, with the spent ticket
    expect(s.closed).toBe(true);
    expect(t.statuses.at(-1)).toMatch(/^reconnecting/);
  });

  it('an SSE request refused before `connected` is checked like a refused upgrade (401 from /me → sign in again)', async () => {
    let auth: AuthCheck = 'ok';
    const t = setup({ checkAuth: async () => auth });
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    auth = 'unauthorized';
    t.es.last().fail();
    await flush();
    expect(t.es.last().closed).toBe(true);
    expect(t.onUnauthorized).toHaveBeenCalledWith('rejected');
  });

  it('SSE refused as well (a server without it) → back to WebSocket attempts, with the backoff still growing', async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    for (let i = 0; i < 3; i++) {
      await t.settle();
      t.es.last().fail();
      await flush();
      await t.waitBackoff();
    }
    expect(t.es.sources).toHaveLength(3);
    expect(t.f.sockets).toHaveLength(4);
    // One backoff across both transports: the ceiling kept doubling (0.5 × 500·2^n).
    expect(t.conn.socket.scheduledDelays).toEqual([250, 500, 1000, 2000, 4000, 8000]);
  });

  it('heartbeat over SSE: a ping POST every interval; no pong on the stream → reconnect', async () => {
    const t = setup({ pingIntervalMs: 25_000 });
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    await vi.advanceTimersByTimeAsync(25_000);
    expect(t.posts.map((p) => p.body)).toEqual(['{"type":"ping"}']);
    t.posts[0].resolve(202);
    await flush();
    s.serverSend({ type: 'pong' });
    await vi.advanceTimersByTimeAsync(25_000);
    expect(t.posts).toHaveLength(2);
    t.posts[1].resolve(202);
    await vi.advanceTimersByTimeAsync(10_000); // no pong
    expect(s.closed).toBe(true);
    expect(t.statuses.at(-1)).toMatch(/^reconnecting/);
  });

  it('back to WebSocket: while live on SSE a WebSocket is tried now and then and replaces the stream once it says `connected`', async () => {
    const t = setup({ probeEveryMs: 60_000 });
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    expect(t.f.sockets).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(59_000);
    expect(t.f.sockets).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(1_000);
    await t.settle();
    // The probe: a WebSocket beside the stream, with a fresh ticket; the stream stays meanwhile.
    expect(t.f.sockets).toHaveLength(4);
    const probe = t.f.last();
    expect(probe.url).toMatch(/ticket=t\d+/);
    expect(s.closed).toBe(false);
    probe.serverOpen();
    expect(s.closed).toBe(false);
    const before = t.messages.length;
    probe.serverSend(connected());
    // Replaced in the same tick: the stream is closed, the socket's `connected` is passed on.
    expect(s.closed).toBe(true);
    expect(t.statuses.at(-1)).toBe('live/websocket');
    expect(t.conn.transport).toBe('websocket');
    expect(t.messages.slice(before).map((m) => m.type)).toEqual(['connected']);
    probe.serverSend(taskStats(4, 1));
    expect(t.messages.at(-1)).toEqual(taskStats(4, 1));
    // Client messages now go on the socket, not as POSTs.
    expect(t.conn.send({ type: 'viewing', payload: { path: '/tasks' } })).toBe(true);
    expect(probe.sent).toEqual(['{"type":"viewing","payload":{"path":"/tasks"}}']);
    expect(t.posts).toHaveLength(0);
    // And it is a connection like any other: a drop reconnects over WebSocket.
    probe.serverClose(1006);
    await t.waitBackoff();
    expect(t.f.sockets).toHaveLength(5);
    expect(t.es.sources).toHaveLength(1);
  });

  it('a probe that fails is closed, the stream stays, and it is tried again later', async () => {
    const t = setup({ probeEveryMs: 60_000 });
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    await vi.advanceTimersByTimeAsync(60_000);
    await t.settle();
    expect(t.f.sockets).toHaveLength(4);
    t.f.last().fail();
    expect(s.closed).toBe(false);
    expect(t.statuses.at(-1)).toBe('live/sse');
    // A probe that opens but says nothing is given up after its timeout.
    await vi.advanceTimersByTimeAsync(60_000);
    await t.settle();
    expect(t.f.sockets).toHaveLength(5);
    t.f.last().serverOpen();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(t.f.last().closedWith?.code).toBe(1000);
    expect(s.closed).toBe(false);
    expect(t.statuses.at(-1)).toBe('live/sse');
    // The next probe comes a probe interval after the failure.
    await vi.advanceTimersByTimeAsync(59_000);
    await t.settle();
    expect(t.f.sockets).toHaveLength(5);
    await vi.advanceTimersByTimeAsync(1_000);
    await t.settle();
    expect(t.f.sockets).toHaveLength(6);
  });

  it('after a live SSE session ends, the next attempt is a WebSocket, which is kept when it works', async () => {
    const t = setup();
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    s.serverSend({ type: 'close', payload: { code: 1001 } }); // the server restarts
    await t.waitBackoff();
    expect(t.f.sockets).toHaveLength(4);
    t.f.last().serverOpen();
    t.f.last().serverSend(connected());
    expect(t.statuses.at(-1)).toBe('live/websocket');
    expect(t.es.sources).toHaveLength(1);
  });

  it('stop() closes the stream and any probe, and nothing reconnects', async () => {
    const t = setup({ probeEveryMs: 60_000 });
    t.conn.start();
    for (let i = 0; i < 3; i++) await t.refuseWs();
    const s = t.es.last();
    t.sseLive(s);
    await vi.advanceTimersByTimeAsync(60_000);
    await t.settle();
    const probe = t.f.last();
    t.conn.stop();
    expect(s.closed).toBe(true);
    expect(probe.closedWith?.code).toBe(1000);
    await vi.advanceTimersByTimeAsync(600_000);
    expect(t.f.sockets).toHaveLength(4);
    expect(t.es.sources).toHaveLength(1);
    expect(t.statuses.at(-1)).toBe('offline/sse');
  });
});
