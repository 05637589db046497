/**
 * The REST API's types, by the names the app uses. They come from `openapi.gen.ts`, which is
 * generated from the server's OpenAPI document (`cargo xtask api-types`; CI fails when the
 * committed file differs from what the server documents), so they cannot drift from the server.
 *
 * Reason to change: the app needs another REST type. Never write a REST shape by hand here —
 * except the few below that the contract defines and the server's document does not carry yet.
 */
import type { components } from './openapi.gen';

type Schemas = components['schemas'];

export type Role = Schemas['Role'];
export type User = Schemas['User'];
/** `POST /api/v1/auth/login`'s answer, kept as the session. */
export type LoginAnswer = Schemas['LoginAnswer'];
export type NewUser = Schemas['NewUser'];

export type Task = Schemas['Task'];
export type TaskStatus = Schemas['TaskStatus'];
export type NewTask = Schemas['NewTask'];
export type TaskStats = Schemas['TaskStats'];

export type Approval = Schemas['Approval'];
export type ApprovalStatus = Schemas['ApprovalStatus'];
export type NewApproval = Schemas['NewApproval'];
export type Decision = Schemas['Decision'];
export type ApprovalStats = Schemas['ApprovalStats'];
/** `GET /api/v1/approvals/stats` wraps its counts (`{stats}`); the query cache holds the same. */
export type ApprovalStatsEnvelope = Schemas['WrappedApprovalStats'];

export type Conversation = Schemas['Conversation'];
export type ConversationState = Schemas['ConversationState'];
export type NewConversation = Schemas['NewConversation'];
export type ConversationStats = Schemas['ConversationStats'];

export type ErrorBody = Schemas['ErrorBody'];
export type Ticket = Schemas['Ticket'];

/** One page of a listing: what every `Page_*` of the document is. */
export interface Page<T> {
  items: T[];
  nextCursor: number | null;
}
type Assert<T extends true> = T;
export type PagesMatch = [
  Assert<Schemas['Page_Task'] extends Page<Task> ? true : false>,
  Assert<Schemas['Page_Approval'] extends Page<Approval> ? true : false>,
  Assert<Schemas['Page_Conversation'] extends Page<Conversation> ? true : false>,
];

// ------------------------------------------------------------------ user lifecycle (contract section 2)
// Not in the server's OpenAPI document yet: the server side is built in parallel (issue 13).
// Once it is, `cargo xtask api-types` brings the generated shapes and these become aliases
// of them (a mismatch then fails the typecheck where they are used).

/** A user as `GET /api/v1/users` and `PATCH /api/v1/users/{id}` return it. */
export type ManagedUser = User & { active: boolean; createdAt: string };
/** `{"items": [user, ...]}`, ordered by id. */
export interface ManagedUserList {
  items: ManagedUser[];
}
/** `PATCH /api/v1/users/{id}`: at least one field. */
export interface UserChanges {
  role?: Role;
  active?: boolean;
  password?: string;
}
/** `POST /api/v1/me/password` → 204; a wrong current password → 403. */
export interface PasswordChange {
  currentPassword: string;
  newPassword: string;
}

// ------------------------------------------------------------------ live operations insight (contract section 9)
// Not in the server's OpenAPI document yet (issue 17, server side). The socket's payloads are
// asserted (messages.ts) to equal these, as the contract says they do.

/** One department's task counts. */
export interface DepartmentCounts {
  department: string;
  pending: number;
  inProgress: number;
  completed: number;
  total: number;
}
/** `GET /api/v1/tasks/stats/departments`, and the `stats:departments` payload: sorted by name, at most 200. */
export interface DepartmentStats {
  departments: DepartmentCounts[];
  truncated?: boolean;
}
/** `GET /api/v1/stats/sla`, and the `stats:sla` payload (times RFC 3339, or null). */
export interface SlaStats {
  overdueTasks: number;
  oldestOpenTaskCreatedAt: string | null;
  escalatedConversations: number;
  oldestEscalationAt: string | null;
}
/** `GET /api/v1/stats/history?topic=&since=`: the topic's value at the end of every minute in which it changed. */
export interface StatsHistoryAnswer {
  points: { at: string; payload: Record<string, unknown> }[];
}
