import { useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import { ErrorBanner } from '../components/ErrorBanner';
import { EscalateForm } from '../components/EscalateForm';
import { ActionButton, Empty, PageHeader, StatusPill, useFocusAfterClose } from '../components/common';
import { useRealtime } from '../components/RealtimeContext';
import { ApiError, describeError } from '../lib/api';
import { fullTime, humanize, timeAgo } from '../lib/format';
import { useConversation, useEscalateConversation, useResolveConversation } from '../lib/resources';
import { Link } from '../lib/router';
import { typingText, TypingSender } from '../realtime/LiveState';

const UNDONE = 'The change was undone.';

/** "sam is typing…" for the other users typing in this conversation. */
export function TypingIndicator({ conversationId }: { conversationId: number }) {
  const { typing } = useRealtime();
  const all = useSyncExternalStore(typing.subscribe, typing.get, typing.get);
  const typists = all.get(conversationId) ?? [];
  const text = typingText(typists);
  return (
    <div className="typing" data-testid="typing-indicator" aria-live="polite" data-count={typists.length}>
      {text && (
        <>
          <span className="typing-dots" aria-hidden="true">
            <span />
            <span />
            <span />
          </span>
          <span>{text}</span>
        </>
      )}
    </div>
  );
}

/** Reply / notes box whose keystrokes drive the typing indicator of the other viewers. */
function ReplyBox({ conversationId }: { conversationId: number }) {
  const { send } = useRealtime();
  const [text, setText] = useState('');
  const sender = useMemo(() => new TypingSender(conversationId, send), [conversationId, send]);
  // Leaving the page (or another conversation) stops the indicator at once.
  useEffect(() => () => sender.stop(), [sender]);
  return (
    <div className="card reply">
      <label className="field">
        <span>Reply / notes</span>
        <textarea
          rows={4}
          value={text}
          placeholder="Write a reply or internal notes…"
          onChange={(e) => {
            setText(e.target.value);
            sender.keystroke();
          }}
          onBlur={() => sender.stop()}
          data-testid="conversation-reply"
        />
      </label>
      <p className="muted small">Others viewing this conversation see when you are typing. Notes are not saved.</p>
    </div>
  );
}

export function ConversationPage({ id }: { id: number }) {
  const q = useConversation(id);
  const escalate = useEscalateConversation();
  const resolve = useResolveConversation();
  const [error, setError] = useState<string | null>(null);
  const [escalating, setEscalating] = useState(false);
  const c = q.data;
  const busy = escalate.isPending || resolve.isPending;
  const actions = useFocusAfterClose<HTMLDivElement>(escalating);

  const submitEscalate = (reason: string) => {
    setEscalating(false);
    escalate.mutate(
      { id: id, reason },
      {
        onSuccess: () => setError(null),
        onError: (err) => setError(`${describeError(err)} ${UNDONE}`),
      },
    );
  };

  const notFound = q.error instanceof ApiError && q.error.status === 404;
  const why = c?.escalationReason;

  return (
    <div className="page">
      <p className="crumbs">
        <Link to="/conversations">← Conversations</Link>
      </p>
      {q.isPending ? (
        <div className="card">
          <Empty>Loading conversation…</Empty>
        </div>
      ) : notFound ? (
        <div className="card empty">
          <h1 tabIndex={-1}>Conversation #{id} not found</h1>
        </div>
      ) : !c ? (
        <ErrorBanner message={describeError(q.error)} />
      ) : (
        <>
          <PageHeader title={c.subject} subtitle={`Conversation #${c.id} with ${c.guestName} · ${humanize(c.channel)}`}>
            <span data-testid="conversation-state" data-state={c.state}>
              <StatusPill value={c.state} />
            </span>
          </PageHeader>
          <ErrorBanner message={error} onDismiss={() => setError(null)} />
          <div className="card detail" data-testid="conversation-detail" data-id={c.id} data-state={c.state}>
            <dl className="facts">
              <div>
                <dt>Guest</dt>
                <dd>{c.guestName}</dd>
              </div>
              <div>
                <dt>Channel</dt>
                <dd>{humanize(c.channel)}</dd>
              </div>
              <div>
                <dt>State</dt>
                <dd>{humanize(c.state)}</dd>
              </div>
              {why && (
                <div>
                  <dt>Escalated because</dt>
                  <dd>{why}</dd>
                </div>
              )}
              <div>
                <dt>Started</dt>
                <dd title={fullTime(c.createdAt)}>{timeAgo(c.createdAt)}</dd>
              </div>
              <div>
                <dt>Updated</dt>
                <dd title={fullTime(c.updatedAt ?? c.createdAt)}>{timeAgo(c.updatedAt ?? c.createdAt)}</dd>
              </div>
            </dl>
            <div className="detail-actions" ref={actions}>
              {escalating ? (
                <EscalateForm busy={busy} onEscalate={submitEscalate} onCancel={() => setEscalating(false)} />
              ) : (
                <>
                  {c.state === 'active' && (
                    <ActionButton
                      className="btn-secondary"
                      busy={busy}
                      onClick={() => setEscalating(true)}
                      data-testid="conversation-escalate"
                    >
                      Escalate
                    </ActionButton>
                  )}
                  {c.state !== 'resolved' && (
                    <ActionButton
                      className="btn-primary"
                      busy={busy}
                      data-testid="conversation-resolve"
                      onClick={() =>
                        resolve.mutate(id, {
                          onSuccess: () => setError(null),
                          onError: (err) => setError(`${describeError(err)} ${UNDONE}`),
                        })
                      }
                    >
                      Resolve
                    </ActionButton>
                  )}
                </>
              )}
            </div>
          </div>
          <ReplyBox conversationId={c.id} />
          <TypingIndicator conversationId={c.id} />
        </>
      )}
    </div>
  );
}
