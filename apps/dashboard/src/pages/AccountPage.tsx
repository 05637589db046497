import { useId, useRef, useState, type FormEvent } from 'react';
import { PageHeader } from '../components/common';
import { ApiError, describeError } from '../lib/api';
import { useSession } from '../lib/auth';
import { humanize } from '../lib/format';
import { passwordProblem, useChangeOwnPassword } from '../lib/users';

type Field = 'current' | 'next' | 'confirm';

/** Plain words for a refused password change. */
export function passwordChangeError(err: unknown): { field: Field | null; message: string } {
  if (err instanceof ApiError && err.status === 403) {
    return { field: 'current', message: 'Your current password is not right. Nothing was changed.' };
  }
  if (err instanceof ApiError && err.status === 400) return { field: 'next', message: describeError(err) };
  return { field: null, message: describeError(err) };
}

/** `/account`: who you are, and the form to change your own password (everyone). */
export function AccountPage() {
  const session = useSession();
  const change = useChangeOwnPassword();
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [confirm, setConfirm] = useState('');
  const [problem, setProblem] = useState<{ field: Field | null; message: string } | null>(null);
  const errorId = useId();
  const inputs = { current: useRef<HTMLInputElement>(null), next: useRef<HTMLInputElement>(null), confirm: useRef<HTMLInputElement>(null) };

  const fail = (field: Field | null, message: string) => {
    setProblem({ field, message });
    if (field) inputs[field].current?.focus();
  };

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!current) return fail('current', 'Enter your current password.');
    const weak = passwordProblem(next);
    if (weak) return fail('next', weak);
    if (confirm !== next) return fail('confirm', 'The two new passwords differ.');
    setProblem(null);
    change.mutate(
      { currentPassword: current, newPassword: next },
      {
        onError: (err) => {
          const p = passwordChangeError(err);
          fail(p.field, p.message);
        },
      },
    );
  };

  const invalid = (field: Field) => problem?.field === field;
  const described = (field: Field) => (problem && (problem.field === field || problem.field === null) ? errorId : undefined);
  if (!session) return null;
  return (
    <div className="page">
      <PageHeader title="Your account" subtitle={`Signed in as ${session.user.username} (${humanize(session.user.role)}).`} />
      <form className="card form-card account-form" onSubmit={submit} noValidate data-testid="account-password-form">
        <h2>Change your password</h2>
        <p className="muted small">Every session of yours ends when it changes: you then sign in with the new password.</p>
        <div className="form-stack">
          <label className="field">
            <span>Current password</span>
            <input
              ref={inputs.current}
              type="password"
              autoComplete="current-password"
              value={current}
              onChange={(e) => setCurrent(e.target.value)}
              aria-invalid={invalid('current')}
              aria-describedby={described('current')}
              data-testid="account-current-password"
            />
          </label>
          <label className="field">
            <span>New password (at least 8 characters)</span>
            <input
              ref={inputs.next}
              type="password"
              autoComplete="new-password"
              value={next}
              onChange={(e) => setNext(e.target.value)}
              aria-invalid={invalid('next')}
              aria-describedby={described('next')}
              data-testid="account-new-password"
            />
          </label>
          <label className="field">
            <span>New password again</span>
            <input
              ref={inputs.confirm}
              type="password"
              autoComplete="new-password"
              value={confirm}
              onChange={(e) => setConfirm(e.target.value)}
              aria-invalid={invalid('confirm')}
              aria-describedby={described('confirm')}
              data-testid="account-confirm-password"
            />
          </label>
        </div>
        {problem && (
          <p className="field-error" id={errorId} role="alert" data-testid="account-error">
            {problem.message}
          </p>
        )}
        <div className="form-actions">
          <button type="submit" className="btn-primary" disabled={change.isPending} data-testid="account-submit">
            {change.isPending ? 'Changing…' : 'Change password'}
          </button>
        </div>
      </form>
    </div>
  );
}
