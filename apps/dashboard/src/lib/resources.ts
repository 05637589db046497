import {
  useInfiniteQuery,
  type InfiniteData,
  useMutation,
  useQuery,
  useQueryClient,
  type QueryClient,
  type QueryKey,
} from '@tanstack/react-query';
import { queryKeys } from '../realtime/queryKeys';
import { api, qs } from './api';
import { authStore } from './auth';
import type {
  Approval,
  ApprovalStats,
  ApprovalStatsEnvelope,
  Conversation,
  ConversationStats,
  Decision,
  DepartmentStats,
  NewApproval,
  NewConversation,
  NewTask,
  Page,
  SlaStats,
  Task,
  TaskStats,
  TaskStatus,
} from './apiTypes';

export type { Approval, Conversation, Task };

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

/** Per-department task counts (contract section 9): fetched once, then `stats:departments` keeps them. */
export function useDepartmentStats() {
  const qc = useQueryClient();
  return useQuery(statsQueryOptions<DepartmentStats>(qc, queryKeys.departmentStats, '/api/v1/tasks/stats/departments'));
}

/** Overdue tasks and the oldest open items (contract section 9): fetched once, then `stats:sla` keeps them. */
export function useSlaStats() {
  const qc = useQueryClient();
  return useQuery(statsQueryOptions<SlaStats>(qc, queryKeys.slaStats, '/api/v1/stats/sla'));
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

// ------------------------------------------------------------------ optimistic mutations

type Item = { id: number };
type ListData<T> = InfiniteData<Page<T>, unknown>;
type Undo = () => void;

function isList<T>(data: unknown): data is ListData<T> {
  return !!data && typeof data === 'object' && Array.isArray((data as { pages?: unknown }).pages);
}

/** The first cached copy of an item (lists or detail) under `base`. */
export function findCached<T extends Item>(qc: QueryClient, base: readonly string[], id: number): T | undefined {
  for (const [, data] of qc.getQueriesData<unknown>({ queryKey: [...base] })) {
    if (isList<T>(data)) {
      for (const p of data.pages) {
        const hit = p.items.find((x) => x.id === id);
        if (hit) return hit;
      }
    } else if (data && typeof data === 'object' && (data as Item).id === id) {
      return data as T;
    }
  }
  return undefined;
}

/**
 * Replaces item `id` in every list and detail query under `base` with `patch(item)`.
 * Returns an undo that puts the previous version back, only where the optimistic version is
 * still there (a refetch in between brought the server's truth, which stays).
 */
function patchCached<T extends Item>(qc: QueryClient, base: readonly string[], id: number, patch: (item: T) => T): Undo {
  const undos: Undo[] = [];
  for (const [key, data] of qc.getQueriesData<unknown>({ queryKey: [...base] })) {
    if (isList<T>(data)) {
      let before: T | undefined;
      let after: T | undefined;
      const pages = data.pages.map((p) => ({
        ...p,
        items: p.items.map((x) => {
          if (x.id !== id) return x;
          before = x;
          after = patch(x);
          return after;
        }),
      }));
      if (!before || !after) continue;
      qc.setQueryData<ListData<T>>(key, { ...data, pages });
      // The cache stores a structurally shared copy: remember the object it actually holds.
      const b = before;
      const a = findIn<T>(qc.getQueryData(key), id) ?? after;
      undos.push(() =>
        qc.setQueryData<unknown>(key, (cur: unknown) =>
          isList<T>(cur)
            ? { ...cur, pages: cur.pages.map((p) => ({ ...p, items: p.items.map((x) => (x === a ? b : x)) })) }
            : cur,
        ),
      );
    } else if (data && typeof data === 'object' && (data as Item).id === id) {
      const before = data as T;
      qc.setQueryData<T>(key, patch(before));
      const after = qc.getQueryData<T>(key);
      undos.push(() => qc.setQueryData<unknown>(key, (cur: unknown) => (cur === after ? before : cur)));
    }
  }
  return () => undos.forEach((u) => u());
}

function findIn<T extends Item>(data: unknown, id: number): T | undefined {
  if (!isList<T>(data)) return undefined;
  for (const p of data.pages) {
    const hit = p.items.find((x) => x.id === id);
    if (hit) return hit;
  }
  return undefined;
}

/** Puts a new (temporary) item at the top of every list under `base` whose filters it matches. */
function insertCached<T extends Item>(
  qc: QueryClient,
  base: readonly string[],
  item: T,
  matches: (filters: Record<string, string>, item: T) => boolean,
): Undo {
  const keys: QueryKey[] = [];
  for (const [key, data] of qc.getQueriesData<unknown>({ queryKey: [...base] })) {
    const filters = (key[1] ?? {}) as Record<string, string>;
    if (!isList<T>(data) || typeof filters !== 'object' || !matches(filters, item)) continue;
    const [first, ...rest] = data.pages;
    const pages = first ? [{ ...first, items: [item, ...first.items] }, ...rest] : [{ items: [item], nextCursor: null }];
    qc.setQueryData<ListData<T>>(key, { ...data, pages });
    keys.push(key);
  }
  return () => keys.forEach((key) => replaceTemp<T>(qc, key, item.id, null));
}

/** Replaces (or, with null, removes) the temporary item in one list; never duplicates the real one. */
function replaceTemp<T extends Item>(qc: QueryClient, key: QueryKey, tempId: number, real: T | null): void {
  qc.setQueryData<unknown>(key, (cur: unknown) => {
    if (!isList<T>(cur)) return cur;
    const hasReal = real !== null && cur.pages.some((p) => p.items.some((x) => x.id === real.id));
    return {
      ...cur,
      pages: cur.pages.map((p) => ({
        ...p,
        items: p.items.flatMap((x) => (x.id !== tempId ? [x] : real && !hasReal ? [real] : [])),
      })),
    };
  });
}

/** Changes a stats value at once; the undo restores it unless a pushed (newer) value replaced it since. */
function bumpStats<T>(qc: QueryClient, key: QueryKey, change: (v: T) => T): Undo {
  const before = qc.getQueryData<T>(key);
  if (before === undefined) return () => {};
  qc.setQueryData<T>(key, change(before));
  // What the cache holds now (a structurally shared copy) and when it was written: a value
  // pushed by the server afterwards is newer than the undo and stays.
  const after = qc.getQueryData<T>(key);
  const at = qc.getQueryState(key)?.dataUpdatedAt;
  return () => {
    if (qc.getQueryData<T>(key) === after && qc.getQueryState(key)?.dataUpdatedAt === at) qc.setQueryData<T>(key, before);
  };
}

function add<T extends object>(v: T, delta: Partial<Record<keyof T, number>>): T {
  const out = { ...v } as Record<string, number>;
  for (const [k, d] of Object.entries(delta) as [string, number][]) out[k] = Math.max(0, (out[k] ?? 0) + d);
  return out as T;
}

const bumpTaskStats = (qc: QueryClient, delta: Partial<Record<keyof TaskStats, number>>) =>
  bumpStats<TaskStats>(qc, queryKeys.taskStats, (v) => add(v, delta));
const bumpApprovalStats = (qc: QueryClient, delta: Partial<Record<keyof ApprovalStats, number>>) =>
  bumpStats<ApprovalStatsEnvelope>(qc, queryKeys.approvalStats, (v) => ({ ...v, stats: add(v.stats, delta) }));
const bumpConversationStats = (qc: QueryClient, delta: Partial<Record<keyof ConversationStats, number>>) =>
  bumpStats<ConversationStats>(qc, queryKeys.conversationStats, (v) => add(v, delta));

let tempIds = 0;
/** Temporary ids of optimistic new items are negative (never a server id). */
export const nextTempId = () => -(++tempIds);
export const isTemp = (item: Item) => item.id < 0;

interface OptimisticContext {
  undo: Undo[];
}

/**
 * A mutation whose effect shows at once (`apply` in onMutate), is undone if the server
 * refuses (onError; the caller shows the message), and is settled by refetching the lists
 * (onSettled). `confirm` may put the server's answer in place on success.
 */
function useOptimisticMutation<V, R>(
  base: readonly string[],
  mutationFn: (v: V) => Promise<R>,
  apply: (qc: QueryClient, v: V) => Undo[],
  confirm?: (qc: QueryClient, v: V, result: R) => void,
) {
  const qc = useQueryClient();
  return useMutation<R, Error, V, OptimisticContext>({
    mutationFn,
    onMutate: async (v) => {
      // In-flight refetches would overwrite the optimistic state with older data.
      await qc.cancelQueries({ queryKey: [...base] });
      return { undo: apply(qc, v) };
    },
    onError: (_err, _v, ctx) => {
      ctx?.undo
        .slice()
        .reverse()
        .forEach((u) => u());
    },
    onSuccess: (result, v) => confirm?.(qc, v, result),
    // Not awaited: the outcome (and a refusal's message) shows without waiting for the refetch.
    onSettled: () => {
      void qc.invalidateQueries({ queryKey: [...base] });
    },
  });
}

const matchTask = (f: Record<string, string>, t: Task) =>
  (!f.status || f.status === t.status) &&
  (!f.department || f.department === t.department) &&
  (!f.assignee || f.assignee === t.assignee);
const matchApproval = (f: Record<string, string>, a: Approval) => !f.status || f.status === a.status;
const matchConversation = (f: Record<string, string>, c: Conversation) => !f.state || f.state === c.state;

const now = () => new Date().toISOString();
/** Who creates an optimistic item (the server's answer replaces it). */
const me = () => authStore.get()?.user.username ?? '';

export const useCreateTask = () =>
  useOptimisticMutation<NewTask & { tempId?: number }, Task>(
    queryKeys.tasks,
    ({ tempId: _t, ...t }) => api<Task>('/api/v1/tasks', { body: t }),
    (qc, v) => {
      const tempId = (v.tempId ??= nextTempId());
      const status: TaskStatus = v.assignee ? 'in_progress' : 'pending';
      const item: Task = {
        id: tempId,
        type: v.type,
        department: v.department,
        description: v.description,
        status,
        assignee: v.assignee ?? null,
        createdBy: me(),
        createdAt: now(),
        updatedAt: now(),
        completedAt: null,
      };
      return [
        insertCached<Task>(qc, queryKeys.tasks, item, matchTask),
        bumpTaskStats(qc, status === 'pending' ? { pending: 1, total: 1 } : { inProgress: 1, total: 1 }),
      ];
    },
    (qc, v, task) => {
      for (const [key] of qc.getQueriesData({ queryKey: [...queryKeys.tasks] })) replaceTemp(qc, key, v.tempId ?? 0, task);
    },
  );

export const useAssignTask = () =>
  useOptimisticMutation<{ id: number; assignee: string }, Task>(
    queryKeys.tasks,
    ({ id, assignee }) => api<Task>(`/api/v1/tasks/${id}/assign`, { body: { assignee } }),
    (qc, { id, assignee }) => {
      const prev = findCached<Task>(qc, queryKeys.tasks, id);
      return [
        patchCached<Task>(qc, queryKeys.tasks, id, (t) => ({ ...t, assignee, status: 'in_progress' })),
        prev?.status === 'pending' ? bumpTaskStats(qc, { pending: -1, inProgress: 1 }) : () => {},
      ];
    },
  );

export const useCompleteTask = () =>
  useOptimisticMutation<number, Task>(
    queryKeys.tasks,
    (id) => api<Task>(`/api/v1/tasks/${id}/complete`, { body: {} }),
    (qc, id) => {
      const prev = findCached<Task>(qc, queryKeys.tasks, id);
      return [
        patchCached<Task>(qc, queryKeys.tasks, id, (t) => ({ ...t, status: 'completed', completedAt: now() })),
        prev?.status === 'pending'
          ? bumpTaskStats(qc, { pending: -1, completed: 1 })
          : prev?.status === 'in_progress'
            ? bumpTaskStats(qc, { inProgress: -1, completed: 1 })
            : () => {},
      ];
    },
  );

export const useCreateApproval = () =>
  useOptimisticMutation<NewApproval & { tempId?: number }, Approval>(
    queryKeys.approvals,
    ({ tempId: _t, ...a }) => api<Approval>('/api/v1/approvals', { body: a }),
    (qc, v) => {
      const tempId = (v.tempId ??= nextTempId());
      const item: Approval = {
        id: tempId,
        kind: v.kind,
        summary: v.summary,
        payload: v.payload ?? null,
        status: 'pending',
        requestedBy: me(),
        decidedBy: null,
        decisionReason: null,
        decidedAt: null,
        executedBy: null,
        executedAt: null,
        createdAt: now(),
        updatedAt: now(),
      };
      return [insertCached<Approval>(qc, queryKeys.approvals, item, matchApproval), bumpApprovalStats(qc, { pending: 1, total: 1 })];
    },
    (qc, v, approval) => {
      for (const [key] of qc.getQueriesData({ queryKey: [...queryKeys.approvals] })) replaceTemp(qc, key, v.tempId ?? 0, approval);
    },
  );

export const useDecideApproval = () =>
  useOptimisticMutation<{ id: number; decision: Decision; reason?: string }, Approval>(
    queryKeys.approvals,
    ({ id, decision, reason }) =>
      api<Approval>(`/api/v1/approvals/${id}/decide`, { body: reason ? { decision, reason } : { decision } }),
    (qc, { id, decision, reason }) => {
      const prev = findCached<Approval>(qc, queryKeys.approvals, id);
      return [
        patchCached<Approval>(qc, queryKeys.approvals, id, (a) => ({
          ...a,
          status: decision,
          ...(reason ? { decisionReason: reason } : {}),
        })),
        prev?.status === 'pending' ? bumpApprovalStats(qc, { pending: -1, [decision]: 1 }) : () => {},
      ];
    },
  );

export const useExecuteApproval = () =>
  useOptimisticMutation<number, Approval>(
    queryKeys.approvals,
    (id) => api<Approval>(`/api/v1/approvals/${id}/execute`, { body: {} }),
    (qc, id) => {
      const prev = findCached<Approval>(qc, queryKeys.approvals, id);
      return [
        patchCached<Approval>(qc, queryKeys.approvals, id, (a) => ({ ...a, status: 'executed' })),
        prev?.status === 'approved' ? bumpApprovalStats(qc, { approved: -1, executed: 1 }) : () => {},
      ];
    },
  );

export const useCreateConversation = () =>
  useOptimisticMutation<NewConversation & { tempId?: number }, Conversation>(
    queryKeys.conversations,
    ({ tempId: _t, ...c }) => api<Conversation>('/api/v1/conversations', { body: c }),
    (qc, v) => {
      const tempId = (v.tempId ??= nextTempId());
      const item: Conversation = {
        id: tempId,
        guestName: v.guestName,
        channel: v.channel,
        subject: v.subject,
        state: 'active',
        escalationReason: null,
        createdBy: me(),
        createdAt: now(),
        updatedAt: now(),
        resolvedAt: null,
        escalatedAt: null,
      };
      return [
        insertCached<Conversation>(qc, queryKeys.conversations, item, matchConversation),
        bumpConversationStats(qc, { active: 1, total: 1 }),
      ];
    },
    (qc, v, conv) => {
      for (const [key] of qc.getQueriesData({ queryKey: [...queryKeys.conversations] }))
        replaceTemp(qc, key, v.tempId ?? 0, conv);
    },
  );

export const useEscalateConversation = () =>
  useOptimisticMutation<{ id: number; reason: string }, Conversation>(
    queryKeys.conversations,
    ({ id, reason }) => api<Conversation>(`/api/v1/conversations/${id}/escalate`, { body: { reason } }),
    (qc, { id, reason }) => {
      const prev = findCached<Conversation>(qc, queryKeys.conversations, id);
      return [
        patchCached<Conversation>(qc, queryKeys.conversations, id, (c) => ({
          ...c,
          state: 'escalated',
          escalationReason: reason,
          escalatedAt: now(),
        })),
        prev?.state === 'active' ? bumpConversationStats(qc, { active: -1, escalated: 1 }) : () => {},
      ];
    },
  );

export const useResolveConversation = () =>
  useOptimisticMutation<number, Conversation>(
    queryKeys.conversations,
    (id) => api<Conversation>(`/api/v1/conversations/${id}/resolve`, { body: {} }),
    (qc, id) => {
      const prev = findCached<Conversation>(qc, queryKeys.conversations, id);
      return [
        patchCached<Conversation>(qc, queryKeys.conversations, id, (c) => ({ ...c, state: 'resolved' })),
        prev?.state === 'active'
          ? bumpConversationStats(qc, { active: -1, resolved: 1 })
          : prev?.state === 'escalated'
            ? bumpConversationStats(qc, { escalated: -1, resolved: 1 })
            : () => {},
      ];
    },
  );

/** One conversation (its page). Under the `conversations` key, so pushed changes refresh it. */
export function useConversation(id: number) {
  return useQuery({
    queryKey: queryKeys.conversation(id),
    queryFn: ({ signal }) => api<Conversation>(`/api/v1/conversations/${id}`, { signal }),
    refetchOnWindowFocus: false,
  });
}
