import { afterEach, describe, expect, it, vi } from 'vitest';
import { handleTaskAssigned, ToastStore, type NotificationApi } from '../src/lib/notifications';
import { describePath, PresenceStore, TypingSender, TypingStore, typingText } from '../src/realtime/LiveState';
import type { MessageOf } from '../src/realtime/messages';

afterEach(() => {
  vi.useRealTimers();
});

const typing = (conversationId: number, userId: number, username: string, on: boolean): MessageOf<'typing'> => ({
  type: 'typing',
  payload: { conversationId, userId, username, typing: on },
});

describe('PresenceStore', () => {
  it('keeps the latest presence message and notifies', () => {
    const store = new PresenceStore();
    const seen = vi.fn();
    store.subscribe(seen);
    expect(store.get()).toBeNull();
    store.handle({
      type: 'presence',
      payload: { online: [{ userId: 1, username: 'admin', connections: 2, viewing: '/tasks' }] },
    });
    store.handle({
      type: 'presence',
      payload: {
        online: [
          { userId: 1, username: 'admin', connections: 1, viewing: '/conversations/7' },
          { userId: 2, username: 'sam', connections: 1, viewing: null },
        ],
      },
    });
    expect(seen).toHaveBeenCalledTimes(2);
    expect(store.get()).toEqual([
      { userId: 1, username: 'admin', connections: 1, viewing: '/conversations/7' },
      { userId: 2, username: 'sam', connections: 1, viewing: null },
    ]);
    expect(store.handle(typing(1, 2, 'sam', true))).toBe(false);
    expect(store.get()).toHaveLength(2);
    expect(describePath('/conversations/7')).toBe('Conversation #7');
    expect(describePath('/approvals')).toBe('Approvals');
  });
});

describe('TypingStore', () => {
  it('shows a typist on true and removes them on false', () => {
    vi.useFakeTimers();
    const store = new TypingStore();
    store.setSelf(1);
    store.handle(typing(7, 2, 'sam', true));
    expect(typingText(store.typists(7))).toBe('sam is typing…');
    store.handle(typing(7, 3, 'ana', true));
    expect(typingText(store.typists(7))).toBe('sam and ana are typing…');
    store.handle(typing(7, 2, 'sam', false));
    expect(typingText(store.typists(7))).toBe('ana is typing…');
    store.handle(typing(7, 3, 'ana', false));
    expect(store.typists(7)).toEqual([]);
    expect(store.get().size).toBe(0);
  });

  it('never shows the current user', () => {
    const store = new TypingStore();
    store.setSelf(1);
    store.handle(typing(7, 1, 'admin', true));
    expect(store.typists(7)).toEqual([]);
  });

  it('someone typing for longer than the server expiry stays visible (the server relays only changes)', () => {
    vi.useFakeTimers();
    const store = new TypingStore();
    store.handle(typing(5, 2, 'sam', true));
    vi.advanceTimersByTime(20_000);
    expect(store.typists(5)).toHaveLength(1);
    store.handle(typing(5, 2, 'sam', false));
    expect(store.typists(5)).toEqual([]);
  });

  it('a typing: true whose false never arrives is cleared by the safety net', () => {
    vi.useFakeTimers();
    const store = new TypingStore();
    store.handle(typing(5, 2, 'sam', true));
    vi.advanceTimersByTime(59_000);
    expect(store.typists(5)).toHaveLength(1);
    vi.advanceTimersByTime(2_000);
    expect(store.typists(5)).toEqual([]);
  });

  it('a new connection or leaving the conversation forgets the typists', () => {
    const store = new TypingStore();
    store.handle(typing(5, 2, 'sam', true));
    store.handle(typing(6, 2, 'sam', true));
    store.clearConversation(5);
    expect(store.typists(5)).toEqual([]);
    expect(store.typists(6)).toHaveLength(1);
    store.handle({ type: 'connected', payload: { userId: 1, username: 'admin', role: 'admin' } });
    expect(store.typists(6)).toEqual([]);
  });
});

describe('TypingSender', () => {
  it('typing: true at most every 2 s while typing; false after 3 s idle, on blur (stop) only once', () => {
    vi.useFakeTimers();
    const sent: unknown[] = [];
    const s = new TypingSender(7, (m) => sent.push(m), undefined, () => Date.now());
    const on = { type: 'typing', payload: { conversationId: 7, typing: true } };
    const off = { type: 'typing', payload: { conversationId: 7, typing: false } };
    s.keystroke();
    expect(sent).toEqual([on]);
    for (let i = 0; i < 9; i++) {
      vi.advanceTimersByTime(250);
      s.keystroke();
    }
    // 2.25 s of typing: one refresh at 2 s
    expect(sent).toEqual([on, on]);
    vi.advanceTimersByTime(2_999);
    expect(sent).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([on, on, off]);
    s.stop();
    expect(sent).toHaveLength(3);
    s.keystroke();
    s.stop(); // blur
    expect(sent).toEqual([on, on, off, on, off]);
    vi.advanceTimersByTime(5_000);
    expect(sent).toHaveLength(5);
  });
});

describe('task:assigned notification', () => {
  const task = (assignee: string | null): MessageOf<'task:assigned'> => ({
    type: 'task:assigned',
    payload: {
      id: 9,
      type: 'housekeeping',
      department: 'housekeeping',
      description: 'Crib to room 808',
      status: 'in_progress',
      assignee,
      createdBy: 'admin',
      createdAt: '2025-01-01T10:00:00Z',
      updatedAt: '2025-01-01T10:01:00Z',
      completedAt: null,
    },
  });
  const api = (permission: string) => {
    const created: unknown[] = [];
    const n: NotificationApi & { created: unknown[] } = {
      permission,
      create: (title, options) => created.push({ title, ...options }),
      created,
    };
    return n;
  };

  it('raises a toast with the description for the current user only', () => {
    const toasts = new ToastStore();
    const n = api('granted');
    expect(handleTaskAssigned(task('sam'), { id: 2, username: 'sam' }, toasts, n, true)).toBe(true);
    expect(toasts.get()).toEqual([expect.objectContaining({ kind: 'task-assigned', body: 'Crib to room 808', taskId: 9 })]);
    expect(n.created).toEqual([expect.objectContaining({ body: 'Crib to room 808', tag: 'pulse-task-9' })]);
    // Someone else's task, or no assignee: nothing.
    expect(handleTaskAssigned(task('ana'), { id: 2, username: 'sam' }, toasts, n, true)).toBe(false);
    expect(handleTaskAssigned(task(null), { id: 2, username: 'sam' }, toasts, n, true)).toBe(false);
    expect(toasts.get()).toHaveLength(1);
    expect(n.created).toHaveLength(1);
  });

  it('system notification only when permission was granted, only from the socket tab; never asks', () => {
    const requestPermission = vi.fn();
    vi.stubGlobal('Notification', Object.assign(vi.fn(), { permission: 'default', requestPermission }));
    const toasts = new ToastStore();
    const notAsked = api('default');
    handleTaskAssigned(task('sam'), { id: 2, username: 'sam' }, toasts, notAsked, true);
    expect(notAsked.created).toEqual([]);
    const granted = api('granted');
    handleTaskAssigned(task('sam'), { id: 2, username: 'sam' }, toasts, granted, false);
    expect(granted.created).toEqual([]); // a follower tab: the leader shows it
    expect(toasts.get()).toHaveLength(2); // but every tab shows the toast
    expect(requestPermission).not.toHaveBeenCalled();
    vi.unstubAllGlobals();
  });

  it('the toast goes away by itself after a few seconds', () => {
    vi.useFakeTimers();
    const toasts = new ToastStore();
    handleTaskAssigned(task('sam'), { id: 2, username: 'sam' }, toasts, null, true);
    vi.advanceTimersByTime(3_000);
    expect(toasts.get()).toHaveLength(1);
    vi.advanceTimersByTime(6_000);
    expect(toasts.get()).toEqual([]);
  });
});
