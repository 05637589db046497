/**
 * The live connection of a leader (or solo) tab, over whichever transport gets through.
 *
 * WebSocket first. After `fallbackAfterFailures` attempts in a row that failed before the
 * server's `connected` while the HTTP API answered (the token check after the failure said
 * `ok`), the next attempts use Server-Sent Events (contract section 8). With the API down
 * nothing is counted: that is the server, not the transport, and WebSocket keeps being retried.
 *
 * One `ReconnectingSocket` runs both transports — the transport is picked per attempt — so the
 * backoff (full jitter), the heartbeat and the close codes are the same, and its attempt counter
 * spans both: switching never resets the backoff. If SSE fails the same way (a server without
 * it), the attempts go back to WebSocket.
 *
 * Back to WebSocket: while live over SSE, a WebSocket is tried now and then (every
 * `probeEveryMs`, jittered ×0.5–1.5) beside the stream; a probe that says `connected` replaces the
 * stream in the same tick (`ReconnectingSocket.adopt` closes the stream and plays the probe's
 * frames), so two connections never overlap for longer than that. A probe that fails is closed
 * and tried again later. When a live SSE session ends (a restart, a network change), the next
 * attempt tries WebSocket once before going back to SSE.
 *
 * Reason to change: how the transport is chosen. Never depends on React, the query cache or the tabs.
 */
import { EventSourceSocket, type RealtimePost } from './EventSourceSocket';
import type { ServerMessage } from './messages';
import { ReconnectingSocket, statusOf, type ReconnectingSocketOptions, type SocketState } from './ReconnectingSocket';
import type { LeaderConnection } from './TabCoordinator';
import type { ClientMessage } from './messages';
import {
  realTimers,
  type AuthCheck,
  type ConnectionStatus,
  type EventSourceFactory,
  type SessionEnd,
  type Timers,
  type Transport,
  type WebSocketFactory,
  type WebSocketLike,
} from './types';

export const FALLBACK_AFTER_FAILURES = 3;
export const PROBE_EVERY_MS = 5 * 60_000;
export const PROBE_TIMEOUT_MS = 10_000;
/** A probe that receives this many frames without `connected` is not a Pulse WebSocket. */
const PROBE_MAX_FRAMES = 16;

export interface RealtimeConnectionOptions {
  /** The URL of one WebSocket attempt (the browser fetches a fresh ticket for each). */
  wsUrl(topics: string[], signal?: AbortSignal): string | Promise<string>;
  /** The URL of one SSE attempt (`/sse?ticket=…&topics=…`, a fresh ticket each time). */
  sseUrl(topics: string[], signal?: AbortSignal): string | Promise<string>;
  createSocket: WebSocketFactory;
  /** Null where there is no EventSource: no fallback, WebSocket only. */
  createEventSource: EventSourceFactory | null;
  /** Sends a client message of an SSE connection (`POST /api/v1/realtime/{connectionId}`). */
  post: RealtimePost;
  /** After a failure before `connected`: is the token (and with it the API) still good? */
  checkAuth(): Promise<AuthCheck>;
  onMessage(msg: ServerMessage): void;
  onStatus(status: ConnectionStatus, transport: Transport): void;
  onUnauthorized(why: SessionEnd): void;
  /** The topics for the URL of the next connection. */
  topics(): string[];
  /** Every state change of the connection (diagnostics; e2e/reconnect-spread.mjs records them). */
  onState?(state: SocketState, transport: Transport): void;
  timers?: Timers;
  random?: () => number;
  socketOptions?: Partial<
    Pick<
      ReconnectingSocketOptions,
      'baseDelayMs' | 'maxDelayMs' | 'healthyAfterMs' | 'pingIntervalMs' | 'pongTimeoutMs' | 'connectedTimeoutMs'
    >
  >;
  /** Failures in a row (API answering) before the other transport is tried. */
  fallbackAfterFailures?: number;
  /** While on SSE, a WebSocket is tried about this often. */
  probeEveryMs?: number;
  /** A probe that has not said `connected` after this long has failed. */
  probeTimeoutMs?: number;
}

function isConnectedFrame(data: unknown): boolean {
  if (typeof data !== 'string') return false;
  try {
    return (JSON.parse(data) as { type?: unknown } | null)?.type === 'connected';
  } catch {
    return false;
  }
}

export class RealtimeConnection implements LeaderConnection {
  /** The one connection state machine (exposed for diagnostics and the reconnect-spread script). */
  readonly socket: ReconnectingSocket;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly threshold: number;
  /** The transport the next attempt uses. */
  private mode: Transport = 'websocket';
  /** The transport of the attempt under way (set when its URL is asked for). */
  private attemptTransport: Transport = 'websocket';
  /** The transport of the live connection, or null. */
  private live: Transport | null = null;
  /** Attempts of `mode` in a row that failed before `connected` while the API answered. */
  private failures = 0;
  private probeTimer: unknown = null;
  private probe: { cancel(): void } | null = null;
  private stopped = false;

  constructor(private readonly o: RealtimeConnectionOptions) {
    this.timers = o.timers ?? realTimers;
    this.random = o.random ?? Math.random;
    this.threshold = Math.max(1, o.fallbackAfterFailures ?? FALLBACK_AFTER_FAILURES);
    const createEventSource = o.createEventSource;
    this.socket = new ReconnectingSocket({
      url: (signal) => {
        this.attemptTransport = this.mode;
        const topics = o.topics();
        return this.mode === 'sse' ? o.sseUrl(topics, signal) : o.wsUrl(topics, signal);
      },
      createSocket: (url) =>
        this.attemptTransport === 'sse' && createEventSource
          ? new EventSourceSocket(url, createEventSource, o.post)
          : o.createSocket(url),
      checkAuth: () => o.checkAuth(),
      onMessage: (m) => {
        if (m.type === 'connected') this.failures = 0;
        o.onMessage(m);
      },
      onStatus: (_status, state) => this.stateChanged(state),
      onUnauthorized: (why) => {
        this.cancelProbe();
        o.onUnauthorized(why);
      },
      onFailedWhileApiAnswers: () => this.failedWhileApiAnswers(),
      awaitConnected: true,
      ...(o.timers ? { timers: o.timers } : {}),
      ...(o.random ? { random: o.random } : {}),
      ...o.socketOptions,
    });
  }

  /** The transport of the live connection, or the one being tried. */
  get transport(): Transport {
    return this.live ?? this.mode;
  }

  start(): void {
    this.socket.start();
  }

  stop(): void {
    this.stopped = true;
    this.cancelProbe();
    this.socket.stop();
  }

  reconnectNow(): void {
    this.socket.reconnectNow();
  }

  send(message: ClientMessage): boolean {
    return this.socket.send(message);
  }

  private stateChanged(state: SocketState): void {
    if (state === 'open') {
      this.live = this.attemptTransport;
      if (this.live === 'sse') this.scheduleProbe();
    } else if (this.live !== null) {
      const endedSse = this.live === 'sse';
      this.live = null;
      this.cancelProbe();
      if (endedSse && (state === 'connecting' || state === 'checking' || state === 'backoff')) {
        // Whatever ended the stream (a restart, another network) may have cleared the way: one
        // WebSocket attempt first; if it fails while the API answers, straight back to SSE.
        this.mode = 'websocket';
        this.failures = this.threshold - 1;
      }
    }
    this.report(state);
  }

  private report(state: SocketState): void {
    this.o.onState?.(state, this.transport);
    this.o.onStatus(statusOf(state), this.transport);
  }

  private failedWhileApiAnswers(): void {
    if (!this.o.createEventSource) return;
    this.failures += 1;
    if (this.failures < this.threshold) return;
    this.failures = 0;
    this.mode = this.attemptTransport === 'sse' ? 'websocket' : 'sse';
  }

  // ---------------------------------------------------------------- back to WebSocket

  private scheduleProbe(): void {
    if (this.probeTimer !== null || this.probe || this.stopped) return;
    const every = this.o.probeEveryMs ?? PROBE_EVERY_MS;
    const delay = Math.round(every * (0.5 + Math.min(Math.max(this.random(), 0), 1)));
    this.probeTimer = this.timers.setTimeout(() => {
      this.probeTimer = null;
      if (this.live === 'sse' && !this.stopped) this.startProbe();
    }, delay);
  }

  private cancelProbe(): void {
    if (this.probeTimer !== null) {
      this.timers.clearTimeout(this.probeTimer);
      this.probeTimer = null;
    }
    this.probe?.cancel();
    this.probe = null;
  }

  /** One WebSocket beside the live stream: adopted if it says `connected`, else closed. */
  private startProbe(): void {
    const abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
    const frames: unknown[] = [];
    let socket: WebSocketLike | null = null;
    let finished = false;
    const end = () => {
      finished = true;
      this.timers.clearTimeout(timeout);
      abort?.abort();
      if (this.probe === handle) this.probe = null;
      const s = socket;
      if (s) {
        s.onopen = null;
        s.onmessage = null;
        s.onerror = null;
        s.onclose = null;
      }
      return s;
    };
    const fail = () => {
      if (finished) return;
      const s = end();
      try {
        s?.close(1000, 'probe failed');
      } catch {
        /* ignore */
      }
      if (this.live === 'sse') this.scheduleProbe();
    };
    const succeed = () => {
      const s = end();
      if (!s) return;
      this.mode = 'websocket';
      this.failures = 0;
      this.attemptTransport = 'websocket';
      this.live = 'websocket';
      this.socket.adopt(s, frames);
      if (this.live === 'websocket' && this.socket.state === 'open') this.report('open');
    };
    const handle = {
      cancel: () => {
        if (finished) return;
        const s = end();
        try {
          s?.close(1000, 'probe cancelled');
        } catch {
          /* ignore */
        }
      },
    };
    this.probe = handle;
    const timeout = this.timers.setTimeout(fail, this.o.probeTimeoutMs ?? PROBE_TIMEOUT_MS);
    Promise.resolve()
      .then(() => this.o.wsUrl(this.o.topics(), abort?.signal))
      .then(
        (url) => {
          if (finished) return;
          try {
            socket = this.o.createSocket(url);
          } catch {
            fail();
            return;
          }
          socket.onerror = () => {
            /* a close event follows */
          };
          socket.onclose = fail;
          socket.onmessage = (ev) => {
            if (finished) return;
            frames.push(ev.data);
            if (isConnectedFrame(ev.data)) succeed();
            else if (frames.length >= PROBE_MAX_FRAMES) fail();
          };
        },
        fail,
      );
  }
}
