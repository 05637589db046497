//! Tasks: `pending → in_progress → completed`.

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use domain_events::model::{Actor, Task, TaskStats, TaskStatus};
use domain_events::{DomainEvent, EventPublisher};
use serde::Deserialize;

use crate::db::{Conn, Database, db_run};
use crate::error::{ServiceError, ServiceResult, ValidationError};
use crate::outbox::{commit_and_announce, now, record_events, utc};
use crate::schema::{tasks, users};
use crate::validate::{self, Page, PageRequest, limits};

/// `POST /api/v1/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewTask {
    /// What kind of work.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64, pattern = "{visible_text}"))]
    pub kind: String,
    /// Which department does it.
    #[cfg_attr(feature = "openapi", schema(max_length = 64, pattern = "{visible_text}"))]
    pub department: String,
    /// Free text.
    #[cfg_attr(feature = "openapi", schema(max_length = 4000, pattern = "{visible_text}"))]
    pub description: String,
    /// Username to assign it to at once (the task starts `in_progress`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64, pattern = "{username}"))]
    pub assignee: Option<String>,
}

/// Filters of `GET /api/v1/tasks`.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only this department.
    pub department: Option<String>,
    /// Only tasks assigned to this username.
    pub assignee: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = tasks)]
struct TaskRow {
    id: i64,
    kind: String,
    department: String,
    description: String,
    status: String,
    assignee: Option<String>,
    created_by: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    completed_at: Option<NaiveDateTime>,
}

impl TryFrom<TaskRow> for Task {
    type Error = ServiceError;
    fn try_from(row: TaskRow) -> Result<Self, Self::Error> {
        Ok(Task {
            id: row.id,
            kind: row.kind,
            department: row.department,
            description: row.description,
            status: row.status.parse().map_err(|e| ServiceError::Internal(Box::new(e)))?,
            assignee: row.assignee,
            created_by: row.created_by,
            created_at: utc(row.created_at),
            updated_at: utc(row.updated_at),
            completed_at: row.completed_at.map(utc),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = tasks)]
struct NewTaskRow<'a> {
    kind: &'a str,
    department: &'a str,
    description: &'a str,
    status: &'static str,
    assignee: Option<&'a str>,
    created_by: &'a str,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

/// Creates, assigns and completes tasks; every committed change publishes its events.
#[derive(Clone)]
pub struct TaskService {
    db: Database,
    publisher: Arc<dyn EventPublisher>,
}

impl TaskService {
    /// A service writing to `db` and announcing on `publisher`.
    pub fn new(db: Database, publisher: Arc<dyn EventPublisher>) -> Self {
        Self { db, publisher }
    }

    /// Creates a task: `pending`, or `in_progress` when an assignee is given.
    /// Emits `task.created`, then `task.assigned` when assigned.
    pub async fn create(&self, actor: &Actor, input: NewTask) -> ServiceResult<Task> {
        let kind = validate::required_text("type", &input.kind, limits::SHORT_TEXT)?;
        let department = validate::required_text("department", &input.department, limits::SHORT_TEXT)?;
        let description = validate::required_text("description", &input.description, limits::DESCRIPTION)?;
        let assignee = input.assignee.as_deref().map(|a| validate::username("assignee", a)).transpose()?;
        let status = if assignee.is_some() { TaskStatus::InProgress } else { TaskStatus::Pending };
        let at = now();
        let row = NewTaskRow {
            kind: &kind,
            department: &department,
            description: &description,
            status: status.as_str(),
            assignee: assignee.as_deref(),
            created_by: &actor.username,
            created_at: at,
            updated_at: at,
        };
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            if let Some(assignee) = &assignee {
                ensure_active_user(conn, assignee).await?;
            }
            let task = Task::try_from(db_run!(conn, |c| diesel::insert_into(tasks::table)
                .values(&row)
                .returning(TaskRow::as_returning())
                .get_result(c)
                .await)?)?;
            let mut events = vec![DomainEvent::TaskCreated(task.clone())];
            if task.assignee.is_some() {
                events.push(DomainEvent::TaskAssigned(task.clone()));
            }
            let events = record_events(conn, actor, at, events).await?;
            Ok((task, events))
        })
        .await
    }

    /// One task.
    pub async fn get(&self, id: i64) -> ServiceResult<Task> {
        let row: Option<TaskRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| tasks::table
                    .find(id)
                    .select(TaskRow::as_select())
                    .first(c)
                    .await
                    .optional())
            })
            .await?;
        row.ok_or(ServiceError::not_found("task", id))?.try_into()
    }

    /// Tasks matching `filter`, newest first.
    pub async fn list(&self, filter: &TaskFilter, page: PageRequest) -> ServiceResult<Page<Task>> {
        let (limit, cursor) = page.validated()?;
        let rows: Vec<TaskRow> = self
            .db
            .read(async |conn| {
                db_run!(conn, |c| {
                    let mut query =
                        tasks::table.select(TaskRow::as_select()).order(tasks::id.desc()).into_boxed();
                    if let Some(status) = filter.status {
                        query = query.filter(tasks::status.eq(status.as_str()));
                    }
                    if let Some(department) = &filter.department {
                        query = query.filter(tasks::department.eq(department));
                    }
                    if let Some(assignee) = &filter.assignee {
                        query = query.filter(tasks::assignee.eq(assignee));
                    }
                    if let Some(cursor) = cursor {
                        query = query.filter(tasks::id.lt(cursor));
                    }
                    query.limit(limit + 1).load(c).await
                })
            })
            .await?;
        let items = rows.into_iter().map(Task::try_from).collect::<ServiceResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |t| t.id))
    }

    /// Assigns (or reassigns) a task; it moves to `in_progress`. Emits `task.assigned`.
    /// A completed task cannot be assigned (conflict).
    pub async fn assign(&self, actor: &Actor, id: i64, assignee: &str) -> ServiceResult<Task> {
        let assignee = validate::username("assignee", assignee)?;
        let at = now();
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            ensure_active_user(conn, &assignee).await?;
            let updated: Option<TaskRow> = db_run!(conn, |c| diesel::update(
                tasks::table.find(id).filter(tasks::status.ne(TaskStatus::Completed.as_str())),
            )
            .set((
                tasks::assignee.eq(&assignee),
                tasks::status.eq(TaskStatus::InProgress.as_str()),
                tasks::updated_at.eq(at),
            ))
            .returning(TaskRow::as_returning())
            .get_result(c)
            .await
            .optional())?;
            let Some(row) = updated else { return Err(refusal(conn, id, "assign").await) };
            let task = Task::try_from(row)?;
            let events = record_events(conn, actor, at, [DomainEvent::TaskAssigned(task.clone())]).await?;
            Ok((task, events))
        })
        .await
    }

    /// Completes a task (from `pending` or `in_progress`). Emits `task.completed`.
    pub async fn complete(&self, actor: &Actor, id: i64) -> ServiceResult<Task> {
        let at = now();
        commit_and_announce(&self.db, &*self.publisher, async |conn| {
            let updated: Option<TaskRow> = db_run!(conn, |c| diesel::update(
                tasks::table.find(id).filter(tasks::status.ne(TaskStatus::Completed.as_str())),
            )
            .set((
                tasks::status.eq(TaskStatus::Completed.as_str()),
                tasks::updated_at.eq(at),
                tasks::completed_at.eq(Some(at)),
            ))
            .returning(TaskRow::as_returning())
            .get_result(c)
            .await
            .optional())?;
            let Some(row) = updated else { return Err(refusal(conn, id, "complete").await) };
            let task = Task::try_from(row)?;
            let events = record_events(conn, actor, at, [DomainEvent::TaskCompleted(task.clone())]).await?;
            Ok((task, events))
        })
        .await
    }

    /// Counts by status.
    pub async fn stats(&self) -> ServiceResult<TaskStats> {
        crate::stats::task_stats(&self.db).await
    }
}

/// Fails unless `username` names an active user (a task is assigned to someone who can log
/// in; a deactivated user cannot be made an assignee).
async fn ensure_active_user(conn: &mut Conn<'_>, username: &str) -> ServiceResult<()> {
    let found: i64 = db_run!(conn, |c| users::table
        .filter(users::username.eq(username))
        .filter(users::active.eq(true))
        .count()
        .get_result(c)
        .await)?;
    if found == 0 {
        return Err(ValidationError::new("assignee", format!("no active user named {username:?}")).into());
    }
    Ok(())
}

/// Why a guarded update of task `id` touched nothing: it is missing, or completed already.
async fn refusal(conn: &mut Conn<'_>, id: i64, action: &str) -> ServiceError {
    let found = db_run!(conn, |c| tasks::table.find(id).count().get_result::<i64>(c).await);
    match found {
        Ok(0) => ServiceError::not_found("task", id),
        Ok(_) => ServiceError::Conflict(format!("cannot {action} task {id}: it is already completed")),
        Err(error) => error,
    }
}
