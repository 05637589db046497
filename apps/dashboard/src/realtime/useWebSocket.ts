import { useQueryClient } from '@tanstack/react-query';
import { useCallback, useEffect, useRef, useState } from 'react';
import { ReconnectingSocket, type ReconnectingSocketOptions } from './ReconnectingSocket';
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
  type SessionEnd,
  type Timers,
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
    Pick<ReconnectingSocketOptions, 'baseDelayMs' | 'maxDelayMs' | 'healthyAfterMs' | 'pingIntervalMs' | 'pongTimeoutMs'>
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

export const WS_TICKET_PATH = '/api/v1/ws-ticket';

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
    isVisible: () => typeof document === 'undefined' || document.visibilityState !== 'hidden',
  };
}

/**
 * The leader's (or a solo tab's) connection: a started ReconnectingSocket whose every attempt
 * gets its URL from `deps.wsUrl` (a fresh ticket) and which asks `deps.checkAuth` after a
 * failure before open. Exported so that e2e/reconnect-spread.mjs runs exactly this wiring in Node.
 */
export function openRealtimeSocket(d: RealtimeDeps, token: string, handlers: LeaderHandlers): ReconnectingSocket {
  const socket = new ReconnectingSocket({
    url: (signal) => d.wsUrl(token, handlers.topics(), signal),
    createSocket: d.createSocket,
    checkAuth: () => d.checkAuth(token),
    onMessage: handlers.onMessage,
    onStatus: handlers.onStatus,
    onUnauthorized: handlers.onUnauthorized,
    ...(d.timers ? { timers: d.timers } : {}),
    ...(d.random ? { random: d.random } : {}),
    ...d.socketOptions,
  });
  socket.start();
  return socket;
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
 * Keeps the dashboard live: one WebSocket per browser (leader tab via Web Locks, relayed to
 * the other tabs over BroadcastChannel), every message written into the react-query cache.
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
      createConnection: (handlers) => openRealtimeSocket(d, token, handlers),
      onMessage: (msg) => {
        sync.handle(msg);
        if (msg.type === 'error') {
          if (msg.payload.code === 'unknown_topic') setTopicError({ code: 'unknown_topic', message: msg.payload.message });
        } else if (msg.type === 'connected') {
          setTopicError(null);
        }
        onMessageRef.current?.(msg);
      },
      onStatus: (s) => setStatus(s),
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

  return { status: token ? status : 'offline', role, reconnect, send, topicError };
}
