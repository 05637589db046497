import { describe, expect, it, vi } from 'vitest';
import { TabCoordinator, type LeaderHandlers } from '../src/realtime/TabCoordinator';
import {
  conversationIdFromPath,
  isKnownTopic,
  topicsForPath,
  TopicSubscriptions,
} from '../src/realtime/topics';
import type { ServerMessage } from '../src/realtime/messages';
import type { Timers } from '../src/realtime/types';
import { FakeChannelHub, FakeLockRegistry, flush } from './fakes';

const STATS = ['stats:approvals', 'stats:conversations', 'stats:tasks'];
const connected: ServerMessage = { type: 'connected', payload: { userId: 1, username: 'a', role: 'admin' } };
const subscribed = (topics: string[]): ServerMessage => ({ type: 'subscribed', payload: { topics } });

describe('topics for a page', () => {
  it('layout = three stats + presence; a conversation page adds conversation:{id}', () => {
    expect(topicsForPath('/tasks').sort()).toEqual([...STATS, 'presence'].sort());
    expect(topicsForPath('/conversations').sort()).toEqual([...STATS, 'presence'].sort());
    expect(topicsForPath('/conversations/12').sort()).toEqual([...STATS, 'conversation:12', 'presence'].sort());
    expect(conversationIdFromPath('/conversations/7')).toBe(7);
    expect(conversationIdFromPath('/conversations/07')).toBeNull();
    expect(conversationIdFromPath('/conversations/x')).toBeNull();
  });

  it('only names the server accepts go into a URL', () => {
    expect(isKnownTopic('stats:tasks')).toBe(true);
    expect(isKnownTopic('presence')).toBe(true);
    expect(isKnownTopic('conversation:3')).toBe(true);
    expect(isKnownTopic('conversation:03')).toBe(false);
    expect(isKnownTopic('stats:rooms')).toBe(false);
  });
});

describe('TopicSubscriptions (one connection)', () => {
  function setup() {
    const sent: unknown[] = [];
    const errors: unknown[] = [];
    const subs = new TopicSubscriptions(
      (m) => {
        sent.push(m);
        return true;
      },
      (e) => errors.push(e),
    );
    return { subs, sent, errors };
  }

  it('connects with the wanted topics, then subscribes/unsubscribes only the difference', () => {
    const { subs, sent } = setup();
    subs.setWanted([...STATS, 'presence']);
    expect(subs.urlTopics()).toEqual([...STATS, 'presence'].sort());
    expect(sent).toEqual([]); // nothing before `connected`
    subs.handle(connected);
    expect(sent).toEqual([]); // the URL already had everything
    expect(subs.serverTopics).toEqual([...STATS, 'presence'].sort());

    subs.setWanted([...STATS, 'presence', 'conversation:7']);
    expect(sent).toEqual([{ type: 'subscribe', topics: ['conversation:7'] }]);
    // Same wish again while the request is in flight: nothing more.
    subs.setWanted([...STATS, 'presence', 'conversation:7']);
    expect(sent).toHaveLength(1);
    subs.handle(subscribed([...STATS, 'presence', 'conversation:7']));
    expect(subs.serverTopics).toContain('conversation:7');

    subs.setWanted([...STATS, 'presence', 'conversation:8']);
    expect(sent.slice(1)).toEqual([
      { type: 'subscribe', topics: ['conversation:8'] },
      { type: 'unsubscribe', topics: ['conversation:7'] },
    ]);
  });

  it('a reconnect starts from the URL again (no stale subscribe replay)', () => {
    const { subs, sent } = setup();
    subs.setWanted(['stats:tasks']);
    subs.urlTopics();
    subs.handle(connected);
    subs.setWanted(['stats:tasks', 'conversation:2']);
    expect(sent).toHaveLength(1);
    subs.disconnected();
    subs.setWanted(['stats:tasks', 'conversation:3']);
    expect(sent).toHaveLength(1); // not connected: nothing sent
    expect(subs.urlTopics()).toEqual(['conversation:3', 'stats:tasks']);
    subs.handle(connected);
    expect(sent).toHaveLength(1);
  });

  it('unknown_topic: reported, given up for this connection, the rest still subscribed', () => {
    const { subs, sent, errors } = setup();
    subs.setWanted(['stats:tasks']);
    subs.urlTopics();
    subs.handle(connected);
    subs.setWanted(['stats:tasks', 'stats:rooms', 'presence']);
    expect(sent).toEqual([{ type: 'subscribe', topics: ['presence', 'stats:rooms'] }]);
    subs.handle({ type: 'error', payload: { code: 'unknown_topic', message: 'unknown topic "stats:rooms"' } });
    expect(errors).toEqual([{ code: 'unknown_topic', message: 'unknown topic "stats:rooms"' }]);
    // Nothing changed on the server; the good topic is asked for again, the bad one never.
    expect(sent[1]).toEqual({ type: 'subscribe', topics: ['presence'] });
    subs.handle(subscribed(['presence', 'stats:tasks']));
    subs.setWanted(['stats:tasks', 'stats:rooms', 'presence']);
    expect(sent).toHaveLength(2);
    expect(subs.urlTopics()).not.toContain('stats:rooms');
  });
});

// ------------------------------------------------------------------ coordinator: tabs and topics

interface Tab {
  id: string;
  c: TabCoordinator;
  sent: unknown[];
  urls: string[][];
  handlers: LeaderHandlers | null;
  open: boolean;
}

function manualTimers() {
  let now = 0;
  let seq = 0;
  const pending = new Map<number, { at: number; fn: () => void }>();
  const timers: Timers = {
    setTimeout: (fn, ms) => {
      const id = ++seq;
      pending.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout: (h) => {
      pending.delete(h as number);
    },
  };
  const advance = (ms: number) => {
    const end = now + ms;
    for (;;) {
      const next = [...pending.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!next) break;
      pending.delete(next[0]);
      now = next[1].at;
      next[1].fn();
    }
    now = end;
  };
  return { timers, advance, now: () => now };
}

function makeTab(
  id: string,
  locks: FakeLockRegistry,
  hub: FakeChannelHub,
  topics: string[],
  clock: ReturnType<typeof manualTimers>,
  visible = true,
): Tab {
  const tab: Tab = { id, c: null as unknown as TabCoordinator, sent: [], urls: [], handlers: null, open: false };
  tab.c = new TabCoordinator({
    tabId: id,
    locks: locks.forTab(id),
    createChannel: hub.create,
    initialTopics: topics,
    timers: clock.timers,
    now: clock.now,
    isVisible: () => visible,
    createConnection: (handlers) => {
      tab.handlers = handlers;
      tab.urls.push(handlers.topics());
      return {
        stop: vi.fn(),
        send: (m) => {
          if (!tab.open) return false;
          tab.sent.push(m);
          return true;
        },
      };
    },
    onMessage: () => {},
    onStatus: () => {},
    onUnauthorized: () => {},
  });
  return tab;
}

/** The leader's socket opens and the server says `connected` (it follows the URL's topics). */
function serverConnects(t: Tab) {
  t.open = true;
  t.handlers!.onStatus('live');
  t.handlers!.onMessage(connected);
}

const LAYOUT = [...STATS, 'presence'];

describe('TabCoordinator: topics of several tabs on one socket', () => {
  it('the leader keeps the union of every tab’s topics; a route change subscribes instead of reconnecting', async () => {
    const clock = manualTimers();
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const a = makeTab('a', locks, hub, LAYOUT, clock);
    a.c.start();
    await flush();
    expect(a.c.role).toBe('leader');
    expect(a.urls[0]).toEqual([...LAYOUT].sort());
    serverConnects(a);
    expect(a.sent).toEqual([]);

    const b = makeTab('b', locks, hub, LAYOUT, clock);
    b.c.start();
    await flush();
    // Tab b opens conversation 5: relayed to the leader, subscribed on the one socket.
    b.c.setTopics([...LAYOUT, 'conversation:5']);
    await flush();
    expect(a.sent).toEqual([{ type: 'subscribe', topics: ['conversation:5'] }]);
    a.handlers!.onMessage(subscribed([...LAYOUT, 'conversation:5']));
    // Tab a opens the same conversation: already subscribed, nothing sent.
    a.c.setTopics([...LAYOUT, 'conversation:5']);
    expect(a.sent).toHaveLength(1);
    // b leaves it: a still wants it, so it stays.
    b.c.setTopics(LAYOUT);
    await flush();
    expect(a.sent).toHaveLength(1);
    // a leaves it too: now it is released.
    a.c.setTopics(LAYOUT);
    expect(a.sent.at(-1)).toEqual({ type: 'unsubscribe', topics: ['conversation:5'] });
    expect(a.urls).toHaveLength(1); // never reconnected
  });

  it('a closing tab (bye on pagehide) releases its topics at once', async () => {
    const clock = manualTimers();
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const a = makeTab('a', locks, hub, LAYOUT, clock);
    a.c.start();
    await flush();
    serverConnects(a);
    const b = makeTab('b', locks, hub, [...LAYOUT, 'conversation:9'], clock);
    b.c.start();
    await flush();
    expect(a.sent).toEqual([{ type: 'subscribe', topics: ['conversation:9'] }]);
    a.handlers!.onMessage(subscribed([...LAYOUT, 'conversation:9']));
    b.c.bye();
    await flush();
    expect(a.sent.at(-1)).toEqual({ type: 'unsubscribe', topics: ['conversation:9'] });
    expect(a.c.knownTabs).toEqual([]);
  });

  it('a crashed tab (no bye) expires after the heartbeat timeout; a live one stays', async () => {
    const clock = manualTimers();
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const a = makeTab('a', locks, hub, LAYOUT, clock);
    a.c.start();
    await flush();
    serverConnects(a);
    const b = makeTab('b', locks, hub, [...LAYOUT, 'conversation:1'], clock);
    const c = makeTab('c', locks, hub, [...LAYOUT, 'conversation:2'], clock);
    b.c.start();
    c.c.start();
    await flush();
    expect(a.c.wantedTopics).toEqual(expect.arrayContaining(['conversation:1', 'conversation:2']));
    a.handlers!.onMessage(subscribed([...LAYOUT, 'conversation:1', 'conversation:2']));
    // Tab c crashes: its channel goes silent (no bye), it keeps no timers.
    (c.c as unknown as { stopped: boolean }).stopped = true;
    for (let i = 0; i < 5; i++) {
      clock.advance(10_000);
      await flush();
    }
    expect(a.c.knownTabs).toEqual(['b']);
    expect(a.c.wantedTopics).toContain('conversation:1');
    expect(a.c.wantedTopics).not.toContain('conversation:2');
    expect(a.sent.at(-1)).toEqual({ type: 'unsubscribe', topics: ['conversation:2'] });
  });

  it('a new leader calls the roll and connects with the union of the remaining tabs', async () => {
    const clock = manualTimers();
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const a = makeTab('a', locks, hub, LAYOUT, clock);
    a.c.start();
    await flush();
    serverConnects(a);
    const b = makeTab('b', locks, hub, LAYOUT, clock);
    const c = makeTab('c', locks, hub, [...LAYOUT, 'conversation:4'], clock);
    b.c.start();
    c.c.start();
    await flush();
    locks.crashTab('a');
    await flush(10);
    expect(b.c.role).toBe('leader');
    // c answered the roll call before the socket was up, or its wish is subscribed after `connected`.
    serverConnects(b);
    await flush();
    const have = new Set([...b.urls[0], ...b.sent.flatMap((m) => (m as { topics: string[] }).topics ?? [])]);
    expect(have.has('conversation:4')).toBe(true);
    expect(b.c.wantedTopics).toEqual([...LAYOUT, 'conversation:4'].sort());
  });

  it('followers relay viewing and typing to the leader, which sends them on the socket', async () => {
    const clock = manualTimers();
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const a = makeTab('a', locks, hub, LAYOUT, clock);
    a.c.start();
    await flush();
    serverConnects(a);
    const b = makeTab('b', locks, hub, LAYOUT, clock);
    b.c.start();
    await flush();
    expect(b.c.role).toBe('follower');
    expect(b.c.setViewing('/approvals')).toBe(true);
    expect(b.c.send({ type: 'typing', payload: { conversationId: 3, typing: true } })).toBe(true);
    await flush();
    expect(a.sent).toEqual([
      { type: 'viewing', payload: { path: '/approvals' } },
      { type: 'typing', payload: { conversationId: 3, typing: true } },
    ]);
  });

  it('after a reconnect the leader sends its viewing again, then a visible follower relays its own', async () => {
    const clock = manualTimers();
    const locks = new FakeLockRegistry();
    const hub = new FakeChannelHub();
    const a = makeTab('a', locks, hub, LAYOUT, clock);
    a.c.start();
    await flush();
    a.c.setViewing('/tasks'); // not open yet: goes out after `connected`
    serverConnects(a);
    expect(a.sent).toEqual([{ type: 'viewing', payload: { path: '/tasks' } }]);
    const b = makeTab('b', locks, hub, LAYOUT, clock, true);
    const hidden = makeTab('h', locks, hub, LAYOUT, clock, false);
    b.c.start();
    hidden.c.start();
    await flush();
    b.c.setViewing('/conversations');
    hidden.c.setViewing('/approvals');
    await flush();
    a.sent.length = 0;
    // The connection drops and comes back.
    a.open = false;
    a.handlers!.onStatus('reconnecting');
    serverConnects(a);
    await flush(10);
    expect(a.sent).toEqual([
      { type: 'viewing', payload: { path: '/tasks' } },
      { type: 'viewing', payload: { path: '/conversations' } },
    ]);
  });
});
