import type { ClientMessage, ServerMessage } from './messages';

/** The stats topics: the layout's badges need all three. */
export const STATS_TOPICS = ['stats:tasks', 'stats:approvals', 'stats:conversations'] as const;
export const PRESENCE_TOPIC = 'presence';

export const conversationTopic = (id: number): string => `conversation:${id}`;

/** The opt-in topics of contract section 9 (the overview page shows them). */
export const DEPARTMENTS_TOPIC = 'stats:departments';
export const SLA_TOPIC = 'stats:sla';
export const OVERVIEW_PATH = '/overview';

/**
 * Topics a page needs: the layout (3 stats + presence), plus `conversation:{id}` on a conversation
 * page, and the department and SLA figures on the overview.
 */
export function topicsForPath(path: string): string[] {
  const topics: string[] = [...STATS_TOPICS, PRESENCE_TOPIC];
  const id = conversationIdFromPath(path);
  if (id !== null) topics.push(conversationTopic(id));
  if (path === OVERVIEW_PATH || path === `${OVERVIEW_PATH}/`) topics.push(DEPARTMENTS_TOPIC, SLA_TOPIC);
  return topics;
}

/** `/conversations/12` → 12; anything else → null. */
export function conversationIdFromPath(path: string): number | null {
  const m = /^\/conversations\/([1-9]\d{0,14})\/?$/.exec(path);
  return m ? Number(m[1]) : null;
}

/**
 * Names the server is known to accept (contract section 6). Only these go into the `?topics=`
 * of the WebSocket URL: an unknown name there makes the server refuse the upgrade (400), which
 * the browser reports as a plain failure and the client would retry forever. Anything else is
 * asked for with a `subscribe` message, where the server answers `unknown_topic` and nothing breaks —
 * so are the section 9 topics (`stats:departments`, `stats:sla`), which older servers do not have.
 */
export function isKnownTopic(name: string): boolean {
  return (
    (STATS_TOPICS as readonly string[]).includes(name) ||
    name === PRESENCE_TOPIC ||
    /^conversation:[1-9]\d{0,17}$/.test(name)
  );
}

export interface TopicError {
  code: string;
  message: string;
}

type Pending = { kind: 'subscribe' | 'unsubscribe'; topics: string[] };

/**
 * Keeps the topics of ONE WebSocket connection equal to the wanted set, with
 * `subscribe`/`unsubscribe` messages instead of reconnecting.
 *
 * - `urlTopics()` gives the topics for the URL of a new connection and remembers them: after
 *   the `connected` message the server follows exactly those.
 * - `setWanted()` (e.g. on a route change, or when another tab's wishes change) sends the
 *   difference once the connection is up; at most one request is in flight per direction change,
 *   and every `subscribed` reply (the server's full list) becomes the new known state.
 * - an `error` with code `unknown_topic` answers the oldest outstanding `subscribe`: the topic(s)
 *   it names are given up for this connection (so the client does not loop) and reported.
 */
export class TopicSubscriptions {
  private wanted = new Set<string>();
  /** What the server follows for this connection (null: no connection / before `connected`). */
  private server: Set<string> | null = null;
  /** What the server will follow once every outstanding request is answered. */
  private expected: Set<string> | null = null;
  private pending: Pending[] = [];
  private rejected = new Set<string>();
  private connectTopics: string[] = [];

  constructor(
    private readonly send: (message: ClientMessage) => boolean,
    private readonly onError?: (error: TopicError) => void,
  ) {}

  /** The wanted topics (sorted). */
  get wantedTopics(): string[] {
    return [...this.wanted].sort();
  }

  /** The server's list for this connection, as last acknowledged (sorted), or null. */
  get serverTopics(): string[] | null {
    return this.server ? [...this.server].sort() : null;
  }

  setWanted(topics: Iterable<string>): void {
    this.wanted = new Set(topics);
    this.reconcile();
  }

  /** Topics for the `?topics=` of a new connection; remembered until its `connected`. */
  urlTopics(): string[] {
    this.connectTopics = [...this.wanted].filter(isKnownTopic).sort();
    return this.connectTopics;
  }

  /** The connection is gone (or not up yet): nothing is known about the server side. */
  disconnected(): void {
    this.server = null;
    this.expected = null;
    this.pending = [];
  }

  /** Feed every message of the connection. Returns true when the message was about topics. */
  handle(msg: ServerMessage): boolean {
    if (msg.type === 'connected') {
      this.server = new Set(this.connectTopics);
      this.expected = new Set(this.connectTopics);
      this.pending = [];
      this.rejected.clear();
      this.reconcile();
      return false;
    }
    if (msg.type === 'subscribed') {
      if (this.server === null) return true;
      this.server = new Set(msg.payload.topics);
      this.pending.shift();
      if (this.pending.length === 0) {
        this.expected = new Set(this.server);
        this.reconcile();
      }
      return true;
    }
    if (msg.type === 'error') {
      if (msg.payload.code !== 'unknown_topic') return false;
      const { message } = msg.payload;
      const i = this.pending.findIndex((r) => r.kind === 'subscribe');
      const request = i >= 0 ? this.pending.splice(i, 1)[0] : null;
      if (request) {
        const named = request.topics.filter((t) => message.includes(JSON.stringify(t)));
        for (const t of named.length > 0 ? named : request.topics) this.rejected.add(t);
      }
      this.onError?.({ code: 'unknown_topic', message });
      if (this.server && this.pending.length === 0) {
        this.expected = new Set(this.server);
        this.reconcile();
      }
      return true;
    }
    return false;
  }

  private reconcile(): void {
    const expected = this.expected;
    if (!this.server || !expected) return;
    const add = [...this.wanted].filter((t) => !expected.has(t) && !this.rejected.has(t)).sort();
    const remove = [...expected].filter((t) => !this.wanted.has(t)).sort();
    if (add.length > 0 && this.send({ type: 'subscribe', topics: add })) {
      this.pending.push({ kind: 'subscribe', topics: add });
      add.forEach((t) => expected.add(t));
    }
    if (remove.length > 0 && this.send({ type: 'unsubscribe', topics: remove })) {
      this.pending.push({ kind: 'unsubscribe', topics: remove });
      remove.forEach((t) => expected.delete(t));
    }
  }
}
