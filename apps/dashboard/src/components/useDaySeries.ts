import { useQuery } from '@tanstack/react-query';
import { useMemo, useState, useSyncExternalStore } from 'react';
import { startOfLocalDay } from '../lib/day';
import { daySeries, fetchDayHistory } from '../lib/history';
import { queryKeys } from '../realtime/queryKeys';
import type { ChartTopic } from '../realtime/StatsHistory';
import { useRealtime } from './RealtimeContext';
import type { SparkPoint } from './Sparkline';
import { useNow } from './useNow';

export type HistoryState = 'loading' | 'ready' | 'unavailable';

/**
 * One field of a stats topic over the local day, for a chart: the server's history since the
 * local midnight of the page load (fetched ONCE: `staleTime: Infinity`, no refetch on focus,
 * reconnect or interval), continued by the values pushed since, ending at `current`. A server
 * without history (404) leaves the pushed values alone. The local clock only moves the chart's
 * right edge (and its midnight): it never fetches.
 */
export function useDaySeries(
  topic: ChartTopic,
  field: string,
  current: number | undefined,
): { series: SparkPoint[]; state: HistoryState; historyPoints: number; dayStart: number; now: number } {
  const { history } = useRealtime();
  const tick = useNow(30_000);
  const [since] = useState(() => startOfLocalDay(Date.now()));
  const query = useQuery({
    queryKey: queryKeys.statsHistory(topic, since),
    queryFn: ({ signal }) => fetchDayHistory(topic, since, signal),
    staleTime: Infinity,
    // Kept while a chart of it is on screen; a later page visit fetches it again.
    gcTime: 0,
    retry: false,
    refetchOnWindowFocus: false,
    refetchOnReconnect: false,
    refetchOnMount: false,
    refetchInterval: false,
  });
  const version = useSyncExternalStore(history.subscribe, history.getVersion, history.getVersion);
  const live = history.get(topic);
  const data = query.data ?? null;
  const series = useMemo(
    () => daySeries({ history: data, live, field, current, now: tick }),
    // `live` is mutated by every push: `version` says when.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [data, version, field, current, tick],
  );
  // A push between two ticks is "now" too: the chart's right edge is never before its last point.
  const now = Math.max(tick, series.length > 0 ? series[series.length - 1].t : 0);
  const state: HistoryState = query.isPending ? 'loading' : query.isError ? 'unavailable' : 'ready';
  return { series, state, historyPoints: data?.points.length ?? 0, dayStart: startOfLocalDay(now), now };
}
