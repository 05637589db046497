import { TopicSubscriptions, type TopicError } from './topics';
import { realTimers, type ConnectionStatus, type ServerMessage, type Timers } from './types';

/** The subset of the Web Locks API used here (navigator.locks). */
export interface LockManagerLike {
  request(
    name: string,
    options: { mode?: 'exclusive' | 'shared'; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<unknown> | unknown,
  ): Promise<unknown>;
}

/** The subset of BroadcastChannel used here. */
export interface ChannelLike {
  postMessage(message: unknown): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  close(): void;
}

export type ChannelFactory = (name: string) => ChannelLike;

export type TabRole = 'pending' | 'leader' | 'follower' | 'solo' | 'stopped';

/** What the leader's connection exposes to the coordinator. */
export interface LeaderConnection {
  stop(): void;
  reconnectNow?(): void;
  send?(message: unknown): boolean;
}

export interface LeaderHandlers {
  onMessage(msg: ServerMessage): void;
  onStatus(status: ConnectionStatus): void;
  onUnauthorized(): void;
  /** The topics for the URL of the next connection attempt (union of every tab's topics). */
  topics(): string[];
}

export interface TabCoordinatorOptions {
  /** navigator.locks, or null/undefined when missing. */
  locks?: LockManagerLike | null;
  /** Creates a BroadcastChannel, or null/undefined when missing. */
  createChannel?: ChannelFactory | null;
  lockName?: string;
  channelName?: string;
  /** Opens the one WebSocket (only called in the leader or a solo tab). */
  createConnection(handlers: LeaderHandlers): LeaderConnection;
  /** Every message this tab should apply (its own socket's, or relayed by the leader). */
  onMessage(msg: ServerMessage): void;
  onStatus(status: ConnectionStatus): void;
  onUnauthorized(): void;
  onRoleChange?(role: TabRole): void;
  /** A topic request the server refused (`unknown_topic`); reported in the leader/solo tab. */
  onTopicError?(error: TopicError): void;
  /** This tab's id on the channel (random by default). */
  tabId?: string;
  /** The topics this tab wants from the start (the first connection's URL uses them). */
  initialTopics?: string[];
  /** Whether the page is visible (its `viewing` wins after a reconnect). */
  isVisible?: () => boolean;
  timers?: Timers;
  now?: () => number;
  /** Followers announce themselves (and their topics) this often. */
  tabHeartbeatMs?: number;
  /** The leader forgets a follower (and releases its topics) when not heard of for this long. */
  tabExpiryMs?: number;
}

/** Messages on the BroadcastChannel. */
export type RelayMessage =
  | { kind: 'msg'; msg: ServerMessage }
  | { kind: 'status'; status: ConnectionStatus }
  | { kind: 'hello'; tab?: string; topics?: string[] }
  | { kind: 'state'; status: ConnectionStatus; messages: ServerMessage[] }
  | { kind: 'unauthorized' }
  | { kind: 'reconnect' }
  /** A follower's topics (on change, as a heartbeat, and in answer to `roll-call`). */
  | { kind: 'tab'; tab: string; topics: string[] }
  /** A follower leaves (pagehide, logout): the leader releases its topics at once. */
  | { kind: 'bye'; tab: string }
  /** A follower asks the leader to send a client message (viewing, typing) on the socket. */
  | { kind: 'send'; tab: string; msg: unknown }
  /** A new leader asks every follower to announce itself. */
  | { kind: 'roll-call' };

export const TAB_HEARTBEAT_MS = 10_000;
export const TAB_EXPIRY_MS = 30_000;

function randomId(): string {
  try {
    if (typeof crypto !== 'undefined' && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  } catch {
    /* fall through */
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function sameTopics(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}

function cleanTopics(topics: unknown): string[] {
  if (!Array.isArray(topics)) return [];
  return [...new Set(topics.filter((t): t is string => typeof t === 'string' && t.length > 0))].sort();
}

export const LEADER_LOCK_NAME = 'pulse-ws-leader';
export const RELAY_CHANNEL_NAME = 'pulse-ws';

/**
 * One WebSocket per browser: the tab that holds the Web Lock `pulse-ws-leader` opens the
 * socket and relays every message and its connection status over a BroadcastChannel;
 * the other tabs wait for the lock (so one takes over as soon as the leader tab closes,
 * which releases the lock) and apply what the leader relays. A new follower says `hello`
 * and the leader answers with its status and the latest `connected` + stats + presence messages.
 * Without Web Locks or BroadcastChannel every tab connects on its own (`solo`).
 *
 * Topics: every tab says which topics it wants (`setTopics`); the leader keeps the UNION of
 * its own and every live follower's topics subscribed on the one socket (reference counting
 * by tab: a topic stays while at least one tab wants it). Followers announce themselves with
 * their topics on start, on every change and every `tabHeartbeatMs`; they say `bye` on
 * `pagehide`/stop, and the leader forgets a tab not heard of for `tabExpiryMs` (a crashed tab).
 * A new leader calls the roll so the followers announce themselves again.
 *
 * Client messages (`viewing`, `typing`) from a follower are relayed to the leader, which
 * sends them on the socket. After every new connection (`connected`) the leader sends its
 * tab's `viewing` again and every visible follower relays its own, so presence is right
 * after a reconnect or a change of leader.
 */
export class TabCoordinator {
  private _role: TabRole = 'pending';
  private channel: ChannelLike | null = null;
  private connection: LeaderConnection | null = null;
  private releaseLock: (() => void) | null = null;
  private abort: AbortController | null = null;
  private status: ConnectionStatus = 'reconnecting';
  /** Leader only: latest `connected` and latest value per stats topic, replayed to new followers. */
  private latestConnected: ServerMessage | null = null;
  private latestStats = new Map<string, ServerMessage>();
  private latestPresence: ServerMessage | null = null;
  private stopped = false;
  readonly tabId: string;
  private ownTopics: string[];
  private viewing: string | null = null;
  /** Leader only: the live followers and what they want. */
  private tabs = new Map<string, { topics: string[]; seen: number }>();
  /** Leader/solo only: the socket's topics. */
  private subscriptions: TopicSubscriptions | null = null;
  private heartbeatTimer: unknown = null;
  private readonly timers: Timers;
  private readonly now: () => number;

  constructor(private readonly opts: TabCoordinatorOptions) {
    this.tabId = opts.tabId ?? randomId();
    this.ownTopics = cleanTopics(opts.initialTopics ?? []);
    this.timers = opts.timers ?? realTimers;
    this.now = opts.now ?? Date.now;
  }

  /** Leader only: the topics the socket should follow (own ∪ live followers'), sorted. */
  get wantedTopics(): string[] {
    return this.union();
  }

  /** Leader/solo: the server's list for the connection as last acknowledged; null otherwise. */
  get serverTopics(): string[] | null {
    return this.subscriptions?.serverTopics ?? null;
  }

  /** Leader only: ids of the followers it knows. */
  get knownTabs(): string[] {
    return [...this.tabs.keys()].sort();
  }

  get role(): TabRole {
    return this._role;
  }

  get currentStatus(): ConnectionStatus {
    return this.status;
  }

  start(): void {
    if (this._role !== 'pending' || this.stopped) return;
    const { locks, createChannel } = this.opts;
    let channel: ChannelLike | null = null;
    if (locks && createChannel) {
      try {
        channel = createChannel(this.opts.channelName ?? RELAY_CHANNEL_NAME);
      } catch {
        channel = null;
      }
    }
    if (!locks || !channel) {
      this.becomeSolo();
      return;
    }
    this.channel = channel;
    channel.onmessage = (ev) => this.onChannelMessage(ev.data);
    this.setRole('follower');
    this.emitStatus('reconnecting');
    // Ask a running leader for its status and latest values, and tell it what this tab wants.
    this.post({ kind: 'hello', tab: this.tabId, topics: this.ownTopics });
    this.scheduleHeartbeat();
    this.abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
    let request: Promise<unknown>;
    try {
      request = locks.request(
        this.opts.lockName ?? LEADER_LOCK_NAME,
        this.abort ? { mode: 'exclusive', signal: this.abort.signal } : { mode: 'exclusive' },
        () => this.lead(),
      );
    } catch {
      // The lock manager is unusable (e.g. insecure context quirks): fall back to our own socket.
      this.closeChannel();
      this.becomeSolo();
      return;
    }
    request.catch(() => {
      /* aborted on stop, or the lock manager failed */
    });
  }

  /** Stops this tab's part: closes the socket if leader (1000), releases the lock, leaves the channel. */
  stop(): void {
    if (this.stopped) return;
    if (this._role === 'follower') this.post({ kind: 'bye', tab: this.tabId });
    this.stopped = true;
    this.clearHeartbeat();
    this.subscriptions = null;
    this.connection?.stop();
    this.connection = null;
    this.abort?.abort();
    this.abort = null;
    this.releaseLock?.();
    this.releaseLock = null;
    this.closeChannel();
    this.setRole('stopped');
  }

  /** Skip the backoff wait (leader/solo directly; a follower asks the leader). */
  reconnectNow(): void {
    if (this.connection) this.connection.reconnectNow?.();
    else this.post({ kind: 'reconnect' });
  }

  /**
   * Sends a client message over the shared socket: directly in the leader/solo tab, through
   * the leader from a follower. Returns false when it certainly went nowhere.
   */
  send(message: unknown): boolean {
    if (this.stopped) return false;
    if (this.connection) return this.connection.send?.(message) ?? false;
    if (this._role === 'follower' && this.channel) {
      this.post({ kind: 'send', tab: this.tabId, msg: message });
      return true;
    }
    return false;
  }

  get currentViewing(): string | null {
    return this.viewing;
  }

  /** What this tab shows (presence). Sent now, and again after every new connection. */
  setViewing(path: string): boolean {
    this.viewing = path;
    return this.send({ type: 'viewing', payload: { path } });
  }

  /** The topics this tab wants; the leader keeps the union of all tabs' topics subscribed. */
  setTopics(topics: readonly string[]): void {
    const next = cleanTopics(topics);
    if (sameTopics(next, this.ownTopics)) return;
    this.ownTopics = next;
    if (this.stopped) return;
    if (this.subscriptions) this.subscriptions.setWanted(this.union());
    else if (this._role === 'follower') this.announce();
  }

  /** This tab is going away (pagehide): the leader releases its topics now. */
  bye(): void {
    if (this._role === 'follower') this.post({ kind: 'bye', tab: this.tabId });
  }

  /** This tab is back (pageshow from the back/forward cache): announce again. */
  announce(): void {
    if (this._role === 'follower' && !this.stopped) this.post({ kind: 'tab', tab: this.tabId, topics: this.ownTopics });
  }

  private union(): string[] {
    const all = new Set(this.ownTopics);
    for (const t of this.tabs.values()) t.topics.forEach((x) => all.add(x));
    return [...all].sort();
  }

  private newSubscriptions(): TopicSubscriptions {
    const subs = new TopicSubscriptions(
      (m) => this.connection?.send?.(m) ?? false,
      (e) => this.opts.onTopicError?.(e),
    );
    subs.setWanted(this.union());
    return subs;
  }

  /** Leader/solo: a message from the own socket, before it is applied/relayed. */
  private onSocketMessage(m: ServerMessage): void {
    this.subscriptions?.handle(m);
    if (m.type === 'connected' && this.viewing !== null) {
      this.connection?.send?.({ type: 'viewing', payload: { path: this.viewing } });
    }
  }

  private onSocketStatus(s: ConnectionStatus): void {
    if (s !== 'live') this.subscriptions?.disconnected();
  }

  private scheduleHeartbeat(): void {
    this.clearHeartbeat();
    const every = this.opts.tabHeartbeatMs ?? TAB_HEARTBEAT_MS;
    if (every <= 0) return;
    this.heartbeatTimer = this.timers.setTimeout(() => {
      this.heartbeatTimer = null;
      if (this.stopped) return;
      if (this._role === 'follower') this.announce();
      else if (this._role === 'leader') this.expireTabs();
      this.scheduleHeartbeat();
    }, every);
  }

  private clearHeartbeat(): void {
    if (this.heartbeatTimer !== null) {
      this.timers.clearTimeout(this.heartbeatTimer);
      this.heartbeatTimer = null;
    }
  }

  private expireTabs(): void {
    const limit = this.now() - (this.opts.tabExpiryMs ?? TAB_EXPIRY_MS);
    let changed = false;
    for (const [id, t] of this.tabs) {
      if (t.seen < limit) {
        this.tabs.delete(id);
        changed = true;
      }
    }
    if (changed) this.subscriptions?.setWanted(this.union());
  }

  private noteTab(id: unknown, topics: unknown): void {
    if (typeof id !== 'string' || !id || id === this.tabId) return;
    const next = cleanTopics(topics);
    const prev = this.tabs.get(id);
    this.tabs.set(id, { topics: next, seen: this.now() });
    if (!prev || !sameTopics(prev.topics, next)) this.subscriptions?.setWanted(this.union());
  }

  private becomeSolo(): void {
    this.setRole('solo');
    this.subscriptions = this.newSubscriptions();
    this.connection = this.opts.createConnection({
      onMessage: (m) => {
        if (this.stopped) return;
        this.onSocketMessage(m);
        this.opts.onMessage(m);
      },
      onStatus: (s) => {
        if (this.stopped) return;
        this.onSocketStatus(s);
        this.emitStatus(s);
      },
      onUnauthorized: () => this.opts.onUnauthorized(),
      topics: () => this.subscriptions?.urlTopics() ?? this.ownTopics,
    });
  }

  /** Runs while this tab holds the lock; resolving the returned promise releases it. */
  private lead(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.abort = null;
    this.setRole('leader');
    this.latestConnected = null;
    this.latestStats.clear();
    this.latestPresence = null;
    this.tabs.clear();
    const held = new Promise<void>((resolve) => {
      this.releaseLock = resolve;
    });
    this.emitStatus('reconnecting');
    // The followers' topics are not known yet: they answer the roll call.
    this.post({ kind: 'roll-call' });
    this.scheduleHeartbeat();
    this.subscriptions = this.newSubscriptions();
    this.connection = this.opts.createConnection({
      onMessage: (m) => {
        if (this.stopped) return;
        this.onSocketMessage(m);
        this.remember(m);
        this.post({ kind: 'msg', msg: m });
        this.opts.onMessage(m);
      },
      onStatus: (s) => {
        if (this.stopped) return;
        this.onSocketStatus(s);
        this.emitStatus(s);
      },
      topics: () => this.subscriptions?.urlTopics() ?? this.ownTopics,
      onUnauthorized: () => {
        if (this.stopped) return;
        this.post({ kind: 'unauthorized' });
        this.opts.onUnauthorized();
      },
    });
    return held;
  }

  private remember(m: ServerMessage): void {
    if (m.type === 'connected') {
      this.latestConnected = m;
      this.latestStats.clear();
      this.latestPresence = null;
    } else if (m.type === 'presence') {
      this.latestPresence = m;
    } else if (m.type.startsWith('stats:')) {
      const prev = this.latestStats.get(m.type);
      if (prev && typeof prev.seq === 'number' && typeof m.seq === 'number' && m.seq <= prev.seq) return;
      this.latestStats.set(m.type, m);
    }
  }

  private onChannelMessage(data: unknown): void {
    if (this.stopped || !data || typeof data !== 'object') return;
    const m = data as RelayMessage;
    if (this._role === 'leader') {
      switch (m.kind) {
        case 'hello': {
          if (m.tab !== undefined) this.noteTab(m.tab, m.topics);
          const messages: ServerMessage[] = [];
          if (this.latestConnected) messages.push(this.latestConnected);
          messages.push(...this.latestStats.values());
          if (this.latestPresence) messages.push(this.latestPresence);
          this.post({ kind: 'state', status: this.status, messages });
          break;
        }
        case 'tab':
          this.noteTab(m.tab, m.topics);
          break;
        case 'bye':
          if (this.tabs.delete(m.tab)) this.subscriptions?.setWanted(this.union());
          break;
        case 'send':
          if (typeof m.tab === 'string' && this.tabs.has(m.tab)) this.tabs.get(m.tab)!.seen = this.now();
          if (m.msg && typeof m.msg === 'object') this.connection?.send?.(m.msg);
          break;
        case 'reconnect':
          this.connection?.reconnectNow?.();
          break;
        default:
          break;
      }
      return;
    }
    if (this._role !== 'follower') return;
    switch (m.kind) {
      case 'msg':
        if (m.msg && typeof m.msg.type === 'string') {
          this.opts.onMessage(m.msg);
          if (m.msg.type === 'connected') this.resendViewingIfVisible();
        }
        break;
      case 'roll-call':
        this.announce();
        break;
      case 'status':
        this.emitStatus(m.status);
        break;
      case 'state':
        this.emitStatus(m.status);
        for (const msg of m.messages ?? []) {
          if (msg && typeof msg.type === 'string') this.opts.onMessage(msg);
        }
        break;
      case 'unauthorized':
        this.opts.onUnauthorized();
        break;
      default:
        break;
    }
  }

  /** A follower after a new connection: the visible tab's page is what the user looks at. */
  private resendViewingIfVisible(): void {
    if (this.viewing === null) return;
    const visible = this.opts.isVisible ? this.opts.isVisible() : true;
    if (visible) this.post({ kind: 'send', tab: this.tabId, msg: { type: 'viewing', payload: { path: this.viewing } } });
  }

  private emitStatus(s: ConnectionStatus): void {
    this.status = s;
    if (this._role === 'leader') {
      this.post({ kind: 'status', status: s });
    }
    this.opts.onStatus(s);
  }

  private post(m: RelayMessage): void {
    try {
      this.channel?.postMessage(m);
    } catch {
      /* channel closed */
    }
  }

  private closeChannel(): void {
    if (this.channel) {
      this.channel.onmessage = null;
      try {
        this.channel.close();
      } catch {
        /* ignore */
      }
      this.channel = null;
    }
  }

  private setRole(role: TabRole): void {
    if (this._role === role) return;
    this._role = role;
    this.opts.onRoleChange?.(role);
  }
}
