import type { ServerMessage } from '../realtime/messages';
import { realTimers, type Timers } from '../realtime/types';

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
  id: number;
  username: string;
}

/**
 * `task:assigned` → a toast with the task's description, and a system notification when
 * (and only when) permission was granted earlier — never asks for it. Only for the current
 * user (the task's `assignee` is a username).
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
  const task = msg.payload;
  // The server sends the event to the assignee alone; checked again all the same.
  if (task.assignee !== me.username) return false;
  const { description, id: taskId } = task;
  toasts.push({
    kind: 'task-assigned',
    title: `Task #${taskId} assigned to you`,
    body: description,
    taskId,
  });
  if (systemNotification && notifications && notifications.permission === 'granted') {
    notifications.create('Pulse: task assigned to you', { body: description, tag: `pulse-task-${taskId}` });
  }
  return true;
}
