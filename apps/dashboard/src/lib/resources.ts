import {
  useInfiniteQuery,
  useMutation,
  useQuery,
  useQueryClient,
  type QueryClient,
  type QueryKey,
} from '@tanstack/react-query';
import { queryKeys } from '../realtime/queryKeys';
import type { ApprovalStatsEnvelope, ConversationStats, TaskStats } from '../realtime/types';
import { api, qs } from './api';

export type TaskStatus = 'pending' | 'in_progress' | 'completed';
export interface Task {
  id: number;
  type: string;
  department: string;
  description: string;
  status: TaskStatus;
  assignee: string | null;
  createdBy?: string | number | null;
  createdAt: string;
  updatedAt?: string;
  completedAt?: string | null;
}

export type ApprovalStatus = 'pending' | 'approved' | 'rejected' | 'executed';
export interface Approval {
  id: number;
  kind: string;
  summary: string;
  payload?: unknown;
  status: ApprovalStatus;
  reason?: string | null;
  createdBy?: string | number | null;
  decidedBy?: string | number | null;
  createdAt?: string;
  updatedAt?: string;
  [key: string]: unknown;
}

export type ConversationState = 'active' | 'escalated' | 'resolved';
export interface Conversation {
  id: number;
  guestName: string;
  channel: string;
  subject: string;
  state: ConversationState;
  escalationReason?: string | null;
  reason?: string | null;
  createdAt?: string;
  updatedAt?: string;
  [key: string]: unknown;
}

export interface Page<T> {
  items: T[];
  nextCursor: number | string | null;
}

/**
 * Initial fetch of a stats value. After that the WebSocket keeps the cache current
 * (staleTime: Infinity, no refetchInterval, no refetch on focus/reconnect). If a pushed
 * value lands while the fetch is in flight, the pushed (newer) value wins.
 */
export function statsQueryOptions<T>(queryClient: QueryClient, key: QueryKey, path: string) {
  return {
    queryKey: key,
    queryFn: async ({ signal }: { signal: AbortSignal }): Promise<T> => {
      const started = Date.now();
      const value = await api<T>(path, { signal });
      const state = queryClient.getQueryState<T>(key);
      if (state?.data !== undefined && state.dataUpdatedAt >= started) return state.data;
      return value;
    },
    staleTime: Infinity,
    refetchOnWindowFocus: false,
    refetchOnReconnect: false,
    refetchOnMount: false,
    refetchInterval: false as const,
  };
}

export function useTaskStats() {
  const qc = useQueryClient();
  return useQuery(statsQueryOptions<TaskStats>(qc, queryKeys.taskStats, '/api/v1/tasks/stats'));
}

export function useApprovalStats() {
  const qc = useQueryClient();
  return useQuery(statsQueryOptions<ApprovalStatsEnvelope>(qc, queryKeys.approvalStats, '/api/v1/approvals/stats'));
}

export function useConversationStats() {
  const qc = useQueryClient();
  return useQuery(
    statsQueryOptions<ConversationStats>(qc, queryKeys.conversationStats, '/api/v1/conversations/stats'),
  );
}

const PAGE_SIZE = 50;

function useList<T>(base: readonly string[], path: string, filters: Record<string, string>) {
  return useInfiniteQuery({
    queryKey: [...base, filters],
    queryFn: ({ pageParam, signal }) =>
      api<Page<T>>(`${path}${qs({ ...filters, limit: PAGE_SIZE, cursor: pageParam ?? undefined })}`, { signal }),
    initialPageParam: null as number | string | null,
    getNextPageParam: (last) => (last.nextCursor === null || last.nextCursor === undefined ? undefined : last.nextCursor),
    refetchOnWindowFocus: false,
  });
}

export interface TaskFilters {
  status: string;
  department: string;
  assignee: string;
  [key: string]: string;
}

export const useTasks = (f: TaskFilters) => useList<Task>(queryKeys.tasks, '/api/v1/tasks', f);
export const useApprovals = (f: { status: string }) => useList<Approval>(queryKeys.approvals, '/api/v1/approvals', f);
export const useConversations = (f: { state: string }) =>
  useList<Conversation>(queryKeys.conversations, '/api/v1/conversations', f);

/** A mutation that refreshes the given list queries when it succeeds. */
function useListMutation<V, R>(listKey: readonly string[], fn: (v: V) => Promise<R>) {
  const qc = useQueryClient();
  return useMutation({
    mutationFn: fn,
    onSuccess: () => qc.invalidateQueries({ queryKey: [...listKey] }),
  });
}

export interface NewTask {
  type: string;
  department: string;
  description: string;
  assignee?: string;
}

export const useCreateTask = () =>
  useListMutation(queryKeys.tasks, (t: NewTask) => api<Task>('/api/v1/tasks', { body: t }));
export const useAssignTask = () =>
  useListMutation(queryKeys.tasks, ({ id, assignee }: { id: number; assignee: string }) =>
    api<Task>(`/api/v1/tasks/${id}/assign`, { body: { assignee } }),
  );
export const useCompleteTask = () =>
  useListMutation(queryKeys.tasks, (id: number) => api<Task>(`/api/v1/tasks/${id}/complete`, { body: {} }));

export interface NewApproval {
  kind: string;
  summary: string;
}
export const useCreateApproval = () =>
  useListMutation(queryKeys.approvals, (a: NewApproval) => api<Approval>('/api/v1/approvals', { body: a }));
export const useDecideApproval = () =>
  useListMutation(
    queryKeys.approvals,
    ({ id, decision, reason }: { id: number; decision: 'approved' | 'rejected'; reason?: string }) =>
      api<Approval>(`/api/v1/approvals/${id}/decide`, { body: reason ? { decision, reason } : { decision } }),
  );
export const useExecuteApproval = () =>
  useListMutation(queryKeys.approvals, (id: number) =>
    api<Approval>(`/api/v1/approvals/${id}/execute`, { body: {} }),
  );

export interface NewConversation {
  guestName: string;
  channel: string;
  subject: string;
}
export const useCreateConversation = () =>
  useListMutation(queryKeys.conversations, (c: NewConversation) =>
    api<Conversation>('/api/v1/conversations', { body: c }),
  );
export const useEscalateConversation = () =>
  useListMutation(queryKeys.conversations, ({ id, reason }: { id: number; reason: string }) =>
    api<Conversation>(`/api/v1/conversations/${id}/escalate`, { body: { reason } }),
  );
export const useResolveConversation = () =>
  useListMutation(queryKeys.conversations, (id: number) =>
    api<Conversation>(`/api/v1/conversations/${id}/resolve`, { body: {} }),
  );
