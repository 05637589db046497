import { useId, useState, type FormEvent } from 'react';
import { ErrorBanner } from '../components/ErrorBanner';
import { ActionButton, Empty, PageHeader, useFocusAfterClose, VisuallyHidden } from '../components/common';
import { ApiError, describeError } from '../lib/api';
import type { Role, User } from '../lib/apiTypes';
import { canManageUsers, useSession } from '../lib/auth';
import { fullTime, humanize, timeAgo } from '../lib/format';
import { passwordProblem, USERNAME_PATTERN, useCreateUser, useUpdateUser, useUsers } from '../lib/users';

const ROLES: readonly Role[] = ['staff', 'manager', 'admin'];

type Change = 'role' | 'active' | 'password';

/** Plain words for a refused change; a 409 on a user is the last-admin rule (contract section 2). */
export function userChangeError(err: unknown, username: string, change: Change, active = true): string {
  if (err instanceof ApiError && err.status === 409) {
    return change === 'active' && active
      ? `${username} is the last active admin and cannot be deactivated. Make another user an admin first.`
      : `${username} is the last active admin and must stay one. Make another user an admin first.`;
  }
  const what = change === 'role' ? 'role' : change === 'password' ? 'password' : active ? 'account (deactivate)' : 'account (reactivate)';
  return `Could not change ${username}'s ${what}: ${describeError(err)}`;
}

function NewUserForm({ onDone }: { onDone: (message: string | null, error: string | null) => void }) {
  const create = useCreateUser();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState<Role>('staff');
  const [invalid, setInvalid] = useState<string | null>(null);
  const errorId = useId();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const name = username.trim();
    const problem = !USERNAME_PATTERN.test(name)
      ? 'A username has 3 to 64 letters, digits, dots, dashes or underscores.'
      : passwordProblem(password);
    setInvalid(problem);
    if (problem) return;
    create.mutate(
      { username: name, password, role },
      {
        onSuccess: () => {
          setUsername('');
          setPassword('');
          setRole('staff');
          onDone(`${name} can now sign in as ${role}.`, null);
        },
        onError: (err) => onDone(null, `Could not add ${name}: ${describeError(err)}`),
      },
    );
  };
  return (
    <form className="card form-card" onSubmit={submit} noValidate data-testid="user-create-form">
      <h2>Add a user</h2>
      <div className="form-grid">
        <label className="field">
          <span>Username</span>
          <input
            value={username}
            autoComplete="off"
            onChange={(e) => setUsername(e.target.value)}
            aria-invalid={invalid !== null && !USERNAME_PATTERN.test(username.trim())}
            aria-describedby={invalid ? errorId : undefined}
            data-testid="user-create-username"
          />
        </label>
        <label className="field">
          <span>Password</span>
          <input
            type="password"
            value={password}
            autoComplete="new-password"
            onChange={(e) => setPassword(e.target.value)}
            aria-invalid={invalid !== null && passwordProblem(password) !== null}
            aria-describedby={invalid ? errorId : undefined}
            data-testid="user-create-password"
          />
        </label>
        <label className="field">
          <span>Role</span>
          <select value={role} onChange={(e) => setRole(e.target.value as Role)} data-testid="user-create-role">
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {humanize(r)}
              </option>
            ))}
          </select>
        </label>
      </div>
      {invalid && (
        <p className="field-error" id={errorId} role="alert">
          {invalid}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="btn-primary" disabled={create.isPending} data-testid="user-create-submit">
          {create.isPending ? 'Adding…' : 'Add user'}
        </button>
      </div>
    </form>
  );
}

type Editing = null | 'role' | 'password';

function UserRow({
  user,
  isMe,
  onDone,
}: {
  user: User;
  isMe: boolean;
  onDone: (message: string | null, error: string | null) => void;
}) {
  const update = useUpdateUser();
  const [editing, setEditing] = useState<Editing>(null);
  const [role, setRole] = useState<Role>(user.role);
  const [password, setPassword] = useState('');
  const [formError, setFormError] = useState<string | null>(null);
  const actions = useFocusAfterClose<HTMLTableCellElement>(editing !== null);
  const errorId = useId();
  const busy = update.isPending;
  const name = user.username;

  const close = () => {
    setEditing(null);
    setFormError(null);
    setPassword('');
  };

  const saveRole = (e: FormEvent) => {
    e.preventDefault();
    if (role === user.role) {
      close();
      return;
    }
    update.mutate(
      { id: user.id, changes: { role } },
      {
        onSuccess: (u) => {
          close();
          onDone(`${name} is now ${u.role === 'admin' ? 'an' : 'a'} ${u.role}.`, null);
        },
        onError: (err) => {
          close();
          setRole(user.role);
          onDone(null, userChangeError(err, name, 'role'));
        },
      },
    );
  };

  const savePassword = (e: FormEvent) => {
    e.preventDefault();
    const problem = passwordProblem(password);
    setFormError(problem);
    if (problem) return;
    update.mutate(
      { id: user.id, changes: { password } },
      {
        onSuccess: () => {
          close();
          onDone(`${name}'s password was reset. Their open sessions end; they sign in with the new one.`, null);
        },
        // A refused password keeps the form open with the reason next to the field.
        onError: (err) => setFormError(userChangeError(err, name, 'password')),
      },
    );
  };

  const setActive = (active: boolean) =>
    update.mutate(
      { id: user.id, changes: { active } },
      {
        onSuccess: () =>
          onDone(active ? `${name} can sign in again.` : `${name} is deactivated: signed out everywhere and cannot sign in.`, null),
        onError: (err) => onDone(null, userChangeError(err, name, 'active', !active)),
      },
    );

  return (
    <tr
      data-testid="user-row"
      data-id={user.id}
      data-username={name}
      data-role={user.role}
      data-active={String(user.active)}
      data-saving={busy ? 'true' : undefined}
      className={busy ? 'row-saving' : undefined}
    >
      <td>
        <div className="cell-main">
          {name}
          {isMe && <span className="muted"> (you)</span>}
        </div>
      </td>
      <td>
        <span className={`pill pill-role-${user.role}`}>{humanize(user.role)}</span>
      </td>
      <td>
        <span className={`pill ${user.active ? 'pill-active' : 'pill-deactivated'}`}>{user.active ? 'Active' : 'Deactivated'}</span>
      </td>
      <td title={fullTime(user.createdAt)} className="cell-time col-optional">
        {timeAgo(user.createdAt)}
      </td>
      <td className="cell-actions" ref={actions}>
        {editing === 'role' ? (
          <form className="inline-form" onSubmit={saveRole}>
            <select
              aria-label={`New role for ${name}`}
              value={role}
              autoFocus
              onChange={(e) => setRole(e.target.value as Role)}
              data-testid="user-role-select"
            >
              {ROLES.map((r) => (
                <option key={r} value={r}>
                  {humanize(r)}
                </option>
              ))}
            </select>
            <button type="submit" className="btn-primary btn-small" disabled={busy} data-testid="user-role-save">
              Save
            </button>
            <button type="button" className="btn-ghost btn-small" onClick={close}>
              Cancel
            </button>
            {isMe && <span className="small muted">Changing your own role signs you out.</span>}
          </form>
        ) : editing === 'password' ? (
          <form className="inline-form" onSubmit={savePassword} noValidate>
            <input
              type="password"
              aria-label={`New password for ${name}`}
              placeholder="new password"
              autoComplete="new-password"
              value={password}
              autoFocus
              aria-invalid={formError !== null}
              aria-describedby={formError ? errorId : undefined}
              onChange={(e) => {
                setPassword(e.target.value);
                setFormError(null);
              }}
              data-testid="user-password-input"
            />
            <button type="submit" className="btn-primary btn-small" disabled={busy} data-testid="user-password-save">
              Set password
            </button>
            <button type="button" className="btn-ghost btn-small" onClick={close}>
              Cancel
            </button>
            {formError && (
              <span className="field-error" id={errorId} role="alert" data-testid="user-password-error">
                {formError}
              </span>
            )}
          </form>
        ) : (
          <>
            <ActionButton
              className="btn-secondary btn-small"
              busy={busy}
              onClick={() => {
                setRole(user.role);
                setEditing('role');
              }}
              data-testid="user-role-edit"
            >
              Change role<VisuallyHidden> of {name}</VisuallyHidden>
            </ActionButton>
            <ActionButton className="btn-secondary btn-small" busy={busy} onClick={() => setEditing('password')} data-testid="user-password-reset">
              Reset password<VisuallyHidden> of {name}</VisuallyHidden>
            </ActionButton>
            {user.active ? (
              <ActionButton className="btn-danger btn-small" busy={busy} onClick={() => setActive(false)} data-testid="user-deactivate">
                Deactivate<VisuallyHidden> {name}</VisuallyHidden>
              </ActionButton>
            ) : (
              <ActionButton className="btn-primary btn-small" busy={busy} onClick={() => setActive(true)} data-testid="user-reactivate">
                Reactivate<VisuallyHidden> {name}</VisuallyHidden>
              </ActionButton>
            )}
          </>
        )}
      </td>
    </tr>
  );
}

/** `/users` (admins): who can sign in, with what role; change a role, reset a password, (de)activate. */
export function UsersPage() {
  const session = useSession();
  const admin = canManageUsers(session?.user.role);
  const list = useUsers(admin);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const done = (message: string | null, err: string | null) => {
    setStatus(message);
    setError(err);
  };

  if (!admin) {
    return (
      <div className="page">
        <PageHeader title="Users" />
        <div className="card empty">Only admins manage users.</div>
      </div>
    );
  }
  const users = list.data?.items ?? [];
  return (
    <div className="page">
      <PageHeader title="Users" subtitle="Who can sign in, and what each one may do." />
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      <p className="status-line" role="status" data-testid="users-status">
        {status}
      </p>
      <NewUserForm onDone={done} />
      <div className="card">
        {list.isError && <ErrorBanner message={describeError(list.error)} />}
        {list.isPending ? (
          <Empty>Loading users…</Empty>
        ) : users.length === 0 ? (
          <Empty>No users.</Empty>
        ) : (
          <div className="table-wrap">
            <table className="table" data-testid="user-list">
              <caption className="visually-hidden">Users</caption>
              <thead>
                <tr>
                  <th>User</th>
                  <th>Role</th>
                  <th>Status</th>
                  <th className="col-optional">Added</th>
                  <th>
                    <VisuallyHidden>Actions</VisuallyHidden>
                  </th>
                </tr>
              </thead>
              <tbody>
                {users.map((u) => (
                  <UserRow key={u.id} user={u} isMe={u.id === session?.user.id} onDone={done} />
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
    </div>
  );
}
