import { useState, type FormEvent } from 'react';
import { ErrorBanner } from '../components/ErrorBanner';
import {
  ActionButton,
  Empty,
  ListFooter,
  PageHeader,
  StatusPill,
  useFocusAfterClose,
  VisuallyHidden,
} from '../components/common';
import { describeError, undoneMessage } from '../lib/api';
import { canDecideApprovals, useSession } from '../lib/auth';
import { fullTime, humanize, timeAgo } from '../lib/format';
import {
  isTemp,
  useApprovals,
  useCreateApproval,
  useDecideApproval,
  useExecuteApproval,
  type Approval,
} from '../lib/resources';

function NewApprovalForm({ onError }: { onError: (m: string | null) => void }) {
  const create = useCreateApproval();
  const [kind, setKind] = useState('refund');
  const [summary, setSummary] = useState('');
  const [invalid, setInvalid] = useState<string | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!kind.trim() || !summary.trim()) {
      setInvalid('Kind and summary are required.');
      return;
    }
    setInvalid(null);
    const typed = summary;
    setSummary('');
    create.mutate(
      { kind: kind.trim(), summary: summary.trim() },
      {
        onSuccess: () => onError(null),
        onError: (err) => {
          setSummary((v) => v || typed);
          onError(undoneMessage(err));
        },
      },
    );
  };
  return (
    <form className="card form-card" onSubmit={submit} noValidate data-testid="approval-create-form">
      <h2>Request an approval</h2>
      <div className="form-grid">
        <label className="field">
          <span>Kind</span>
          <input list="approval-kinds" value={kind} onChange={(e) => setKind(e.target.value)} data-testid="approval-kind" />
        </label>
        <label className="field field-wide">
          <span>Summary</span>
          <input
            value={summary}
            placeholder="e.g. Refund one night for room 208 (AC broken)"
            onChange={(e) => setSummary(e.target.value)}
            data-testid="approval-summary"
          />
        </label>
      </div>
      <datalist id="approval-kinds">
        {['refund', 'discount', 'upgrade', 'late_checkout', 'purchase'].map((k) => (
          <option key={k} value={k} />
        ))}
      </datalist>
      {invalid && <p className="field-error">{invalid}</p>}
      <div className="form-actions">
        <button type="submit" className="btn-primary" disabled={create.isPending} data-testid="approval-create-submit">
          {create.isPending ? 'Sending…' : 'Request approval'}
        </button>
      </div>
    </form>
  );
}

function ApprovalRow({ item, canDecide, onError }: { item: Approval; canDecide: boolean; onError: (m: string | null) => void }) {
  const decide = useDecideApproval();
  const execute = useExecuteApproval();
  const [rejecting, setRejecting] = useState(false);
  const [reason, setReason] = useState('');
  const busy = decide.isPending || execute.isPending;
  const temp = isTemp(item);
  const actions = useFocusAfterClose<HTMLTableCellElement>(rejecting);
  const handlers = {
    onSuccess: () => onError(null),
    onError: (err: unknown) => onError(undoneMessage(err)),
  };
  const reasonText = item.decisionReason;

  return (
    <tr
      data-testid="approval-row"
      data-id={item.id}
      data-status={item.status}
      data-saving={busy || temp ? 'true' : undefined}
      className={busy || temp ? 'row-saving' : undefined}
    >
      <td className="cell-id col-optional">{temp ? '…' : `#${item.id}`}</td>
      <td>
        <div className="cell-main">{item.summary}</div>
        <div className="cell-sub">
          {humanize(item.kind)}
          {reasonText ? ` · ${reasonText}` : ''}
        </div>
      </td>
      <td>
        <StatusPill value={item.status} />
      </td>
      <td title={fullTime(item.createdAt)} className="cell-time col-optional">
        {timeAgo(item.createdAt)}
      </td>
      <td className="cell-actions" ref={actions}>
        {temp ? (
          <span className="muted small">Saving…</span>
        ) : !canDecide ? (
          item.status === 'pending' || item.status === 'approved' ? (
            <span className="muted small">Needs a manager</span>
          ) : null
        ) : rejecting ? (
          <form
            className="inline-form"
            onSubmit={(e) => {
              e.preventDefault();
              setRejecting(false);
              decide.mutate({ id: item.id, decision: 'rejected', reason: reason.trim() || undefined }, handlers);
            }}
          >
            <input
              aria-label="Reason for rejecting (optional)"
              placeholder="reason (optional)"
              value={reason}
              autoFocus
              onChange={(e) => setReason(e.target.value)}
              data-testid="approval-reject-reason"
            />
            <button type="submit" className="btn-danger btn-small" disabled={busy} data-testid="approval-reject-confirm">
              Reject
            </button>
            <button type="button" className="btn-ghost btn-small" onClick={() => setRejecting(false)}>
              Cancel
            </button>
          </form>
        ) : (
          <>
            {item.status === 'pending' && (
              <>
                <ActionButton
                  className="btn-primary btn-small"
                  busy={busy}
                  data-testid="approval-approve"
                  onClick={() => decide.mutate({ id: item.id, decision: 'approved' }, handlers)}
                >
                  Approve
                </ActionButton>
                <ActionButton
                  className="btn-secondary btn-small"
                  busy={busy}
                  data-testid="approval-reject"
                  onClick={() => setRejecting(true)}
                >
                  Reject
                </ActionButton>
              </>
            )}
            {item.status === 'approved' && (
              <ActionButton
                className="btn-primary btn-small"
                busy={busy}
                data-testid="approval-execute"
                onClick={() => execute.mutate(item.id, handlers)}
              >
                Execute
              </ActionButton>
            )}
          </>
        )}
      </td>
    </tr>
  );
}

export function ApprovalsPage() {
  const session = useSession();
  const canDecide = canDecideApprovals(session?.user.role);
  const [status, setStatus] = useState('');
  const [error, setError] = useState<string | null>(null);
  const list = useApprovals({ status });
  const items = list.data?.pages.flatMap((p) => p.items) ?? [];

  return (
    <div className="page">
      <PageHeader
        title="Approvals"
        subtitle={
          canDecide
            ? 'Refunds, discounts and other requests waiting for a decision.'
            : 'Requests waiting for a manager. Your role can request approvals but not decide them.'
        }
      />
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      <NewApprovalForm onError={setError} />
      <div className="card">
        <div className="filters" role="search">
          <label className="field">
            <span>Status</span>
            <select value={status} onChange={(e) => setStatus(e.target.value)} data-testid="filter-approval-status">
              <option value="">All</option>
              <option value="pending">Pending</option>
              <option value="approved">Approved</option>
              <option value="rejected">Rejected</option>
              <option value="executed">Executed</option>
            </select>
          </label>
        </div>
        {list.isError && <ErrorBanner message={describeError(list.error)} />}
        {list.isPending ? (
          <Empty>Loading approvals…</Empty>
        ) : items.length === 0 ? (
          <Empty>Nothing here.</Empty>
        ) : (
          <div className="table-wrap">
            <table className="table" data-testid="approval-list">
              <thead>
                <tr>
                  <th className="col-optional">#</th>
                  <th>Request</th>
                  <th>Status</th>
                  <th className="col-optional">Created</th>
                  <th>
                    <VisuallyHidden>Actions</VisuallyHidden>
                  </th>
                </tr>
              </thead>
              <tbody>
                {items.map((a) => (
                  <ApprovalRow key={a.id} item={a} canDecide={canDecide} onError={setError} />
                ))}
              </tbody>
            </table>
          </div>
        )}
        <ListFooter
          count={items.length}
          hasNextPage={!!list.hasNextPage}
          isFetchingNextPage={list.isFetchingNextPage}
          fetchNextPage={() => void list.fetchNextPage()}
        />
      </div>
    </div>
  );
}
