import type { QueryClient } from '@tanstack/react-query';
import type { ApprovalStatsEnvelope, ConversationStats, TaskStats } from '../lib/apiTypes';
import type { MessageOf, ServerMessage } from './messages';
import { queryKeys } from './queryKeys';
import type { StatsHistory } from './StatsHistory';
import type { StatsTopic } from './types';

export type HandleResult = 'applied' | 'unchanged' | 'dropped' | 'ignored';

const LIST_KEY: Record<StatsTopic, readonly string[]> = {
  'stats:tasks': queryKeys.tasks,
  'stats:approvals': queryKeys.approvals,
  'stats:conversations': queryKeys.conversations,
};

type Counts = Record<string, number>;

function sameValues(a: Counts | undefined, b: Counts): boolean {
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
    switch (msg.type) {
      case 'connected':
        this.lastSeq.clear();
        this.queryClient.setQueryData(['connection'], msg.payload);
        return 'applied';
      case 'stats:tasks':
      case 'stats:approvals':
      case 'stats:conversations':
        return this.apply(msg);
      default:
        return 'ignored';
    }
  }

  private apply(msg: MessageOf<StatsTopic>): HandleResult {
    const topic = msg.type;
    if (msg.seq !== undefined) {
      const last = this.lastSeq.get(topic);
      if (last !== undefined && msg.seq <= last) return 'dropped';
      this.lastSeq.set(topic, msg.seq);
    }
    const previous = this.read(topic);
    this.write(msg);
    this.history?.push(topic, msg.payload, this.now());
    if (sameValues(previous, msg.payload)) return 'unchanged';
    if (previous !== undefined) {
      // The lists behind this topic changed: refresh the ones on screen (never the stats endpoints).
      void this.queryClient.invalidateQueries({ queryKey: [...LIST_KEY[topic]] });
    }
    return 'applied';
  }

  private read(topic: StatsTopic): Counts | undefined {
    switch (topic) {
      case 'stats:tasks':
        return this.queryClient.getQueryData<TaskStats>(queryKeys.taskStats);
      case 'stats:approvals':
        return this.queryClient.getQueryData<ApprovalStatsEnvelope>(queryKeys.approvalStats)?.stats;
      case 'stats:conversations':
        return this.queryClient.getQueryData<ConversationStats>(queryKeys.conversationStats);
    }
  }

  private write(msg: MessageOf<StatsTopic>): void {
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
    }
  }
}
