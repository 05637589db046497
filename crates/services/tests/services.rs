//! The services suite: every test runs once on SQLite and once on PostgreSQL, each on a
//! fresh database.

mod support;

use domain_events::model::{
    ApprovalStats, ApprovalStatus, ConversationState, ConversationStats, Decision, TaskStats, TaskStatus,
};
use serde_json::json;
use services::{
    ConversationChanges, NewApproval, NewConversation, NewTask, NewUser, PageRequest, ServiceError,
    TaskFilter,
};
use support::World;

on_both_databases!(
    task_life_cycle_and_refusals,
    task_validation_changes_nothing,
    conversation_life_cycle_and_refusals,
    approval_life_cycle_roles_and_refusals,
    stats_follow_a_mix_of_operations,
    a_rolled_back_change_emits_nothing,
    concurrent_completions_commit_once,
    listing_filters_and_pages,
    users_passwords_and_roles,
    event_log_holds_every_published_event,
    websocket_tickets_are_single_use_and_expire,
    tickets_never_outlive_their_token_and_peeking_spends_nothing,
);

async fn websocket_tickets_are_single_use_and_expire(w: World) {
    let tickets = w.services.tickets.clone();
    let session = chrono::Utc::now() + chrono::Duration::hours(1);
    let (ticket, expires) = tickets.issue(&w.staff, session, 1_000).await.expect("issue");
    assert_eq!(ticket.len(), 64);
    assert!(expires > chrono::Utc::now() && expires <= chrono::Utc::now() + chrono::Duration::seconds(31));
    let grant = tickets.redeem(&ticket).await.expect("redeem").expect("valid once");
    assert_eq!(grant.actor, w.staff);
    assert_eq!(grant.session_expires_at.timestamp(), session.timestamp());
    assert_eq!(grant.token_issued_at_ms, 1_000);
    assert_eq!(tickets.redeem(&ticket).await.expect("redeem"), None, "single use");
    assert_eq!(tickets.redeem("not-a-ticket").await.expect("redeem"), None);
    let (other, _) = tickets.issue(&w.staff, session, 1_000).await.expect("issue");
    let mut forged = other.clone();
    let last = if forged.ends_with('0') { '1' } else { '0' };
    forged.pop();
    forged.push(last);
    assert_eq!(tickets.redeem(&forged).await.expect("redeem"), None, "a different secret");
    assert!(tickets.redeem(&other).await.expect("redeem").is_some(), "the real one still works");
    let short = tickets.with_ttl(std::time::Duration::from_millis(300));
    let (stale, _) = short.issue(&w.staff, session, 1_000).await.expect("issue");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(short.redeem(&stale).await.expect("redeem"), None, "expired");
}

async fn tickets_never_outlive_their_token_and_peeking_spends_nothing(w: World) {
    let tickets = w.services.tickets.clone();
    // A token that expires in 400 ms: its ticket does too, not 30 s later.
    let session = chrono::Utc::now() + chrono::Duration::milliseconds(400);
    let (ticket, expires) = tickets.issue(&w.staff, session, 5).await.expect("issue");
    assert!(expires <= session, "ticket expiry {expires} is after its token's {session}");
    for _ in 0..2 {
        let grant = tickets.peek(&ticket).await.expect("peek").expect("a peek spends nothing");
        assert_eq!((grant.actor.user_id, grant.token_issued_at_ms), (w.staff.user_id, 5));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(tickets.peek(&ticket).await.expect("peek"), None, "expired with its token");
    assert_eq!(tickets.redeem(&ticket).await.expect("redeem"), None, "expired with its token");
    // Spent once, then gone.
    let (ticket, _) =
        tickets.issue(&w.staff, chrono::Utc::now() + chrono::Duration::hours(1), 5).await.expect("issue");
    assert!(tickets.redeem(&ticket).await.expect("redeem").is_some());
    assert_eq!(tickets.peek(&ticket).await.expect("peek"), None);
}

fn task(kind: &str) -> NewTask {
    NewTask {
        kind: kind.into(),
        department: "housekeeping".into(),
        description: "Room 12".into(),
        assignee: None,
    }
}

fn conversation() -> NewConversation {
    NewConversation {
        guest_name: "Ada Guest".into(),
        channel: "chat".into(),
        subject: "Late checkout".into(),
    }
}

fn approval() -> NewApproval {
    NewApproval {
        kind: "refund".into(),
        summary: "Refund night 2".into(),
        payload: Some(json!({"amount": 120})),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(matches!(result, Err(ServiceError::Conflict(_))), "expected a conflict, got {result:?}");
}

#[track_caller]
fn assert_validation<T: std::fmt::Debug>(result: Result<T, ServiceError>, field: &str) {
    match result {
        Err(ServiceError::Validation(e)) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a validation error on {field}, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(matches!(result, Err(ServiceError::NotFound { .. })), "expected not found, got {result:?}");
}

async fn task_life_cycle_and_refusals(w: World) {
    let tasks = &w.services.tasks;
    let created = tasks.create(&w.staff, task("housekeeping")).await.expect("create");
    assert_eq!(created.status, TaskStatus::Pending);
    assert_eq!(created.created_by, "sam");
    assert_eq!(created.assignee, None);
    assert_eq!(w.events.take_names(), ["task.created"]);
    assert_eq!(tasks.get(created.id).await.expect("get"), created);

    let assigned = tasks.assign(&w.manager, created.id, "sam").await.expect("assign");
    assert_eq!((assigned.status, assigned.assignee.as_deref()), (TaskStatus::InProgress, Some("sam")));
    assert_eq!(w.events.take_names(), ["task.assigned"]);

    // Reassigning an in-progress task is allowed.
    let reassigned = tasks.assign(&w.manager, created.id, "maria").await.expect("reassign");
    assert_eq!(reassigned.assignee.as_deref(), Some("maria"));
    assert_eq!(w.events.take_names(), ["task.assigned"]);

    let completed = tasks.complete(&w.staff, created.id).await.expect("complete");
    assert_eq!(completed.status, TaskStatus::Completed);
    assert!(completed.completed_at.is_some());
    assert_eq!(w.events.take_names(), ["task.completed"]);

    // Refused: completing or assigning a completed task.
    assert_conflict(tasks.complete(&w.staff, created.id).await);
    assert_conflict(tasks.assign(&w.manager, created.id, "sam").await);
    assert_eq!(tasks.get(created.id).await.expect("get"), completed);

    // A pending task may be completed directly.
    let direct = tasks.create(&w.staff, task("maintenance")).await.expect("create");
    assert_eq!(tasks.complete(&w.staff, direct.id).await.expect("complete").status, TaskStatus::Completed);

    // Created with an assignee: in progress at once, and two events.
    let with_assignee = tasks
        .create(&w.staff, NewTask { assignee: Some("sam".into()), ..task("minibar") })
        .await
        .expect("create assigned");
    assert_eq!(with_assignee.status, TaskStatus::InProgress);
    assert_eq!(w.events.take_names(), ["task.created", "task.completed", "task.created", "task.assigned"]);

    assert_not_found(tasks.get(9999).await);
    assert_not_found(tasks.complete(&w.staff, 9999).await);
    assert_not_found(tasks.assign(&w.staff, 9999, "sam").await);
    assert!(w.events.take_names().is_empty(), "refused changes emit nothing");
}

async fn task_validation_changes_nothing(w: World) {
    let tasks = &w.services.tasks;
    let before = tasks.stats().await.expect("stats");
    assert_validation(tasks.create(&w.staff, task("")).await, "type");
    assert_validation(tasks.create(&w.staff, task("   ")).await, "type");
    assert_validation(tasks.create(&w.staff, task(&"x".repeat(65))).await, "type");
    assert_validation(
        tasks.create(&w.staff, NewTask { department: "".into(), ..task("a") }).await,
        "department",
    );
    assert_validation(
        tasks.create(&w.staff, NewTask { description: "d".repeat(4001), ..task("a") }).await,
        "description",
    );
    assert_validation(
        tasks.create(&w.staff, NewTask { assignee: Some("nobody-here".into()), ..task("a") }).await,
        "assignee",
    );
    assert_validation(
        tasks.create(&w.staff, NewTask { assignee: Some("no spaces".into()), ..task("a") }).await,
        "assignee",
    );
    let created = tasks.create(&w.staff, task("a")).await.expect("create");
    w.events.take();
    assert_validation(tasks.assign(&w.staff, created.id, "ghost").await, "assignee");
    assert_validation(tasks.assign(&w.staff, created.id, "").await, "assignee");
    assert_eq!(tasks.get(created.id).await.expect("get").status, TaskStatus::Pending);
    assert!(w.events.take_names().is_empty());
    let after = tasks.stats().await.expect("stats");
    assert_eq!(after.total, before.total + 1);
    assert_eq!(after.pending, before.pending + 1);
}

async fn conversation_life_cycle_and_refusals(w: World) {
    let convs = &w.services.conversations;
    let c = convs.create(&w.staff, conversation()).await.expect("create");
    assert_eq!(c.state, ConversationState::Active);
    assert_eq!(w.events.take_names(), ["conversation.created"]);

    let updated = convs
        .update(
            &w.staff,
            c.id,
            ConversationChanges { subject: Some("Early check-in".into()), ..Default::default() },
        )
        .await
        .expect("update");
    assert_eq!(updated.subject, "Early check-in");
    assert_eq!(updated.guest_name, "Ada Guest");
    assert_eq!(w.events.take_names(), ["conversation.updated"]);

    let escalated = convs.escalate(&w.staff, c.id, "Guest is upset").await.expect("escalate");
    assert_eq!(escalated.state, ConversationState::Escalated);
    assert_eq!(escalated.escalation_reason.as_deref(), Some("Guest is upset"));
    assert_eq!(w.events.take_names(), ["conversation.escalated"]);
    assert_conflict(convs.escalate(&w.staff, c.id, "again").await);

    let back = convs.deescalate(&w.manager, c.id).await.expect("de-escalate");
    assert_eq!(back.state, ConversationState::Active);
    assert_eq!(w.events.take_names(), ["conversation.updated"]);
    assert_conflict(convs.deescalate(&w.manager, c.id).await);

    convs.escalate(&w.staff, c.id, "Still upset").await.expect("escalate again");
    let resolved = convs.resolve(&w.manager, c.id).await.expect("resolve from escalated");
    assert_eq!(resolved.state, ConversationState::Resolved);
    assert!(resolved.resolved_at.is_some());
    assert_eq!(w.events.take_names(), ["conversation.escalated", "conversation.resolved"]);

    assert_conflict(convs.resolve(&w.manager, c.id).await);
    assert_conflict(convs.escalate(&w.staff, c.id, "why").await);
    assert_conflict(
        convs
            .update(&w.staff, c.id, ConversationChanges { channel: Some("sms".into()), ..Default::default() })
            .await,
    );

    let active = convs.create(&w.staff, conversation()).await.expect("create");
    assert_eq!(
        convs.resolve(&w.staff, active.id).await.expect("resolve from active").state,
        ConversationState::Resolved
    );
    w.events.take();

    assert_validation(convs.escalate(&w.staff, c.id, " ").await, "reason");
    assert_validation(convs.update(&w.staff, c.id, ConversationChanges::default()).await, "body");
    assert_validation(
        convs.create(&w.staff, NewConversation { guest_name: "".into(), ..conversation() }).await,
        "guestName",
    );
    assert_validation(
        convs.create(&w.staff, NewConversation { subject: "s".repeat(1001), ..conversation() }).await,
        "subject",
    );
    assert_not_found(convs.resolve(&w.staff, 424242).await);
    assert_not_found(convs.get(424242).await);
    assert!(w.events.take_names().is_empty());
}

async fn approval_life_cycle_roles_and_refusals(w: World) {
    let queue = &w.services.approvals;
    let a = queue.queue(&w.staff, approval()).await.expect("queue");
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.payload, Some(json!({"amount": 120})));
    assert_eq!(a.requested_by, "sam");
    assert_eq!(w.events.take_names(), ["approval.queued"]);

    // Staff may not decide or execute; nothing changes.
    assert!(matches!(
        queue.decide(&w.staff, a.id, Decision::Approved.as_str(), None).await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(matches!(queue.execute(&w.staff, a.id).await, Err(ServiceError::Forbidden(_))));
    // The role is checked first: staff learn nothing from a bad decision or a missing id.
    assert!(matches!(queue.decide(&w.staff, a.id, "maybe", None).await, Err(ServiceError::Forbidden(_))));
    assert!(matches!(queue.decide(&w.staff, 777, "approved", None).await, Err(ServiceError::Forbidden(_))));
    assert_validation(queue.decide(&w.manager, a.id, "maybe", None).await, "decision");
    // Executing a pending approval is refused.
    assert_conflict(queue.execute(&w.manager, a.id).await);
    assert_eq!(queue.get(a.id).await.expect("get").status, ApprovalStatus::Pending);
    assert!(w.events.take_names().is_empty());

    let approved =
        queue.decide(&w.manager, a.id, Decision::Approved.as_str(), Some("fair")).await.expect("decide");
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("maria"));
    assert_eq!(approved.decision_reason.as_deref(), Some("fair"));
    assert_eq!(w.events.take_names(), ["approval.decided"]);
    assert_conflict(queue.decide(&w.admin, a.id, Decision::Rejected.as_str(), None).await);

    let executed = queue.execute(&w.admin, a.id).await.expect("execute");
    assert_eq!(executed.status, ApprovalStatus::Executed);
    assert_eq!(executed.executed_by.as_deref(), Some("admin"));
    assert_eq!(w.events.take_names(), ["approval.executed"]);
    assert_conflict(queue.execute(&w.admin, a.id).await);

    let b = queue.queue(&w.staff, NewApproval { payload: None, ..approval() }).await.expect("queue");
    assert_eq!(b.payload, None);
    let rejected = queue.decide(&w.admin, b.id, Decision::Rejected.as_str(), None).await.expect("reject");
    assert_eq!(rejected.status, ApprovalStatus::Rejected);
    assert_conflict(queue.execute(&w.admin, b.id).await);
    w.events.take();

    assert_validation(queue.queue(&w.staff, NewApproval { kind: "".into(), ..approval() }).await, "kind");
    assert_validation(
        queue.queue(&w.staff, NewApproval { payload: Some(json!("x".repeat(40_000))), ..approval() }).await,
        "payload",
    );
    assert_not_found(queue.decide(&w.admin, 777, Decision::Approved.as_str(), None).await);
    assert_not_found(queue.execute(&w.admin, 777).await);
    assert!(w.events.take_names().is_empty());
}

async fn stats_follow_a_mix_of_operations(w: World) {
    let s = &w.services;
    let zero = (
        s.tasks.stats().await.expect("t"),
        s.conversations.stats().await.expect("c"),
        s.approvals.stats().await.expect("a"),
    );
    assert_eq!(zero, (TaskStats::default(), ConversationStats::default(), ApprovalStats::default()));

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.tasks.create(&w.staff, task(&format!("kind{i}"))).await.expect("create").id);
    }
    s.tasks.assign(&w.manager, ids[0], "sam").await.expect("assign");
    s.tasks.assign(&w.manager, ids[1], "sam").await.expect("assign");
    s.tasks.complete(&w.staff, ids[1]).await.expect("complete");
    s.tasks.complete(&w.staff, ids[2]).await.expect("complete");
    let _ = s.tasks.complete(&w.staff, ids[2]).await; // refused: counts unchanged
    assert_eq!(
        s.tasks.stats().await.expect("stats"),
        TaskStats { pending: 2, in_progress: 1, completed: 2, total: 5 }
    );

    let c1 = s.conversations.create(&w.staff, conversation()).await.expect("c").id;
    let c2 = s.conversations.create(&w.staff, conversation()).await.expect("c").id;
    s.conversations.create(&w.staff, conversation()).await.expect("c");
    s.conversations.escalate(&w.staff, c1, "help").await.expect("escalate");
    s.conversations.resolve(&w.staff, c2).await.expect("resolve");
    assert_eq!(
        s.conversations.stats().await.expect("stats"),
        ConversationStats { active: 1, escalated: 1, resolved: 1, total: 3 }
    );

    let mut aids = Vec::new();
    for _ in 0..4 {
        aids.push(s.approvals.queue(&w.staff, approval()).await.expect("queue").id);
    }
    s.approvals.decide(&w.manager, aids[0], Decision::Approved.as_str(), None).await.expect("decide");
    s.approvals.decide(&w.manager, aids[1], Decision::Approved.as_str(), None).await.expect("decide");
    s.approvals.execute(&w.manager, aids[1]).await.expect("execute");
    s.approvals.decide(&w.manager, aids[2], Decision::Rejected.as_str(), None).await.expect("decide");
    assert_eq!(
        s.approvals.stats().await.expect("stats"),
        ApprovalStats { pending: 1, approved: 1, rejected: 1, executed: 1, total: 4 }
    );

    // The counters agree with the rows themselves.
    for status in TaskStatus::ALL {
        let filter = TaskFilter { status: Some(*status), ..Default::default() };
        let listed =
            s.tasks.list(&filter, PageRequest { limit: Some(200), cursor: None }).await.expect("list");
        let stats = s.tasks.stats().await.expect("stats");
        let expected = match status {
            TaskStatus::Pending => stats.pending,
            TaskStatus::InProgress => stats.in_progress,
            TaskStatus::Completed => stats.completed,
        };
        assert_eq!(listed.items.len() as u64, expected, "{status}");
    }
}

async fn a_rolled_back_change_emits_nothing(w: World) {
    // An actor whose username is not a user: the insert fails inside the transaction
    // (foreign key), which rolls back.
    let ghost = support::actor(999, "ghost", domain_events::model::Role::Admin);
    let before = w.services.conversations.stats().await.expect("stats");
    let result = w.services.conversations.create(&ghost, conversation()).await;
    assert!(result.is_err(), "{result:?}");
    assert!(w.events.take_names().is_empty());
    assert_eq!(w.services.conversations.stats().await.expect("stats"), before);
    let log = services::EventLog::new(w.services.db.clone());
    assert!(log.after(0, 100).await.expect("log").is_empty(), "nothing logged");
}

async fn concurrent_completions_commit_once(w: World) {
    let t = w.services.tasks.create(&w.staff, task("race")).await.expect("create");
    w.events.take();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let tasks = w.services.tasks.clone();
        let staff = w.staff.clone();
        handles.push(tokio::spawn(async move { tasks.complete(&staff, t.id).await }));
    }
    let mut ok = 0;
    for handle in handles {
        match handle.await.expect("join") {
            Ok(_) => ok += 1,
            Err(ServiceError::Conflict(_)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(w.events.take_names(), ["task.completed"]);
    assert_eq!(w.services.tasks.stats().await.expect("stats").completed, 1);
}

async fn listing_filters_and_pages(w: World) {
    let tasks = &w.services.tasks;
    for i in 0..5 {
        let mut input = task(&format!("k{i}"));
        if i % 2 == 0 {
            input.department = "maintenance".into();
        }
        if i == 4 {
            input.assignee = Some("sam".into());
        }
        tasks.create(&w.staff, input).await.expect("create");
    }
    let page1 =
        tasks.list(&TaskFilter::default(), PageRequest { limit: Some(2), cursor: None }).await.expect("page");
    assert_eq!(page1.items.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(), ["k4", "k3"]);
    let page2 = tasks
        .list(&TaskFilter::default(), PageRequest { limit: Some(2), cursor: page1.next_cursor })
        .await
        .expect("page");
    assert_eq!(page2.items.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(), ["k2", "k1"]);
    let page3 = tasks
        .list(&TaskFilter::default(), PageRequest { limit: Some(2), cursor: page2.next_cursor })
        .await
        .expect("page");
    assert_eq!(page3.items.len(), 1);
    assert_eq!(page3.next_cursor, None);

    let maintenance = TaskFilter { department: Some("maintenance".into()), ..Default::default() };
    assert_eq!(tasks.list(&maintenance, PageRequest::default()).await.expect("list").items.len(), 3);
    let sams = TaskFilter {
        assignee: Some("sam".into()),
        status: Some(TaskStatus::InProgress),
        ..Default::default()
    };
    assert_eq!(tasks.list(&sams, PageRequest::default()).await.expect("list").items.len(), 1);
    assert_validation(
        tasks.list(&TaskFilter::default(), PageRequest { limit: Some(201), cursor: None }).await,
        "limit",
    );

    let convs = &w.services.conversations;
    let c = convs.create(&w.staff, conversation()).await.expect("create");
    convs.create(&w.staff, conversation()).await.expect("create");
    convs.escalate(&w.staff, c.id, "x").await.expect("escalate");
    let escalated =
        convs.list(Some(ConversationState::Escalated), PageRequest::default()).await.expect("list");
    assert_eq!(escalated.items.iter().map(|c| c.id).collect::<Vec<_>>(), [c.id]);

    let queue = &w.services.approvals;
    queue.queue(&w.staff, approval()).await.expect("queue");
    assert_eq!(
        queue.list(Some(ApprovalStatus::Pending), PageRequest::default()).await.expect("list").items.len(),
        1
    );
    assert!(
        queue
            .list(Some(ApprovalStatus::Executed), PageRequest::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

async fn users_passwords_and_roles(w: World) {
    let users = &w.services.users;
    // Only while the table is empty.
    assert_eq!(users.bootstrap_admin("other", "other-password").await.expect("bootstrap"), None);

    let ok = users.authenticate("maria", "maria-password").await.expect("login");
    assert_eq!(ok.username, "maria");
    assert!(matches!(
        users.authenticate("maria", "wrong-password").await,
        Err(ServiceError::InvalidCredentials)
    ));
    assert!(matches!(
        users.authenticate("nobody", "maria-password").await,
        Err(ServiceError::InvalidCredentials)
    ));

    let gate = users.gate();
    let hash = gate.hash("s3cret-pass".into()).await.expect("hash");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    assert!(!hash.contains("s3cret-pass"));
    assert!(gate.verify("s3cret-pass".into(), Some(hash.clone())).await.expect("verify"));
    assert!(!gate.verify("s3cret-pasS".into(), Some(hash.clone())).await.expect("verify"));
    assert_ne!(hash, gate.hash("s3cret-pass".into()).await.expect("hash"), "salted");

    let new = |name: &str, role: &str| NewUser {
        username: name.into(),
        password: "long-enough".into(),
        role: role.into(),
    };
    assert!(matches!(
        users.create(&w.manager, new("newbie", "staff")).await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(matches!(users.create(&w.staff, new("newbie", "staff")).await, Err(ServiceError::Forbidden(_))));
    assert_validation(users.create(&w.admin, new("newbie", "owner")).await, "role");
    assert_validation(
        users.create(&w.admin, NewUser { password: "short".into(), ..new("newbie", "staff") }).await,
        "password",
    );
    let created = users.create(&w.admin, new("newbie", "staff")).await.expect("create");
    assert_eq!(users.get(created.id).await.expect("get"), created);
    assert_conflict(users.create(&w.admin, new("newbie", "manager")).await);
    assert_eq!(users.list(&w.admin).await.expect("list").len(), 4);
}

async fn event_log_holds_every_published_event(w: World) {
    let s = &w.services;
    let t = s
        .tasks
        .create(&w.staff, NewTask { assignee: Some("sam".into()), ..task("a") })
        .await
        .expect("create");
    s.tasks.complete(&w.staff, t.id).await.expect("complete");
    s.approvals.queue(&w.staff, approval()).await.expect("queue");
    let published = w.events.take();
    assert_eq!(published.len(), 4);
    assert!(published.windows(2).all(|p| p[0].seq < p[1].seq), "seq increases");
    let logged = services::EventLog::new(s.db.clone()).after(0, 100).await.expect("log");
    assert_eq!(logged, published);
    assert_eq!(logged[0].actor.username, "sam");
    let later = services::EventLog::new(s.db.clone()).after(published[1].seq, 100).await.expect("log");
    assert_eq!(later.len(), 2);
    let log = services::EventLog::new(s.db.clone());
    let mut horizon = services::PruneHorizon::default();
    let until = chrono::Utc::now() + chrono::Duration::seconds(1);
    let first = log.prune(until, &mut horizon).await.expect("prune");
    let second = log.prune(until, &mut horizon).await.expect("prune again");
    let left = log.after(0, 100).await.expect("log");
    match s.db.kind() {
        services::DatabaseKind::Sqlite => assert_eq!((first, second, left.len()), (4, 0, 0)),
        // Other instances read the log: the first run only notes which transactions were
        // running; the second removes a prefix and keeps the newest row. (How long a prefix
        // depends on the whole server's oldest transaction, which other tests share.)
        services::DatabaseKind::Postgres => {
            assert_eq!(first, 0);
            assert!(second <= 3, "the newest row stays");
            assert_eq!(left, published[second..], "a prefix went");
        }
    }
}

#[tokio::test]
async fn a_second_process_may_not_open_the_same_sqlite_file() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("pulse.db").display());
    let first = services::Database::connect(&url, services::PoolOptions::default()).await.expect("first");
    // The lock is per open file description, so a second open in this process is refused too.
    let second = services::Database::connect(&url, services::PoolOptions::default()).await;
    assert!(matches!(second, Err(services::ConnectError::SqliteInUse(_))), "{second:?}");
    drop(first);
    services::Database::connect(&url, services::PoolOptions::default()).await.expect("free again");
}
