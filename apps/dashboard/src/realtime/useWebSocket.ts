import { useQueryClient } from '@tanstack/react-query';
import { useCallback, useEffect, useRef, useState } from 'react';
import { RealtimeConnection } from './RealtimeConnection';
import type { ReconnectingSocket, ReconnectingSocketOptions, SocketState } from './ReconnectingSocket';
import type { StatsHistory } from './StatsHistory';
import { StatsSync } from './StatsSync';
import {
  TabCoordinator,
  type ChannelFactory,
  type LeaderHandlers,
  type LockManagerLike,
  type TabRole,
} from './TabCoordinator';
import { STATS_TOPICS, type TopicError } from './topics';
import type { ClientMessage, ServerMessage } from './messages';
import {
  UnauthorizedError,
  type AuthCheck,
  type ConnectionStatus,
  type EventSourceFactory,
  type SessionEnd,
  type Timers,
  type Transport,
  type WebSocketFactory,
} from './types';

/** Everything the hook takes from the browser, replaceable in tests. */
export interface RealtimeDeps {
  createSocket: WebSocketFactory;
  locks: LockManagerLike | null;
  createChannel: ChannelFactory | null;
  checkAuth: (token: string) => Promise<AuthCheck>;
  /**
   * The URL of one attempt; `topics` are the topics the connection should start with. Called
   * once per attempt. The browser's version first fetches a fresh single-use ticket
   * (`POST /api/v1/ws-ticket`) and rejects with `UnauthorizedError` on a 401; tests may
   * return a plain string.
   */
  wsUrl: (token: string, topics?: readonly string[], signal?: AbortSignal) => string | Promise<string>;
  /**
   * The EventSource of the Server-Sent Events fallback (contract section 8); null where there is
   * none (no fallback: WebSocket only).
   */
  createEventSource: EventSourceFactory | null;
  /** The URL of one SSE attempt: like `wsUrl`, a fresh ticket each time (`/sse?ticket=…&topics=…`). */
  sseUrl: (token: string, topics?: readonly string[], signal?: AbortSignal) => string | Promise<string>;
  /**
   * Sends one client message of an SSE connection: `POST /api/v1/realtime/{connectionId}` with
   * the JWT; resolves with the HTTP status, rejects on a network error.
   */
  postRealtime: (token: string, connectionId: string, body: string, signal?: AbortSignal) => Promise<number>;
  /** When to fall back to SSE and how often to try WebSocket again from there (see RealtimeConnection). */
  fallback?: { afterFailures?: number; probeEveryMs?: number; probeTimeoutMs?: number };
  /** Whether this page is visible (its `viewing` wins after a reconnect). */
  isVisible?: () => boolean;
  timers?: Timers;
  now?: () => number;
  /** Tab heartbeat/expiry on the BroadcastChannel (see TabCoordinator). */
  tabHeartbeatMs?: number;
  tabExpiryMs?: number;
  random?: () => number;
  /** Extra options for the socket (backoff, heartbeat…). */
  socketOptions?: Partial<
    Pick<
      ReconnectingSocketOptions,
      'baseDelayMs' | 'maxDelayMs' | 'healthyAfterMs' | 'pingIntervalMs' | 'pongTimeoutMs' | 'connectedTimeoutMs'
    >
  >;
}

/** `/ws?ticket=…&topics=…` on the page's host. The JWT itself never goes into a URL. */
export function browserWsUrl(
  ticket: string,
  topics?: readonly string[],
  loc: Pick<Location, 'protocol' | 'host'> = window.location,
): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  const t = topics ? `&topics=${topics.map(encodeURIComponent).join(',')}` : '';
  return `${scheme}//${loc.host}/ws?ticket=${encodeURIComponent(ticket)}${t}`;
}

/** `/sse?ticket=…&topics=…` on the page's origin (a relative URL: EventSource resolves it). */
export function browserSseUrl(ticket: string, topics?: readonly string[]): string {
  const t = topics ? `&topics=${topics.map(encodeURIComponent).join(',')}` : '';
  return `/sse?ticket=${encodeURIComponent(ticket)}${t}`;
}

export const WS_TICKET_PATH = '/api/v1/ws-ticket';
export const REALTIME_PATH = '/api/v1/realtime/';

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/**
 * `POST /api/v1/ws-ticket` with the JWT: a single-use ticket, valid 30 s. A 401 rejects with
 * `UnauthorizedError` (back to login); a network error, a non-2xx answer or a body without a
 * ticket rejects with a plain Error (the attempt failed: retried with backoff).
 */
export async function fetchWsTicket(
  token: string,
  fetchImpl: FetchLike = (input, init) => fetch(input, init),
  signal?: AbortSignal,
): Promise<string> {
  const res = await fetchImpl(WS_TICKET_PATH, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
    cache: 'no-store',
    ...(signal ? { signal } : {}),
  });
  if (res.status === 401) throw new UnauthorizedError('the ticket endpoint rejected the session token');
  if (!res.ok) throw new Error(`ws-ticket: HTTP ${res.status}`);
  const body = (await res.json()) as { ticket?: unknown } | null;
  const ticket = body?.ticket;
  if (typeof ticket !== 'string' || ticket.length === 0) throw new Error('ws-ticket: no ticket in the answer');
  return ticket;
}

/** A `RealtimeDeps.wsUrl` that fetches a fresh ticket for every attempt, then builds the URL. */
export function ticketWsUrl(
  fetchImpl?: FetchLike,
  loc?: Pick<Location, 'protocol' | 'host'>,
): RealtimeDeps['wsUrl'] {
  return async (token, topics, signal) => {
    const ticket = await fetchWsTicket(token, fetchImpl, signal);
    return browserWsUrl(ticket, topics, loc ?? window.location);
  };
}

/** A `RealtimeDeps.sseUrl` that fetches a fresh ticket (the same single-use tickets) for every attempt. */
export function ticketSseUrl(fetchImpl?: FetchLike): RealtimeDeps['sseUrl'] {
  return async (token, topics, signal) => browserSseUrl(await fetchWsTicket(token, fetchImpl, signal), topics);
}

/** `POST /api/v1/realtime/{connectionId}` with the JWT and the message as it would go on a WebSocket. */
export async function postRealtimeMessage(
  token: string,
  connectionId: string,
  body: string,
  signal?: AbortSignal,
  fetchImpl: FetchLike = (input, init) => fetch(input, init),
): Promise<number> {
  const res = await fetchImpl(`${REALTIME_PATH}${encodeURIComponent(connectionId)}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body,
    cache: 'no-store',
    ...(signal ? { signal } : {}),
  });
  return res.status;
}

export async function checkTokenWithApi(token: string): Promise<AuthCheck> {
  try {
    const res = await fetch('/api/v1/me', { headers: { Authorization: `Bearer ${token}` } });
    if (res.status === 401) return 'unauthorized';
    return res.ok ? 'ok' : 'unknown';
  } catch {
    return 'unknown';
  }
}

export function defaultRealtimeDeps(): RealtimeDeps {
  const nav = typeof navigator !== 'undefined' ? (navigator as Navigator & { locks?: LockManagerLike }) : undefined;
  return {
    createSocket: (url) => new WebSocket(url) as unknown as ReturnType<WebSocketFactory>,
    locks: nav?.locks && typeof nav.locks.request === 'function' ? nav.locks : null,
    createChannel:
      typeof BroadcastChannel !== 'undefined'
        ? (name) => new BroadcastChannel(name) as unknown as ReturnType<ChannelFactory>
        : null,
    checkAuth: checkTokenWithApi,
    wsUrl: ticketWsUrl(),
    createEventSource:
      typeof EventSource !== 'undefined'
        ? (url) => new EventSource(url) as unknown as ReturnType<EventSourceFactory>
        : null,
    sseUrl: ticketSseUrl(),
    postRealtime: (token, id, body, signal) => postRealtimeMessage(token, id, body, signal),
    isVisible: () => typeof document === 'undefined' || document.visibilityState !== 'hidden',
  };
}

/**
 * The leader's (or a solo tab's) connection, started: WebSocket first, the SSE fallback when a
 * WebSocket cannot get through (see RealtimeConnection). Every attempt gets its URL from
 * `deps.wsUrl` / `deps.sseUrl` (a fresh ticket); `deps.checkAuth` is asked after a failure before
 * `connected`.
 */
export function openRealtimeConnection(
  d: RealtimeDeps,
  token: string,
  handlers: LeaderHandlers & { onState?(state: SocketState, transport: Transport): void },
): RealtimeConnection {
  const connection = new RealtimeConnection({
    wsUrl: (topics, signal) => d.wsUrl(token, topics, signal),
    sseUrl: (topics, signal) => d.sseUrl(token, topics, signal),
    createSocket: d.createSocket,
    createEventSource: d.createEventSource,
    post: (id, body, signal) => d.postRealtime(token, id, body, signal),
    checkAuth: () => d.checkAuth(token),
    onMessage: handlers.onMessage,
    onStatus: handlers.onStatus,
    onUnauthorized: handlers.onUnauthorized,
    topics: handlers.topics,
    ...(handlers.onState ? { onState: handlers.onState } : {}),
    ...(d.timers ? { timers: d.timers } : {}),
    ...(d.random ? { random: d.random } : {}),
    ...(d.socketOptions ? { socketOptions: d.socketOptions } : {}),
    ...(d.fallback?.afterFailures !== undefined ? { fallbackAfterFailures: d.fallback.afterFailures } : {}),
    ...(d.fallback?.probeEveryMs !== undefined ? { probeEveryMs: d.fallback.probeEveryMs } : {}),
    ...(d.fallback?.probeTimeoutMs !== undefined ? { probeTimeoutMs: d.fallback.probeTimeoutMs } : {}),
  });
  connection.start();
  return connection;
}

/**
 * `openRealtimeConnection`'s state machine, for e2e/reconnect-spread.mjs, which runs exactly this
 * wiring in Node (no EventSource there: WebSocket only) and reads its state and delays.
 */
export function openRealtimeSocket(
  d: RealtimeDeps,
  token: string,
  handlers: LeaderHandlers & { onState?(state: SocketState, transport: Transport): void },
): ReconnectingSocket {
  return openRealtimeConnection(d, token, handlers).socket;
}

export interface UseWebSocketOptions {
  /** JWT; null = logged out (no connection). */
  token: string | null;
  /**
   * The session ended: the token was rejected (close 4401, 401 from /me or from the ticket
   * endpoint) or the account deactivated (close 4403). Log out and show the login page, saying why.
   */
  onUnauthorized: (why: SessionEnd) => void;
  history?: StatsHistory;
  deps?: Partial<RealtimeDeps>;
  /** Every message this tab applies (presence, typing, personal events; tests, debugging). */
  onMessage?: (msg: ServerMessage) => void;
  /**
   * The topics this tab needs (default: the three stats topics). A change is applied with
   * subscribe/unsubscribe on the open connection, never by reconnecting; with several tabs
   * the leader keeps the union of all tabs' topics.
   */
  topics?: readonly string[];
  /** The page this tab shows, sent as `viewing` (presence) on connect and on every change. */
  viewing?: string | null;
}

export interface UseWebSocketResult {
  status: ConnectionStatus;
  /** What the browser's connection runs over: WebSocket, or the SSE fallback. */
  transport: Transport;
  role: TabRole;
  /** Skip the current backoff wait. */
  reconnect: () => void;
  /** Sends a client message (e.g. typing) on the shared socket, through the leader tab if needed. */
  send: (message: ClientMessage) => boolean;
  /** The last refused topic request (`unknown_topic`), or null. */
  topicError: TopicError | null;
}

const DEFAULT_TOPICS: readonly string[] = STATS_TOPICS;

/**
 * Keeps the dashboard live: one connection per browser — a WebSocket, or the SSE fallback where
 * WebSocket cannot get through — held by the leader tab (Web Locks) and relayed to the other
 * tabs over BroadcastChannel, every message written into the react-query cache.
 */
export function useWebSocket({
  token,
  onUnauthorized,
  history,
  deps,
  onMessage,
  topics = DEFAULT_TOPICS,
  viewing = null,
}: UseWebSocketOptions): UseWebSocketResult {
  const queryClient = useQueryClient();
  const [status, setStatus] = useState<ConnectionStatus>(token ? 'reconnecting' : 'offline');
  const [transport, setTransport] = useState<Transport>('websocket');
  const [role, setRole] = useState<TabRole>('pending');
  const [topicError, setTopicError] = useState<TopicError | null>(null);
  const coordinatorRef = useRef<TabCoordinator | null>(null);
  const unauthorizedRef = useRef(onUnauthorized);
  const onMessageRef = useRef(onMessage);
  const depsRef = useRef(deps);
  const topicsRef = useRef(topics);
  const viewingRef = useRef(viewing);
  unauthorizedRef.current = onUnauthorized;
  onMessageRef.current = onMessage;
  depsRef.current = deps;
  topicsRef.current = topics;
  viewingRef.current = viewing;
  const topicsKey = [...new Set(topics)].sort().join(',');

  useEffect(() => {
    if (!token) {
      setStatus('offline');
      setRole('stopped');
      return;
    }
    const d: RealtimeDeps = { ...defaultRealtimeDeps(), ...depsRef.current };
    const sync = new StatsSync(queryClient, history);
    let unauthorizedFired = false;
    const fireUnauthorized = (why: SessionEnd) => {
      if (unauthorizedFired) return;
      unauthorizedFired = true;
      unauthorizedRef.current(why);
    };
    const coordinator = new TabCoordinator({
      locks: d.locks,
      createChannel: d.createChannel,
      initialTopics: [...topicsRef.current],
      isVisible: d.isVisible,
      ...(d.timers ? { timers: d.timers } : {}),
      ...(d.now ? { now: d.now } : {}),
      ...(d.tabHeartbeatMs !== undefined ? { tabHeartbeatMs: d.tabHeartbeatMs } : {}),
      ...(d.tabExpiryMs !== undefined ? { tabExpiryMs: d.tabExpiryMs } : {}),
      onTopicError: (e) => {
        if (typeof console !== 'undefined') console.warn(`Pulse: topic refused: ${e.message}`);
      },
      createConnection: (handlers) => openRealtimeConnection(d, token, handlers),
      onMessage: (msg) => {
        sync.handle(msg);
        if (msg.type === 'error') {
          if (msg.payload.code === 'unknown_topic') setTopicError({ code: 'unknown_topic', message: msg.payload.message });
        } else if (msg.type === 'connected') {
          setTopicError(null);
        }
        onMessageRef.current?.(msg);
      },
      onStatus: (s, t) => {
        setStatus(s);
        setTransport(t);
      },
      onUnauthorized: (why) => {
        setStatus('offline');
        fireUnauthorized(why);
      },
      onRoleChange: (r) => setRole(r),
    });
    coordinatorRef.current = coordinator;
    coordinator.start();
    if (viewingRef.current) coordinator.setViewing(viewingRef.current);

    const onOnline = () => coordinator.reconnectNow();
    const onPageHide = () => coordinator.bye();
    const onPageShow = (e: PageTransitionEvent) => {
      if (e.persisted) coordinator.announce();
    };
    // Back on this tab: what it shows is what the user looks at.
    const onVisible = () => {
      if (typeof document !== 'undefined' && document.visibilityState === 'visible' && viewingRef.current) {
        coordinator.setViewing(viewingRef.current);
      }
    };
    if (typeof window !== 'undefined') {
      window.addEventListener('online', onOnline);
      window.addEventListener('pagehide', onPageHide);
      window.addEventListener('pageshow', onPageShow);
      document.addEventListener('visibilitychange', onVisible);
    }
    return () => {
      if (typeof window !== 'undefined') {
        window.removeEventListener('online', onOnline);
        window.removeEventListener('pagehide', onPageHide);
        window.removeEventListener('pageshow', onPageShow);
        document.removeEventListener('visibilitychange', onVisible);
      }
      coordinator.stop();
      if (coordinatorRef.current === coordinator) coordinatorRef.current = null;
    };
  }, [token, queryClient, history]);

  // Route changes: subscribe/unsubscribe on the open connection (never a reconnect).
  useEffect(() => {
    coordinatorRef.current?.setTopics(topicsKey ? topicsKey.split(',') : []);
  }, [topicsKey]);

  useEffect(() => {
    const c = coordinatorRef.current;
    if (viewing && c && c.currentViewing !== viewing) c.setViewing(viewing);
  }, [viewing]);

  const reconnect = useCallback(() => coordinatorRef.current?.reconnectNow(), []);
  const send = useCallback((message: ClientMessage) => coordinatorRef.current?.send(message) ?? false, []);

  return { status: token ? status : 'offline', transport, role, reconnect, send, topicError };
}
