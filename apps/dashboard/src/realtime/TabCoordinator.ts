import type { ConnectionStatus, ServerMessage } from './types';

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
}

/** Messages on the BroadcastChannel. */
export type RelayMessage =
  | { kind: 'msg'; msg: ServerMessage }
  | { kind: 'status'; status: ConnectionStatus }
  | { kind: 'hello' }
  | { kind: 'state'; status: ConnectionStatus; messages: ServerMessage[] }
  | { kind: 'unauthorized' }
  | { kind: 'reconnect' };

export const LEADER_LOCK_NAME = 'pulse-ws-leader';
export const RELAY_CHANNEL_NAME = 'pulse-ws';

/**
 * One WebSocket per browser: the tab that holds the Web Lock `pulse-ws-leader` opens the
 * socket and relays every message and its connection status over a BroadcastChannel;
 * the other tabs wait for the lock (so one takes over as soon as the leader tab closes,
 * which releases the lock) and apply what the leader relays. A new follower says `hello`
 * and the leader answers with its status and the latest `connected` + stats messages.
 * Without Web Locks or BroadcastChannel every tab connects on its own (`solo`).
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
  private stopped = false;

  constructor(private readonly opts: TabCoordinatorOptions) {}

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
    // Ask a running leader for its status and latest values.
    this.post({ kind: 'hello' });
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
    this.stopped = true;
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

  /** Sends a message over the shared socket (only possible from the leader/solo tab). */
  send(message: unknown): boolean {
    return this.connection?.send?.(message) ?? false;
  }

  private becomeSolo(): void {
    this.setRole('solo');
    this.connection = this.opts.createConnection({
      onMessage: (m) => this.opts.onMessage(m),
      onStatus: (s) => this.emitStatus(s),
      onUnauthorized: () => this.opts.onUnauthorized(),
    });
  }

  /** Runs while this tab holds the lock; resolving the returned promise releases it. */
  private lead(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.abort = null;
    this.setRole('leader');
    this.latestConnected = null;
    this.latestStats.clear();
    const held = new Promise<void>((resolve) => {
      this.releaseLock = resolve;
    });
    this.emitStatus('reconnecting');
    this.connection = this.opts.createConnection({
      onMessage: (m) => {
        if (this.stopped) return;
        this.remember(m);
        this.post({ kind: 'msg', msg: m });
        this.opts.onMessage(m);
      },
      onStatus: (s) => {
        if (this.stopped) return;
        this.emitStatus(s);
      },
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
      if (m.kind === 'hello') {
        const messages: ServerMessage[] = [];
        if (this.latestConnected) messages.push(this.latestConnected);
        messages.push(...this.latestStats.values());
        this.post({ kind: 'state', status: this.status, messages });
      } else if (m.kind === 'reconnect') {
        this.connection?.reconnectNow?.();
      }
      return;
    }
    if (this._role !== 'follower') return;
    switch (m.kind) {
      case 'msg':
        if (m.msg && typeof m.msg.type === 'string') this.opts.onMessage(m.msg);
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
