/**
 * The real-time protocol's messages (docs/protocol.md; contract sections 5, 6, 8 and 9) as ONE
 * discriminated union, and the one place where what arrives is checked: every server message
 * enters the app through `ServerMessageDecoder` — a WebSocket text frame (`parseFrame`), or a
 * message relayed by the leader tab, which may run another build of the dashboard (`decode`).
 * Past it, code switches on `type` and trusts the payload's type; nothing re-checks by hand.
 *
 * Unknown types and payloads that do not match are dropped there and logged once per kind;
 * unknown fields are ignored (stripped), as the contract asks of clients.
 *
 * Reason to change: the wire protocol changes. Never depends on React, the query cache or the
 * socket machinery.
 */
// zod's mini build: the same checks, a fraction of the bundle.
import { z } from 'zod/mini';
import type {
  ApprovalStats,
  ConversationStats,
  DepartmentStats as DepartmentStatsRest,
  SlaStats as SlaStatsRest,
  Task,
  TaskStats,
} from '../lib/apiTypes';

// ------------------------------------------------------------------ payloads

const count = z.int().check(z.nonnegative());
const id = z.int();
const time = z.string();

const taskStats = z.object({ pending: count, inProgress: count, completed: count, total: count });
const approvalStats = z.object({ pending: count, approved: count, rejected: count, executed: count, total: count });
const conversationStats = z.object({ active: count, escalated: count, resolved: count, total: count });
const departmentStats = z.object({
  departments: z.array(
    z.object({ department: z.string(), pending: count, inProgress: count, completed: count, total: count }),
  ),
  truncated: z.optional(z.boolean()),
});
const slaStats = z.object({
  overdueTasks: count,
  oldestOpenTaskCreatedAt: z.nullable(time),
  escalatedConversations: count,
  oldestEscalationAt: z.nullable(time),
});

const task = z.object({
  id,
  type: z.string(),
  department: z.string(),
  description: z.string(),
  status: z.enum(['pending', 'in_progress', 'completed']),
  assignee: z.nullable(z.string()),
  createdBy: z.string(),
  createdAt: time,
  updatedAt: time,
  completedAt: z.nullable(time),
});

const presenceEntry = z.object({
  userId: id,
  username: z.string(),
  connections: count,
  viewing: z.nullable(z.string()),
});

/** A stats message: whole values, with a `seq` that grows per topic (a bad one is ignored, not fatal). */
function stats<T extends string, P extends z.ZodMiniType>(type: T, payload: P) {
  return z.object({ type: z.literal(type), seq: z.catch(z.optional(z.number()), undefined), payload });
}

// ------------------------------------------------------------------ the union

const serverMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('connected'),
    payload: z.object({
      userId: id,
      username: z.string(),
      role: z.string(),
      /** Server-Sent Events only (section 8): where `POST /api/v1/realtime/{connectionId}` goes. */
      connectionId: z.optional(z.string()),
    }),
  }),
  stats('stats:tasks', taskStats),
  stats('stats:approvals', approvalStats),
  stats('stats:conversations', conversationStats),
  stats('stats:departments', departmentStats),
  stats('stats:sla', slaStats),
  z.object({ type: z.literal('subscribed'), payload: z.object({ topics: z.array(z.string()) }) }),
  z.object({ type: z.literal('error'), payload: z.object({ code: z.string(), message: z.string() }) }),
  z.object({ type: z.literal('pong') }),
  z.object({ type: z.literal('presence'), payload: z.object({ online: z.array(presenceEntry) }) }),
  z.object({
    type: z.literal('typing'),
    payload: z.object({ conversationId: id, userId: id, username: z.string(), typing: z.boolean() }),
  }),
  z.object({ type: z.literal('task:assigned'), payload: task }),
  /** Server-Sent Events only (section 8): the code a WebSocket would have been closed with. */
  z.object({ type: z.literal('close'), payload: z.object({ code: z.int() }) }),
]);

/** Any message the server sends, checked. Switch on `type`. */
export type ServerMessage = z.infer<typeof serverMessage>;
export type ServerMessageType = ServerMessage['type'];
export type MessageOf<T extends ServerMessageType> = Extract<ServerMessage, { type: T }>;

export type ConnectedMessage = MessageOf<'connected'>;
export type PresenceMessage = MessageOf<'presence'>;
export type PresenceEntry = z.infer<typeof presenceEntry>;
export type TypingMessage = MessageOf<'typing'>;
export type DepartmentStats = z.infer<typeof departmentStats>;
export type SlaStats = z.infer<typeof slaStats>;

/** Every stats topic, each a message type of its own (sections 5 and 9). */
export const STATS_MESSAGE_TYPES = [
  'stats:tasks',
  'stats:approvals',
  'stats:conversations',
  'stats:departments',
  'stats:sla',
] as const satisfies readonly ServerMessageType[];
export type StatsMessageType = (typeof STATS_MESSAGE_TYPES)[number];
export type StatsMessage = MessageOf<StatsMessageType>;

const statsTypes: ReadonlySet<string> = new Set(STATS_MESSAGE_TYPES);
export function isStatsMessage(m: ServerMessage): m is StatsMessage {
  return statsTypes.has(m.type);
}

const knownTypes: ReadonlySet<string> = new Set(serverMessage.def.options.flatMap((o) => o.def.shape.type.def.values));

// ------------------------------------------------------------------ client → server

/** What a client sends (sections 5 and 6). */
export type ClientMessage =
  | { type: 'ping' }
  | { type: 'subscribe' | 'unsubscribe'; topics: string[] }
  | { type: 'viewing'; payload: { path: string } }
  | { type: 'typing'; payload: { conversationId: number; typing: boolean } };

// ------------------------------------------------------------------ the boundary

/** How many distinct problems are logged at most (a misbehaving server cannot flood the console). */
const MAX_REPORTS = 50;

export type DropLogger = (text: string) => void;

const consoleWarn: DropLogger = (text) => {
  if (typeof console !== 'undefined') console.warn(text);
};

/**
 * Checks what arrives against the union. Returns the message (unknown fields stripped) or null;
 * a drop is logged once per kind (per unknown type, per malformed type).
 */
export class ServerMessageDecoder {
  private readonly reported = new Set<string>();

  constructor(private readonly warn: DropLogger = consoleWarn) {}

  /** A WebSocket frame (or SSE `data:`): JSON text holding one message. */
  parseFrame(data: unknown): ServerMessage | null {
    if (typeof data !== 'string') {
      this.report('binary', 'Pulse: dropped a non-text frame from the server');
      return null;
    }
    let value: unknown;
    try {
      value = JSON.parse(data);
    } catch {
      this.report('json', 'Pulse: dropped a server frame that is not JSON');
      return null;
    }
    return this.decode(value);
  }

  /** An already parsed value (a frame's JSON, or a message relayed by another tab). */
  decode(value: unknown): ServerMessage | null {
    const type = value !== null && typeof value === 'object' ? (value as { type?: unknown }).type : undefined;
    if (typeof type !== 'string') {
      this.report('untyped', 'Pulse: dropped a server message that is not an object with a string "type"');
      return null;
    }
    if (!knownTypes.has(type)) {
      this.report(`unknown:${type}`, `Pulse: ignoring server messages of unknown type ${JSON.stringify(type.slice(0, 64))}`);
      return null;
    }
    const result = serverMessage.safeParse(value);
    if (result.success) return result.data;
    const issue = result.error.issues[0];
    const where = issue ? `${issue.path.join('.') || '(message)'}: ${issue.message}` : 'does not match';
    this.report(`malformed:${type}`, `Pulse: dropped a malformed ${JSON.stringify(type)} message (${where})`);
    return null;
  }

  private report(key: string, text: string): void {
    if (this.reported.has(key) || this.reported.size >= MAX_REPORTS) return;
    this.reported.add(key);
    this.warn(`${text}; further ones are dropped silently`);
  }
}

/** The app's decoder (one per page, so each kind of problem is logged once). */
export const serverMessages = new ServerMessageDecoder();

// ------------------------------------------------------------------ kept in step with the REST API

// The stats payloads and a task on the socket are the REST API's values (generated from its
// OpenAPI document): if the document changes, `npm run typecheck` fails here.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type WireMatchesRest = [
  Assert<Same<z.infer<typeof taskStats>, TaskStats>>,
  Assert<Same<z.infer<typeof approvalStats>, ApprovalStats>>,
  Assert<Same<z.infer<typeof conversationStats>, ConversationStats>>,
  Assert<Same<z.infer<typeof task>, Task>>,
  Assert<Same<z.infer<typeof departmentStats>, DepartmentStatsRest>>,
  Assert<Same<z.infer<typeof slaStats>, SlaStatsRest>>,
];
