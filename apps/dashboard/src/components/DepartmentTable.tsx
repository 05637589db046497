import type { DepartmentCounts } from '../lib/apiTypes';
import { ApiError } from '../lib/api';
import { humanize } from '../lib/format';
import { useDepartmentStats } from '../lib/resources';

/** Open tasks: pending + in progress. */
export const openOf = (d: DepartmentCounts): number => d.pending + d.inProgress;

/**
 * Who is behind: the department(s) with the most open tasks (pending + in progress), ties
 * included; nobody while nothing is open.
 */
export function behindDepartments(rows: readonly DepartmentCounts[]): Set<string> {
  const most = rows.reduce((m, d) => Math.max(m, openOf(d)), 0);
  return new Set(most > 0 ? rows.filter((d) => openOf(d) === most).map((d) => d.department) : []);
}

/**
 * Task counts per department (contract section 9): the REST twin for the first paint, then every
 * `stats:departments` push. The department(s) behind are marked in words ("Behind"), not by
 * colour alone.
 */
export function DepartmentTable() {
  const q = useDepartmentStats();
  const rows = q.data?.departments ?? [];
  const behind = behindDepartments(rows);
  const unavailable = q.isError && q.error instanceof ApiError && q.error.status === 404;
  return (
    <section className="card" aria-labelledby="departments-title" data-testid="departments">
      <div className="card-head">
        <h2 id="departments-title">Departments</h2>
      </div>
      <p className="muted small" id="departments-help">
        Open = pending + in progress. <strong>Behind</strong> marks the department with the most open tasks.
      </p>
      {unavailable ? (
        <p className="muted">This server does not report figures per department yet.</p>
      ) : q.isError ? (
        <p className="muted">The figures per department could not be loaded.</p>
      ) : q.isPending ? (
        <p className="muted">Loading…</p>
      ) : rows.length === 0 ? (
        <p className="muted">No tasks yet.</p>
      ) : (
        <div className="table-wrap">
          <table className="table table-numbers" data-testid="department-table" aria-describedby="departments-help">
            <thead>
              <tr>
                <th scope="col">Department</th>
                <th scope="col">Open</th>
                <th scope="col">Pending</th>
                <th scope="col">In progress</th>
                <th scope="col">Completed</th>
                <th scope="col">Total</th>
                <th scope="col">Status</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((d) => {
                const isBehind = behind.has(d.department);
                return (
                  <tr
                    key={d.department}
                    data-testid="department-row"
                    data-department={d.department}
                    data-behind={isBehind ? 'true' : 'false'}
                    data-open={openOf(d)}
                    className={isBehind ? 'row-behind' : undefined}
                  >
                    <th scope="row">{humanize(d.department)}</th>
                    <td data-testid="department-open">{openOf(d)}</td>
                    <td>{d.pending}</td>
                    <td>{d.inProgress}</td>
                    <td>{d.completed}</td>
                    <td>{d.total}</td>
                    <td>{isBehind && <span className="pill pill-behind">Behind</span>}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {q.data?.truncated && <p className="muted small">Only the first 200 departments by name are shown.</p>}
    </section>
  );
}
