export const queryKeys = {
  taskStats: ['taskStats'] as const,
  approvalStats: ['approvalStats'] as const,
  conversationStats: ['conversationStats'] as const,
  /** Prefix of every task list query: ['tasks', filters]. */
  tasks: ['tasks'] as const,
  approvals: ['approvals'] as const,
  conversations: ['conversations'] as const,
  me: ['me'] as const,
};
