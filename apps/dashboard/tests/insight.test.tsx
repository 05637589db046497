import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { act, cleanup, render, screen, waitFor, within } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DayChart } from '../src/components/DayChart';
import { behindDepartments, DepartmentTable } from '../src/components/DepartmentTable';
import { RealtimeContext, type RealtimeState } from '../src/components/RealtimeContext';
import { SlaCard } from '../src/components/SlaCard';
import { rfc3339, startOfLocalDay } from '../src/lib/day';
import { daySeries, daySummary, hourlyRows, readHistory } from '../src/lib/history';
import { ToastStore } from '../src/lib/notifications';
import { PresenceStore, TypingStore } from '../src/realtime/LiveState';
import type { MessageOf } from '../src/realtime/messages';
import { StatsHistory } from '../src/realtime/StatsHistory';
import { StatsSync } from '../src/realtime/StatsSync';
import { topicsForPath } from '../src/realtime/topics';

afterEach(() => {
  cleanup();
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

const H = 3_600_000;
const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

/** A fake server for the REST twins: `routes` by path (without the query); every call is recorded. */
function fakeApi(routes: Record<string, () => Response>) {
  const calls: string[] = [];
  const fetchMock = vi.fn(async (input: string) => {
    calls.push(input);
    const path = input.split('?')[0];
    const route = routes[path];
    return route ? route() : json({ error: { code: 'not_found', message: 'no such route' } }, 404);
  });
  vi.stubGlobal('fetch', fetchMock);
  return { calls, fetchMock };
}

/** The components with a query cache, the live history and StatsSync writing pushes into both, as the app does. */
function renderLive(ui: ReactNode) {
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  const history = new StatsHistory();
  const sync = new StatsSync(qc, history);
  const state: RealtimeState = {
    status: 'live',
    transport: 'websocket',
    role: 'solo',
    reconnect: () => {},
    history,
    send: () => false,
    presence: new PresenceStore(),
    typing: new TypingStore(),
    toasts: new ToastStore(),
    topicError: null,
  };
  render(
    <QueryClientProvider client={qc}>
      <RealtimeContext.Provider value={state}>{ui}</RealtimeContext.Provider>
    </QueryClientProvider>,
  );
  /** A pushed message, as the connection hands it over; react-query tells its observers on the next tick. */
  const push = (m: Parameters<StatsSync['handle']>[0]) =>
    act(async () => {
      sync.handle(m);
      await new Promise((r) => setTimeout(r, 0));
    });
  return { qc, history, push };
}

const slaMsg = (overdueTasks: number, seq: number, oldest: string | null = null): MessageOf<'stats:sla'> => ({
  type: 'stats:sla',
  seq,
  payload: { overdueTasks, oldestOpenTaskCreatedAt: oldest, escalatedConversations: 1, oldestEscalationAt: oldest },
});

describe('history: the server’s day, then the pushed values', () => {
  it('reads points oldest first; a minute end after the answer counts as the answer’s time; bad points are left out', () => {
    const h = readHistory(
      {
        points: [
          { at: '2026-12-06T10:02:00Z', payload: { pending: 4 } },
          { at: '2026-12-06T10:01:00Z', payload: { pending: 3 } },
          { at: 'not a time', payload: { pending: 9 } },
        ],
      },
      Date.parse('2026-12-06T10:01:30Z'),
    );
    expect(h.points.map((p) => [new Date(p.t).toISOString(), p.payload.pending])).toEqual([
      ['2026-12-06T10:01:00.000Z', 3],
      ['2026-12-06T10:01:30.000Z', 4],
    ]);
  });

  it('joins the server’s points, the pushes after its answer, and the current value', () => {
    const history = { points: [{ t: 1_000, payload: { pending: 2 } }, { t: 60_000, payload: { pending: 5 } }], receivedAt: 70_000 };
    const live = [
      { t: 65_000, payload: { pending: 4 } }, // before the answer: the answer already has it
      { t: 80_000, payload: { pending: 6 } },
    ];
    expect(daySeries({ history, live, field: 'pending', current: 6, now: 90_000 })).toEqual([
      { t: 1_000, v: 2 },
      { t: 60_000, v: 5 },
      { t: 80_000, v: 6 },
    ]);
    // The current value (e.g. the REST twin's, before any push) ends the series when it differs.
    expect(daySeries({ history, live: [], field: 'pending', current: 7, now: 90_000 }).at(-1)).toEqual({ t: 90_000, v: 7 });
    // No history (a server without it): the pushes alone.
    expect(daySeries({ history: null, live, field: 'pending', current: undefined, now: 90_000 })).toEqual([
      { t: 65_000, v: 4 },
      { t: 80_000, v: 6 },
    ]);
  });

  it('hour by hour from midnight, the value carried in from before it; a summary of the day', () => {
    const midnight = Date.UTC(2026, 11, 6);
    const series = [
      { t: midnight - 2 * H, v: 3 }, // yesterday
      { t: midnight + 0.5 * H, v: 7 },
      { t: midnight + 0.75 * H, v: 1 },
      { t: midnight + 2.25 * H, v: 4 },
    ];
    const now = midnight + 2.5 * H;
    expect(hourlyRows(series, midnight, now).map((r) => [r.from - midnight, r.lowest, r.highest, r.last])).toEqual([
      [0, 1, 7, 1],
      [H, 1, 1, 1],
      [2 * H, 1, 4, 4],
    ]);
    expect(daySummary(series, midnight)).toEqual({ now: 4, highest: 7, highestAt: midnight + 0.5 * H, lowest: 1 });
    expect(daySummary([], midnight)).toBeNull();
  });
});

describe('who is behind', () => {
  const d = (department: string, pending: number, inProgress: number) => ({
    department,
    pending,
    inProgress,
    completed: 0,
    total: pending + inProgress,
  });
  it('the most open tasks (pending + in progress), ties included, nobody when nothing is open', () => {
    expect([...behindDepartments([d('a', 1, 1), d('b', 3, 0), d('c', 0, 3)])]).toEqual(['b', 'c']);
    expect([...behindDepartments([d('a', 0, 0), d('b', 0, 0)])]).toEqual([]);
    expect([...behindDepartments([])]).toEqual([]);
  });
});

describe('topics of the overview', () => {
  it('the overview follows stats:departments and stats:sla; other pages do not', () => {
    expect(topicsForPath('/overview')).toEqual(
      expect.arrayContaining(['stats:tasks', 'stats:approvals', 'stats:conversations', 'presence', 'stats:departments', 'stats:sla']),
    );
    expect(topicsForPath('/tasks')).not.toContain('stats:sla');
    expect(topicsForPath('/tasks')).not.toContain('stats:departments');
  });
});

describe('SlaCard', () => {
  it('turns red and says "overdue" the moment stats:sla is pushed, without a request; the clock only re-renders the times', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'Date'] });
    vi.setSystemTime(Date.parse('2026-12-06T10:00:00Z'));
    const api = fakeApi({ '/api/v1/stats/sla': () => json(slaMsg(0, 0, '2026-12-06T09:55:00Z').payload) });
    const live = renderLive(<SlaCard />);
    await waitFor(() => expect(screen.getByTestId('sla-overdue').textContent).toBe('0'));
    const card = screen.getByTestId('sla-card');
    expect(card.dataset.overdue).toBe('false');
    expect(screen.getByTestId('sla-state').textContent).toBe('On time');
    expect(screen.getByTestId('sla-overdue-text').textContent).toBe('No task is overdue');
    expect(screen.getByTestId('sla-oldest-task').textContent).toBe('created 5 min ago');

    // The deadline passes: the server pushes the new value (no commit, no request from the page).
    await live.push(slaMsg(2, 1, '2026-12-06T09:55:00Z'));
    expect(card.dataset.overdue).toBe('true');
    expect(card.className).toContain('sla-late');
    expect(screen.getByTestId('sla-overdue').textContent).toBe('2');
    expect(screen.getByTestId('sla-state').textContent).toBe('Overdue');
    expect(screen.getByTestId('sla-overdue-text').textContent).toMatch(/^tasks are overdue/);

    // Ten minutes on the local clock: "5 min ago" becomes "15 min ago"; still one request in all.
    await act(async () => {
      vi.advanceTimersByTime(10 * 60_000);
    });
    expect(screen.getByTestId('sla-oldest-task').textContent).toBe('created 15 min ago');
    expect(api.calls).toEqual(['/api/v1/stats/sla']);

    await live.push(slaMsg(0, 2, null));
    expect(card.dataset.overdue).toBe('false');
    expect(screen.getByTestId('sla-oldest-task').textContent).toBe('none open');
  });

  it('a server without section 9 (404) says so instead of figures', async () => {
    fakeApi({});
    renderLive(<SlaCard />);
    await waitFor(() => expect(screen.getByTestId('sla-card').textContent).toMatch(/does not report service levels yet/));
  });
});

describe('DepartmentTable', () => {
  const departments = (rows: [string, number, number, number][], seq: number): MessageOf<'stats:departments'> => ({
    type: 'stats:departments',
    seq,
    payload: {
      departments: rows.map(([department, pending, inProgress, completed]) => ({
        department,
        pending,
        inProgress,
        completed,
        total: pending + inProgress + completed,
      })),
    },
  });

  it('first paint from the REST twin, then every push; "Behind" moves to the department with the most open tasks', async () => {
    const api = fakeApi({
      '/api/v1/tasks/stats/departments': () =>
        json(
          departments(
            [
              ['front_desk', 1, 0, 4],
              ['housekeeping', 3, 1, 0],
            ],
            0,
          ).payload,
        ),
    });
    const live = renderLive(<DepartmentTable />);
    await waitFor(() => expect(screen.getAllByTestId('department-row')).toHaveLength(2));
    const row = (name: string) => screen.getAllByTestId('department-row').find((r) => r.dataset.department === name)!;
    expect(row('housekeeping').dataset.behind).toBe('true');
    expect(within(row('housekeeping')).getByText('Behind')).toBeTruthy();
    expect(within(row('housekeeping')).getByTestId('department-open').textContent).toBe('4');
    expect(row('front_desk').dataset.behind).toBe('false');
    expect(within(row('front_desk')).queryByText('Behind')).toBeNull();

    await live.push(
      departments(
        [
          ['front_desk', 6, 0, 4],
          ['housekeeping', 1, 1, 2],
          ['maintenance', 0, 0, 1],
        ],
        1,
      ),
    );
    expect(screen.getAllByTestId('department-row').map((r) => r.dataset.department)).toEqual(['front_desk', 'housekeeping', 'maintenance']);
    expect(row('front_desk').dataset.behind).toBe('true');
    expect(row('housekeeping').dataset.behind).toBe('false');
    expect(api.calls).toEqual(['/api/v1/tasks/stats/departments']);
  });
});

describe('DayChart', () => {
  it('loads the day from the server once (since local midnight), continues with the pushes, and has a table', async () => {
    const now = Date.now();
    const midnight = startOfLocalDay(now);
    const at = (t: number) => new Date(t).toISOString();
    const api = fakeApi({
      '/api/v1/stats/history': () =>
        json({
          points: [
            { at: at(midnight - H), payload: { pending: 2, inProgress: 0, completed: 0, total: 2 } },
            { at: at(Math.max(midnight + 60_000, now - 120_000)), payload: { pending: 9, inProgress: 0, completed: 0, total: 9 } },
          ],
        }),
    });
    const live = renderLive(<DayChart title="Pending tasks" topic="stats:tasks" field="pending" current={undefined} tone="amber" testId="chart" />);
    const chart = await screen.findByTestId('chart');
    await waitFor(() => expect(chart.dataset.history).toBe('ready'));
    expect(chart.dataset.historyPoints).toBe('2');
    const url = new URL(api.calls[0], 'http://x');
    expect(url.pathname).toBe('/api/v1/stats/history');
    expect(url.searchParams.get('topic')).toBe('stats:tasks');
    expect(url.searchParams.get('since')).toBe(rfc3339(midnight));
    expect(screen.getByTestId('chart-summary').textContent).toMatch(/^Now 9\. Highest today 9 .*lowest 2\.$/);
    // The accessible name of the chart carries the same summary; the table the hours.
    expect(chart.querySelector('svg[role="img"]')?.getAttribute('aria-label')).toMatch(/Pending tasks since midnight\. Now 9\./);
    expect(chart.querySelector('details table')).not.toBeNull();

    await live.push({ type: 'stats:tasks', seq: 1, payload: { pending: 11, inProgress: 0, completed: 0, total: 11 } });
    await waitFor(() => expect(screen.getByTestId('chart-summary').textContent).toMatch(/^Now 11\. Highest today 11 /));
    // A push between two ticks of the local clock is in the table too (its hour ends at 11).
    expect(chart.querySelector('details tbody tr:last-child td:last-child')?.textContent).toBe('11');
    expect(api.calls).toHaveLength(1);
  });

  it('a server without history (404): the chart starts with the pushed values and says why', async () => {
    fakeApi({});
    const live = renderLive(<DayChart title="Pending tasks" topic="stats:tasks" field="pending" current={undefined} tone="amber" testId="chart" />);
    const chart = await screen.findByTestId('chart');
    await waitFor(() => expect(chart.dataset.history).toBe('unavailable'));
    expect(chart.textContent).toMatch(/keeps no history of this yet/);
    await live.push({ type: 'stats:tasks', seq: 1, payload: { pending: 3, inProgress: 0, completed: 0, total: 3 } });
    await waitFor(() => expect(screen.getByTestId('chart-summary').textContent).toMatch(/^Now 3\./));
  });
});
