import { backoffDelay, BACKOFF_BASE_MS, BACKOFF_CAP_MS } from './backoff';
import { serverMessages, type ClientMessage, type ServerMessage, type ServerMessageDecoder } from './messages';
import {
  isUnauthorizedError,
  realTimers,
  type AuthCheck,
  type ConnectionStatus,
  type SessionEnd,
  type Timers,
  type WebSocketFactory,
  type WebSocketLike,
} from './types';

/**
 * One live connection that keeps itself up: attempts, backoff, heartbeat, close codes, token
 * checks. The transport is the factory's business (a WebSocket, or `EventSourceSocket` over
 * Server-Sent Events): both follow this one policy.
 *
 * Reason to change: the reconnect policy. Never depends on React, the query cache, the tabs
 * or which transport is chosen.
 */

/**
 * Internal states of the connection state machine.
 * - idle: never started
 * - connecting: getting the URL of this attempt (e.g. fetching a WebSocket ticket), or a socket
 *   exists and is not open yet
 * - open: the socket is open (with `awaitConnected`: and the server said `connected`)
 * - checking: closed before open; asking GET /api/v1/me whether the token is still good
 * - backoff: waiting before the next attempt
 * - stopped: closed on purpose (logout/unmount) or by a server close 1000: no reconnect
 * - unauthorized: token rejected (close 4401, or 401 from /me) or account deactivated (close 4403): no reconnect
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
/** The token expired, or a role or password change retired it: sign in again. */
export const CLOSE_TOKEN_EXPIRED = 4401;
/** The account was deactivated: no reconnect, and signing in again will not help. */
export const CLOSE_DEACTIVATED = 4403;
/** Code used locally when the heartbeat finds the connection dead. */
export const CLOSE_HEARTBEAT_TIMEOUT = 4000;

export interface ReconnectingSocketOptions {
  /**
   * Computes the URL for each attempt; called once per attempt, never reused. May be async
   * (the dashboard fetches a single-use ticket first). A rejection with an `UnauthorizedError`
   * (ticket endpoint said 401) → unauthorized, no retry; any other rejection (network error,
   * 5xx, timeout) counts as a failed attempt → reconnect with backoff. `signal` is aborted when
   * the attempt is abandoned (stop, timeout).
   */
  url: (signal?: AbortSignal) => string | Promise<string>;
  createSocket: WebSocketFactory;
  /** Every checked message but `pong` (frames that are not protocol messages never get here). */
  onMessage: (msg: ServerMessage) => void;
  /** Where frames are checked (the app's one decoder by default). */
  decoder?: ServerMessageDecoder;
  onStatus?: (status: ConnectionStatus, state: SocketState) => void;
  /** The session ended (`why`): the app must go back to the login page. Called once; no retry follows. */
  onUnauthorized?: (why: SessionEnd) => void;
  /** Called after a close that happened before `open` (a refused upgrade shows as 1006). */
  checkAuth?: () => Promise<AuthCheck>;
  timers?: Timers;
  random?: () => number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** After the connection has been open this long, the attempt counter resets. */
  healthyAfterMs?: number;
  /** An async `url()` that has not settled after this long counts as a failed attempt. */
  urlTimeoutMs?: number;
  /** Application-level `{"type":"ping"}` interval; 0 disables the heartbeat. */
  pingIntervalMs?: number;
  /** No message at all within this time after a ping → the connection is considered dead. */
  pongTimeoutMs?: number;
  /**
   * The connection counts as open (live, heartbeat, healthy timer) only once the server's
   * `connected` message arrived, not when the transport opened: a socket (or stream) that opens
   * but never says `connected` — a proxy that accepts the upgrade and passes nothing — is a
   * failure before open, like a refused upgrade (the token is checked, `onFailedWhileApiAnswers`
   * may follow). Frames before `connected` are still passed on.
   */
  awaitConnected?: boolean;
  /**
   * With `awaitConnected`: a socket without `connected` this long after it was created is dropped
   * (a failure before open) — whether it opened or hangs in its handshake (an EventSource behind a
   * proxy that holds the response back never says anything).
   */
  connectedTimeoutMs?: number;
  /**
   * A connection failed before open while the HTTP API answered (the token check said `ok`):
   * this transport does not get through, the server itself is fine. The transport may be
   * switched from here (the next attempt's `url()` and `createSocket` decide which one).
   */
  onFailedWhileApiAnswers?: () => void;
}

export class ReconnectingSocket {
  private readonly opts: Required<
    Omit<ReconnectingSocketOptions, 'onStatus' | 'onUnauthorized' | 'checkAuth' | 'onFailedWhileApiAnswers'>
  > &
    Pick<ReconnectingSocketOptions, 'onStatus' | 'onUnauthorized' | 'checkAuth' | 'onFailedWhileApiAnswers'>;
  private ws: WebSocketLike | null = null;
  /** The connection is open (with `awaitConnected`: the server said `connected`). */
  private opened = false;
  private _state: SocketState = 'idle';
  private _attempt = 0;
  private reconnectTimer: unknown = null;
  private healthyTimer: unknown = null;
  private pingTimer: unknown = null;
  private pongTimer: unknown = null;
  private urlTimer: unknown = null;
  private connectedTimer: unknown = null;
  /** Bumped by every attempt and by stop(): a late `url()` result of an older attempt is dropped. */
  private attemptId = 0;
  private urlAbort: AbortController | null = null;
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
      urlTimeoutMs: 15_000,
      awaitConnected: false,
      connectedTimeoutMs: 15_000,
      decoder: serverMessages,
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
    this.attemptId += 1;
    this.abortPendingUrl();
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
  send(message: ClientMessage): boolean {
    const ws = this.ws;
    if (!ws || this._state !== 'open') return false;
    try {
      ws.send(JSON.stringify(message));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Replaces the current connection with `socket`, already open on the server's side (a probe
   * that got through), and plays `frames` — what it received so far, `connected` first — as if
   * they had just arrived. The old connection is closed with 1000 at once, so the two overlap
   * only for the time of this call. Nothing happens (the socket is closed) once stopped.
   */
  adopt(socket: WebSocketLike, frames: readonly unknown[]): void {
    if (this._state === 'stopped' || this._state === 'unauthorized' || this._state === 'idle') {
      try {
        socket.close(CLOSE_NORMAL, 'not needed');
      } catch {
        /* ignore */
      }
      return;
    }
    this.attemptId += 1; // a pending url() of an attempt in progress is of no use any more
    this.abortPendingUrl();
    this.clearAllTimers();
    const old = this.ws;
    this.ws = null;
    if (old) {
      try {
        old.close(CLOSE_NORMAL, 'switching transport');
      } catch {
        /* ignore */
      }
    }
    this.opened = false;
    this.attach(socket);
    this.socketOpened();
    for (const data of frames) {
      if (this.ws !== socket) break; // a frame closed it (e.g. a close message)
      this.frame(socket, data);
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
    this.abortPendingUrl();
    this.ws = null;
    const id = ++this.attemptId;
    this.setState('connecting');
    this.opened = false;
    const abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
    this.urlAbort = abort;
    let url: string | Promise<string>;
    try {
      url = this.opts.url(abort?.signal);
    } catch (err) {
      this.urlAbort = null;
      this.urlFailed(err);
      return;
    }
    if (typeof url === 'string') {
      this.urlAbort = null;
      this.openSocket(url);
      return;
    }
    const current = () => id === this.attemptId && this._state === 'connecting';
    if (this.opts.urlTimeoutMs > 0) {
      this.urlTimer = this.opts.timers.setTimeout(() => {
        this.urlTimer = null;
        if (!current()) return;
        this.attemptId += 1; // the late answer is of no use any more
        this.abortPendingUrl();
        this.urlFailed(new Error('timed out getting the WebSocket URL'));
      }, this.opts.urlTimeoutMs);
    }
    Promise.resolve(url).then(
      (u) => {
        if (!current()) return;
        this.clearTimer('urlTimer');
        this.urlAbort = null;
        this.openSocket(u);
      },
      (err: unknown) => {
        if (!current()) return;
        this.clearTimer('urlTimer');
        this.urlAbort = null;
        this.urlFailed(err);
      },
    );
  }

  /** No URL for this attempt: 401 → unauthorized; anything else → a failed attempt (backoff). */
  private urlFailed(err: unknown): void {
    this.clearAllTimers();
    if (this._state === 'stopped' || this._state === 'unauthorized') return;
    if (isUnauthorizedError(err)) this.becomeUnauthorized();
    else this.scheduleReconnect();
  }

  private abortPendingUrl(): void {
    const abort = this.urlAbort;
    this.urlAbort = null;
    if (abort) {
      try {
        abort.abort();
      } catch {
        /* ignore */
      }
    }
  }

  private openSocket(url: string): void {
    let socket: WebSocketLike;
    try {
      socket = this.opts.createSocket(url);
    } catch {
      // Could not even create the socket: same as a failure before open.
      this.ws = null;
      this.handleClose(1006, false);
      return;
    }
    this.attach(socket);
  }

  private attach(socket: WebSocketLike): void {
    this.ws = socket;
    if (this.opts.awaitConnected && this.opts.connectedTimeoutMs > 0) {
      this.connectedTimer = this.opts.timers.setTimeout(() => {
        this.connectedTimer = null;
        if (this.ws !== socket || this.opened) return;
        this.drop(socket, 'no connected message');
        this.handleClose(1006, false);
      }, this.opts.connectedTimeoutMs);
    }
    socket.onopen = () => {
      if (this.ws !== socket) return;
      this.socketOpened();
    };
    socket.onmessage = (ev) => {
      if (this.ws !== socket) return;
      this.frame(socket, ev.data);
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

  /** The transport is open: the connection is, unless it must first say `connected`. */
  private socketOpened(): void {
    if (!this.opts.awaitConnected) this.markOpen();
  }

  private markOpen(): void {
    this.opened = true;
    this.clearTimer('connectedTimer');
    this.setState('open');
    this.healthyTimer = this.opts.timers.setTimeout(() => {
      this.healthyTimer = null;
      this._attempt = 0;
    }, this.opts.healthyAfterMs);
    this.schedulePing();
  }

  private frame(socket: WebSocketLike, data: unknown): void {
    // Any traffic proves the connection is alive.
    this.clearTimer('pongTimer');
    const msg = this.opts.decoder.parseFrame(data);
    if (!msg) return;
    if (msg.type === 'pong') return;
    if (msg.type === 'connected' && !this.opened) {
      this.markOpen();
      if (this.ws !== socket) return;
    }
    this.opts.onMessage(msg);
  }

  /** Forgets `socket` and closes it (its close event, if any, is then ignored). */
  private drop(socket: WebSocketLike, reason: string): void {
    if (this.ws === socket) this.ws = null;
    try {
      socket.close(CLOSE_HEARTBEAT_TIMEOUT, reason);
    } catch {
      /* ignore */
    }
  }

  private handleClose(code: number, wasOpen: boolean): void {
    this.clearAllTimers();
    if (this._state === 'stopped' || this._state === 'unauthorized') return;
    if (code === CLOSE_TOKEN_EXPIRED) {
      this.becomeUnauthorized('rejected');
      return;
    }
    if (code === CLOSE_DEACTIVATED) {
      this.becomeUnauthorized('deactivated');
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
          if (r === 'unauthorized') {
            this.becomeUnauthorized();
            return;
          }
          if (r === 'ok') this.opts.onFailedWhileApiAnswers?.();
          if (this._state === 'checking') this.scheduleReconnect();
        },
        () => {
          if (this._state === 'checking') this.scheduleReconnect();
        },
      );
      return;
    }
    this.scheduleReconnect();
  }

  private becomeUnauthorized(why: SessionEnd = 'rejected'): void {
    this.clearAllTimers();
    this.abortPendingUrl();
    this.setState('unauthorized');
    this.opts.onUnauthorized?.(why);
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
        this.drop(socket, 'heartbeat timeout');
        this.handleClose(1006, true);
      }, this.opts.pongTimeoutMs);
      this.schedulePing();
    }, this.opts.pingIntervalMs);
  }

  private clearTimer(
    name: 'reconnectTimer' | 'healthyTimer' | 'pingTimer' | 'pongTimer' | 'urlTimer' | 'connectedTimer',
  ): void {
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
    this.clearTimer('urlTimer');
    this.clearTimer('connectedTimer');
  }
}
