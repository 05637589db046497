import { useState, type FormEvent } from 'react';
import { ErrorBanner } from '../components/ErrorBanner';
import {
  ActionButton,
  Empty,
  ListFooter,
  PageHeader,
  StatusPill,
  useDebounced,
  useFocusAfterClose,
  VisuallyHidden,
} from '../components/common';
import { describeError, undoneMessage } from '../lib/api';
import { fullTime, humanize, timeAgo } from '../lib/format';
import { isTemp, useAssignTask, useCompleteTask, useCreateTask, useTasks, type Task } from '../lib/resources';

const TYPES = ['housekeeping', 'maintenance', 'room_service', 'concierge', 'front_desk', 'laundry'];
const DEPARTMENTS = ['housekeeping', 'maintenance', 'front_desk', 'kitchen', 'concierge', 'security'];

function NewTaskForm({ onError }: { onError: (m: string | null) => void }) {
  const create = useCreateTask();
  const [type, setType] = useState('housekeeping');
  const [department, setDepartment] = useState('housekeeping');
  const [description, setDescription] = useState('');
  const [assignee, setAssignee] = useState('');
  const [invalid, setInvalid] = useState<string | null>(null);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!type.trim() || !department.trim() || !description.trim()) {
      setInvalid('Type, department and description are required.');
      return;
    }
    setInvalid(null);
    const typed = { description, assignee };
    // The new task shows in the list at once; the form is ready for the next one.
    setDescription('');
    setAssignee('');
    create.mutate(
      {
        type: type.trim(),
        department: department.trim(),
        description: description.trim(),
        ...(assignee.trim() ? { assignee: assignee.trim() } : {}),
      },
      {
        onSuccess: () => onError(null),
        onError: (err) => {
          // Give the text back so nothing typed is lost.
          setDescription((d) => d || typed.description);
          setAssignee((a) => a || typed.assignee);
          onError(undoneMessage(err));
        },
      },
    );
  };

  return (
    <form className="card form-card" onSubmit={submit} data-testid="task-create-form" noValidate>
      <h2>New task</h2>
      <div className="form-grid">
        <label className="field">
          <span>Type</span>
          <input list="task-types" value={type} onChange={(e) => setType(e.target.value)} data-testid="task-type" />
        </label>
        <label className="field">
          <span>Department</span>
          <input
            list="task-departments"
            value={department}
            onChange={(e) => setDepartment(e.target.value)}
            data-testid="task-department"
          />
        </label>
        <label className="field field-wide">
          <span>Description</span>
          <input
            value={description}
            placeholder="e.g. Extra towels for room 412"
            onChange={(e) => setDescription(e.target.value)}
            data-testid="task-description"
          />
        </label>
        <label className="field">
          <span>Assignee (optional)</span>
          <input value={assignee} placeholder="username" onChange={(e) => setAssignee(e.target.value)} data-testid="task-assignee" />
        </label>
      </div>
      <datalist id="task-types">
        {TYPES.map((t) => (
          <option key={t} value={t} />
        ))}
      </datalist>
      <datalist id="task-departments">
        {DEPARTMENTS.map((t) => (
          <option key={t} value={t} />
        ))}
      </datalist>
      {invalid && <p className="field-error">{invalid}</p>}
      <div className="form-actions">
        <button type="submit" className="btn-primary" disabled={create.isPending} data-testid="task-create-submit">
          {create.isPending ? 'Creating…' : 'Create task'}
        </button>
      </div>
    </form>
  );
}

function TaskRow({ task, onError }: { task: Task; onError: (m: string | null) => void }) {
  const assign = useAssignTask();
  const complete = useCompleteTask();
  const [assigning, setAssigning] = useState(false);
  const [assignee, setAssignee] = useState(task.assignee ?? '');
  const busy = assign.isPending || complete.isPending;
  const temp = isTemp(task);
  const actions = useFocusAfterClose<HTMLTableCellElement>(assigning);

  const submitAssign = (e: FormEvent) => {
    e.preventDefault();
    if (!assignee.trim()) return;
    setAssigning(false);
    assign.mutate(
      { id: task.id, assignee: assignee.trim() },
      {
        onSuccess: () => onError(null),
        onError: (err) => onError(undoneMessage(err)),
      },
    );
  };

  return (
    <tr
      data-testid="task-row"
      data-id={task.id}
      data-status={task.status}
      data-saving={busy || temp ? 'true' : undefined}
      className={busy || temp ? 'row-saving' : undefined}
    >
      <td className="cell-id col-optional">{temp ? '…' : `#${task.id}`}</td>
      <td>
        <div className="cell-main">{task.description}</div>
        <div className="cell-sub">
          {humanize(task.type)} · {humanize(task.department)}
        </div>
      </td>
      <td>
        <StatusPill value={task.status} />
      </td>
      <td>{task.assignee ?? <span className="muted">Unassigned</span>}</td>
      <td title={fullTime(task.createdAt)} className="cell-time col-optional">
        {timeAgo(task.createdAt)}
      </td>
      <td className="cell-actions" ref={actions}>
        {temp ? (
          <span className="muted small">Saving…</span>
        ) : task.status !== 'completed' &&
          (assigning ? (
            <form className="inline-form" onSubmit={submitAssign}>
              <input
                aria-label="Assignee username"
                placeholder="username"
                value={assignee}
                autoFocus
                onChange={(e) => setAssignee(e.target.value)}
                data-testid="task-assign-input"
              />
              <button type="submit" className="btn-primary btn-small" disabled={busy || !assignee.trim()}>
                Save
              </button>
              <button type="button" className="btn-ghost btn-small" onClick={() => setAssigning(false)}>
                Cancel
              </button>
            </form>
          ) : (
            <>
              <ActionButton className="btn-secondary btn-small" onClick={() => setAssigning(true)} busy={busy} data-testid="task-assign">
                {task.assignee ? 'Reassign' : 'Assign'}
              </ActionButton>
              <ActionButton
                className="btn-primary btn-small"
                busy={busy}
                data-testid="task-complete"
                onClick={() =>
                  complete.mutate(task.id, {
                    onSuccess: () => onError(null),
                    onError: (err) => onError(undoneMessage(err)),
                  })
                }
              >
                Complete
              </ActionButton>
            </>
          ))}
      </td>
    </tr>
  );
}

export function TasksPage() {
  const [status, setStatus] = useState('');
  const [department, setDepartment] = useState('');
  const [assignee, setAssignee] = useState('');
  const [error, setError] = useState<string | null>(null);
  const filters = {
    status,
    department: useDebounced(department.trim()),
    assignee: useDebounced(assignee.trim()),
  };
  const list = useTasks(filters);
  const tasks = list.data?.pages.flatMap((p) => p.items) ?? [];

  return (
    <div className="page">
      <PageHeader title="Tasks" subtitle="Requests for housekeeping, maintenance and the rest of the team." />
      <ErrorBanner message={error} onDismiss={() => setError(null)} />
      <NewTaskForm onError={setError} />
      <div className="card">
        <div className="filters" role="search">
          <label className="field">
            <span>Status</span>
            <select value={status} onChange={(e) => setStatus(e.target.value)} data-testid="filter-status">
              <option value="">All</option>
              <option value="pending">Pending</option>
              <option value="in_progress">In progress</option>
              <option value="completed">Completed</option>
            </select>
          </label>
          <label className="field">
            <span>Department</span>
            <input value={department} placeholder="any" onChange={(e) => setDepartment(e.target.value)} data-testid="filter-department" />
          </label>
          <label className="field">
            <span>Assignee</span>
            <input value={assignee} placeholder="anyone" onChange={(e) => setAssignee(e.target.value)} data-testid="filter-assignee" />
          </label>
        </div>
        {list.isError && <ErrorBanner message={describeError(list.error)} />}
        {list.isPending ? (
          <Empty>Loading tasks…</Empty>
        ) : tasks.length === 0 ? (
          <Empty>No tasks match these filters.</Empty>
        ) : (
          <div className="table-wrap">
            <table className="table" data-testid="task-list">
              <thead>
                <tr>
                  <th className="col-optional">#</th>
                  <th>Task</th>
                  <th>Status</th>
                  <th>Assignee</th>
                  <th className="col-optional">Created</th>
                  <th>
                    <VisuallyHidden>Actions</VisuallyHidden>
                  </th>
                </tr>
              </thead>
              <tbody>
                {tasks.map((t) => (
                  <TaskRow key={t.id} task={t} onError={setError} />
                ))}
              </tbody>
            </table>
          </div>
        )}
        <ListFooter
          count={tasks.length}
          hasNextPage={!!list.hasNextPage}
          isFetchingNextPage={list.isFetchingNextPage}
          fetchNextPage={() => void list.fetchNextPage()}
        />
      </div>
    </div>
  );
}
