export const queryKeys = {
  taskStats: ['taskStats'] as const,
  approvalStats: ['approvalStats'] as const,
  conversationStats: ['conversationStats'] as const,
  /** `GET /api/v1/tasks/stats/departments`, then `stats:departments`. */
  departmentStats: ['departmentStats'] as const,
  /** `GET /api/v1/stats/sla`, then `stats:sla`. */
  slaStats: ['slaStats'] as const,
  /** A topic's history since a local midnight (epoch ms): fetched once per page load. */
  statsHistory: (topic: string, since: number) => ['statsHistory', topic, since] as const,
  /** Prefix of every task list query: ['tasks', filters]. */
  tasks: ['tasks'] as const,
  approvals: ['approvals'] as const,
  conversations: ['conversations'] as const,
  /** One conversation: under the `conversations` prefix, so a pushed change refreshes it too. */
  conversation: (id: number) => ['conversations', 'detail', id] as const,
  me: ['me'] as const,
  /** `GET /api/v1/users` (admins). */
  users: ['users'] as const,
};
