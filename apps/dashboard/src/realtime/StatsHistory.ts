import type { StatsTopic } from './types';

export interface HistoryPoint {
  /** epoch milliseconds */
  t: number;
  payload: Record<string, number>;
}

type Listener = () => void;

/**
 * In-memory time series of the stats values pushed over the WebSocket, per topic.
 * Feeds the small live charts. Keeps the last `windowMs` (plus one older point so a
 * step chart can start at the left edge).
 */
export class StatsHistory {
  private series = new Map<StatsTopic, HistoryPoint[]>();
  private listeners = new Set<Listener>();
  private version = 0;

  constructor(
    private readonly windowMs = 15 * 60_000,
    private readonly maxPoints = 600,
  ) {}

  push(topic: StatsTopic, payload: Record<string, number>, t = Date.now()): void {
    const list = this.series.get(topic) ?? [];
    list.push({ t, payload });
    // Trim: keep at most one point older than the window.
    const cutoff = t - this.windowMs;
    let firstInside = list.findIndex((p) => p.t >= cutoff);
    if (firstInside === -1) firstInside = list.length - 1;
    const start = Math.max(0, firstInside - 1);
    const trimmed = list.slice(Math.max(start, list.length - this.maxPoints));
    this.series.set(topic, trimmed);
    this.version++;
    this.listeners.forEach((l) => l());
  }

  get(topic: StatsTopic): readonly HistoryPoint[] {
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
