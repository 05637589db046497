import { describe, expect, it, vi } from 'vitest';
import { ServerMessageDecoder, type ServerMessage } from '../src/realtime/messages';
import { ReconnectingSocket } from '../src/realtime/ReconnectingSocket';
import { TabCoordinator, type LeaderHandlers } from '../src/realtime/TabCoordinator';
import { FakeChannelHub, FakeLockRegistry, flush, socketFactory } from './fakes';

const task = {
  id: 9,
  type: 'housekeeping',
  department: 'housekeeping',
  description: 'Crib to room 808',
  status: 'in_progress',
  assignee: 'sam',
  createdBy: 'admin',
  createdAt: '2025-01-01T10:00:00Z',
  updatedAt: '2025-01-01T10:01:00Z',
  completedAt: null,
};

/** One valid example of every server message of the contract (sections 5, 6, 8, 9). */
const EVERY_MESSAGE = [
  { type: 'connected', payload: { userId: 1, username: 'admin', role: 'admin' } },
  { type: 'connected', payload: { userId: 1, username: 'admin', role: 'admin', connectionId: 'c-1' } },
  { type: 'stats:tasks', seq: 3, payload: { pending: 1, inProgress: 2, completed: 3, total: 6 } },
  { type: 'stats:approvals', seq: 1, payload: { pending: 1, approved: 0, rejected: 0, executed: 0, total: 1 } },
  { type: 'stats:conversations', payload: { active: 1, escalated: 1, resolved: 0, total: 2 } },
  {
    type: 'stats:departments',
    seq: 2,
    payload: { departments: [{ department: 'kitchen', pending: 1, inProgress: 0, completed: 0, total: 1 }] },
  },
  { type: 'stats:departments', seq: 3, payload: { departments: [], truncated: true } },
  {
    type: 'stats:sla',
    seq: 1,
    payload: {
      overdueTasks: 2,
      oldestOpenTaskCreatedAt: '2025-01-01T09:00:00Z',
      escalatedConversations: 0,
      oldestEscalationAt: null,
    },
  },
  { type: 'subscribed', payload: { topics: ['stats:tasks', 'presence'] } },
  { type: 'error', payload: { code: 'unknown_topic', message: 'unknown topic "x"' } },
  { type: 'pong' },
  { type: 'presence', payload: { online: [{ userId: 1, username: 'admin', connections: 2, viewing: null }] } },
  { type: 'typing', payload: { conversationId: 4, userId: 2, username: 'sam', typing: true } },
  { type: 'task:assigned', payload: task },
  { type: 'close', payload: { code: 4403 } },
];

function decoder() {
  const warnings: string[] = [];
  return { d: new ServerMessageDecoder((w) => warnings.push(w)), warnings };
}

describe('ServerMessageDecoder: the one boundary for server messages', () => {
  it('accepts every message of the contract as it is', () => {
    const { d, warnings } = decoder();
    for (const m of EVERY_MESSAGE) expect(d.parseFrame(JSON.stringify(m))).toEqual(m);
    expect(warnings).toEqual([]);
  });

  it('strips fields it does not know, at every level', () => {
    const { d } = decoder();
    const m = d.decode({
      type: 'stats:tasks',
      seq: 1,
      node: 'b',
      payload: { pending: 1, inProgress: 0, completed: 0, total: 1, overdue: 4 },
    });
    expect(m).toEqual({ type: 'stats:tasks', seq: 1, payload: { pending: 1, inProgress: 0, completed: 0, total: 1 } });
    const t = d.decode({ type: 'task:assigned', payload: { ...task, priority: 'high' } });
    expect(t).toEqual({ type: 'task:assigned', payload: task });
  });

  it('a bad seq is ignored, not the value', () => {
    const { d } = decoder();
    expect(d.decode({ type: 'stats:tasks', seq: 'x', payload: { pending: 1, inProgress: 0, completed: 0, total: 1 } })).toEqual({
      type: 'stats:tasks',
      seq: undefined,
      payload: { pending: 1, inProgress: 0, completed: 0, total: 1 },
    });
  });

  it('drops malformed payloads, logging once per message type', () => {
    const { d, warnings } = decoder();
    const bad: unknown[] = [
      { type: 'stats:tasks', payload: { pending: 'x', inProgress: 0, completed: 0, total: 0 } },
      { type: 'stats:tasks', payload: { pending: 1 } },
      { type: 'stats:tasks', payload: { pending: -1, inProgress: 0, completed: 0, total: 0 } },
      { type: 'stats:tasks', payload: { pending: Number.NaN, inProgress: 0, completed: 0, total: 0 } },
      { type: 'presence', payload: {} },
      { type: 'presence', payload: { online: [{ username: 'sam' }] } },
      { type: 'typing', payload: { conversationId: '4', userId: 2, username: 'sam', typing: true } },
      { type: 'typing', payload: { conversationId: 4, userId: 2, username: 'sam', typing: 'yes' } },
      { type: 'task:assigned', payload: { id: 1 } },
      { type: 'subscribed', payload: { topics: 'stats:tasks' } },
      { type: 'error', payload: { code: 'bad_message' } },
      { type: 'connected', payload: {} },
      { type: 'close', payload: { code: 'bye' } },
    ];
    for (const m of bad) expect(d.decode(m)).toBeNull();
    const types = [...new Set(bad.map((m) => (m as { type: string }).type))];
    expect(warnings).toHaveLength(types.length);
    for (const [i, t] of types.entries()) expect(warnings[i]).toContain(`malformed ${JSON.stringify(t)}`);
    // Once per kind: the same problem again is silent.
    d.decode(bad[0]);
    expect(warnings).toHaveLength(types.length);
  });

  it('drops unknown types, non-objects, non-JSON and binary frames, each logged once', () => {
    const { d, warnings } = decoder();
    expect(d.decode({ type: 'stats:rooms', payload: {} })).toBeNull();
    expect(d.decode({ type: 'stats:rooms', payload: {} })).toBeNull();
    expect(d.decode({ type: 'other' })).toBeNull();
    expect(d.decode({ payload: {} })).toBeNull();
    expect(d.decode([{ type: 'pong' }])).toBeNull();
    expect(d.decode(null)).toBeNull();
    expect(d.parseFrame('{not json')).toBeNull();
    expect(d.parseFrame('{not json either')).toBeNull();
    expect(d.parseFrame(new ArrayBuffer(2))).toBeNull();
    expect(warnings).toHaveLength(5);
    expect(warnings[0]).toContain('unknown type "stats:rooms"');
    expect(warnings[1]).toContain('unknown type "other"');
  });

  it('a flood of distinct problems logs a bounded number of lines', () => {
    const { d, warnings } = decoder();
    for (let i = 0; i < 1000; i++) d.decode({ type: `made-up-${i}` });
    expect(warnings.length).toBeLessThanOrEqual(50);
  });
});

describe('the boundary is where frames enter', () => {
  it('a socket hands on only checked messages (and never pong)', () => {
    const f = socketFactory();
    const got: ServerMessage[] = [];
    const warn = vi.fn();
    const socket = new ReconnectingSocket({
      url: () => 'ws://pulse.test/ws',
      createSocket: f.create,
      onMessage: (m) => got.push(m),
      decoder: new ServerMessageDecoder(warn),
      pingIntervalMs: 0,
    });
    socket.start();
    f.last().serverOpen();
    f.last().serverSend({ type: 'pong' });
    f.last().serverSend({ type: 'stats:tasks', payload: { pending: 'many' } });
    f.last().serverSend({ type: 'unheard-of', payload: {} });
    f.last().serverSend(']');
    f.last().serverSend({ type: 'error', payload: { code: 'bad_message', message: 'what?' } });
    expect(got).toEqual([{ type: 'error', payload: { code: 'bad_message', message: 'what?' } }]);
    expect(warn).toHaveBeenCalledTimes(3);
    socket.stop();
  });

  it('a follower checks what the leader relays (the leader tab may run another build)', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    let handlers: LeaderHandlers | null = null;
    const received: Record<string, ServerMessage[]> = { a: [], b: [] };
    const tabs = ['a', 'b'].map(
      (id) =>
        new TabCoordinator({
          tabId: id,
          locks: locks.forTab(id),
          createChannel: hub.create,
          createConnection: (h) => {
            handlers = h;
            return { stop: () => {} };
          },
          onMessage: (m) => received[id].push(m),
          onStatus: () => {},
          onUnauthorized: () => {},
        }),
    );
    tabs.forEach((t) => t.start());
    await flush();
    expect(tabs[1].role).toBe('follower');
    // An older leader relaying a value this build does not accept, then a good one.
    const channel = hub.create('pulse-ws');
    channel.postMessage({ kind: 'msg', msg: { type: 'stats:tasks', payload: { pending: 'x' } } });
    channel.postMessage({ kind: 'state', status: 'live', messages: [{ type: 'presence', payload: {} }, { type: 'pong' }] });
    await flush();
    expect(received.b).toEqual([{ type: 'pong' }]);
    handlers!.onMessage({ type: 'stats:tasks', seq: 1, payload: { pending: 2, inProgress: 0, completed: 0, total: 2 } });
    await flush();
    expect(received.b.at(-1)).toEqual({ type: 'stats:tasks', seq: 1, payload: { pending: 2, inProgress: 0, completed: 0, total: 2 } });
  });
});
