import { describe, expect, it, vi } from 'vitest';
import { TabCoordinator, type LeaderHandlers, type TabRole } from '../src/realtime/TabCoordinator';
import type { ServerMessage } from '../src/realtime/messages';
import type { ConnectionStatus, SessionEnd } from '../src/realtime/types';
import { FakeChannelHub, FakeLockRegistry, flush } from './fakes';

interface Tab {
  id: string;
  coordinator: TabCoordinator;
  messages: ServerMessage[];
  statuses: ConnectionStatus[];
  roles: TabRole[];
  /** Handlers of this tab's own connection, if it opened one. */
  connection: { handlers: LeaderHandlers; stop: ReturnType<typeof vi.fn<() => void>> } | null;
  connections: number;
  unauthorized: ReturnType<typeof vi.fn<(why: SessionEnd) => void>>;
}

function makeTab(id: string, locks: FakeLockRegistry | null, hub: FakeChannelHub | null): Tab {
  const tab: Tab = {
    id,
    messages: [],
    statuses: [],
    roles: [],
    connection: null,
    connections: 0,
    unauthorized: vi.fn<(why: SessionEnd) => void>(),
    coordinator: null as unknown as TabCoordinator,
  };
  tab.coordinator = new TabCoordinator({
    locks: locks ? locks.forTab(id) : null,
    createChannel: hub ? hub.create : null,
    createConnection: (handlers) => {
      tab.connections++;
      const stop = vi.fn<() => void>();
      tab.connection = { handlers, stop };
      return { stop };
    },
    onMessage: (m) => tab.messages.push(m),
    onStatus: (s) => tab.statuses.push(s),
    onUnauthorized: tab.unauthorized,
    onRoleChange: (r) => tab.roles.push(r),
  });
  return tab;
}

const statsMsg = (pending: number, seq: number): ServerMessage => ({
  type: 'stats:tasks',
  seq,
  payload: { pending, inProgress: 0, completed: 0, total: pending },
});
const connected: ServerMessage = { type: 'connected', payload: { userId: 1, username: 'a', role: 'admin' } };

describe('TabCoordinator', () => {
  it('one leader connects; followers do not', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const tabs = ['a', 'b', 'c'].map((id) => makeTab(id, locks, hub));
    tabs.forEach((t) => t.coordinator.start());
    await flush();
    expect(tabs.map((t) => t.coordinator.role)).toEqual(['leader', 'follower', 'follower']);
    expect(tabs.map((t) => t.connections)).toEqual([1, 0, 0]);
    expect(locks.holder('pulse-ws-leader')).toBe('a');
  });

  it('followers receive relayed messages and the leader status', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const [a, b, c] = ['a', 'b', 'c'].map((id) => makeTab(id, locks, hub));
    [a, b, c].forEach((t) => t.coordinator.start());
    await flush();
    const h = a.connection!.handlers;
    h.onStatus('live');
    h.onMessage(connected);
    h.onMessage(statsMsg(3, 1));
    await flush();
    for (const t of [a, b, c]) {
      expect(t.messages).toEqual([connected, statsMsg(3, 1)]);
      expect(t.statuses.at(-1)).toBe('live');
    }
    h.onStatus('reconnecting');
    await flush();
    expect(b.statuses.at(-1)).toBe('reconnecting');
    expect(c.statuses.at(-1)).toBe('reconnecting');
  });

  it('a new follower asks for and gets the latest values and status', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const a = makeTab('a', locks, hub);
    a.coordinator.start();
    await flush();
    const h = a.connection!.handlers;
    h.onStatus('live');
    h.onMessage(connected);
    h.onMessage(statsMsg(1, 1));
    h.onMessage(statsMsg(2, 2));
    h.onMessage({ type: 'stats:conversations', seq: 1, payload: { active: 1, escalated: 1, resolved: 0, total: 2 } });
    await flush();
    const late = makeTab('late', locks, hub);
    late.coordinator.start();
    await flush(10);
    expect(late.coordinator.role).toBe('follower');
    expect(late.statuses.at(-1)).toBe('live');
    expect(late.messages.map((m) => [m.type, 'seq' in m ? m.seq : undefined])).toEqual([
      ['connected', undefined],
      ['stats:tasks', 2],
      ['stats:conversations', 1],
    ]);
    expect(late.connections).toBe(0);
  });

  it('leader tab gone → a follower takes the lock and connects', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const [a, b, c] = ['a', 'b', 'c'].map((id) => makeTab(id, locks, hub));
    [a, b, c].forEach((t) => t.coordinator.start());
    await flush();
    expect(a.coordinator.role).toBe('leader');
    // The leader tab closes (the browser releases its lock; its JS never runs again).
    locks.crashTab('a');
    await flush();
    expect(b.coordinator.role).toBe('leader');
    expect(b.connections).toBe(1);
    expect(c.coordinator.role).toBe('follower');
    expect(c.connections).toBe(0);
    // The new leader relays to the remaining follower.
    b.connection!.handlers.onMessage(statsMsg(7, 1));
    await flush();
    expect(c.messages.at(-1)).toEqual(statsMsg(7, 1));
    expect(b.messages.at(-1)).toEqual(statsMsg(7, 1));
  });

  it('stop() of the leader stops its socket and releases the lock to the next tab', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const [a, b] = ['a', 'b'].map((id) => makeTab(id, locks, hub));
    a.coordinator.start();
    b.coordinator.start();
    await flush();
    const conn = a.connection!;
    a.coordinator.stop();
    await flush();
    expect(conn.stop).toHaveBeenCalledTimes(1);
    expect(b.coordinator.role).toBe('leader');
    expect(b.connections).toBe(1);
  });

  it('a stopped follower gives up its place in the lock queue', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const [a, b, c] = ['a', 'b', 'c'].map((id) => makeTab(id, locks, hub));
    [a, b, c].forEach((t) => t.coordinator.start());
    await flush();
    b.coordinator.stop();
    locks.crashTab('a');
    await flush();
    expect(b.connections).toBe(0);
    expect(c.coordinator.role).toBe('leader');
    expect(c.connections).toBe(1);
  });

  it('without Web Locks or BroadcastChannel each tab connects on its own', async () => {
    const hub = new FakeChannelHub();
    const noLocks = ['a', 'b'].map((id) => makeTab(id, null, hub));
    const locks = new FakeLockRegistry();
    const noChannel = ['c', 'd'].map((id) => makeTab(id, locks, null));
    [...noLocks, ...noChannel].forEach((t) => t.coordinator.start());
    await flush();
    for (const t of [...noLocks, ...noChannel]) {
      expect(t.coordinator.role).toBe('solo');
      expect(t.connections).toBe(1);
    }
    // Solo tabs apply their own messages.
    noLocks[0].connection!.handlers.onMessage(statsMsg(1, 1));
    expect(noLocks[0].messages).toEqual([statsMsg(1, 1)]);
    expect(noLocks[1].messages).toEqual([]);
  });

  it('unauthorized in the leader is relayed so every tab logs out', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const [a, b] = ['a', 'b'].map((id) => makeTab(id, locks, hub));
    a.coordinator.start();
    b.coordinator.start();
    await flush();
    a.connection!.handlers.onUnauthorized('deactivated');
    await flush();
    expect(a.unauthorized).toHaveBeenCalledTimes(1);
    expect(b.unauthorized).toHaveBeenCalledTimes(1);
    // Every tab says why: a deactivated account is not an expired session.
    expect(a.unauthorized).toHaveBeenCalledWith('deactivated');
    expect(b.unauthorized).toHaveBeenCalledWith('deactivated');
  });

  it('a stopped tab ignores late relayed messages', async () => {
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const [a, b] = ['a', 'b'].map((id) => makeTab(id, locks, hub));
    a.coordinator.start();
    b.coordinator.start();
    await flush();
    b.coordinator.stop();
    a.connection!.handlers.onMessage(statsMsg(1, 1));
    await flush();
    expect(b.messages).toEqual([]);
  });
});
