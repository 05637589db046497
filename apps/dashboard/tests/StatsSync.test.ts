import { QueryClient, QueryObserver } from '@tanstack/react-query';
import { describe, expect, it, vi } from 'vitest';
import { StatsHistory } from '../src/realtime/StatsHistory';
import { ServerMessageDecoder, type MessageOf } from '../src/realtime/messages';
import { StatsSync } from '../src/realtime/StatsSync';

const tasks = (pending: number, seq?: number): MessageOf<'stats:tasks'> => ({
  type: 'stats:tasks',
  ...(seq !== undefined ? { seq } : {}),
  payload: { pending, inProgress: 1, completed: 2, total: pending + 3 },
});
const approvals = (pending: number, seq: number): MessageOf<'stats:approvals'> => ({
  type: 'stats:approvals',
  seq,
  payload: { pending, approved: 1, rejected: 0, executed: 0, total: pending + 1 },
});
const conversations = (escalated: number, seq: number): MessageOf<'stats:conversations'> => ({
  type: 'stats:conversations',
  seq,
  payload: { active: 4, escalated, resolved: 0, total: 4 + escalated },
});
const connected: MessageOf<'connected'> = { type: 'connected', payload: { userId: 1, username: 'admin', role: 'admin' } };

describe('StatsSync: WebSocket messages into the query cache', () => {
  it('each stats type lands in its query key; approvals wrapped as {stats}', () => {
    const qc = new QueryClient();
    const sync = new StatsSync(qc);
    expect(sync.handle(connected)).toBe('applied');
    sync.handle(tasks(5, 1));
    sync.handle(approvals(2, 1));
    sync.handle(conversations(3, 1));
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 5, inProgress: 1, completed: 2, total: 8 });
    expect(qc.getQueryData(['approvalStats'])).toEqual({
      stats: { pending: 2, approved: 1, rejected: 0, executed: 0, total: 3 },
    });
    expect(qc.getQueryData(['conversationStats'])).toEqual({ active: 4, escalated: 3, resolved: 0, total: 7 });
  });

  it('ignores unknown fields and the message types it does not handle', () => {
    const qc = new QueryClient();
    const sync = new StatsSync(qc);
    const wire = new ServerMessageDecoder(() => {});
    expect(sync.handle({ type: 'presence', payload: { online: [] } })).toBe('ignored');
    expect(sync.handle({ type: 'pong' })).toBe('ignored');
    // A malformed value never gets this far: the boundary drops it.
    expect(wire.decode({ type: 'stats:tasks', seq: 1, payload: { pending: 'x' } })).toBeNull();
    sync.handle(wire.decode({ ...tasks(1, 2), extra: true, payload: { ...tasks(1).payload, newField: 9 } })!);
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 1, inProgress: 1, completed: 2, total: 4 });
    expect(qc.getQueryCache().getAll().map((q) => q.queryKey)).toEqual([['taskStats']]);
  });

  it('drops frames whose seq is not newer than the last one for that topic', () => {
    const qc = new QueryClient();
    const sync = new StatsSync(qc);
    sync.handle(connected);
    expect(sync.handle(tasks(5, 10))).toBe('applied');
    expect(sync.handle(tasks(4, 9))).toBe('dropped');
    expect(sync.handle(tasks(3, 10))).toBe('dropped');
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(5);
    // seq memory is per topic
    expect(sync.handle(approvals(7, 1))).toBe('applied');
    expect(qc.getQueryData<{ stats: { pending: number } }>(['approvalStats'])?.stats.pending).toBe(7);
    expect(sync.handle(tasks(6, 11))).toBe('applied');
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(6);
  });

  it('a connected message resets the seq memory: the new snapshot replaces the old values', () => {
    const qc = new QueryClient();
    const sync = new StatsSync(qc);
    sync.handle(connected);
    sync.handle(tasks(5, 100));
    sync.handle(conversations(9, 50));
    // Server restarted: seqs begin again from 1.
    sync.handle(connected);
    expect(sync.seqOf('stats:tasks')).toBeUndefined();
    expect(sync.handle(tasks(2, 1))).toBe('applied');
    expect(sync.handle(conversations(0, 1))).toBe('applied');
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(2);
    expect(qc.getQueryData<{ escalated: number }>(['conversationStats'])?.escalated).toBe(0);
    // Without the reset these would have been dropped:
    const noReset = new StatsSync(new QueryClient());
    noReset.handle(tasks(5, 100));
    expect(noReset.handle(tasks(2, 1))).toBe('dropped');
  });

  it('replaces a value fetched over REST (no seq memory yet)', () => {
    const qc = new QueryClient();
    qc.setQueryData(['taskStats'], { pending: 40, inProgress: 0, completed: 0, total: 40 });
    const sync = new StatsSync(qc);
    sync.handle(tasks(3, 1));
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(3);
  });

  it('invalidates the matching list queries when a value changes, never the stats queries', () => {
    const qc = new QueryClient();
    const spy = vi.spyOn(qc, 'invalidateQueries');
    const sync = new StatsSync(qc);
    sync.handle(tasks(1, 1)); // first value: nothing to refresh
    expect(spy).not.toHaveBeenCalled();
    expect(sync.handle(tasks(1, 2))).toBe('unchanged');
    expect(spy).not.toHaveBeenCalled();
    sync.handle(tasks(2, 3));
    expect(spy).toHaveBeenCalledTimes(1);
    expect(spy).toHaveBeenLastCalledWith({ queryKey: ['tasks'] });
    sync.handle(approvals(1, 1));
    sync.handle(approvals(2, 2));
    expect(spy).toHaveBeenLastCalledWith({ queryKey: ['approvals'] });
    sync.handle(conversations(1, 1));
    sync.handle(conversations(2, 2));
    expect(spy).toHaveBeenLastCalledWith({ queryKey: ['conversations'] });
  });

  it('a stats push refetches an active task list but not the stats query', async () => {
    const qc = new QueryClient();
    const listFn = vi.fn(async () => ({ items: [], nextCursor: null }));
    const statsFn = vi.fn(async () => ({ pending: 0, inProgress: 0, completed: 0, total: 0 }));
    const list = new QueryObserver(qc, { queryKey: ['tasks', { status: '' }], queryFn: listFn });
    const stats = new QueryObserver(qc, { queryKey: ['taskStats'], queryFn: statsFn, staleTime: Infinity });
    const u1 = list.subscribe(() => {});
    const u2 = stats.subscribe(() => {});
    await vi.waitFor(() => expect(statsFn).toHaveBeenCalledTimes(1));
    await vi.waitFor(() => expect(listFn).toHaveBeenCalledTimes(1));
    const sync = new StatsSync(qc);
    sync.handle(tasks(4, 1));
    await vi.waitFor(() => expect(listFn).toHaveBeenCalledTimes(2));
    expect(statsFn).toHaveBeenCalledTimes(1);
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(4);
    u1();
    u2();
  });

  it('records applied values in the chart history, not dropped ones', () => {
    const qc = new QueryClient();
    const history = new StatsHistory();
    let now = 100_000;
    const sync = new StatsSync(qc, history, () => now);
    sync.handle(tasks(1, 1));
    now = 120_000;
    sync.handle(tasks(3, 2));
    now = 140_000;
    sync.handle(tasks(9, 1)); // stale
    expect(history.get('stats:tasks').map((p) => [p.t, p.payload.pending])).toEqual([
      [100_000, 1],
      [120_000, 3],
    ]);
  });

  it('stats:departments and stats:sla land in their query keys (seq per topic); sla counts are charted', () => {
    const qc = new QueryClient();
    const history = new StatsHistory();
    let now = 100_000;
    const sync = new StatsSync(qc, history, () => now);
    const departments = (pending: number, seq: number): MessageOf<'stats:departments'> => ({
      type: 'stats:departments',
      seq,
      payload: { departments: [{ department: 'housekeeping', pending, inProgress: 0, completed: 0, total: pending }] },
    });
    const sla = (overdueTasks: number, seq: number): MessageOf<'stats:sla'> => ({
      type: 'stats:sla',
      seq,
      payload: { overdueTasks, oldestOpenTaskCreatedAt: '2026-12-06T08:00:00Z', escalatedConversations: 1, oldestEscalationAt: null },
    });
    sync.handle(connected);
    expect(sync.handle(departments(2, 1))).toBe('applied');
    expect(sync.handle(sla(0, 7))).toBe('applied');
    now = 130_000;
    expect(sync.handle(sla(1, 8))).toBe('applied');
    expect(sync.handle(sla(0, 6))).toBe('dropped');
    expect(sync.handle(departments(2, 2))).toBe('unchanged');
    expect(qc.getQueryData(['departmentStats'])).toEqual(departments(2, 2).payload);
    expect(qc.getQueryData(['slaStats'])).toEqual(sla(1, 8).payload);
    expect(history.get('stats:sla').map((p) => [p.t, p.payload.overdueTasks])).toEqual([
      [100_000, 0],
      [130_000, 1],
    ]);
  });

  it('the chart history keeps one point per 15 s slot (the last) and today plus the value before it', () => {
    const day = (h: number) => Date.UTC(2026, 11, 6, h);
    const history = new StatsHistory(15_000, 6_000, (t) => t - (t % 86_400_000));
    const at = (t: number, pending: number) => history.push('stats:tasks', { pending }, t);
    at(day(20) - 86_400_000, 1); // yesterday evening
    at(day(23) - 86_400_000, 2); // yesterday, last value
    at(day(1), 3);
    at(day(1) + 5_000, 4); // same slot: replaces
    at(day(1) + 15_000, 5);
    expect(history.get('stats:tasks').map((p) => p.payload.pending)).toEqual([2, 4, 5]);
  });
});
