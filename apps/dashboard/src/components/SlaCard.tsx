import { ApiError } from '../lib/api';
import { fullTime, timeAgo } from '../lib/format';
import { useSlaStats } from '../lib/resources';
import { useNow } from './useNow';

/**
 * Overdue tasks and the oldest open items (contract section 9). The figures change only when the
 * server pushes `stats:sla` — it does so the moment a task crosses its deadline — so the card
 * turns red then, with no request of its own; the local clock re-renders "5 min ago" and nothing
 * else. Red is never the only sign: the words say "overdue" and a pill says "Overdue" / "On time".
 */
export function SlaCard() {
  const sla = useSlaStats();
  const now = useNow(15_000);
  const d = sla.data;
  const overdue = d?.overdueTasks;
  const late = overdue !== undefined && overdue > 0;
  const unavailable = sla.isError && sla.error instanceof ApiError && sla.error.status === 404;
  return (
    <section
      className={`card sla-card${late ? ' sla-late' : ''}`}
      aria-labelledby="sla-title"
      data-testid="sla-card"
      data-overdue={late ? 'true' : 'false'}
    >
      <div className="card-head">
        <h2 id="sla-title">Service level</h2>
        {d && (
          <span className={`pill ${late ? 'pill-overdue' : 'pill-on-time'}`} data-testid="sla-state">
            {late ? 'Overdue' : 'On time'}
          </span>
        )}
      </div>
      {unavailable ? (
        <p className="muted">This server does not report service levels yet.</p>
      ) : sla.isError ? (
        <p className="muted">Service levels could not be loaded.</p>
      ) : (
        <>
          <div className="sla-main">
            <span className="sla-value" data-testid="sla-overdue">
              {overdue ?? '…'}
            </span>
            {/* Announced when it changes: the one figure here that turns on its own. */}
            <span className="sla-words" data-testid="sla-overdue-text" aria-live="polite">
              {overdue === undefined
                ? 'Loading…'
                : late
                  ? `${overdue === 1 ? 'task is' : 'tasks are'} overdue: open longer than the service level allows`
                  : 'No task is overdue'}
            </span>
          </div>
          <dl className="sla-facts">
            <div>
              <dt>Oldest open task</dt>
              <dd data-testid="sla-oldest-task" title={fullTime(d?.oldestOpenTaskCreatedAt)}>
                {d ? (d.oldestOpenTaskCreatedAt ? `created ${timeAgo(d.oldestOpenTaskCreatedAt, now)}` : 'none open') : '…'}
              </dd>
            </div>
            <div>
              <dt>Escalated conversations</dt>
              <dd data-testid="sla-escalated">{d ? d.escalatedConversations : '…'}</dd>
            </div>
            <div>
              <dt>Oldest escalation</dt>
              <dd data-testid="sla-oldest-escalation" title={fullTime(d?.oldestEscalationAt)}>
                {d ? (d.oldestEscalationAt ? `escalated ${timeAgo(d.oldestEscalationAt, now)}` : 'none') : '…'}
              </dd>
            </div>
          </dl>
        </>
      )}
    </section>
  );
}
