import { useMemo } from 'react';
import { useApprovalStats, useConversationStats, useTaskStats } from '../lib/resources';
import type { StatsTopic } from '../realtime/types';
import { useSyncExternalStore } from 'react';
import { useRealtime } from './RealtimeContext';
import { Sparkline } from './Sparkline';
import { useNow } from './useNow';
import { Link } from '../lib/router';

const WINDOW_MS = 10 * 60_000;

function useSeries(topic: StatsTopic, field: string) {
  const { history } = useRealtime();
  const version = useSyncExternalStore(history.subscribe, history.getVersion, history.getVersion);
  return useMemo(
    () => history.get(topic).map((p) => ({ t: p.t, v: p.payload[field] ?? 0 })),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [history, topic, field, version],
  );
}

interface CardProps {
  title: string;
  value: number | undefined;
  testId: string;
  tone: 'amber' | 'violet' | 'rose';
  detail: string;
  topic: StatsTopic;
  field: string;
  to: string;
  loading: boolean;
  failed: boolean;
}

function StatCard({ title, value, testId, tone, detail, topic, field, to, loading, failed }: CardProps) {
  const now = useNow(5000);
  const series = useSeries(topic, field);
  return (
    // The card's visible text is its accessible name (an aria-label hid the details from it).
    <Link to={to} className={`stat-card tone-${tone}`}>
      <div className="stat-head">
        <span className="stat-title">{title}</span>
      </div>
      <div className="stat-value" data-testid={testId}>
        {value ?? (loading ? '…' : failed ? '?' : '–')}
      </div>
      <div className="stat-detail">{detail}</div>
      {/* The chart repeats the figure over time without values: nothing for a screen reader. */}
      <div aria-hidden="true">
        <Sparkline
          points={series}
          now={now}
          windowMs={WINDOW_MS}
          label={`${title} over the last 10 minutes`}
          testId={`chart-${topic.replace('stats:', '')}`}
        />
        <div className="stat-foot">last 10 min</div>
      </div>
    </Link>
  );
}

export function StatBadges() {
  const tasks = useTaskStats();
  const approvals = useApprovalStats();
  const conversations = useConversationStats();
  const t = tasks.data;
  const a = approvals.data?.stats;
  const c = conversations.data;
  return (
    <section className="stats" aria-label="Live figures">
      <StatCard
        title="Pending tasks"
        value={t?.pending}
        testId="badge-pending-tasks"
        tone="amber"
        detail={t ? `${t.inProgress} in progress · ${t.completed} completed` : ' '}
        topic="stats:tasks"
        field="pending"
        to="/tasks"
        loading={tasks.isPending}
        failed={tasks.isError}
      />
      <StatCard
        title="Pending approvals"
        value={a?.pending}
        testId="badge-pending-approvals"
        tone="violet"
        detail={a ? `${a.approved} approved · ${a.rejected} rejected · ${a.executed} executed` : ' '}
        topic="stats:approvals"
        field="pending"
        to="/approvals"
        loading={approvals.isPending}
        failed={approvals.isError}
      />
      <StatCard
        title="Escalated conversations"
        value={c?.escalated}
        testId="badge-escalated-conversations"
        tone="rose"
        detail={c ? `${c.active} active · ${c.resolved} resolved` : ' '}
        topic="stats:conversations"
        field="escalated"
        to="/conversations"
        loading={conversations.isPending}
        failed={conversations.isError}
      />
    </section>
  );
}
