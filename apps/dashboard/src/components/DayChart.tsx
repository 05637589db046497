import { clockTime } from '../lib/day';
import { daySummary, hourlyRows } from '../lib/history';
import type { ChartTopic } from '../realtime/StatsHistory';
import { Sparkline } from './Sparkline';
import { useDaySeries } from './useDaySeries';

export interface DayChartProps {
  title: string;
  topic: ChartTopic;
  field: string;
  /** The current value (the stats query's, kept by the pushes). */
  current: number | undefined;
  tone: 'amber' | 'violet' | 'rose' | 'blue';
  testId: string;
}

/**
 * A figure over the local day: the server's history (so it survives a reload and a server
 * restart), continued live by the pushed values. Its text alternative is a one-line summary (the
 * chart's accessible name) and a table of the day hour by hour.
 */
export function DayChart({ title, topic, field, current, tone, testId }: DayChartProps) {
  const { series, state, historyPoints, dayStart, now } = useDaySeries(topic, field, current);
  const summary = daySummary(series, dayStart);
  const text = summary
    ? `Now ${summary.now}. Highest today ${summary.highest} (at ${clockTime(summary.highestAt)}), lowest ${summary.lowest}.`
    : 'No figures yet.';
  const rows = hourlyRows(series, dayStart, now);
  return (
    <figure
      className={`card chart-card tone-${tone}`}
      data-testid={testId}
      data-history={state}
      data-history-points={historyPoints}
      data-current={current ?? ''}
    >
      <figcaption>
        <h3 className="chart-title">{title}</h3>
        <p className="chart-summary" data-testid={`${testId}-summary`}>
          {text}
        </p>
      </figcaption>
      <Sparkline
        points={series}
        now={now}
        windowMs={Math.max(60_000, now - dayStart)}
        label={`${title} since midnight. ${text}`}
        height={110}
      />
      <div className="chart-axis" aria-hidden="true">
        <span>00:00</span>
        <span>{clockTime(now)}</span>
      </div>
      {state === 'unavailable' && (
        <p className="muted small">The server keeps no history of this yet: the chart starts when this page opened.</p>
      )}
      {rows.length > 0 && (
        <details className="chart-table">
          <summary>{title} hour by hour</summary>
          <table className="table table-numbers">
            <caption className="visually-hidden">{title} today, hour by hour</caption>
            <thead>
              <tr>
                <th scope="col">Hour</th>
                <th scope="col">Lowest</th>
                <th scope="col">Highest</th>
                <th scope="col">At the end</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.from}>
                  <th scope="row">
                    {clockTime(r.from)}–{clockTime(r.to)}
                  </th>
                  <td>{r.lowest}</td>
                  <td>{r.highest}</td>
                  <td>{r.last}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      )}
    </figure>
  );
}
