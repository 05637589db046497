/** Connection status as shown to the user. The text of the indicator is exactly one of these. */
export type ConnectionStatus = 'live' | 'reconnecting' | 'offline';

/**
 * How the live connection reaches the server: a WebSocket, or — where a proxy breaks WebSocket
 * upgrades — Server-Sent Events with client messages sent as POSTs (contract section 8).
 */
export type Transport = 'websocket' | 'sse';

/** The three stats topics the layout's badges show (their payloads are counts). */
export type StatsTopic = 'stats:tasks' | 'stats:approvals' | 'stats:conversations';

/** The subset of the browser WebSocket that the client uses (so tests can pass a fake). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason?: string; wasClean?: boolean }) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

/** The subset of the browser EventSource that the client uses (so tests can pass a fake). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(): void;
}

export type EventSourceFactory = (url: string) => EventSourceLike;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof globalThis.setTimeout>),
};

/**
 * Thrown (or rejected) by a connection's `url()` when the server refused the session itself
 * (e.g. `POST /api/v1/ws-ticket` answered 401): the client goes to `unauthorized`, no retry.
 * Any other error from `url()` counts as a failed attempt and is retried with backoff.
 */
export class UnauthorizedError extends Error {
  readonly unauthorized = true;
  constructor(message = 'the session token was rejected') {
    super(message);
    this.name = 'UnauthorizedError';
  }
}

export function isUnauthorizedError(err: unknown): boolean {
  return err instanceof UnauthorizedError || (!!err && typeof err === 'object' && (err as { unauthorized?: unknown }).unauthorized === true);
}

/**
 * Why the server ended the session: the token was refused (expired, retired by a role or
 * password change: close 4401, or a 401) — sign in again — or the account was deactivated
 * (close 4403) — signing in will not help.
 */
export type SessionEnd = 'rejected' | 'deactivated';

/** Result of checking the token after a connection failed before `open`. */
export type AuthCheck = 'ok' | 'unauthorized' | 'unknown';
