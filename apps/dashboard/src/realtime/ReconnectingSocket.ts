import { backoffDelay, BACKOFF_BASE_MS, BACKOFF_CAP_MS } from './backoff';
import {
  parseServerMessage,
  realTimers,
  type AuthCheck,
  type ConnectionStatus,
  type ServerMessage,
  type Timers,
  type WebSocketFactory,
  type WebSocketLike,
} from './types';

/**
 * Internal states of the connection state machine.
 * - idle: never started
 * - connecting: a socket exists, not open yet
 * - open: the socket is open
 * - checking: closed before open; asking GET /api/v1/me whether the token is still good
 * - backoff: waiting before the next attempt
 * - stopped: closed on purpose (logout/unmount) or by a server close 1000: no reconnect
 * - unauthorized: token rejected (close 4401, or 401 from /me): no reconnect
 */
export type SocketState = 'idle' | 'connecting' | 'open' | 'checking' | 'backoff' | 'stopped' | 'unauthorized';

export function statusOf(state: SocketState): ConnectionStatus {
  switch (state) {
    case 'open':
      return 'live';
    case 'connecting':
    case 'checking':
    case 'backoff':
      return 'reconnecting';
    default:
      return 'offline';
  }
}

/** Close codes after which the client reconnects with backoff (any other non-special code does too). */
export const RECONNECT_CODES = [1001, 1006, 1012, 1013] as const;
export const CLOSE_NORMAL = 1000;
export const CLOSE_TOKEN_EXPIRED = 4401;
/** Code used locally when the heartbeat finds the connection dead. */
export const CLOSE_HEARTBEAT_TIMEOUT = 4000;

export interface ReconnectingSocketOptions {
  /** Computes the URL for each attempt (so a refreshed token is picked up). */
  url: () => string;
  createSocket: WebSocketFactory;
  onMessage: (msg: ServerMessage) => void;
  onStatus?: (status: ConnectionStatus, state: SocketState) => void;
  /** Token rejected: the app must go back to the login page. Called once; no retry follows. */
  onUnauthorized?: () => void;
  /** Called after a close that happened before `open` (a refused upgrade shows as 1006). */
  checkAuth?: () => Promise<AuthCheck>;
  timers?: Timers;
  random?: () => number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** After the connection has been open this long, the attempt counter resets. */
  healthyAfterMs?: number;
  /** Application-level `{"type":"ping"}` interval; 0 disables the heartbeat. */
  pingIntervalMs?: number;
  /** No message at all within this time after a ping → the connection is considered dead. */
  pongTimeoutMs?: number;
}

export class ReconnectingSocket {
  private readonly opts: Required<
    Omit<ReconnectingSocketOptions, 'onStatus' | 'onUnauthorized' | 'checkAuth'>
  > &
    Pick<ReconnectingSocketOptions, 'onStatus' | 'onUnauthorized' | 'checkAuth'>;
  private ws: WebSocketLike | null = null;
  private opened = false;
  private _state: SocketState = 'idle';
  private _attempt = 0;
  private reconnectTimer: unknown = null;
  private healthyTimer: unknown = null;
  private pingTimer: unknown = null;
  private pongTimer: unknown = null;
  /** Delays chosen for the scheduled reconnects, newest last (kept short; useful for tests and debugging). */
  readonly scheduledDelays: number[] = [];

  constructor(options: ReconnectingSocketOptions) {
    this.opts = {
      timers: realTimers,
      random: Math.random,
      baseDelayMs: BACKOFF_BASE_MS,
      maxDelayMs: BACKOFF_CAP_MS,
      healthyAfterMs: 10_000,
      pingIntervalMs: 25_000,
      pongTimeoutMs: 10_000,
      ...options,
    };
  }

  get state(): SocketState {
    return this._state;
  }

  get status(): ConnectionStatus {
    return statusOf(this._state);
  }

  /** Number of consecutive failed attempts (drives the backoff ceiling). */
  get attempt(): number {
    return this._attempt;
  }

  start(): void {
    if (this._state !== 'idle' && this._state !== 'stopped') return;
    this._attempt = 0;
    this.connect();
  }

  /** Closes with 1000 and never reconnects (logout, unmount, tab losing its role). */
  stop(): void {
    if (this._state === 'stopped' || this._state === 'unauthorized') {
      this.clearAllTimers();
      return;
    }
    this.clearAllTimers();
    const ws = this.ws;
    this.ws = null;
    this.setState('stopped');
    if (ws) {
      try {
        ws.close(CLOSE_NORMAL, 'client closing');
      } catch {
        /* ignore */
      }
    }
  }

  /** Skips the remaining backoff (e.g. the browser came back online, or the user pressed retry). */
  reconnectNow(): void {
    if (this._state === 'backoff' || this._state === 'stopped' || this._state === 'idle') {
      this.clearTimer('reconnectTimer');
      this._attempt = 0;
      this.connect();
    }
  }

  /** Sends a JSON message if the socket is open. Returns whether it was sent. */
  send(message: unknown): boolean {
    const ws = this.ws;
    if (!ws || this._state !== 'open') return false;
    try {
      ws.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  private setState(state: SocketState): void {
    if (state === this._state) return;
    this._state = state;
    // Every state change is reported; listeners de-duplicate on status if they wish.
    this.opts.onStatus?.(statusOf(state), state);
  }

  private connect(): void {
    this.clearAllTimers();
    this.setState('connecting');
    this.opened = false;
    let socket: WebSocketLike;
    try {
      socket = this.opts.createSocket(this.opts.url());
    } catch {
      // Could not even create the socket: same as a failure before open.
      this.ws = null;
      this.handleClose(1006, false);
      return;
    }
    this.ws = socket;
    socket.onopen = () => {
      if (this.ws !== socket) return;
      this.opened = true;
      this.setState('open');
      this.healthyTimer = this.opts.timers.setTimeout(() => {
        this.healthyTimer = null;
        this._attempt = 0;
      }, this.opts.healthyAfterMs);
      this.schedulePing();
    };
    socket.onmessage = (ev) => {
      if (this.ws !== socket) return;
      // Any traffic proves the connection is alive.
      this.clearTimer('pongTimer');
      const msg = parseServerMessage(ev.data);
      if (!msg) return;
      if (msg.type === 'pong') return;
      this.opts.onMessage(msg);
    };
    socket.onerror = () => {
      /* a close event always follows */
    };
    socket.onclose = (ev) => {
      if (this.ws !== socket) return;
      this.ws = null;
      this.handleClose(typeof ev?.code === 'number' ? ev.code : 1006, this.opened);
    };
  }

  private handleClose(code: number, wasOpen: boolean): void {
    this.clearAllTimers();
    if (this._state === 'stopped' || this._state === 'unauthorized') return;
    if (code === CLOSE_TOKEN_EXPIRED) {
      this.becomeUnauthorized();
      return;
    }
    if (code === CLOSE_NORMAL) {
      this.setState('stopped');
      return;
    }
    if (!wasOpen && this.opts.checkAuth) {
      // The browser reports a refused upgrade (401) as 1006 before open: ask the API.
      this.setState('checking');
      const check = this.opts.checkAuth;
      let result: Promise<AuthCheck>;
      try {
        result = check();
      } catch {
        result = Promise.resolve<AuthCheck>('unknown');
      }
      result.then(
        (r) => {
          if (this._state !== 'checking') return;
          if (r === 'unauthorized') this.becomeUnauthorized();
          else this.scheduleReconnect();
        },
        () => {
          if (this._state === 'checking') this.scheduleReconnect();
        },
      );
      return;
    }
    this.scheduleReconnect();
  }

  private becomeUnauthorized(): void {
    this.clearAllTimers();
    this.setState('unauthorized');
    this.opts.onUnauthorized?.();
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this._attempt, this.opts.random, this.opts.baseDelayMs, this.opts.maxDelayMs);
    this._attempt += 1;
    this.scheduledDelays.push(delay);
    if (this.scheduledDelays.length > 50) this.scheduledDelays.shift();
    this.setState('backoff');
    this.reconnectTimer = this.opts.timers.setTimeout(() => {
      this.reconnectTimer = null;
      if (this._state === 'backoff') this.connect();
    }, delay);
  }

  private schedulePing(): void {
    if (this.opts.pingIntervalMs <= 0) return;
    this.pingTimer = this.opts.timers.setTimeout(() => {
      this.pingTimer = null;
      const socket = this.ws;
      if (!socket || this._state !== 'open') return;
      try {
        socket.send(JSON.stringify({ type: 'ping' }));
      } catch {
        /* the close event will tell */
      }
      this.clearTimer('pongTimer');
      this.pongTimer = this.opts.timers.setTimeout(() => {
        this.pongTimer = null;
        if (this.ws !== socket) return;
        // Dead connection (e.g. half-open TCP): drop it and reconnect without waiting for the close handshake.
        this.ws = null;
        try {
          socket.close(CLOSE_HEARTBEAT_TIMEOUT, 'heartbeat timeout');
        } catch {
          /* ignore */
        }
        this.handleClose(1006, true);
      }, this.opts.pongTimeoutMs);
      this.schedulePing();
    }, this.opts.pingIntervalMs);
  }

  private clearTimer(name: 'reconnectTimer' | 'healthyTimer' | 'pingTimer' | 'pongTimer'): void {
    const h = this[name];
    if (h !== null) {
      this.opts.timers.clearTimeout(h);
      this[name] = null;
    }
  }

  private clearAllTimers(): void {
    this.clearTimer('reconnectTimer');
    this.clearTimer('healthyTimer');
    this.clearTimer('pingTimer');
    this.clearTimer('pongTimer');
  }
}
