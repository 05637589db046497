/** Connection status as shown to the user. The text of the indicator is exactly one of these. */
export type ConnectionStatus = 'live' | 'reconnecting' | 'offline';

export interface TaskStats {
  pending: number;
  inProgress: number;
  completed: number;
  total: number;
}

export interface ApprovalStats {
  pending: number;
  approved: number;
  rejected: number;
  executed: number;
  total: number;
}

/** GET /api/v1/approvals/stats returns the stats wrapped; the cache holds the same shape. */
export interface ApprovalStatsEnvelope {
  stats: ApprovalStats;
}

export interface ConversationStats {
  active: number;
  escalated: number;
  resolved: number;
  total: number;
}

export type StatsTopic = 'stats:tasks' | 'stats:approvals' | 'stats:conversations';

export interface ConnectedMessage {
  type: 'connected';
  payload: { userId: number | string; username: string; role: string };
}

export interface StatsMessage<T extends StatsTopic = StatsTopic> {
  type: T;
  seq?: number;
  payload: T extends 'stats:tasks'
    ? TaskStats
    : T extends 'stats:approvals'
      ? ApprovalStats
      : ConversationStats;
}

/** Any message from the server: a JSON object with a string `type`. Unknown types are ignored. */
export interface ServerMessage {
  type: string;
  seq?: number;
  payload?: unknown;
  [key: string]: unknown;
}

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

/** Result of checking the token after a connection failed before `open`. */
export type AuthCheck = 'ok' | 'unauthorized' | 'unknown';

/** Parses a text frame into a server message; anything that is not a JSON object with a string type is null. */
export function parseServerMessage(data: unknown): ServerMessage | null {
  if (typeof data !== 'string') return null;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const type = (value as { type?: unknown }).type;
  if (typeof type !== 'string') return null;
  return value as ServerMessage;
}
