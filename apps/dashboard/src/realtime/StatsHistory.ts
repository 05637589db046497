/**
 * The values pushed on the live connection today, per charted stats topic: what the day charts
 * draw after the server's history (`GET /api/v1/stats/history`, fetched once per page load).
 *
 * Reason to change: what the charts keep of the pushed values. Never depends on React, the query
 * cache or the connection.
 */
import { startOfLocalDay } from '../lib/day';

/** The stats topics with a chart (their payloads' numeric fields are drawn). */
export type ChartTopic = 'stats:tasks' | 'stats:approvals' | 'stats:conversations' | 'stats:sla';

export interface HistoryPoint {
  /** epoch milliseconds */
  t: number;
  payload: Record<string, number>;
}

type Listener = () => void;

/** Pushes within one such slot keep only the last (a day chart has ~1–3 minutes per pixel). */
export const HISTORY_RESOLUTION_MS = 15_000;
/** More than a day of slots: never reached within one day. */
export const HISTORY_MAX_POINTS = 6_000;

/**
 * Pushed values per topic since the local midnight of the newest one (plus the one before it, so
 * a step chart has a start). Bounded: one point per `resolutionMs` slot, at most `maxPoints`.
 */
export class StatsHistory {
  private series = new Map<ChartTopic, HistoryPoint[]>();
  private listeners = new Set<Listener>();
  private version = 0;

  constructor(
    private readonly resolutionMs = HISTORY_RESOLUTION_MS,
    private readonly maxPoints = HISTORY_MAX_POINTS,
    private readonly dayStart: (t: number) => number = startOfLocalDay,
  ) {}

  push(topic: ChartTopic, payload: Record<string, number>, t = Date.now()): void {
    const list = this.series.get(topic) ?? [];
    const last = list[list.length - 1];
    if (last && Math.floor(last.t / this.resolutionMs) === Math.floor(t / this.resolutionMs)) {
      list[list.length - 1] = { t, payload };
    } else {
      list.push({ t, payload });
    }
    // Keep today, and the last value before it as the chart's start.
    const cutoff = this.dayStart(t);
    let firstToday = list.findIndex((p) => p.t >= cutoff);
    if (firstToday === -1) firstToday = list.length - 1;
    const start = Math.max(0, firstToday - 1, list.length - this.maxPoints);
    this.series.set(topic, start > 0 ? list.slice(start) : list);
    this.version++;
    this.listeners.forEach((l) => l());
  }

  get(topic: ChartTopic): readonly HistoryPoint[] {
    return this.series.get(topic) ?? EMPTY;
  }

  getVersion = (): number => this.version;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  clear(): void {
    this.series.clear();
    this.version++;
    this.listeners.forEach((l) => l());
  }
}

const EMPTY: readonly HistoryPoint[] = Object.freeze([]);
