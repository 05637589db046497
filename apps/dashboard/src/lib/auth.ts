import { useSyncExternalStore } from 'react';
import type { LoginAnswer, Role, User } from './apiTypes';

export type { Role, User };

/**
 * Who is signed in: the part of the login answer's `user` the contract promises (`id`,
 * `username`, `role`). The server sends the whole user, but a session stored by an older
 * build has only these, and nothing here needs more (a signed-in user is active).
 */
export type SessionUser = Pick<User, 'id' | 'username' | 'role'>;

/** The login's answer, kept in localStorage. */
export type Session = Omit<LoginAnswer, 'user'> & { user: SessionUser };

export const STORAGE_KEY = 'pulse.session';

/** What the login page says after a logout the user did not ask for. */
export const LOGOUT_REASONS = {
  /** 401 or close 4401: expired, or retired by a role or password change. */
  rejected: 'Your session has ended. Please sign in again.',
  /** The token's lifetime is over. */
  expired: 'Your session has expired. Please sign in again.',
  /** Close 4403. */
  deactivated: 'Your account has been deactivated, so you were signed out. Ask an admin if you need access again.',
  /** `POST /api/v1/me/password` succeeded: every older token is retired. */
  passwordChanged: 'Your password was changed. Sign in with your new password.',
} as const;

type Listener = () => void;

function isSession(v: unknown): v is Session {
  if (!v || typeof v !== 'object') return false;
  const s = v as Partial<Session>;
  return (
    typeof s.token === 'string' &&
    s.token.length > 0 &&
    !!s.user &&
    typeof s.user === 'object' &&
    typeof s.user.username === 'string'
  );
}

function expired(s: Session, now = Date.now()): boolean {
  if (!s.expiresAt) return false;
  const t = Date.parse(s.expiresAt);
  return Number.isFinite(t) && t <= now;
}

/**
 * The session lives in localStorage so every tab of the browser shares it; the `storage`
 * event tells the other tabs about a login or logout.
 */
export class AuthStore {
  private listeners = new Set<Listener>();
  private cachedRaw: string | null | undefined = undefined;
  private cached: Session | null = null;
  private _logoutReason: string | null = null;

  constructor(private readonly storage: Storage | null = typeof localStorage !== 'undefined' ? localStorage : null) {
    if (typeof window !== 'undefined') {
      window.addEventListener('storage', (e) => {
        if (e.key === null || e.key === STORAGE_KEY) this.emit();
      });
    }
  }

  private readRaw(): string | null {
    try {
      return this.storage?.getItem(STORAGE_KEY) ?? null;
    } catch {
      return null;
    }
  }

  get = (): Session | null => {
    const raw = this.readRaw();
    if (raw === this.cachedRaw) return this.cached;
    this.cachedRaw = raw;
    let session: Session | null = null;
    if (raw) {
      try {
        const parsed: unknown = JSON.parse(raw);
        session = isSession(parsed) && !expired(parsed) ? parsed : null;
      } catch {
        session = null;
      }
    }
    this.cached = session;
    return session;
  };

  token(): string | null {
    return this.get()?.token ?? null;
  }

  set(session: Session): void {
    this._logoutReason = null;
    try {
      this.storage?.setItem(STORAGE_KEY, JSON.stringify(session));
    } catch {
      /* storage full or blocked: the session lives only in this tab's cache */
      this.cachedRaw = JSON.stringify(session);
      this.cached = session;
    }
    this.emit();
  }

  /** Logs out in every tab. `reason` is shown on the login page of this tab. */
  clear(reason: string | null = null): void {
    this._logoutReason = reason;
    try {
      this.storage?.removeItem(STORAGE_KEY);
    } catch {
      /* ignore */
    }
    this.cachedRaw = undefined;
    this.emit();
  }

  /** The last logout reason (e.g. session expired), consumed by the login page. */
  takeLogoutReason(): string | null {
    const r = this._logoutReason;
    this._logoutReason = null;
    return r;
  }

  peekLogoutReason(): string | null {
    return this._logoutReason;
  }

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  private emit(): void {
    this.listeners.forEach((l) => l());
  }
}

export const authStore = new AuthStore();

export function useSession(store: AuthStore = authStore): Session | null {
  return useSyncExternalStore(store.subscribe, store.get, () => null);
}

export function canDecideApprovals(role: Role | undefined): boolean {
  return role === 'admin' || role === 'manager';
}

export function canManageUsers(role: Role | undefined): boolean {
  return role === 'admin';
}

/** The reason of the last logout, live (the login page shows it). */
export function useLogoutReason(store: AuthStore = authStore): string | null {
  return useSyncExternalStore(store.subscribe, () => store.peekLogoutReason(), () => null);
}
