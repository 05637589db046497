/**
 * The Server-Sent Events transport (contract section 8) seen as a WebSocket, so that
 * `ReconnectingSocket` drives both transports with one policy (backoff, heartbeat, close codes,
 * token checks).
 *
 * - Server → client: the EventSource's events, each `data: <json>` exactly as a WebSocket frame
 *   would carry it. `connected` carries the `connectionId`; `{"type":"close","payload":{"code"}}`
 *   ends the stream with that code, reported as this socket's close event (not passed on).
 * - Client → server: `send()` queues the JSON and POSTs it to `/api/v1/realtime/{connectionId}`,
 *   one at a time, in order (a `subscribe` must not overtake the `unsubscribe` before it).
 *   2xx → the next one; 401 → closed with 4401 (sign in again); 400 / 413 → that message is
 *   dropped and logged; 404 (the connection is gone), any other answer or a network error →
 *   closed with 1006, i.e. reconnect: a fresh connection restores topics and view.
 * - EventSource's own reconnection is never used (it would retry with the spent ticket): any
 *   error closes the stream and reports 1006; the reconnect policy decides what follows.
 *
 * Reason to change: the SSE wire. Never depends on React, the tabs or the reconnect policy.
 */
import type { EventSourceFactory, EventSourceLike, WebSocketLike } from './types';

/** POSTs one client message (JSON text) for a connection; resolves with the HTTP status, rejects on a network error. */
export type RealtimePost = (connectionId: string, body: string, signal?: AbortSignal) => Promise<number>;

/** Client messages waiting for their POST at most (a stalled POST is caught by the heartbeat). */
export const SSE_SEND_QUEUE_LIMIT = 64;

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

export class EventSourceSocket implements WebSocketLike {
  readyState = CONNECTING;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason?: string; wasClean?: boolean }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  private es: EventSourceLike | null;
  private id: string | null = null;
  private readonly queue: string[] = [];
  private sending = false;
  private readonly abort: AbortController | null = typeof AbortController !== 'undefined' ? new AbortController() : null;

  constructor(
    url: string,
    createEventSource: EventSourceFactory,
    private readonly post: RealtimePost,
    private readonly warn: (text: string) => void = (t) => console.warn(t),
  ) {
    const es = createEventSource(url);
    this.es = es;
    es.onopen = () => {
      if (this.readyState !== CONNECTING) return;
      this.readyState = OPEN;
      this.onopen?.({});
    };
    es.onmessage = (ev) => this.received(ev.data);
    // A refused request (401, 403, 404, 503), a dropped stream or the end of the response.
    es.onerror = () => this.finish(1006);
  }

  /** The server's id of this connection (from `connected`), where client messages go. */
  get connectionId(): string | null {
    return this.id;
  }

  send(data: string): void {
    if (this.readyState !== OPEN || this.id === null) throw new Error('the event stream is not connected');
    if (this.queue.length >= SSE_SEND_QUEUE_LIMIT) throw new Error('too many client messages waiting');
    this.queue.push(data);
    void this.pump();
  }

  close(code?: number, _reason?: string): void {
    this.finish(code ?? 1005);
  }

  private received(data: unknown): void {
    if (this.readyState === CLOSED) return;
    let value: { type?: unknown; payload?: { code?: unknown; connectionId?: unknown } } | null = null;
    try {
      value = typeof data === 'string' ? JSON.parse(data) : null;
    } catch {
      value = null; // the decoder downstream reports it
    }
    if (value?.type === 'close') {
      const code = value.payload?.code;
      this.finish(typeof code === 'number' && Number.isInteger(code) ? code : 1006);
      return;
    }
    if (value?.type === 'connected' && typeof value.payload?.connectionId === 'string' && value.payload.connectionId) {
      this.id = value.payload.connectionId;
    }
    this.onmessage?.({ data });
  }

  private async pump(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.queue.length > 0 && this.readyState === OPEN && this.id !== null) {
        let status: number;
        try {
          status = await this.post(this.id, this.queue[0], this.abort?.signal);
        } catch {
          this.finish(1006);
          return;
        }
        if (this.readyState !== OPEN) return;
        this.queue.shift();
        if (status >= 200 && status < 300) continue;
        if (status === 401) {
          this.finish(4401);
          return;
        }
        if (status === 400 || status === 413) {
          this.warn(`Pulse: the server refused a client message (HTTP ${status})`);
          continue;
        }
        this.finish(1006);
        return;
      }
    } finally {
      this.sending = false;
    }
  }

  /** Ends the stream for good and reports `code` as a WebSocket close event would. */
  private finish(code: number): void {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    const es = this.es;
    this.es = null;
    if (es) {
      es.onopen = null;
      es.onmessage = null;
      es.onerror = null;
      try {
        es.close();
      } catch {
        /* ignore */
      }
    }
    this.queue.length = 0;
    this.abort?.abort();
    this.onclose?.({ code, wasClean: code !== 1006 });
  }
}
