import type { LoginAnswer } from './apiTypes';
import { authStore, LOGOUT_REASONS } from './auth';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** `Retry-After` of a 429 or 503, in seconds from when the answer arrived. */
    readonly retryAfterSeconds: number | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** `Retry-After` as seconds from `now`: delta-seconds or an HTTP date (RFC 9110); null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  const v = value?.trim();
  if (!v) return null;
  if (/^\d+$/.test(v)) return Number(v);
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, Math.ceil((at - now) / 1000)) : null;
}

/** "45 seconds", "1 minute", "4 minutes 30 seconds". */
export function formatWait(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  const unit = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;
  if (s < 60) return unit(s, 'second');
  const m = Math.floor(s / 60);
  const rest = s % 60;
  return rest === 0 ? unit(m, 'minute') : `${unit(m, 'minute')} ${unit(rest, 'second')}`;
}

/** Network failure: the server could not be reached at all. */
export class NetworkError extends Error {
  constructor() {
    super("Can't reach the Pulse server. Check the connection; we'll keep trying.");
    this.name = 'NetworkError';
  }
}

const FALLBACK: Record<string, string> = {
  bad_request: 'The request was not understood.',
  validation_failed: 'Some fields are missing or invalid.',
  unauthorized: LOGOUT_REASONS.rejected,
  forbidden: "Your role doesn't allow this action.",
  not_found: 'That item no longer exists.',
  conflict: 'That change is not possible in the current state.',
  payload_too_large: 'That is too much text to send.',
  unsupported_media_type: 'The request format was not accepted.',
  too_many_requests: 'Too many attempts. Please wait a moment and try again.',
  unavailable: 'The server cannot reach its database right now. Please try again shortly.',
};

const BY_STATUS: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'too_many_requests',
  503: 'unavailable',
};

/** Builds an ApiError from a response with the `{"error":{"code","message"}}` body (or anything else). */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  let code = BY_STATUS[res.status] ?? (res.status >= 500 ? 'server_error' : 'error');
  let message = '';
  try {
    const body: unknown = await res.json();
    const err = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (err && typeof err === 'object') {
      if (typeof err.code === 'string' && err.code) code = err.code;
      if (typeof err.message === 'string') message = err.message;
    }
  } catch {
    /* not JSON */
  }
  const retryAfter = res.status === 429 || res.status === 503 ? parseRetryAfter(res.headers.get('Retry-After')) : null;
  if (res.status === 429 && retryAfter !== null) message = `Too many attempts. Try again in ${formatWait(retryAfter)}.`;
  return new ApiError(res.status, code, message, retryAfter);
}

/** Plain words for any error thrown by the API layer. */
export function describeError(err: unknown): string {
  if (err instanceof NetworkError) return err.message;
  if (err instanceof ApiError) {
    const fallback = FALLBACK[err.code] ?? (err.status >= 500 ? 'The server ran into a problem. Please try again.' : 'Something went wrong.');
    const detail = err.message.trim();
    if (!detail) return fallback;
    if (err.code === 'forbidden') return `${fallback} (${detail})`;
    // Capitalise the server's message and make it a sentence.
    const sentence = detail.charAt(0).toUpperCase() + detail.slice(1);
    return /[.!?]$/.test(sentence) ? sentence : `${sentence}.`;
  }
  if (err instanceof Error && err.message) return err.message;
  return 'Something went wrong.';
}

/** The message for a refused optimistic change (already undone on screen). */
export function undoneMessage(err: unknown): string {
  return `${describeError(err)} The change was undone.`;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** Override the stored session token (login uses none). */
  token?: string | null;
  signal?: AbortSignal;
}

/** Calls the Pulse API. A 401 on an authenticated call logs out (every tab). */
export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const token = opts.token === undefined ? authStore.token() : opts.token;
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(path, {
      method: opts.method ?? (opts.body !== undefined ? 'POST' : 'GET'),
      headers,
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new NetworkError();
  }
  if (!res.ok) {
    const err = await errorFromResponse(res);
    if (res.status === 401 && token) authStore.clear(LOGOUT_REASONS.rejected);
    throw err;
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** `POST /api/v1/auth/login`; the answer is what `authStore.set` keeps as the session. */
export async function login(username: string, password: string): Promise<LoginAnswer> {
  try {
    return await api<LoginAnswer>('/api/v1/auth/login', { body: { username, password }, token: null });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      throw new ApiError(401, 'unauthorized', 'Wrong username or password');
    }
    throw e;
  }
}

export function qs(params: Record<string, string | number | null | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}
