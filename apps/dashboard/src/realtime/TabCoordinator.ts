/**
 * One live connection per browser (a WebSocket, or its SSE fallback), shared by its tabs
 * (Web Locks + BroadcastChannel).
 *
 * Reason to change: how tabs share the socket. Never depends on React, the query cache or how
 * the socket itself connects (that is `createConnection`'s business).
 */
import {
  isStatsMessage,
  serverMessages,
  type ClientMessage,
  type ConnectedMessage,
  type PresenceMessage,
  type ServerMessage,
  type StatsMessage,
  type StatsMessageType,
} from './messages';
import { TopicSubscriptions, type TopicError } from './topics';
import { realTimers, type ConnectionStatus, type SessionEnd, type Timers, type Transport } from './types';

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
  send?(message: ClientMessage): boolean;
}

export interface LeaderHandlers {
  onMessage(msg: ServerMessage): void;
  /** `transport`: what the connection runs over (WebSocket, or the SSE fallback). */
  onStatus(status: ConnectionStatus, transport?: Transport): void;
  onUnauthorized(why: SessionEnd): void;
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
  /** The status this tab shows, and the transport of the browser's one connection. */
  onStatus(status: ConnectionStatus, transport: Transport): void;
  /** The session ended (in the leader's socket, relayed to every tab). */
  onUnauthorized(why: SessionEnd): void;
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
  | { kind: 'status'; status: ConnectionStatus; transport?: Transport }
  | { kind: 'hello'; tab?: string; topics?: string[] }
  | { kind: 'state'; status: ConnectionStatus; transport?: Transport; messages: ServerMessage[] }
  | { kind: 'unauthorized'; why?: SessionEnd }
  | { kind: 'reconnect' }
  /** A follower's topics (on change, as a heartbeat, and in answer to `roll-call`). */
  | { kind: 'tab'; tab: string; topics: string[] }
  /** A follower leaves (pagehide, logout): the leader releases its topics at once. */
  | { kind: 'bye'; tab: string }
  /** A follower asks the leader to send a client message (viewing, typing) on the socket. */
  | { kind: 'send'; tab: string; msg: ClientMessage }
  /** A new leader asks every follower to announce itself. */
  | { kind: 'roll-call' };

export const TAB_HEARTBEAT_MS = 10_000;
export const TAB_EXPIRY_MS = 30_000;

export const LEADER_LOCK_NAME = 'pulse-ws-leader';
export const RELAY_CHANNEL_NAME = 'pulse-ws';

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

/** A relayed transport (the leader may run another build: anything unknown is WebSocket). */
function relayedTransport(t: unknown): Transport {
  return t === 'sse' ? 'sse' : 'websocket';
}

function cleanTopics(topics: unknown): string[] {
  if (!Array.isArray(topics)) return [];
  return [...new Set(topics.filter((t): t is string => typeof t === 'string' && t.length > 0))].sort();
}

/** Relayed server messages are checked like a frame: the leader tab may run another build. */
function relayedMessages(list: unknown): ServerMessage[] {
  if (!Array.isArray(list)) return [];
  return list.map((m) => serverMessages.decode(m)).filter((m): m is ServerMessage => m !== null);
}

/** What the coordinator shares with its current part (leader, follower or solo). */
interface TabContext {
  readonly opts: TabCoordinatorOptions;
  readonly tabId: string;
  readonly timers: Timers;
  readonly now: () => number;
  /** Set when the tab stops (tests also set it to play a tab whose script no longer runs). */
  readonly stopped: boolean;
  readonly ownTopics: readonly string[];
  readonly viewing: string | null;
  /** Records the status this tab shows and tells the app. */
  setStatus(status: ConnectionStatus, transport?: Transport): void;
  post(message: RelayMessage): void;
}

/** A repeating timer that stops with its owner. */
class Ticker {
  private handle: unknown = null;

  constructor(
    private readonly ctx: TabContext,
    private readonly everyMs: number,
    private readonly tick: () => void,
  ) {
    this.schedule();
  }

  stop(): void {
    if (this.handle !== null) this.ctx.timers.clearTimeout(this.handle);
    this.handle = null;
  }

  private schedule(): void {
    if (this.everyMs <= 0) return;
    this.handle = this.ctx.timers.setTimeout(() => {
      this.handle = null;
      if (this.ctx.stopped) return;
      this.tick();
      this.schedule();
    }, this.everyMs);
  }
}

/** The socket of a leader or solo tab, with the topics it follows and this tab's `viewing`. */
class OwnSocket {
  readonly subscriptions: TopicSubscriptions;
  /** Null only while `createConnection` runs. */
  private connection: LeaderConnection | null = null;

  constructor(
    ctx: TabContext,
    wanted: string[],
    hooks: {
      onMessage(m: ServerMessage): void;
      onStatus(s: ConnectionStatus, t: Transport): void;
      onUnauthorized(why: SessionEnd): void;
    },
  ) {
    this.subscriptions = new TopicSubscriptions(
      (m) => this.send(m),
      (e) => ctx.opts.onTopicError?.(e),
    );
    this.subscriptions.setWanted(wanted);
    this.connection = ctx.opts.createConnection({
      onMessage: (m) => {
        if (ctx.stopped) return;
        this.subscriptions.handle(m);
        if (m.type === 'connected' && ctx.viewing !== null) {
          this.send({ type: 'viewing', payload: { path: ctx.viewing } });
        }
        hooks.onMessage(m);
      },
      onStatus: (s, t) => {
        if (ctx.stopped) return;
        if (s !== 'live') this.subscriptions.disconnected();
        hooks.onStatus(s, t ?? 'websocket');
      },
      onUnauthorized: (why) => {
        if (ctx.stopped) return;
        hooks.onUnauthorized(why);
      },
      topics: () => this.subscriptions.urlTopics(),
    });
  }

  send(message: ClientMessage): boolean {
    return this.connection?.send?.(message) ?? false;
  }

  reconnectNow(): void {
    this.connection?.reconnectNow?.();
  }

  stop(): void {
    this.connection?.stop();
  }
}

/** A tab without Web Locks or BroadcastChannel: its own socket, nothing shared. */
class Solo {
  private readonly socket: OwnSocket;

  constructor(ctx: TabContext) {
    this.socket = new OwnSocket(ctx, [...ctx.ownTopics], {
      onMessage: (m) => ctx.opts.onMessage(m),
      onStatus: (s, t) => ctx.setStatus(s, t),
      onUnauthorized: (why) => ctx.opts.onUnauthorized(why),
    });
  }

  get serverTopics(): string[] | null {
    return this.socket.subscriptions.serverTopics;
  }

  topicsChanged(topics: readonly string[]): void {
    this.socket.subscriptions.setWanted(topics);
  }

  send(message: ClientMessage): boolean {
    return this.socket.send(message);
  }

  reconnectNow(): void {
    this.socket.reconnectNow();
  }

  stop(): void {
    this.socket.stop();
  }
}

/**
 * The tab holding the lock: opens the socket, relays every message and its status to the
 * followers, replays the latest values to a new one, and keeps the union of every live tab's
 * topics subscribed.
 */
class Leader {
  private readonly followers = new Map<string, { topics: string[]; seen: number }>();
  /** Replayed to a new follower: the latest `connected`, value per stats topic and presence. */
  private latestConnected: ConnectedMessage | null = null;
  private readonly latestStats = new Map<StatsMessageType, StatsMessage>();
  private latestPresence: PresenceMessage | null = null;
  private status: ConnectionStatus = 'reconnecting';
  private transport: Transport = 'websocket';
  private readonly expiry: Ticker;
  private readonly socket: OwnSocket;

  constructor(
    private readonly ctx: TabContext,
    private readonly releaseLock: () => void,
  ) {
    this.setStatus('reconnecting');
    // The followers' topics are not known yet: they answer the roll call.
    ctx.post({ kind: 'roll-call' });
    this.expiry = new Ticker(ctx, ctx.opts.tabHeartbeatMs ?? TAB_HEARTBEAT_MS, () => this.expireFollowers());
    this.socket = new OwnSocket(ctx, this.wantedTopics, {
      onMessage: (m) => {
        this.remember(m);
        ctx.post({ kind: 'msg', msg: m });
        ctx.opts.onMessage(m);
      },
      onStatus: (s, t) => this.setStatus(s, t),
      onUnauthorized: (why) => {
        ctx.post({ kind: 'unauthorized', why });
        ctx.opts.onUnauthorized(why);
      },
    });
  }

  /** Own topics ∪ every live follower's, sorted. */
  get wantedTopics(): string[] {
    const all = new Set(this.ctx.ownTopics);
    for (const f of this.followers.values()) f.topics.forEach((t) => all.add(t));
    return [...all].sort();
  }

  get serverTopics(): string[] | null {
    return this.socket.subscriptions.serverTopics;
  }

  get knownTabs(): string[] {
    return [...this.followers.keys()].sort();
  }

  topicsChanged(): void {
    this.socket.subscriptions.setWanted(this.wantedTopics);
  }

  send(message: ClientMessage): boolean {
    return this.socket.send(message);
  }

  reconnectNow(): void {
    this.socket.reconnectNow();
  }

  stop(): void {
    this.expiry.stop();
    this.socket.stop();
    this.releaseLock();
  }

  onRelay(m: RelayMessage): void {
    switch (m.kind) {
      case 'hello': {
        if (m.tab !== undefined) this.noteFollower(m.tab, m.topics);
        const messages: ServerMessage[] = [];
        if (this.latestConnected) messages.push(this.latestConnected);
        messages.push(...this.latestStats.values());
        if (this.latestPresence) messages.push(this.latestPresence);
        this.ctx.post({ kind: 'state', status: this.status, transport: this.transport, messages });
        break;
      }
      case 'tab':
        this.noteFollower(m.tab, m.topics);
        break;
      case 'bye':
        if (this.followers.delete(m.tab)) this.topicsChanged();
        break;
      case 'send': {
        const follower = typeof m.tab === 'string' ? this.followers.get(m.tab) : undefined;
        if (follower) follower.seen = this.ctx.now();
        if (m.msg && typeof m.msg === 'object') this.socket.send(m.msg);
        break;
      }
      case 'reconnect':
        this.socket.reconnectNow();
        break;
      default:
        break;
    }
  }

  private setStatus(s: ConnectionStatus, t: Transport = 'websocket'): void {
    this.status = s;
    this.transport = t;
    this.ctx.post({ kind: 'status', status: s, transport: t });
    this.ctx.setStatus(s, t);
  }

  private remember(m: ServerMessage): void {
    if (m.type === 'connected') {
      this.latestConnected = m;
      this.latestStats.clear();
      this.latestPresence = null;
    } else if (m.type === 'presence') {
      this.latestPresence = m;
    } else if (isStatsMessage(m)) {
      const prev = this.latestStats.get(m.type);
      if (prev?.seq !== undefined && m.seq !== undefined && m.seq <= prev.seq) return;
      this.latestStats.set(m.type, m);
    }
  }

  private noteFollower(id: unknown, topics: unknown): void {
    if (typeof id !== 'string' || !id || id === this.ctx.tabId) return;
    const next = cleanTopics(topics);
    const prev = this.followers.get(id);
    this.followers.set(id, { topics: next, seen: this.ctx.now() });
    if (!prev || !sameTopics(prev.topics, next)) this.topicsChanged();
  }

  /** A follower not heard of for a while crashed (no `bye`): its topics go. */
  private expireFollowers(): void {
    const limit = this.ctx.now() - (this.ctx.opts.tabExpiryMs ?? TAB_EXPIRY_MS);
    let changed = false;
    for (const [id, f] of this.followers) {
      if (f.seen < limit) {
        this.followers.delete(id);
        changed = true;
      }
    }
    if (changed) this.topicsChanged();
  }
}

/**
 * A tab waiting for the lock: applies what the leader relays, announces its topics, and sends
 * its client messages through the leader.
 */
class Follower {
  private readonly heartbeat: Ticker;
  private readonly lockWait: AbortController | null = typeof AbortController !== 'undefined' ? new AbortController() : null;

  constructor(private readonly ctx: TabContext) {
    ctx.setStatus('reconnecting');
    // Ask a running leader for its status and latest values, and tell it what this tab wants.
    ctx.post({ kind: 'hello', tab: ctx.tabId, topics: [...ctx.ownTopics] });
    this.heartbeat = new Ticker(ctx, ctx.opts.tabHeartbeatMs ?? TAB_HEARTBEAT_MS, () => this.announce());
  }

  /** Aborts the wait for the lock when this tab stops first. */
  get lockSignal(): AbortSignal | undefined {
    return this.lockWait?.signal;
  }

  announce(): void {
    this.ctx.post({ kind: 'tab', tab: this.ctx.tabId, topics: [...this.ctx.ownTopics] });
  }

  bye(): void {
    this.ctx.post({ kind: 'bye', tab: this.ctx.tabId });
  }

  send(message: ClientMessage): boolean {
    this.ctx.post({ kind: 'send', tab: this.ctx.tabId, msg: message });
    return true;
  }

  reconnectNow(): void {
    this.ctx.post({ kind: 'reconnect' });
  }

  /** This tab got the lock: it leads from now on (no `bye`: its topics stay wanted). */
  promoted(): void {
    this.heartbeat.stop();
  }

  /** This tab stops: the leader releases its topics, and the place in the lock queue is given up. */
  stop(): void {
    this.bye();
    this.heartbeat.stop();
    this.lockWait?.abort();
  }

  onRelay(m: RelayMessage): void {
    switch (m.kind) {
      case 'msg': {
        const msg = serverMessages.decode(m.msg);
        if (!msg) break;
        this.ctx.opts.onMessage(msg);
        if (msg.type === 'connected') this.resendViewingIfVisible();
        break;
      }
      case 'roll-call':
        this.announce();
        break;
      case 'status':
        this.ctx.setStatus(m.status, relayedTransport(m.transport));
        break;
      case 'state':
        this.ctx.setStatus(m.status, relayedTransport(m.transport));
        for (const msg of relayedMessages(m.messages)) this.ctx.opts.onMessage(msg);
        break;
      case 'unauthorized':
        this.ctx.opts.onUnauthorized(m.why === 'deactivated' ? 'deactivated' : 'rejected');
        break;
      default:
        break;
    }
  }

  /** After a new connection the visible tab's page is what the user looks at. */
  private resendViewingIfVisible(): void {
    const viewing = this.ctx.viewing;
    if (viewing === null) return;
    const visible = this.ctx.opts.isVisible ? this.ctx.opts.isVisible() : true;
    if (visible) this.send({ type: 'viewing', payload: { path: viewing } });
  }
}

/**
 * One connection per browser, whichever its transport: the tab that holds the Web Lock
 * `pulse-ws-leader` opens it and relays every message and its status (with the transport) over a BroadcastChannel;
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
 *
 * The coordinator holds what every role shares (the channel, this tab's topics and view, the
 * status shown); what only a leader, a follower or a solo tab has lives in that part's object
 * (`Leader`, `Follower`, `Solo`), created when the tab takes the role and stopped with it.
 */
export class TabCoordinator {
  readonly tabId: string;
  private readonly ctx: TabContext;
  private stopped = false;
  private ownTopics: string[];
  private viewing: string | null = null;
  private _role: TabRole = 'pending';
  private part: Leader | Follower | Solo | null = null;
  private channel: ChannelLike | null = null;
  private status: ConnectionStatus = 'reconnecting';
  private transport: Transport = 'websocket';

  constructor(private readonly opts: TabCoordinatorOptions) {
    this.tabId = opts.tabId ?? randomId();
    this.ownTopics = cleanTopics(opts.initialTopics ?? []);
    // The parts see the coordinator's shared state live, through this view.
    const self = this;
    this.ctx = {
      opts,
      tabId: this.tabId,
      timers: opts.timers ?? realTimers,
      now: opts.now ?? Date.now,
      get stopped() {
        return self.stopped;
      },
      get ownTopics() {
        return self.ownTopics;
      },
      get viewing() {
        return self.viewing;
      },
      setStatus: (s, t) => this.setStatus(s, t),
      post: (m) => this.post(m),
    };
  }

  /** The topics the socket should follow: in the leader own ∪ live followers', else this tab's (sorted). */
  get wantedTopics(): string[] {
    return this.part instanceof Leader ? this.part.wantedTopics : [...this.ownTopics];
  }

  /** Leader/solo: the server's list for the connection as last acknowledged; null otherwise. */
  get serverTopics(): string[] | null {
    return this.part instanceof Leader || this.part instanceof Solo ? this.part.serverTopics : null;
  }

  /** Leader only: ids of the followers it knows. */
  get knownTabs(): string[] {
    return this.part instanceof Leader ? this.part.knownTabs : [];
  }

  get role(): TabRole {
    return this._role;
  }

  get currentStatus(): ConnectionStatus {
    return this.status;
  }

  /** What the browser's one connection runs over (as the leader reports it). */
  get currentTransport(): Transport {
    return this.transport;
  }

  get currentViewing(): string | null {
    return this.viewing;
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
    channel.onmessage = (ev) => this.onRelay(ev.data);
    this.setRole('follower');
    const follower = new Follower(this.ctx);
    this.part = follower;
    const signal = follower.lockSignal;
    let request: Promise<unknown>;
    try {
      request = locks.request(
        this.opts.lockName ?? LEADER_LOCK_NAME,
        signal ? { mode: 'exclusive', signal } : { mode: 'exclusive' },
        () => this.lead(follower),
      );
    } catch {
      // The lock manager is unusable (e.g. insecure context quirks): fall back to our own socket.
      follower.promoted();
      this.part = null;
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
    const part = this.part;
    this.part = null;
    // A follower's `bye` goes out before the tab counts as stopped.
    if (part instanceof Follower) part.stop();
    this.stopped = true;
    if (part && !(part instanceof Follower)) part.stop();
    this.closeChannel();
    this.setRole('stopped');
  }

  /** Skip the backoff wait (leader/solo directly; a follower asks the leader). */
  reconnectNow(): void {
    this.part?.reconnectNow();
  }

  /**
   * Sends a client message over the shared socket: directly in the leader/solo tab, through
   * the leader from a follower. Returns false when it certainly went nowhere.
   */
  send(message: ClientMessage): boolean {
    if (this.stopped || !this.part) return false;
    return this.part.send(message);
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
    if (this.part instanceof Follower) this.part.announce();
    else if (this.part instanceof Leader) this.part.topicsChanged();
    else if (this.part instanceof Solo) this.part.topicsChanged(next);
  }

  /** This tab is going away (pagehide): the leader releases its topics now. */
  bye(): void {
    if (this.part instanceof Follower) this.part.bye();
  }

  /** This tab is back (pageshow from the back/forward cache): announce again. */
  announce(): void {
    if (this.part instanceof Follower && !this.stopped) this.part.announce();
  }

  // ---------------------------------------------------------------- shared by the parts

  private setStatus(s: ConnectionStatus, t?: Transport): void {
    this.status = s;
    if (t) this.transport = t;
    this.opts.onStatus(s, this.transport);
  }

  private post(m: RelayMessage): void {
    try {
      this.channel?.postMessage(m);
    } catch {
      /* channel closed */
    }
  }

  // ---------------------------------------------------------------- roles

  private becomeSolo(): void {
    this.setRole('solo');
    this.part = new Solo(this.ctx);
  }

  /** Runs while this tab holds the lock; resolving the returned promise releases it. */
  private lead(follower: Follower): Promise<void> {
    if (this.stopped) return Promise.resolve();
    follower.promoted();
    return new Promise<void>((release) => {
      this.setRole('leader');
      this.part = new Leader(this.ctx, release);
    });
  }

  private onRelay(data: unknown): void {
    if (this.stopped || !data || typeof data !== 'object') return;
    const m = data as RelayMessage;
    if (this.part instanceof Leader || this.part instanceof Follower) this.part.onRelay(m);
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
