import type { ServerMessage, Timers } from '../realtime/types';
import { realTimers } from '../realtime/types';

export interface Toast {
  id: number;
  kind: 'task-assigned' | 'error' | 'info';
  title: string;
  body: string;
  /** The task of a `task-assigned` toast. */
  taskId?: number;
}

type Listener = () => void;

export const TOAST_MS = 8_000;

/** In-app toasts: each stays `ttlMs`, or until dismissed. */
export class ToastStore {
  private items: Toast[] = [];
  private listeners = new Set<Listener>();
  private nextId = 1;
  private timers = new Map<number, unknown>();

  constructor(
    private readonly t: Timers = realTimers,
    private readonly ttlMs = TOAST_MS,
  ) {}

  get = (): Toast[] => this.items;

  subscribe = (l: Listener): (() => void) => {
    this.listeners.add(l);
    return () => {
      this.listeners.delete(l);
    };
  };

  push(toast: Omit<Toast, 'id'>): number {
    const id = this.nextId++;
    this.items = [...this.items.slice(-4), { ...toast, id }];
    this.timers.set(
      id,
      this.t.setTimeout(() => this.dismiss(id), this.ttlMs),
    );
    this.emit();
    return id;
  }

  dismiss(id: number): void {
    const h = this.timers.get(id);
    if (h !== undefined) this.t.clearTimeout(h);
    this.timers.delete(id);
    const next = this.items.filter((x) => x.id !== id);
    if (next.length === this.items.length) return;
    this.items = next;
    this.emit();
  }

  clear(): void {
    for (const h of this.timers.values()) this.t.clearTimeout(h);
    this.timers.clear();
    this.items = [];
    this.emit();
  }

  private emit(): void {
    this.listeners.forEach((l) => l());
  }
}

/** The subset of the browser Notification API used here. */
export interface NotificationApi {
  permission: NotificationPermission | string;
  create(title: string, options: { body: string; tag: string }): void;
}

export function browserNotifications(): NotificationApi | null {
  if (typeof Notification === 'undefined') return null;
  return {
    get permission() {
      return Notification.permission;
    },
    create: (title, options) => {
      try {
        new Notification(title, options);
      } catch {
        /* e.g. Android Chrome needs a service worker: the in-app toast is enough */
      }
    },
  };
}

export interface Me {
  id: number | string;
  username: string;
}

/**
 * `task:assigned` → a toast with the task's description, and a system notification when
 * (and only when) permission was granted earlier — never asks for it. Only for the current
 * user: the server sends the event to the assignee alone, and the assignee is checked again.
 * `systemNotification` is false in follower tabs (one system notification per browser).
 */
export function handleTaskAssigned(
  msg: ServerMessage,
  me: Me,
  toasts: ToastStore,
  notifications: NotificationApi | null,
  systemNotification: boolean,
): boolean {
  if (msg.type !== 'task:assigned') return false;
  const task = msg.payload as { id?: unknown; description?: unknown; assignee?: unknown; department?: unknown } | undefined;
  if (!task || typeof task !== 'object') return false;
  const assignee = task.assignee;
  // The contract's task JSON names the assignee by username; an id is accepted too.
  const mine =
    (typeof assignee === 'string' && assignee === me.username) ||
    (typeof assignee === 'number' && String(assignee) === String(me.id));
  if (!mine) return false;
  const description = typeof task.description === 'string' ? task.description : 'A task';
  const taskId = typeof task.id === 'number' ? task.id : undefined;
  toasts.push({
    kind: 'task-assigned',
    title: taskId !== undefined ? `Task #${taskId} assigned to you` : 'A task was assigned to you',
    body: description,
    taskId,
  });
  if (systemNotification && notifications && notifications.permission === 'granted') {
    notifications.create('Pulse: task assigned to you', { body: description, tag: `pulse-task-${taskId ?? description}` });
  }
  return true;
}
