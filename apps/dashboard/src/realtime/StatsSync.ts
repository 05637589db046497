import type { QueryClient } from '@tanstack/react-query';
import { queryKeys } from './queryKeys';
import type { StatsHistory } from './StatsHistory';
import type {
  ApprovalStats,
  ApprovalStatsEnvelope,
  ConversationStats,
  ServerMessage,
  StatsTopic,
  TaskStats,
} from './types';

export type HandleResult = 'applied' | 'unchanged' | 'dropped' | 'ignored';

const FIELDS: Record<StatsTopic, readonly string[]> = {
  'stats:tasks': ['pending', 'inProgress', 'completed', 'total'],
  'stats:approvals': ['pending', 'approved', 'rejected', 'executed', 'total'],
  'stats:conversations': ['active', 'escalated', 'resolved', 'total'],
};

const LIST_KEY: Record<StatsTopic, readonly string[]> = {
  'stats:tasks': queryKeys.tasks,
  'stats:approvals': queryKeys.approvals,
  'stats:conversations': queryKeys.conversations,
};

function isStatsTopic(type: string): type is StatsTopic {
  return type === 'stats:tasks' || type === 'stats:approvals' || type === 'stats:conversations';
}

/** Picks the known numeric fields; null when the payload is not a valid stats value. */
function readPayload(topic: StatsTopic, payload: unknown): Record<string, number> | null {
  if (payload === null || typeof payload !== 'object') return null;
  const out: Record<string, number> = {};
  for (const f of FIELDS[topic]) {
    const v = (payload as Record<string, unknown>)[f];
    if (typeof v !== 'number' || !Number.isFinite(v)) return null;
    out[f] = v;
  }
  return out;
}

function sameValues(a: Record<string, number> | undefined, b: Record<string, number>): boolean {
  if (!a) return false;
  return Object.keys(b).every((k) => a[k] === b[k]);
}

/**
 * Writes WebSocket messages into the react-query cache.
 * - stats:tasks → ['taskStats'] (payload as is)
 * - stats:approvals → ['approvalStats'] as {stats: payload} (same shape as GET /approvals/stats)
 * - stats:conversations → ['conversationStats']
 * Frames whose `seq` is not newer than the last one seen for that topic are dropped;
 * a `connected` message (new connection) forgets the seqs, so the snapshot that follows
 * replaces whatever the page held. When a value changes, the matching list queries are
 * invalidated (refetched only if on screen). The stats endpoints are never refetched.
 */
export class StatsSync {
  private lastSeq = new Map<StatsTopic, number>();

  constructor(
    private readonly queryClient: QueryClient,
    private readonly history?: StatsHistory,
    private readonly now: () => number = Date.now,
  ) {}

  /** Last seq seen for a topic (undefined after a `connected`). */
  seqOf(topic: StatsTopic): number | undefined {
    return this.lastSeq.get(topic);
  }

  reset(): void {
    this.lastSeq.clear();
  }

  handle(msg: ServerMessage): HandleResult {
    if (msg.type === 'connected') {
      this.lastSeq.clear();
      if (msg.payload && typeof msg.payload === 'object') {
        this.queryClient.setQueryData(['connection'], msg.payload);
      }
      return 'applied';
    }
    if (!isStatsTopic(msg.type)) return 'ignored';
    const topic = msg.type;
    const values = readPayload(topic, msg.payload);
    if (!values) return 'ignored';
    const seq = typeof msg.seq === 'number' && Number.isFinite(msg.seq) ? msg.seq : undefined;
    if (seq !== undefined) {
      const last = this.lastSeq.get(topic);
      if (last !== undefined && seq <= last) return 'dropped';
      this.lastSeq.set(topic, seq);
    }
    const previous = this.read(topic);
    this.write(topic, values);
    this.history?.push(topic, values, this.now());
    if (sameValues(previous, values)) return 'unchanged';
    if (previous !== undefined) {
      // The lists behind this topic changed: refresh the ones on screen (never the stats endpoints).
      void this.queryClient.invalidateQueries({ queryKey: [...LIST_KEY[topic]] });
    }
    return 'applied';
  }

  private read(topic: StatsTopic): Record<string, number> | undefined {
    switch (topic) {
      case 'stats:tasks':
        return this.queryClient.getQueryData<TaskStats>(queryKeys.taskStats) as unknown as Record<string, number> | undefined;
      case 'stats:approvals':
        return this.queryClient.getQueryData<ApprovalStatsEnvelope>(queryKeys.approvalStats)?.stats as unknown as
          | Record<string, number>
          | undefined;
      case 'stats:conversations':
        return this.queryClient.getQueryData<ConversationStats>(queryKeys.conversationStats) as unknown as
          | Record<string, number>
          | undefined;
    }
  }

  private write(topic: StatsTopic, values: Record<string, number>): void {
    switch (topic) {
      case 'stats:tasks':
        this.queryClient.setQueryData<TaskStats>(queryKeys.taskStats, values as unknown as TaskStats);
        break;
      case 'stats:approvals':
        this.queryClient.setQueryData<ApprovalStatsEnvelope>(queryKeys.approvalStats, {
          stats: values as unknown as ApprovalStats,
        });
        break;
      case 'stats:conversations':
        this.queryClient.setQueryData<ConversationStats>(
          queryKeys.conversationStats,
          values as unknown as ConversationStats,
        );
        break;
    }
  }
}
