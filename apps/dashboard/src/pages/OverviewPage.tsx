import { DayChart } from '../components/DayChart';
import { DepartmentTable } from '../components/DepartmentTable';
import { PageHeader } from '../components/common';
import { SlaCard } from '../components/SlaCard';
import { useApprovalStats, useConversationStats, useSlaStats, useTaskStats } from '../lib/resources';

/**
 * The duty manager's view (contract section 9): what is overdue, which department is behind,
 * and how the day went. It follows `stats:departments` and `stats:sla` while it is shown
 * (topicsForPath), besides the layout's three stats topics.
 */
export function OverviewPage() {
  const tasks = useTaskStats().data;
  const approvals = useApprovalStats().data?.stats;
  const conversations = useConversationStats().data;
  const sla = useSlaStats().data;
  return (
    <div className="page">
      <PageHeader title="Overview" subtitle="What is overdue, which department is behind, and how the day went." />
      <div className="overview-grid">
        <SlaCard />
        <DepartmentTable />
      </div>
      <section aria-labelledby="today-title" className="today">
        <h2 id="today-title">Today</h2>
        <div className="charts">
          <DayChart title="Pending tasks" topic="stats:tasks" field="pending" current={tasks?.pending} tone="amber" testId="day-chart-tasks" />
          <DayChart title="Overdue tasks" topic="stats:sla" field="overdueTasks" current={sla?.overdueTasks} tone="rose" testId="day-chart-sla" />
          <DayChart
            title="Pending approvals"
            topic="stats:approvals"
            field="pending"
            current={approvals?.pending}
            tone="violet"
            testId="day-chart-approvals"
          />
          <DayChart
            title="Escalated conversations"
            topic="stats:conversations"
            field="escalated"
            current={conversations?.escalated}
            tone="blue"
            testId="day-chart-conversations"
          />
        </div>
      </section>
    </div>
  );
}
