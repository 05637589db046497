//! The user lifecycle, on SQLite and PostgreSQL, each test on a fresh database: admins list
//! and change users (role, activity, password), users change their own password; what a
//! change retires (credentials issued before it, unredeemed tickets) and announces
//! (`user.updated`); the last active admin stays, also against two admins acting at once;
//! and password work over the gate's bound is refused and changes nothing.

mod support;

use std::sync::Arc;

use domain_events::DomainEvent;
use domain_events::model::{Actor, Role};
use services::{NewTask, NewUser, PasswordChange, ServiceError, UserChanges};
use support::{World, actor};

on_both_databases!(
    admins_list_and_change_users_and_every_field_is_checked_first,
    equal_values_change_nothing_and_retire_nothing,
    deactivation_refuses_login_tickets_and_assignment,
    role_and_password_changes_retire_older_credentials,
    the_last_active_admin_stays,
    the_last_active_admin_stays_when_two_admins_act_at_once,
    users_change_their_own_password,
    password_checks_over_the_bound_are_refused_and_change_nothing,
    a_taken_username_does_not_repeat_the_database_text,
);

fn changes(role: Option<&str>, active: Option<bool>, password: Option<&str>) -> UserChanges {
    UserChanges { role: role.map(Into::into), active, password: password.map(Into::into) }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[track_caller]
fn assert_validation<T: std::fmt::Debug>(result: Result<T, ServiceError>, field: &str) {
    match result {
        Err(ServiceError::Validation(e)) => assert_eq!(e.field, field, "{e}"),
        other => panic!("expected a validation error on {field}, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(matches!(result, Err(ServiceError::Conflict(_))), "expected a conflict, got {result:?}");
}

/// The `user.updated` events published since the last call.
fn user_updates(w: &World) -> Vec<domain_events::model::UserUpdate> {
    w.events
        .take()
        .into_iter()
        .map(|e| match e.event {
            DomainEvent::UserUpdated(update) => update,
            other => panic!("unexpected event {}", other.name()),
        })
        .collect()
}

async fn admins_list_and_change_users_and_every_field_is_checked_first(w: World) {
    let users = &w.services.users;
    let all = users.list(&w.admin).await.expect("list");
    let names: Vec<&str> = all.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["admin", "maria", "sam"], "by id");
    assert!(all.iter().all(|u| u.active));
    for who in [&w.manager, &w.staff] {
        assert!(matches!(users.list(who).await, Err(ServiceError::Forbidden(_))));
        let refused = users.update(who, w.staff.user_id, changes(Some("admin"), None, None)).await;
        assert!(matches!(refused, Err(ServiceError::Forbidden(_))), "{refused:?}");
    }
    assert_validation(users.update(&w.admin, w.staff.user_id, UserChanges::default()).await, "body");
    // One bad field refuses the whole change: the good ones are not applied either.
    assert_validation(
        users
            .update(&w.admin, w.staff.user_id, changes(Some("owner"), Some(false), Some("new-password")))
            .await,
        "role",
    );
    assert_validation(
        users.update(&w.admin, w.staff.user_id, changes(Some("manager"), Some(false), Some("short"))).await,
        "password",
    );
    assert!(matches!(
        users.update(&w.admin, 999_999, changes(Some("manager"), None, None)).await,
        Err(ServiceError::NotFound { .. })
    ));
    let sam = users.get(w.staff.user_id).await.expect("get");
    assert_eq!((sam.role, sam.active), (Role::Staff, true), "nothing changed");
    users.authenticate("sam", "sam-password").await.expect("the old password still works");
    assert!(w.events.take().is_empty(), "refused changes emit nothing");

    let changed =
        users.update(&w.admin, w.staff.user_id, changes(Some("manager"), None, None)).await.expect("ok");
    assert_eq!(changed.role, Role::Manager);
    assert_eq!(users.get(w.staff.user_id).await.expect("get"), changed);
    assert_eq!(user_updates(&w).len(), 1);
}

async fn equal_values_change_nothing_and_retire_nothing(w: World) {
    let users = &w.services.users;
    let before = users.account_state(w.staff.user_id).await.expect("state").expect("exists");
    let same =
        users.update(&w.admin, w.staff.user_id, changes(Some("staff"), Some(true), None)).await.expect("ok");
    assert_eq!((same.role, same.active), (Role::Staff, true));
    assert_eq!(users.account_state(w.staff.user_id).await.expect("state").expect("exists"), before);
    assert!(w.events.take_names().is_empty(), "no change, no event");
}

async fn deactivation_refuses_login_tickets_and_assignment(w: World) {
    let (users, tickets) = (&w.services.users, &w.services.tickets);
    let session = chrono::Utc::now() + chrono::Duration::hours(1);
    // Issued "in the future": deactivation refuses it all the same.
    let (ticket, _) = tickets.issue(&w.staff, session, now_ms() + 3_600_000).await.expect("ticket");
    let task = w.services.tasks.create(&w.admin, task_for(None)).await.expect("task");
    w.events.take();
    let started = now_ms();
    let off = users.update(&w.admin, w.staff.user_id, changes(None, Some(false), None)).await.expect("ok");
    assert!(!off.active);
    let updates = user_updates(&w);
    assert_eq!(updates.len(), 1);
    assert_eq!((updates[0].user.id, updates[0].user.active), (w.staff.user_id, false));
    assert!(updates[0].tokens_valid_after.timestamp_millis() >= started - 1);
    assert!(matches!(users.authenticate("sam", "sam-password").await, Err(ServiceError::InvalidCredentials)));
    let state = users.account_state(w.staff.user_id).await.expect("state").expect("exists");
    assert!(!state.active);
    assert_eq!(tickets.peek(&ticket).await.expect("peek"), None, "unredeemed tickets are gone");
    // Not an assignee any more, at creation or later.
    assert_validation(w.services.tasks.create(&w.admin, task_for(Some("sam"))).await, "assignee");
    assert_validation(w.services.tasks.assign(&w.admin, task.id, "sam").await, "assignee");
    // Back again: logs in, can be assigned; reactivation retires nothing more.
    let on = users.update(&w.admin, w.staff.user_id, changes(None, Some(true), None)).await.expect("ok");
    assert!(on.active);
    let again = users.account_state(w.staff.user_id).await.expect("state").expect("exists");
    assert_eq!(again.tokens_valid_after_ms, state.tokens_valid_after_ms);
    users.authenticate("sam", "sam-password").await.expect("logs in again");
    w.services.tasks.assign(&w.admin, task.id, "sam").await.expect("assignable again");
}

fn task_for(assignee: Option<&str>) -> NewTask {
    NewTask {
        kind: "housekeeping".into(),
        department: "rooms".into(),
        description: "Room 12".into(),
        assignee: assignee.map(Into::into),
    }
}

async fn role_and_password_changes_retire_older_credentials(w: World) {
    let (users, tickets) = (&w.services.users, &w.services.tickets);
    let session = chrono::Utc::now() + chrono::Duration::hours(1);
    let (old_ticket, _) = tickets.issue(&w.manager, session, now_ms() - 10_000).await.expect("ticket");
    let (new_ticket, _) = tickets.issue(&w.manager, session, now_ms() + 3_600_000).await.expect("ticket");
    let started = now_ms();
    let demoted =
        users.update(&w.admin, w.manager.user_id, changes(Some("staff"), None, None)).await.expect("ok");
    assert_eq!(demoted.role, Role::Staff);
    let state = users.account_state(w.manager.user_id).await.expect("state").expect("exists");
    assert_eq!(state.role, Role::Staff);
    assert!(state.tokens_valid_after_ms >= started - 1, "{} < {started}", state.tokens_valid_after_ms);
    assert!(state.tokens_valid_after_ms <= now_ms());
    let updates = user_updates(&w);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].user.role, Role::Staff);
    assert_eq!(updates[0].tokens_valid_after.timestamp_millis(), state.tokens_valid_after_ms);
    assert_eq!(tickets.peek(&old_ticket).await.expect("peek"), None, "issued before: retired");
    assert!(tickets.peek(&new_ticket).await.expect("peek").is_some(), "issued after: kept");

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let reset = users
        .update(&w.admin, w.manager.user_id, changes(None, None, Some("a-brand-new-password")))
        .await
        .expect("reset");
    assert_eq!(reset.role, Role::Staff);
    assert!(matches!(
        users.authenticate("maria", "maria-password").await,
        Err(ServiceError::InvalidCredentials)
    ));
    users.authenticate("maria", "a-brand-new-password").await.expect("new password");
    let after = users.account_state(w.manager.user_id).await.expect("state").expect("exists");
    assert!(after.tokens_valid_after_ms > state.tokens_valid_after_ms, "a password reset retires again");
    assert_eq!(user_updates(&w).len(), 1);
}

async fn the_last_active_admin_stays(w: World) {
    let users = &w.services.users;
    let admin_id = w.admin.user_id;
    assert_conflict(users.update(&w.admin, admin_id, changes(None, Some(false), None)).await);
    assert_conflict(users.update(&w.admin, admin_id, changes(Some("manager"), None, None)).await);
    assert!(w.events.take().is_empty());
    let me = users.get(admin_id).await.expect("get");
    assert_eq!((me.role, me.active), (Role::Admin, true));

    // With a second active admin, the first may step down.
    users.update(&w.admin, w.manager.user_id, changes(Some("admin"), None, None)).await.expect("promote");
    let maria = actor(w.manager.user_id, "maria", Role::Admin);
    users.update(&w.admin, admin_id, changes(Some("manager"), None, None)).await.expect("step down");
    assert_conflict(users.update(&maria, maria.user_id, changes(None, Some(false), None)).await);
    // An inactive admin does not count.
    users.update(&maria, w.staff.user_id, changes(Some("admin"), None, None)).await.expect("promote");
    users.update(&maria, w.staff.user_id, changes(None, Some(false), None)).await.expect("deactivate");
    assert_conflict(users.update(&maria, maria.user_id, changes(Some("staff"), None, None)).await);
    let active_admins =
        users.list(&maria).await.expect("list").iter().filter(|u| u.active && u.role == Role::Admin).count();
    assert_eq!(active_admins, 1);
}

async fn the_last_active_admin_stays_when_two_admins_act_at_once(w: World) {
    let users = Arc::new(w.services.users.clone());
    users.update(&w.admin, w.manager.user_id, changes(Some("admin"), None, None)).await.expect("promote");
    let first = w.admin.clone();
    let second = actor(w.manager.user_id, "maria", Role::Admin);
    for round in 0..24 {
        // Each removes the other: deactivation or demotion.
        let removal = || {
            if round % 2 == 0 { changes(None, Some(false), None) } else { changes(Some("staff"), None, None) }
        };
        let (a, b) = (users.clone(), users.clone());
        let (x, y, c1, c2) = (first.clone(), second.clone(), removal(), removal());
        let one = tokio::spawn(async move { a.update(&x, y.user_id, c1).await });
        let (x, y) = (first.clone(), second.clone());
        let two = tokio::spawn(async move { b.update(&y, x.user_id, c2).await });
        let (one, two) = (one.await.expect("joins"), two.await.expect("joins"));
        let won = [one.is_ok(), two.is_ok()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: exactly one wins ({one:?}, {two:?})"
        );
        let refused = if one.is_ok() { two } else { one };
        assert_conflict(refused);
        let all = users.list(&first).await.expect("list");
        let admins: Vec<&str> =
            all.iter().filter(|u| u.active && u.role == Role::Admin).map(|u| u.username.as_str()).collect();
        assert_eq!(admins.len(), 1, "round {round}: {admins:?}");
        // The survivor restores the other.
        let (survivor, other): (&Actor, &Actor) = if won[0] { (&first, &second) } else { (&second, &first) };
        users
            .update(survivor, other.user_id, changes(Some("admin"), Some(true), None))
            .await
            .expect("restore");
    }
}

async fn users_change_their_own_password(w: World) {
    let (users, tickets) = (&w.services.users, &w.services.tickets);
    let change = |current: &str, new: &str| PasswordChange {
        current_password: current.into(),
        new_password: new.into(),
    };
    let wrong = users.change_password(&w.staff, change("not-my-password", "a-new-password")).await;
    assert!(matches!(wrong, Err(ServiceError::WrongPassword)), "{wrong:?}");
    assert_validation(users.change_password(&w.staff, change("sam-password", "short")).await, "newPassword");
    assert_validation(users.change_password(&w.staff, change("", "a-new-password")).await, "currentPassword");
    users.authenticate("sam", "sam-password").await.expect("unchanged");
    assert!(w.events.take().is_empty());

    let (ticket, _) = tickets
        .issue(&w.staff, chrono::Utc::now() + chrono::Duration::hours(1), now_ms() - 1)
        .await
        .expect("ticket");
    let started = now_ms();
    users.change_password(&w.staff, change("sam-password", "a-new-password")).await.expect("changed");
    assert!(matches!(users.authenticate("sam", "sam-password").await, Err(ServiceError::InvalidCredentials)));
    users.authenticate("sam", "a-new-password").await.expect("the new one works");
    let state = users.account_state(w.staff.user_id).await.expect("state").expect("exists");
    assert!(state.tokens_valid_after_ms >= started - 1, "their own older tokens go too");
    assert_eq!(tickets.peek(&ticket).await.expect("peek"), None);
    let updates = user_updates(&w);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].user.id, w.staff.user_id);
}

async fn password_checks_over_the_bound_are_refused_and_change_nothing(w: World) {
    let users = w.services.users.clone();
    let gate = users.gate().clone();
    let n = gate.concurrency();
    // Fill every permit with work that waits for the test.
    let started = Arc::new(tokio::sync::Barrier::new(n + 1));
    let release = Arc::new(std::sync::Barrier::new(n + 1));
    let mut holders = Vec::new();
    for _ in 0..n {
        let (gate, started, release) = (gate.clone(), started.clone(), release.clone());
        holders.push(tokio::spawn(async move {
            let runtime = tokio::runtime::Handle::current();
            gate.run(move |_| {
                runtime.block_on(started.wait());
                release.wait();
            })
            .await
        }));
    }
    started.wait().await;
    let at = std::time::Instant::now();
    assert!(matches!(users.authenticate("sam", "sam-password").await, Err(ServiceError::Busy)));
    assert!(matches!(users.authenticate("nobody", "whatever-pass").await, Err(ServiceError::Busy)));
    let new = NewUser { username: "newbie".into(), password: "long-enough".into(), role: "staff".into() };
    assert!(matches!(users.create(&w.admin, new).await, Err(ServiceError::Busy)));
    let reset =
        users.update(&w.admin, w.staff.user_id, changes(Some("manager"), None, Some("another-one"))).await;
    assert!(matches!(reset, Err(ServiceError::Busy)), "{reset:?}");
    let own = PasswordChange { current_password: "sam-password".into(), new_password: "another-one".into() };
    assert!(matches!(users.change_password(&w.staff, own).await, Err(ServiceError::Busy)));
    assert!(
        at.elapsed() < std::time::Duration::from_secs(1),
        "refused at once, not queued: {:?}",
        at.elapsed()
    );
    release.wait();
    for holder in holders {
        holder.await.expect("joins").expect("ran");
    }
    // Nothing changed.
    assert_eq!(users.list(&w.admin).await.expect("list").len(), 3, "no user created");
    let sam = users.get(w.staff.user_id).await.expect("get");
    assert_eq!(sam.role, Role::Staff, "the role was not changed with the refused password");
    users.authenticate("sam", "sam-password").await.expect("the password did not change");
    assert!(w.events.take().is_empty());
    assert!(gate.metrics().refused.load(std::sync::atomic::Ordering::Relaxed) >= 5);
}

async fn a_taken_username_does_not_repeat_the_database_text(w: World) {
    let users = &w.services.users;
    let dup = NewUser { username: "sam".into(), password: "long-enough".into(), role: "staff".into() };
    match users.create(&w.admin, dup).await {
        Err(ServiceError::Conflict(message)) => {
            assert!(message.contains("taken"), "{message}");
            for leak in ["constraint", "duplicate key", "UNIQUE", "users_username", "users.username"] {
                assert!(!message.contains(leak), "the answer repeats the database: {message}");
            }
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}
