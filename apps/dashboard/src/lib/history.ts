/**
 * A stats topic's day, as a chart draws it: the server's history (`GET /api/v1/stats/history`,
 * contract section 9: the value at the end of every minute in which it changed, kept server-side,
 * so it survives a reload and a restart), then the values pushed since, then the current value.
 *
 * Reason to change: how history and pushed values are joined. Never depends on React.
 */
import type { SparkPoint } from '../components/Sparkline';
import type { HistoryPoint } from '../realtime/StatsHistory';
import { api, qs } from './api';
import type { StatsHistoryAnswer } from './apiTypes';
import { rfc3339 } from './day';

export const STATS_HISTORY_PATH = '/api/v1/stats/history';

/** The server's points for one topic, as fetched once. */
export interface DayHistory {
  /** Oldest first; a point's time is never after `receivedAt` (a minute's end may be). */
  points: { t: number; payload: Record<string, unknown> }[];
  /** When the answer arrived: pushed values after it continue the chart. */
  receivedAt: number;
}

/** Reads an answer; points without a readable time or payload are left out. */
export function readHistory(answer: StatsHistoryAnswer | null | undefined, receivedAt: number): DayHistory {
  const raw = Array.isArray(answer?.points) ? answer.points : [];
  const points = raw
    .flatMap((p) => {
      const t = typeof p?.at === 'string' ? Date.parse(p.at) : NaN;
      if (!Number.isFinite(t) || !p.payload || typeof p.payload !== 'object') return [];
      return [{ t: Math.min(t, receivedAt), payload: p.payload as Record<string, unknown> }];
    })
    .sort((a, b) => a.t - b.t);
  return { points, receivedAt };
}

export async function fetchDayHistory(topic: string, since: number, signal?: AbortSignal): Promise<DayHistory> {
  const answer = await api<StatsHistoryAnswer>(`${STATS_HISTORY_PATH}${qs({ topic, since: rfc3339(since) })}`, { signal });
  return readHistory(answer, Date.now());
}

const numberOf = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/**
 * One field over the day: the server's points (null: none, e.g. a server without history), the
 * values pushed after its answer (all of them without it), and `current` at `now` when the last
 * point does not already say so.
 */
export function daySeries(o: {
  history: DayHistory | null;
  live: readonly HistoryPoint[];
  field: string;
  current: number | undefined;
  now: number;
}): SparkPoint[] {
  const out: SparkPoint[] = [];
  for (const p of o.history?.points ?? []) {
    const v = numberOf(p.payload[o.field]);
    if (v !== null) out.push({ t: p.t, v });
  }
  const after = o.history ? o.history.receivedAt : -Infinity;
  for (const p of o.live) {
    const v = numberOf(p.payload[o.field]);
    if (p.t > after && v !== null) out.push({ t: p.t, v });
  }
  if (o.current !== undefined && (out.length === 0 || out[out.length - 1].v !== o.current)) {
    out.push({ t: Math.max(o.now, out.length > 0 ? out[out.length - 1].t : o.now), v: o.current });
  }
  return out;
}

/** The value in force at `t` (the last point at or before it), or undefined. */
function valueAt(series: readonly SparkPoint[], t: number): number | undefined {
  let v: number | undefined;
  for (const p of series) {
    if (p.t > t) break;
    v = p.v;
  }
  return v;
}

export interface HourRow {
  from: number;
  to: number;
  lowest: number;
  highest: number;
  /** At the end of the hour (or now, for the current one). */
  last: number;
}

/** The day hour by hour (the chart's table alternative): hours before the first value are left out. */
export function hourlyRows(series: readonly SparkPoint[], dayStart: number, now: number): HourRow[] {
  const rows: HourRow[] = [];
  for (let from = dayStart; from < now; from += 3_600_000) {
    const to = Math.min(from + 3_600_000, now);
    let v = valueAt(series, from);
    let lowest = v;
    let highest = v;
    for (const p of series) {
      if (p.t <= from || p.t > to) continue;
      v = p.v;
      lowest = lowest === undefined ? v : Math.min(lowest, v);
      highest = highest === undefined ? v : Math.max(highest, v);
    }
    if (v === undefined || lowest === undefined || highest === undefined) continue;
    rows.push({ from, to, lowest, highest, last: v });
  }
  return rows;
}

/** The day in numbers: now, and the highest and lowest values since `dayStart` (with when the highest was first reached). */
export function daySummary(series: readonly SparkPoint[], dayStart: number): {
  now: number;
  highest: number;
  highestAt: number;
  lowest: number;
} | null {
  const start = valueAt(series, dayStart);
  const today = series.filter((p) => p.t > dayStart);
  const values = [...(start !== undefined ? [{ t: dayStart, v: start }] : []), ...today];
  if (values.length === 0) return null;
  let highest = values[0];
  let lowest = values[0].v;
  for (const p of values) {
    if (p.v > highest.v) highest = p;
    lowest = Math.min(lowest, p.v);
  }
  return { now: values[values.length - 1].v, highest: highest.v, highestAt: highest.t, lowest };
}
