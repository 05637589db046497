import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { act, cleanup, fireEvent, render, screen, waitFor, within } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApprovalsPage } from '../src/pages/ApprovalsPage';
import { ConversationsPage } from '../src/pages/ConversationsPage';
import { TasksPage } from '../src/pages/TasksPage';
import { authStore } from '../src/lib/auth';

type Handler = (url: string, init: RequestInit) => Promise<Response> | Response;

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });

/** A fetch mock whose answers to POSTs are released by the test. */
function mockFetch(get: Record<string, unknown>, post: Handler) {
  const calls: { url: string; method: string; body: unknown }[] = [];
  const fn = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = String(input);
    const method = init.method ?? 'GET';
    calls.push({ url, method, body: init.body ? JSON.parse(String(init.body)) : undefined });
    if (method === 'GET') {
      const path = url.split('?')[0];
      return json(get[path] ?? { items: [], nextCursor: null });
    }
    return post(url, init);
  });
  vi.stubGlobal('fetch', fn);
  return calls;
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const task = (id: number, status = 'pending', assignee: string | null = null) => ({
  id,
  type: 'housekeeping',
  department: 'housekeeping',
  description: `Task ${id}`,
  status,
  assignee,
  createdAt: new Date().toISOString(),
});

function renderWith(ui: React.ReactNode, stats?: { key: string[]; value: unknown }) {
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  if (stats) qc.setQueryData(stats.key, stats.value);
  render(<QueryClientProvider client={qc}>{ui}</QueryClientProvider>);
  return qc;
}

/** From now on list refetches never answer: what the list shows comes from the optimistic code alone. */
function freezeGets(post: Handler) {
  vi.mocked(fetch).mockImplementation(async (input, init: RequestInit = {}) =>
    (init.method ?? 'GET') === 'GET' ? new Promise<Response>(() => {}) : post(String(input), init),
  );
}

const row = (id: number) => document.querySelector(`[data-testid="task-row"][data-id="${id}"]`) as HTMLElement;

beforeEach(() => {
  authStore.set({ token: 'tok', expiresAt: new Date(Date.now() + 3_600_000).toISOString(), user: { id: 1, username: 'admin', role: 'admin' } });
});
afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
  authStore.clear();
});

describe('optimistic updates', () => {
  it('complete: the row and the pending badge change at once; a 409 rolls both back and says why', async () => {
    const answer = deferred<Response>();
    mockFetch({ '/api/v1/tasks': { items: [task(5)], nextCursor: null } }, () => answer.promise);
    const qc = renderWith(<TasksPage />, { key: ['taskStats'], value: { pending: 1, inProgress: 0, completed: 0, total: 1 } });
    await waitFor(() => expect(row(5)).toBeTruthy());
    freezeGets(() => answer.promise);
    fireEvent.click(within(row(5)).getByTestId('task-complete'));
    await waitFor(() => expect(row(5).dataset.status).toBe('completed'));
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 0, inProgress: 0, completed: 1, total: 1 });
    await act(async () =>
      answer.resolve(json({ error: { code: 'conflict', message: 'cannot complete task 5: it is already completed' } }, 409)),
    );
    await waitFor(() => expect(row(5).dataset.status).toBe('pending'));
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 1, inProgress: 0, completed: 0, total: 1 });
    expect((await screen.findByTestId('error-banner')).textContent).toContain(
      'Cannot complete task 5: it is already completed. The change was undone.',
    );
  });

  it('complete: success keeps the change (no banner)', async () => {
    const answer = deferred<Response>();
    const calls = mockFetch({ '/api/v1/tasks': { items: [task(6, 'in_progress', 'sam')], nextCursor: null } }, () => answer.promise);
    const qc = renderWith(<TasksPage />, { key: ['taskStats'], value: { pending: 0, inProgress: 1, completed: 0, total: 1 } });
    await waitFor(() => expect(row(6)).toBeTruthy());
    fireEvent.click(within(row(6)).getByTestId('task-complete'));
    await waitFor(() => expect(row(6).dataset.status).toBe('completed'));
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 0, inProgress: 0, completed: 1, total: 1 });
    // The refetch after success returns the server's (completed) version.
    const done = { ...task(6, 'completed', 'sam') };
    vi.mocked(fetch).mockImplementation(async (input) =>
      String(input).startsWith('/api/v1/tasks') ? json({ items: [done], nextCursor: null }) : json({}),
    );
    await act(async () => answer.resolve(json(done)));
    await waitFor(() => expect(calls.some((c) => c.method === 'POST' && c.url === '/api/v1/tasks/6/complete')).toBe(true));
    await new Promise((r) => setTimeout(r, 30));
    expect(row(6).dataset.status).toBe('completed');
    expect(screen.queryByTestId('error-banner')).toBeNull();
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 0, inProgress: 0, completed: 1, total: 1 });
  });

  it('rollback does not overwrite a newer pushed stats value', async () => {
    const answer = deferred<Response>();
    mockFetch({ '/api/v1/tasks': { items: [task(5)], nextCursor: null } }, () => answer.promise);
    const qc = renderWith(<TasksPage />, { key: ['taskStats'], value: { pending: 3, inProgress: 0, completed: 0, total: 3 } });
    await waitFor(() => expect(row(5)).toBeTruthy());
    fireEvent.click(within(row(5)).getByTestId('task-complete'));
    await waitFor(() => expect(row(5).dataset.status).toBe('completed'));
    // The WebSocket pushes a newer value meanwhile.
    act(() => {
      qc.setQueryData(['taskStats'], { pending: 7, inProgress: 0, completed: 0, total: 7 });
    });
    await act(async () => answer.resolve(json({ error: { code: 'conflict', message: 'no' } }, 409)));
    await waitFor(() => expect(row(5).dataset.status).toBe('pending'));
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 7, inProgress: 0, completed: 0, total: 7 });
  });

  it('create: the new task shows at once (saving), is removed again on refusal and the text comes back', async () => {
    const answer = deferred<Response>();
    mockFetch({ '/api/v1/tasks': { items: [task(1)], nextCursor: null } }, () => answer.promise);
    const qc = renderWith(<TasksPage />, { key: ['taskStats'], value: { pending: 1, inProgress: 0, completed: 0, total: 1 } });
    await waitFor(() => expect(row(1)).toBeTruthy());
    freezeGets(() => answer.promise);
    fireEvent.change(screen.getByTestId('task-description'), { target: { value: 'Extra pillows, room 512' } });
    fireEvent.click(screen.getByTestId('task-create-submit'));
    await waitFor(() => expect(screen.getAllByTestId('task-row')).toHaveLength(2));
    const first = screen.getAllByTestId('task-row')[0];
    expect(first.textContent).toContain('Extra pillows, room 512');
    expect(first.dataset.saving).toBe('true');
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(2);
    await act(async () => answer.resolve(json({ error: { code: 'validation_failed', message: 'department is too long' } }, 400)));
    await waitFor(() => expect(screen.getAllByTestId('task-row')).toHaveLength(1));
    expect(qc.getQueryData<{ pending: number }>(['taskStats'])?.pending).toBe(1);
    await waitFor(() => expect((screen.getByTestId('task-description') as HTMLInputElement).value).toBe('Extra pillows, room 512'));
    expect((await screen.findByTestId('error-banner')).textContent).toContain('Department is too long. The change was undone.');
  });

  it('assign: pending → in progress at once, badge moves; refusal rolls back', async () => {
    const answer = deferred<Response>();
    mockFetch({ '/api/v1/tasks': { items: [task(8)], nextCursor: null } }, () => answer.promise);
    const qc = renderWith(<TasksPage />, { key: ['taskStats'], value: { pending: 1, inProgress: 0, completed: 0, total: 1 } });
    await waitFor(() => expect(row(8)).toBeTruthy());
    freezeGets(() => answer.promise);
    fireEvent.click(within(row(8)).getByTestId('task-assign'));
    fireEvent.change(within(row(8)).getByTestId('task-assign-input'), { target: { value: 'nobody' } });
    fireEvent.submit(within(row(8)).getByTestId('task-assign-input').closest('form')!);
    await waitFor(() => expect(row(8).dataset.status).toBe('in_progress'));
    expect(row(8).textContent).toContain('nobody');
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 0, inProgress: 1, completed: 0, total: 1 });
    await act(async () => answer.resolve(json({ error: { code: 'validation_failed', message: 'no user named nobody' } }, 400)));
    await waitFor(() => expect(row(8).dataset.status).toBe('pending'));
    expect(row(8).textContent).toContain('Unassigned');
    expect(qc.getQueryData(['taskStats'])).toEqual({ pending: 1, inProgress: 0, completed: 0, total: 1 });
  });

  it('approve and execute: optimistic, with rollback of the approvals badge', async () => {
    const answer = deferred<Response>();
    mockFetch(
      { '/api/v1/approvals': { items: [{ id: 3, kind: 'refund', summary: 'Refund', status: 'pending' }], nextCursor: null } },
      () => answer.promise,
    );
    const stats = { stats: { pending: 1, approved: 0, rejected: 0, executed: 0, total: 1 } };
    const qc = renderWith(<ApprovalsPage />, { key: ['approvalStats'], value: stats });
    const arow = () => document.querySelector('[data-testid="approval-row"][data-id="3"]') as HTMLElement;
    await waitFor(() => expect(arow()).toBeTruthy());
    freezeGets(() => answer.promise);
    fireEvent.click(within(arow()).getByTestId('approval-approve'));
    await waitFor(() => expect(arow().dataset.status).toBe('approved'));
    expect(qc.getQueryData(['approvalStats'])).toEqual({ stats: { pending: 0, approved: 1, rejected: 0, executed: 0, total: 1 } });
    await act(async () => answer.resolve(json({ error: { code: 'conflict', message: 'approval 3 is already rejected' } }, 409)));
    await waitFor(() => expect(arow().dataset.status).toBe('pending'));
    expect(qc.getQueryData(['approvalStats'])).toEqual(stats);
    expect((await screen.findByTestId('error-banner')).textContent).toContain('Approval 3 is already rejected.');
  });

  it('escalate: optimistic state and escalated badge; success keeps it', async () => {
    const answer = deferred<Response>();
    const conv = { id: 4, guestName: 'Ada', channel: 'chat', subject: 'Late checkout', state: 'active' };
    mockFetch({ '/api/v1/conversations': { items: [conv], nextCursor: null } }, () => answer.promise);
    const qc = renderWith(<ConversationsPage />, {
      key: ['conversationStats'],
      value: { active: 1, escalated: 0, resolved: 0, total: 1 },
    });
    const crow = () => document.querySelector('[data-testid="conversation-row"][data-id="4"]') as HTMLElement;
    await waitFor(() => expect(crow()).toBeTruthy());
    fireEvent.click(within(crow()).getByTestId('conversation-escalate'));
    fireEvent.change(within(crow()).getByTestId('conversation-escalate-reason'), { target: { value: 'VIP' } });
    fireEvent.click(within(crow()).getByTestId('conversation-escalate-confirm'));
    await waitFor(() => expect(crow().dataset.state).toBe('escalated'));
    expect(qc.getQueryData(['conversationStats'])).toEqual({ active: 0, escalated: 1, resolved: 0, total: 1 });
    const escalated = { ...conv, state: 'escalated', escalationReason: 'VIP' };
    vi.mocked(fetch).mockImplementation(async () => json({ items: [escalated], nextCursor: null }));
    await act(async () => answer.resolve(json(escalated)));
    await new Promise((r) => setTimeout(r, 20));
    expect(crow().dataset.state).toBe('escalated');
    expect(screen.queryByTestId('error-banner')).toBeNull();
  });
});
