/**
 * Writes the stats messages of the live connection into the react-query cache (and the charts'
 * history), where the REST twins' first answers already are.
 *
 * Reason to change: where a pushed value lands. Never depends on React or the connection.
 */
import type { QueryClient } from '@tanstack/react-query';
import type { ApprovalStatsEnvelope, ConversationStats, DepartmentStats, SlaStats, TaskStats } from '../lib/apiTypes';
import type { ServerMessage, StatsMessage, StatsMessageType } from './messages';
import { queryKeys } from './queryKeys';
import type { StatsHistory } from './StatsHistory';

export type HandleResult = 'applied' | 'unchanged' | 'dropped' | 'ignored';

/** The lists behind a topic: refreshed (if on screen) when its value changes. */
const LIST_KEY: Partial<Record<StatsMessageType, readonly string[]>> = {
  'stats:tasks': queryKeys.tasks,
  'stats:approvals': queryKeys.approvals,
  'stats:conversations': queryKeys.conversations,
};

/** Deep equality of JSON values, whatever the order of the keys (a REST answer's may differ from a push's). */
function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return kb.every((k) => sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * - stats:tasks → ['taskStats'] (payload as is)
 * - stats:approvals → ['approvalStats'] as {stats: payload} (same shape as GET /approvals/stats)
 * - stats:conversations → ['conversationStats']
 * - stats:departments → ['departmentStats'], stats:sla → ['slaStats'] (contract section 9)
 * Frames whose `seq` is not newer than the last one seen for that topic are dropped;
 * a `connected` message (new connection) forgets the seqs, so the snapshot that follows
 * replaces whatever the page held. When a value changes, the matching list queries are
 * invalidated (refetched only if on screen). The stats endpoints are never refetched.
 * Every applied value of a charted topic is recorded in `history` (for sla: its two counts).
 */
export class StatsSync {
  private lastSeq = new Map<StatsMessageType, number>();

  constructor(
    private readonly queryClient: QueryClient,
    private readonly history?: StatsHistory,
    private readonly now: () => number = Date.now,
  ) {}

  /** Last seq seen for a topic (undefined after a `connected`). */
  seqOf(topic: StatsMessageType): number | undefined {
    return this.lastSeq.get(topic);
  }

  reset(): void {
    this.lastSeq.clear();
  }

  handle(msg: ServerMessage): HandleResult {
    switch (msg.type) {
      case 'connected':
        this.lastSeq.clear();
        this.queryClient.setQueryData(['connection'], msg.payload);
        return 'applied';
      case 'stats:tasks':
      case 'stats:approvals':
      case 'stats:conversations':
      case 'stats:departments':
      case 'stats:sla':
        return this.apply(msg);
      default:
        return 'ignored';
    }
  }

  private apply(msg: StatsMessage): HandleResult {
    const topic = msg.type;
    if (msg.seq !== undefined) {
      const last = this.lastSeq.get(topic);
      if (last !== undefined && msg.seq <= last) return 'dropped';
      this.lastSeq.set(topic, msg.seq);
    }
    const previous = this.read(topic);
    this.write(msg);
    this.record(msg);
    if (sameValue(previous, msg.payload)) return 'unchanged';
    const lists = LIST_KEY[topic];
    if (previous !== undefined && lists) {
      // The lists behind this topic changed: refresh the ones on screen (never the stats endpoints).
      void this.queryClient.invalidateQueries({ queryKey: [...lists] });
    }
    return 'applied';
  }

  private record(msg: StatsMessage): void {
    const t = this.now();
    switch (msg.type) {
      case 'stats:tasks':
      case 'stats:approvals':
      case 'stats:conversations':
        this.history?.push(msg.type, msg.payload, t);
        break;
      case 'stats:sla':
        this.history?.push(
          'stats:sla',
          { overdueTasks: msg.payload.overdueTasks, escalatedConversations: msg.payload.escalatedConversations },
          t,
        );
        break;
      default:
        break;
    }
  }

  private read(topic: StatsMessageType): unknown {
    switch (topic) {
      case 'stats:tasks':
        return this.queryClient.getQueryData<TaskStats>(queryKeys.taskStats);
      case 'stats:approvals':
        return this.queryClient.getQueryData<ApprovalStatsEnvelope>(queryKeys.approvalStats)?.stats;
      case 'stats:conversations':
        return this.queryClient.getQueryData<ConversationStats>(queryKeys.conversationStats);
      case 'stats:departments':
        return this.queryClient.getQueryData<DepartmentStats>(queryKeys.departmentStats);
      case 'stats:sla':
        return this.queryClient.getQueryData<SlaStats>(queryKeys.slaStats);
    }
  }

  private write(msg: StatsMessage): void {
    switch (msg.type) {
      case 'stats:tasks':
        this.queryClient.setQueryData<TaskStats>(queryKeys.taskStats, msg.payload);
        break;
      case 'stats:approvals':
        this.queryClient.setQueryData<ApprovalStatsEnvelope>(queryKeys.approvalStats, { stats: msg.payload });
        break;
      case 'stats:conversations':
        this.queryClient.setQueryData<ConversationStats>(queryKeys.conversationStats, msg.payload);
        break;
      case 'stats:departments':
        this.queryClient.setQueryData<DepartmentStats>(queryKeys.departmentStats, msg.payload);
        break;
      case 'stats:sla':
        this.queryClient.setQueryData<SlaStats>(queryKeys.slaStats, msg.payload);
        break;
    }
  }
}
