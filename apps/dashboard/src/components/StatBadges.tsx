import { useApprovalStats, useConversationStats, useTaskStats } from '../lib/resources';
import type { StatsTopic } from '../realtime/types';
import { Sparkline } from './Sparkline';
import { useDaySeries } from './useDaySeries';
import { Link } from '../lib/router';

/** A badge's chart needs at least this much of a window (just after midnight). */
const MIN_WINDOW_MS = 10 * 60_000;

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
  // The day so far: the server's history, then the pushed values (a reload keeps it).
  const { series, dayStart, now, state, historyPoints } = useDaySeries(topic, field, value);
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
      {/* The chart repeats the figure over the day without values: nothing for a screen reader
          (the overview page has the charts with their values as tables). */}
      <div aria-hidden="true" data-history={state} data-history-points={historyPoints}>
        <Sparkline
          points={series}
          now={now}
          windowMs={Math.max(MIN_WINDOW_MS, now - dayStart)}
          label={`${title} today`}
          testId={`chart-${topic.replace('stats:', '')}`}
        />
        <div className="stat-foot">today</div>
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
