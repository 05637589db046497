import { useState, type FormEvent } from 'react';
import { ErrorBanner } from '../components/ErrorBanner';
import { EscalateForm } from '../components/EscalateForm';
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
import { fullTime, humanize, timeAgo } from '../lib/format';
import { Link } from '../lib/router';
import {
  isTemp,
  useConversations,
  useCreateConversation,
  useEscalateConversation,
  useResolveConversation,
  type Conversation,
} from '../lib/resources';

const CHANNELS = ['phone', 'email', 'chat', 'sms', 'whatsapp', 'in_person'];

function NewConversationForm({ onError }: { onError: (m: string | null) => void }) {
  const create = useCreateConversation();
  const [guestName, setGuestName] = useState('');
  const [channel, setChannel] = useState('chat');
  const [subject, setSubject] = useState('');
  const [invalid, setInvalid] = useState<string | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!guestName.trim() || !channel.trim() || !subject.trim()) {
      setInvalid('Guest name, channel and subject are required.');
      return;
    }
    setInvalid(null);
    const typed = { guestName, subject };
    setGuestName('');
    setSubject('');
    create.mutate(
      { guestName: guestName.trim(), channel: channel.trim(), subject: subject.trim() },
      {
        onSuccess: () => onError(null),
        onError: (err) => {
          setGuestName((v) => v || typed.guestName);
          setSubject((v) => v || typed.subject);
          onError(undoneMessage(err));
        },
      },
    );
  };
  return (
    <form className="card form-card" onSubmit={submit} noValidate data-testid="conversation-create-form">
      <h2>New conversation</h2>
      <div className="form-grid">
        <label className="field">
          <span>Guest name</span>
          <input value={guestName} onChange={(e) => setGuestName(e.target.value)} data-testid="conversation-guest" />
        </label>
        <label className="field">
          <span>Channel</span>
          <select value={channel} onChange={(e) => setChannel(e.target.value)} data-testid="conversation-channel">
            {CHANNELS.map((c) => (
              <option key={c} value={c}>
                {humanize(c)}
              </option>
            ))}
          </select>
        </label>
        <label className="field field-wide">
          <span>Subject</span>
          <input
            value={subject}
            placeholder="e.g. Noise complaint, room 305"
            onChange={(e) => setSubject(e.target.value)}
            data-testid="conversation-subject"
          />
        </label>
      </div>
      {invalid && <p className="field-error">{invalid}</p>}
      <div className="form-actions">
        <button type="submit" className="btn-primary" disabled={create.isPending} data-testid="conversation-create-submit">
          {create.isPending ? 'Creating…' : 'Start conversation'}
        </button>
      </div>
    </form>
  );
}

function ConversationRow({ item, onError }: { item: Conversation; onError: (m: string | null) => void }) {
  const escalate = useEscalateConversation();
  const resolve = useResolveConversation();
  const [escalating, setEscalating] = useState(false);
  const busy = escalate.isPending || resolve.isPending;
  const temp = isTemp(item);
  const why = item.escalationReason;
  const actions = useFocusAfterClose<HTMLTableCellElement>(escalating);

  const submitEscalate = (reason: string) => {
    setEscalating(false);
    escalate.mutate(
      { id: item.id, reason },
      {
        onSuccess: () => onError(null),
        onError: (err) => onError(undoneMessage(err)),
      },
    );
  };

  return (
    <tr
      data-testid="conversation-row"
      data-id={item.id}
      data-state={item.state}
      data-saving={busy || temp ? 'true' : undefined}
      className={busy || temp ? 'row-saving' : undefined}
    >
      <td className="cell-id col-optional">{temp ? '…' : `#${item.id}`}</td>
      <td>
        <div className="cell-main">
          {temp ? (
            item.subject
          ) : (
            <Link to={`/conversations/${item.id}`} className="row-link" data-testid="conversation-open">
              {item.subject}
            </Link>
          )}
        </div>
        <div className="cell-sub">
          {item.guestName} · {humanize(item.channel)}
          {item.state === 'escalated' && why ? ` · Escalated: ${why}` : ''}
        </div>
      </td>
      <td>
        <StatusPill value={item.state} />
      </td>
      <td title={fullTime(item.updatedAt ?? item.createdAt)} className="cell-time col-optional">
        {timeAgo(item.updatedAt ?? item.createdAt)}
      </td>
      <td className="cell-actions" ref={actions}>
        {temp ? (
          <span className="muted small">Saving…</span>
        ) : escalating ? (
          <EscalateForm busy={busy} onEscalate={submitEscalate} onCancel={() => setEscalating(false)} />
        ) : (
          <>
            {item.state === 'active' && (
              <ActionButton
                className="btn-secondary btn-small"
                busy={busy}
                onClick={() => setEscalating(true)}
                data-testid="conversation-escalate"
              >
                Escalate
              </ActionButton>
            )}
            {item.state !== 'resolved' && (
              <ActionButton
                className="btn-primary btn-small"
                busy={busy}
                data-testid="conversation-resolve"
                onClick={() =>
                  resolve.mutate(item.id, {
                    onSuccess: () => onError(null),
                    onError: (err) => onError(undoneMessage(err)),
                  })
                }
              >
                Resolve
              </ActionButton>
            )}
          </>
        )}
      </td>
    </tr>
  );
}

export function ConversationsPage() {
  const [state, setState] = useState('');
  const [error, setError] = useState<string | null>(null);
  const list = useConversations({ state });
  const items = list.data?.pages.flatMap((p) => p.items) ?? [];
  return (
    <div className="page">
      <PageHeader title="Conversations" subtitle="Guest conversations across every channel." />
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      <NewConversationForm onError={setError} />
      <div className="card">
        <div className="filters" role="search">
          <label className="field">
            <span>State</span>
            <select value={state} onChange={(e) => setState(e.target.value)} data-testid="filter-conversation-state">
              <option value="">All</option>
              <option value="active">Active</option>
              <option value="escalated">Escalated</option>
              <option value="resolved">Resolved</option>
            </select>
          </label>
        </div>
        {list.isError && <ErrorBanner message={describeError(list.error)} />}
        {list.isPending ? (
          <Empty>Loading conversations…</Empty>
        ) : items.length === 0 ? (
          <Empty>No conversations here.</Empty>
        ) : (
          <div className="table-wrap">
            <table className="table" data-testid="conversation-list">
              <thead>
                <tr>
                  <th className="col-optional">#</th>
                  <th>Conversation</th>
                  <th>State</th>
                  <th className="col-optional">Updated</th>
                  <th>
                    <VisuallyHidden>Actions</VisuallyHidden>
                  </th>
                </tr>
              </thead>
              <tbody>
                {items.map((c) => (
                  <ConversationRow key={c.id} item={c} onError={setError} />
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
