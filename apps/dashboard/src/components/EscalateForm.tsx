import { useState, type FormEvent } from 'react';

/**
 * The reason form shown when escalating a conversation (list row and detail page): a reason
 * is required; the parent runs the mutation with the trimmed reason.
 */
export function EscalateForm({
  busy,
  onEscalate,
  onCancel,
}: {
  busy: boolean;
  onEscalate: (reason: string) => void;
  onCancel: () => void;
}) {
  const [reason, setReason] = useState('');
  const [missing, setMissing] = useState(false);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const trimmed = reason.trim();
    if (!trimmed) {
      setMissing(true);
      return;
    }
    onEscalate(trimmed);
  };
  return (
    <form className="inline-form" onSubmit={submit} noValidate>
      <input
        aria-label="Reason for escalating"
        placeholder="reason (required)"
        value={reason}
        autoFocus
        aria-invalid={missing}
        onChange={(e) => {
          setReason(e.target.value);
          setMissing(false);
        }}
        data-testid="conversation-escalate-reason"
      />
      <button type="submit" className="btn-danger btn-small" disabled={busy} data-testid="conversation-escalate-confirm">
        Escalate
      </button>
      <button type="button" className="btn-ghost btn-small" onClick={onCancel}>
        Cancel
      </button>
      {missing && <span className="field-error">A reason is required.</span>}
    </form>
  );
}
