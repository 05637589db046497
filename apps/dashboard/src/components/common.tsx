import { useEffect, useState, type ReactNode } from 'react';
import { humanize } from '../lib/format';

export function StatusPill({ value }: { value: string }) {
  return <span className={`pill pill-${value}`}>{humanize(value)}</span>;
}

export function PageHeader({ title, subtitle, children }: { title: string; subtitle?: string; children?: ReactNode }) {
  return (
    <div className="page-header">
      <div>
        <h1>{title}</h1>
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
