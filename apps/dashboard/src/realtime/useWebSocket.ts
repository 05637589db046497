import { useQueryClient } from '@tanstack/react-query';
import { useCallback, useEffect, useRef, useState } from 'react';
import { ReconnectingSocket, type ReconnectingSocketOptions } from './ReconnectingSocket';
import type { StatsHistory } from './StatsHistory';
import { StatsSync } from './StatsSync';
import {
  TabCoordinator,
  type ChannelFactory,
  type LockManagerLike,
  type TabRole,
} from './TabCoordinator';
import type { AuthCheck, ConnectionStatus, ServerMessage, Timers, WebSocketFactory } from './types';

/** Everything the hook takes from the browser, replaceable in tests. */
export interface RealtimeDeps {
  createSocket: WebSocketFactory;
  locks: LockManagerLike | null;
  createChannel: ChannelFactory | null;
  checkAuth: (token: string) => Promise<AuthCheck>;
  wsUrl: (token: string) => string;
  timers?: Timers;
  random?: () => number;
  /** Extra options for the socket (backoff, heartbeat…). */
  socketOptions?: Partial<
    Pick<ReconnectingSocketOptions, 'baseDelayMs' | 'maxDelayMs' | 'healthyAfterMs' | 'pingIntervalMs' | 'pongTimeoutMs'>
  >;
}

export function browserWsUrl(token: string, loc: Pick<Location, 'protocol' | 'host'> = window.location): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws?token=${encodeURIComponent(token)}`;
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
    wsUrl: (token) => browserWsUrl(token),
  };
}

export interface UseWebSocketOptions {
  /** JWT; null = logged out (no connection). */
  token: string | null;
  /** The token was rejected (close 4401 or 401 from /me): log out and show the login page. */
  onUnauthorized: () => void;
  history?: StatsHistory;
  deps?: Partial<RealtimeDeps>;
  /** Observe every message this tab applies (tests, debugging). */
  onMessage?: (msg: ServerMessage) => void;
}

export interface UseWebSocketResult {
  status: ConnectionStatus;
  role: TabRole;
  /** Skip the current backoff wait. */
  reconnect: () => void;
}

/**
 * Keeps the dashboard live: one WebSocket per browser (leader tab via Web Locks, relayed to
 * the other tabs over BroadcastChannel), every message written into the react-query cache.
 */
export function useWebSocket({ token, onUnauthorized, history, deps, onMessage }: UseWebSocketOptions): UseWebSocketResult {
  const queryClient = useQueryClient();
  const [status, setStatus] = useState<ConnectionStatus>(token ? 'reconnecting' : 'offline');
  const [role, setRole] = useState<TabRole>('pending');
  const coordinatorRef = useRef<TabCoordinator | null>(null);
  const unauthorizedRef = useRef(onUnauthorized);
  const onMessageRef = useRef(onMessage);
  const depsRef = useRef(deps);
  unauthorizedRef.current = onUnauthorized;
  onMessageRef.current = onMessage;
  depsRef.current = deps;

  useEffect(() => {
    if (!token) {
      setStatus('offline');
      setRole('stopped');
      return;
    }
    const d: RealtimeDeps = { ...defaultRealtimeDeps(), ...depsRef.current };
    const sync = new StatsSync(queryClient, history);
    let unauthorizedFired = false;
    const fireUnauthorized = () => {
      if (unauthorizedFired) return;
      unauthorizedFired = true;
      unauthorizedRef.current();
    };
    const coordinator = new TabCoordinator({
      locks: d.locks,
      createChannel: d.createChannel,
      createConnection: (handlers) => {
        const socket = new ReconnectingSocket({
          url: () => d.wsUrl(token),
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
      },
      onMessage: (msg) => {
        sync.handle(msg);
        onMessageRef.current?.(msg);
      },
      onStatus: (s) => setStatus(s),
      onUnauthorized: () => {
        setStatus('offline');
        fireUnauthorized();
      },
      onRoleChange: (r) => setRole(r),
    });
    coordinatorRef.current = coordinator;
    coordinator.start();

    const onOnline = () => coordinator.reconnectNow();
    if (typeof window !== 'undefined') window.addEventListener('online', onOnline);
    return () => {
      if (typeof window !== 'undefined') window.removeEventListener('online', onOnline);
      coordinator.stop();
      if (coordinatorRef.current === coordinator) coordinatorRef.current = null;
    };
  }, [token, queryClient, history]);

  const reconnect = useCallback(() => coordinatorRef.current?.reconnectNow(), []);

  return { status: token ? status : 'offline', role, reconnect };
}
