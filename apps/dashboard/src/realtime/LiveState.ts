import type { ClientMessage, PresenceEntry, ServerMessage } from './messages';
import { realTimers, type Timers } from './types';

type Listener = () => void;

/** A tiny external store for useSyncExternalStore. */
class Store<T> {
  private listeners = new Set<Listener>();
  constructor(protected value: T) {}
  get = (): T => this.value;
  subscribe = (l: Listener): (() => void) => {
    this.listeners.add(l);
    return () => {
      this.listeners.delete(l);
    };
  };
  protected set(value: T): void {
    this.value = value;
    this.listeners.forEach((l) => l());
  }
}

// ------------------------------------------------------------------ presence

export type { PresenceEntry };

/** Who is online and what each one views: the latest `presence` message (null before the first). */
export class PresenceStore extends Store<PresenceEntry[] | null> {
  constructor() {
    super(null);
  }

  handle(msg: ServerMessage): boolean {
    if (msg.type !== 'presence') return false;
    this.set(msg.payload.online);
    return true;
  }
}

/** Plain words for a viewed path: `/conversations/7` → `Conversation #7`. */
export function describePath(path: string | null): string {
  if (!path) return 'somewhere';
  const conv = /^\/conversations\/(\d+)/.exec(path);
  if (conv) return `Conversation #${conv[1]}`;
  if (path.startsWith('/tasks')) return 'Tasks';
  if (path.startsWith('/approvals')) return 'Approvals';
  if (path.startsWith('/conversations')) return 'Conversations';
  return path;
}

// ------------------------------------------------------------------ typing

export interface Typist {
  userId: number;
  username: string;
}

/**
 * Safety net for a `typing: true` whose `false` never arrives. The server relays only
 * changes — someone typing for a minute sends refreshes the server keeps to itself — and
 * relays `false` itself 6 s after the last refresh; a lost `false` can only mean a lost
 * connection, which `connected` resets anyway. So this is long: it must not hide a typist
 * who is still typing.
 */
export const TYPING_STALE_MS = 60_000;

/**
 * Who is typing in which conversation, from relayed `typing` messages. Own typing (same user id)
 * is ignored. `typing: false` removes the typist; so does a `true` not followed by anything
 * within `staleMs`, and a new connection (`connected`: whatever was typing before is unknown now).
 */
export class TypingStore extends Store<ReadonlyMap<number, readonly Typist[]>> {
  private timers = new Map<string, unknown>();
  private me: number | null = null;

  constructor(
    private readonly t: Timers = realTimers,
    private readonly staleMs = TYPING_STALE_MS,
  ) {
    super(new Map());
  }

  /** The current user (never shown as typing). */
  setSelf(userId: number | null): void {
    this.me = userId;
  }

  typists(conversationId: number): readonly Typist[] {
    return this.value.get(conversationId) ?? [];
  }

  handle(msg: ServerMessage): boolean {
    if (msg.type === 'connected') {
      this.clear();
      return false;
    }
    if (msg.type !== 'typing') return false;
    const { conversationId, userId, username, typing } = msg.payload;
    if (this.me !== null && this.me === userId) return false;
    if (typing) this.start(conversationId, { userId, username });
    else this.stop(conversationId, userId);
    return true;
  }

  /** Forget everything (new connection, logout). */
  clear(): void {
    for (const h of this.timers.values()) this.t.clearTimeout(h);
    this.timers.clear();
    if (this.value.size > 0) this.set(new Map());
  }

  /** Forget one conversation (its page closed, so its topic is no longer followed). */
  clearConversation(conversationId: number): void {
    const list = this.value.get(conversationId);
    if (!list) return;
    for (const t of list) this.stop(conversationId, t.userId);
  }

  private start(conversationId: number, typist: Typist): void {
    const key = `${conversationId}:${typist.userId}`;
    const old = this.timers.get(key);
    if (old !== undefined) this.t.clearTimeout(old);
    this.timers.set(
      key,
      this.t.setTimeout(() => {
        this.timers.delete(key);
        this.stop(conversationId, typist.userId);
      }, this.staleMs),
    );
    const list = this.value.get(conversationId) ?? [];
    if (list.some((x) => x.userId === typist.userId)) return;
    const next = new Map(this.value);
    next.set(conversationId, [...list, typist]);
    this.set(next);
  }

  private stop(conversationId: number, userId: number): void {
    const key = `${conversationId}:${userId}`;
    const h = this.timers.get(key);
    if (h !== undefined) {
      this.t.clearTimeout(h);
      this.timers.delete(key);
    }
    const list = this.value.get(conversationId);
    if (!list || !list.some((x) => x.userId === userId)) return;
    const next = new Map(this.value);
    const rest = list.filter((x) => x.userId !== userId);
    if (rest.length > 0) next.set(conversationId, rest);
    else next.delete(conversationId);
    this.set(next);
  }
}

/** "sam is typing…", "sam and ana are typing…", "3 people are typing…". */
export function typingText(typists: readonly Typist[]): string {
  if (typists.length === 0) return '';
  if (typists.length === 1) return `${typists[0].username} is typing…`;
  if (typists.length === 2) return `${typists[0].username} and ${typists[1].username} are typing…`;
  return `${typists.length} people are typing…`;
}

// ------------------------------------------------------------------ typing (sending side)

export const TYPING_REFRESH_MS = 2_000;
export const TYPING_IDLE_MS = 3_000;

/**
 * The sending side of the typing indicator for one conversation: `typing: true` on the first
 * keystroke and at most every `refreshMs` while typing goes on; `typing: false` after `idleMs`
 * without a keystroke, on blur, and on leaving the page (`stop()`).
 */
export class TypingSender {
  private typing = false;
  private lastTrueAt = 0;
  private idleTimer: unknown = null;

  constructor(
    private readonly conversationId: number,
    private readonly send: (message: ClientMessage) => unknown,
    private readonly t: Timers = realTimers,
    private readonly now: () => number = Date.now,
    private readonly refreshMs = TYPING_REFRESH_MS,
    private readonly idleMs = TYPING_IDLE_MS,
  ) {}

  get isTyping(): boolean {
    return this.typing;
  }

  keystroke(): void {
    const now = this.now();
    if (!this.typing || now - this.lastTrueAt >= this.refreshMs) {
      this.typing = true;
      this.lastTrueAt = now;
      this.send({ type: 'typing', payload: { conversationId: this.conversationId, typing: true } });
    }
    if (this.idleTimer !== null) this.t.clearTimeout(this.idleTimer);
    this.idleTimer = this.t.setTimeout(() => {
      this.idleTimer = null;
      this.stop();
    }, this.idleMs);
  }

  stop(): void {
    if (this.idleTimer !== null) {
      this.t.clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    if (!this.typing) return;
    this.typing = false;
    this.send({ type: 'typing', payload: { conversationId: this.conversationId, typing: false } });
  }
}
