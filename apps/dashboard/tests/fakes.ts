import type { ChannelLike, LockManagerLike } from '../src/realtime/TabCoordinator';
import type { EventSourceLike, WebSocketLike } from '../src/realtime/types';

/** A controllable WebSocket: the test opens, pushes messages and closes it. */
export class FakeWebSocket implements WebSocketLike {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  readyState = FakeWebSocket.CONNECTING;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason?: string; wasClean?: boolean }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: string[] = [];
  closedWith: { code?: number; reason?: string } | null = null;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('not open');
    this.sent.push(data);
  }

  /** Client-initiated close: records the code; the close event follows like in a browser. */
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    if (this.readyState === FakeWebSocket.CLOSED) return;
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code: code ?? 1005, reason, wasClean: true });
  }

  // ---- test controls (the "server side") ----
  serverOpen(): void {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({});
  }

  serverSend(msg: unknown): void {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }

  serverClose(code: number): void {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, wasClean: code !== 1006 });
  }

  /** Upgrade refused / network failure before open: the browser reports 1006. */
  fail(): void {
    this.onerror?.({});
    this.serverClose(1006);
  }
}

/** A factory that records every socket it creates. */
export function socketFactory() {
  const sockets: FakeWebSocket[] = [];
  const create = (url: string) => {
    const s = new FakeWebSocket(url);
    sockets.push(s);
    return s;
  };
  return { sockets, create, last: () => sockets[sockets.length - 1] };
}

/** A controllable EventSource: the test opens the stream, sends events and breaks it. */
export class FakeEventSource implements EventSourceLike {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  readyState = FakeEventSource.CONNECTING;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  closed = false;

  constructor(readonly url: string) {}

  close(): void {
    this.closed = true;
    this.readyState = FakeEventSource.CLOSED;
  }

  // ---- test controls (the "server side") ----
  serverOpen(): void {
    this.readyState = FakeEventSource.OPEN;
    this.onopen?.({});
  }

  /** One `data: <json>` event. */
  serverSend(msg: unknown): void {
    if (this.closed) return;
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }

  /**
   * The request was refused or the stream dropped: a browser fires `error` and, unless the
   * page closes it, reconnects by itself with the same URL (readyState back to CONNECTING).
   */
  fail(): void {
    if (this.closed) return;
    this.readyState = FakeEventSource.CONNECTING;
    this.onerror?.({});
  }
}

/** A factory that records every EventSource it creates. */
export function eventSourceFactory() {
  const sources: FakeEventSource[] = [];
  const create = (url: string) => {
    const s = new FakeEventSource(url);
    sources.push(s);
    return s;
  };
  return { sources, create, last: () => sources[sources.length - 1] };
}

/**
 * Web Locks for several fake tabs of one browser: exclusive locks, FIFO waiters,
 * released when the callback's promise settles, when the request is aborted, or when
 * the tab is "closed" (crashTab).
 */
export class FakeLockRegistry {
  private held = new Map<string, { tab: string; release: () => void }>();
  private waiting = new Map<string, { tab: string; grant: () => void; cancel: () => void }[]>();

  holder(name: string): string | undefined {
    return this.held.get(name)?.tab;
  }

  forTab(tab: string): LockManagerLike {
    return {
      request: (name, options, callback) =>
        new Promise((resolve, reject) => {
          const grant = () => {
            let released = false;
            const release = () => {
              if (released) return;
              released = true;
              if (this.held.get(name)?.tab === tab) this.held.delete(name);
              this.grantNext(name);
            };
            this.held.set(name, { tab, release });
            Promise.resolve()
              .then(() => callback({ name }))
              .then(
                (v) => {
                  release();
                  resolve(v);
                },
                (e) => {
                  release();
                  reject(e);
                },
              );
          };
          const signal = options.signal;
          if (signal?.aborted) {
            reject(new DOMException('aborted', 'AbortError'));
            return;
          }
          if (!this.held.has(name)) {
            grant();
            return;
          }
          const entry = {
            tab,
            grant,
            cancel: () => reject(new DOMException('aborted', 'AbortError')),
          };
          const q = this.waiting.get(name) ?? [];
          q.push(entry);
          this.waiting.set(name, q);
          signal?.addEventListener('abort', () => {
            const list = this.waiting.get(name) ?? [];
            const i = list.indexOf(entry);
            if (i >= 0) {
              list.splice(i, 1);
              entry.cancel();
            }
          });
        }),
    };
  }

  /** The tab disappears (closed/crashed): the browser releases its locks and drops its requests. */
  crashTab(tab: string): void {
    for (const [name, q] of this.waiting) {
      this.waiting.set(
        name,
        q.filter((e) => e.tab !== tab),
      );
    }
    for (const [, h] of [...this.held]) {
      if (h.tab === tab) h.release();
    }
  }

  private grantNext(name: string): void {
    const q = this.waiting.get(name);
    const next = q?.shift();
    if (next) next.grant();
  }
}

/** BroadcastChannel between fake tabs: delivers to every other open channel of the same name, asynchronously. */
export class FakeChannelHub {
  private channels = new Set<FakeChannel>();
  posted: { name: string; data: unknown }[] = [];

  create = (name: string): ChannelLike => {
    const ch = new FakeChannel(name, this);
    this.channels.add(ch);
    return ch;
  };

  deliver(from: FakeChannel, data: unknown): void {
    this.posted.push({ name: from.name, data });
    const copy = structuredClone(data);
    for (const ch of this.channels) {
      if (ch !== from && ch.name === from.name && !ch.closed) {
        queueMicrotask(() => {
          if (!ch.closed) ch.onmessage?.({ data: copy });
        });
      }
    }
  }

  remove(ch: FakeChannel): void {
    this.channels.delete(ch);
  }

  get openCount(): number {
    return [...this.channels].filter((c) => !c.closed).length;
  }
}

class FakeChannel implements ChannelLike {
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  closed = false;
  constructor(
    readonly name: string,
    private hub: FakeChannelHub,
  ) {}
  postMessage(data: unknown): void {
    if (this.closed) throw new Error('channel closed');
    this.hub.deliver(this, data);
  }
  close(): void {
    this.closed = true;
    this.hub.remove(this);
  }
}

/** Lets queued microtasks and promise chains run. */
export async function flush(times = 5): Promise<void> {
  for (let i = 0; i < times; i++) await Promise.resolve();
}
