import { useEffect, useRef, useState, type ButtonHTMLAttributes, type ReactNode } from 'react';
import { humanize } from '../lib/format';

export function StatusPill({ value }: { value: string }) {
  return <span className={`pill pill-${value}`}>{humanize(value)}</span>;
}

export function PageHeader({ title, subtitle, children }: { title: string; subtitle?: string; children?: ReactNode }) {
  return (
    <div className="page-header">
      <div>
        {/* Focusable from script: a route change moves the focus here (see Layout). */}
        <h1 tabIndex={-1}>{title}</h1>
        {subtitle && <p className="muted">{subtitle}</p>}
      </div>
      {children && <div className="page-header-actions">{children}</div>}
    </div>
  );
}

export function ListFooter({
  hasNextPage,
  isFetchingNextPage,
  fetchNextPage,
  count,
}: {
  hasNextPage: boolean;
  isFetchingNextPage: boolean;
  fetchNextPage: () => void;
  count: number;
}) {
  return (
    <div className="list-footer">
      <span className="muted">{count === 1 ? '1 item' : `${count} items`}</span>
      {hasNextPage && (
        <button type="button" className="btn-secondary" onClick={fetchNextPage} disabled={isFetchingNextPage}>
          {isFetchingNextPage ? 'Loading…' : 'Load more'}
        </button>
      )}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}

/** A value that follows `value` after `ms` without changes (for filter text inputs). */
export function useDebounced<T>(value: T, ms = 300): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const id = setTimeout(() => setV(value), ms);
    return () => clearTimeout(id);
  }, [value, ms]);
  return v;
}

/**
 * A row or page action. While its action cannot run (`busy`) it says so (`aria-disabled`) and
 * ignores clicks, but keeps the keyboard focus: a `disabled` button would drop the focus to the
 * start of the page in the middle of a keyboard user's work.
 */
export function ActionButton({
  busy,
  onClick,
  ...rest
}: Omit<ButtonHTMLAttributes<HTMLButtonElement>, 'type' | 'disabled'> & { busy: boolean }) {
  return (
    <button
      type="button"
      aria-disabled={busy || undefined}
      onClick={(e) => {
        if (busy) return;
        onClick?.(e);
      }}
      {...rest}
    />
  );
}

/**
 * When an inline form (`open`) closes, the focus goes back to the first control of the
 * returned ref's element (the row's or page's actions) instead of getting lost with the form.
 */
export function useFocusAfterClose<T extends HTMLElement>(open: boolean) {
  const ref = useRef<T>(null);
  const wasOpen = useRef(open);
  useEffect(() => {
    const closed = wasOpen.current && !open;
    wasOpen.current = open;
    if (!closed) return;
    const active = document.activeElement;
    if (active && active !== document.body && !ref.current?.contains(active)) return;
    ref.current?.querySelector<HTMLElement>('button, a[href], input, select, textarea')?.focus();
  }, [open]);
  return ref;
}

/** Text for screen readers only. */
export function VisuallyHidden({ children }: { children: ReactNode }) {
  return <span className="visually-hidden">{children}</span>;
}
