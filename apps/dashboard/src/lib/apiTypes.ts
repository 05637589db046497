/**
 * The REST API's types, by the names the app uses. They come from `openapi.gen.ts`, which is
 * generated from the server's OpenAPI document (`cargo xtask api-types`; CI fails when the
 * committed file differs from what the server documents), so they cannot drift from the server.
 *
 * Reason to change: the app needs another REST type. Never write a REST shape by hand here.
 */
import type { components } from './openapi.gen';

type Schemas = components['schemas'];

export type Role = Schemas['Role'];
/** A user as every user endpoint returns it (`active`, `createdAt` included: contract section 2). */
export type User = Schemas['User'];
/** `POST /api/v1/auth/login`'s answer (the session keeps less of it: `auth.ts`). */
export type LoginAnswer = Schemas['LoginAnswer'];
export type NewUser = Schemas['NewUser'];
/** `GET /api/v1/users`: `{"items": [user, ...]}`, ordered by id. */
export type UserList = Schemas['UserList'];
/** `PATCH /api/v1/users/{id}`: at least one field (`{}` → 400). */
export type UserChanges = Schemas['UserChanges'];
/** `POST /api/v1/me/password` → 204; a wrong current password → 403. */
export type PasswordChange = Schemas['PasswordChange'];

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

// ------------------------------------------------------------------ live operations insight (contract section 9)
// The socket's payloads are asserted (messages.ts) to equal these, as the contract says they do.

/** One department's task counts. */
export type DepartmentCounts = Schemas['DepartmentCounts'];
/** `GET /api/v1/tasks/stats/departments`, and the `stats:departments` payload: sorted by name, at most 200. */
export type DepartmentStats = Schemas['DepartmentStats'];
/** `GET /api/v1/stats/sla`, and the `stats:sla` payload (times RFC 3339, or null). */
export type SlaStats = Schemas['SlaStats'];
/** `GET /api/v1/stats/history?topic=&since=`: the topic's value at the end of every minute in which it changed. */
export type StatsHistoryAnswer = Schemas['StatsHistory'];
