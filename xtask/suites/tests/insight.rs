//! Black-box tests of contract section 9 (`shared/spec/CONTRACT.md`): live operations insight.
//! `stats:departments` and `stats:sla` (opt-in topics, pushed like the other stats, equal to
//! their REST twins), the SLA value changing with time alone (a task crossing a short
//! `TASK_SLA_SECONDS`, with no request), `escalatedAt`, and `GET /api/v1/stats/history` (one
//! point per minute in which a value changed, the `since` rule, bad inputs). The history's
//! minute is shortened with `PULSE_HISTORY_BUCKET_SECONDS` (a divisor of 60; the product
//! default is 60 s) so a minute's point need not take a minute.
//!
//! Every case in `both_databases!` runs on SQLite and on PostgreSQL, each on its own server
//! process and fresh database; the `cluster` cases run two instances on one PostgreSQL
//! database.
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server cargo test -p suites --test insight
//! ```

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use suites::{
    Api, Pulse, ServerOptions, ServerProcess, TestDatabase, Ws, connect, conversation_body, get_ok, id_of,
};

/// A short SLA: a task is overdue this long after its creation.
const SLA_SECONDS: u64 = 3;
/// A short history "minute".
const BUCKET_SECONDS: i64 = 2;
/// Longer than a history minute: two changes this far apart fall in different minutes.
const BETWEEN_MINUTES: Duration = Duration::from_millis(2200);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn options() -> ServerOptions {
    ServerOptions::default()
        .env("TASK_SLA_SECONDS", SLA_SECONDS.to_string())
        .env("PULSE_HISTORY_BUCKET_SECONDS", BUCKET_SECONDS.to_string())
}

async fn start(db: TestDatabase) -> Pulse {
    Pulse::start_with(db, options()).await.expect("server starts")
}

async fn task(api: &Api, department: &str, description: &str) -> Value {
    let body = json!({"type": "housekeeping", "department": department, "description": description});
    api.post("/api/v1/tasks", &body).await.expect("request").expect_status(201).clone()
}

async fn post_ok(api: &Api, path: &str, body: &Value) -> Value {
    api.post(path, body).await.expect("request").expect_status(200).clone()
}

/// A socket following only `topics`, past `connected` and the first value of each.
async fn follow(server: &ServerProcess, token: &str, topics: &[&str]) -> (Ws, Vec<Value>) {
    let url = format!("{}&topics={}", server.ws_url(token), topics.join(","));
    let mut ws = connect(&url).await.expect("WebSocket connects");
    let connected = ws.next_json(Duration::from_secs(5)).await.expect("connected");
    assert_eq!(connected["type"], "connected", "first message: {connected}");
    let mut first = Vec::new();
    for _ in topics {
        let msg = ws.next_json(Duration::from_secs(5)).await.expect("a first value");
        assert!(msg["seq"].is_u64(), "a stats message carries seq: {msg}");
        first.push(msg);
    }
    // The snapshot comes in the server's topic order: return it in the order asked for.
    first.sort_by_key(|m| topics.iter().position(|t| m["type"] == *t).unwrap_or(usize::MAX));
    let types: Vec<&str> = first.iter().map(|m| m["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(types, topics, "one first value per topic followed");
    (ws, first)
}

/// The next `topic` message whose payload satisfies `want`, within `timeout`; returns it and
/// how long it took.
async fn wait_for(
    ws: &mut Ws,
    topic: &str,
    timeout: Duration,
    want: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match ws.next_of_type(topic, left).await {
            Ok(msg) if want(&msg["payload"]) => return (msg, started.elapsed()),
            Ok(msg) => seen.push(msg),
            Err(e) => panic!("no {topic} as wanted within {timeout:?}: {e}; seen {seen:?}"),
        }
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
}

async fn history(api: &Api, topic: &str, since: &str) -> Vec<Value> {
    let path = format!("/api/v1/stats/history?topic={topic}&since={}", urlencode(since));
    let body = get_ok(api, &path).await;
    body["points"].as_array().unwrap_or_else(|| panic!("no points array: {body}")).clone()
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// Checks a history answer's shape: `at` on bucket ends (`…Z`, whole seconds), strictly
/// increasing, and consecutive payloads different (a point only where the value changed).
#[track_caller]
fn check_points(points: &[Value]) {
    let mut last: Option<(DateTime<Utc>, &Value)> = None;
    for p in points {
        let at = time(&p["at"]);
        assert!(p["at"].as_str().is_some_and(|s| s.ends_with('Z')), "at in UTC: {p}");
        assert_eq!(at.timestamp_subsec_nanos(), 0, "at on a whole second: {p}");
        assert_eq!(at.timestamp() % BUCKET_SECONDS, 0, "at on a bucket's end: {p}");
        assert!(p["payload"].is_object(), "payload is the topic's value: {p}");
        if let Some((before, payload)) = last {
            assert!(at > before, "points oldest first, one per minute: {points:?}");
            assert_ne!(payload, &p["payload"], "a point only where the value changed: {points:?}");
        }
        last = Some((at, &p["payload"]));
    }
}

// ---------------------------------------------------------------------------------------------
// cases, on each database
// ---------------------------------------------------------------------------------------------

mod cases {
    use super::*;

    /// `stats:departments` is opt-in, equals its REST twin, and is pushed (coalesced, with a
    /// growing `seq`) when a task changes.
    pub async fn departments_are_pushed_and_equal_rest(db: TestDatabase) {
        let p = start(db).await;
        let token = p.admin.token().expect("token").to_owned();
        task(&p.admin, "housekeeping", "Towels, room 1").await;

        // Opt-in: a connection that names no topics gets the three default stats only.
        let (mut plain, first) = p.ws_ready(&token).await.expect("socket");
        let types: Vec<&str> = first.iter().map(|m| m["type"].as_str().unwrap_or("?")).collect();
        assert_eq!(types, ["connected", "stats:tasks", "stats:approvals", "stats:conversations"]);

        let (mut ws, first) = follow(&p.server, &token, &["stats:departments"]).await;
        let rest = get_ok(&p.admin, "/api/v1/tasks/stats/departments").await;
        assert_eq!(first[0]["payload"], rest, "the snapshot equals the REST twin");
        assert_eq!(
            rest,
            json!({"departments": [{"department": "housekeeping", "pending": 1, "inProgress": 0, "completed": 0, "total": 1}]}),
            "no `truncated` under 200 departments"
        );
        let seq = first[0]["seq"].as_u64().expect("seq");

        let created = task(&p.admin, "front_desk", "Late checkout, room 3").await;
        post_ok(
            &p.admin,
            &format!("/api/v1/tasks/{}/assign", id_of(&created)),
            &json!({"assignee": "admin"}),
        )
        .await;
        let want = json!({"departments": [
            {"department": "front_desk", "pending": 0, "inProgress": 1, "completed": 0, "total": 1},
            {"department": "housekeeping", "pending": 1, "inProgress": 0, "completed": 0, "total": 1},
        ]});
        let (msg, _) = wait_for(&mut ws, "stats:departments", Duration::from_secs(5), |v| *v == want).await;
        assert!(msg["seq"].as_u64().expect("seq") > seq, "seq grows: {msg}");
        assert_eq!(get_ok(&p.admin, "/api/v1/tasks/stats/departments").await, want);

        // Subscribing later gets the current value at once.
        plain
            .send_json(&json!({"type": "subscribe", "topics": ["stats:departments"]}))
            .await
            .expect("subscribe");
        let ack = plain.next_of_type("subscribed", Duration::from_secs(5)).await.expect("subscribed");
        assert!(ack["payload"]["topics"].as_array().is_some_and(|t| t.contains(&json!("stats:departments"))));
        let value = plain.next_of_type("stats:departments", Duration::from_secs(5)).await.expect("value");
        assert_eq!(value["payload"], want);
    }

    /// At most 200 departments, the first 200 by name in code-point order, then `truncated`.
    pub async fn departments_are_truncated_at_200(db: TestDatabase) {
        let p = start(db).await;
        // Code-point order: upper case before lower case, `é` after `z`.
        let mut names: Vec<String> = (0..198).map(|i| format!("dept-{i:03}")).collect();
        names.extend(["Zulu".to_owned(), "zulu".to_owned(), "été".to_owned()]);
        for name in names.iter().rev() {
            task(&p.admin, name, "one task").await;
        }
        let body = get_ok(&p.admin, "/api/v1/tasks/stats/departments").await;
        let listed: Vec<&str> = body["departments"]
            .as_array()
            .expect("departments")
            .iter()
            .filter_map(|d| d["department"].as_str())
            .collect();
        let mut sorted = names.clone();
        sorted.sort(); // byte order of UTF-8 = code-point order
        assert_eq!(listed.len(), 200, "at most 200");
        assert_eq!(
            listed,
            sorted[..200].iter().map(String::as_str).collect::<Vec<_>>(),
            "the first 200 by code point"
        );
        assert_eq!(listed[0], "Zulu");
        assert!(!listed.contains(&"été"), "the 201st is left out");
        assert_eq!(body["truncated"], json!(true));
        // The topic carries the same.
        let token = p.admin.token().expect("token").to_owned();
        let (_ws, first) = follow(&p.server, &token, &["stats:departments"]).await;
        assert_eq!(first[0]["payload"], body);
    }

    /// A task crossing `TASK_SLA_SECONDS` changes `stats:sla` with no request: subscribers
    /// get the new value within 1 s of the deadline. REST agrees.
    pub async fn sla_changes_with_time_alone(db: TestDatabase) {
        let p = start(db).await;
        let token = p.admin.token().expect("token").to_owned();
        let (mut ws, first) = follow(&p.server, &token, &["stats:sla"]).await;
        assert_eq!(
            first[0]["payload"],
            json!({"overdueTasks": 0, "oldestOpenTaskCreatedAt": null, "escalatedConversations": 0, "oldestEscalationAt": null})
        );
        let created = task(&p.admin, "housekeeping", "Overdue soon").await;
        let created_at = time(&created["createdAt"]);
        let (msg, _) = wait_for(&mut ws, "stats:sla", Duration::from_secs(5), |v| {
            v["oldestOpenTaskCreatedAt"] == created["createdAt"]
        })
        .await;
        assert_eq!(msg["payload"]["overdueTasks"], 0, "not overdue yet: {msg}");

        // No request from here on, until the value changed.
        let (msg, _) =
            wait_for(&mut ws, "stats:sla", Duration::from_secs(SLA_SECONDS + 3), |v| v["overdueTasks"] == 1)
                .await;
        let late = Utc::now() - (created_at + chrono::TimeDelta::seconds(SLA_SECONDS as i64));
        assert!(late >= chrono::TimeDelta::zero(), "overdue before its deadline ({late} early): {msg}");
        assert!(
            late <= chrono::TimeDelta::seconds(1),
            "overdue {late} after the deadline (within 1 s wanted)"
        );
        assert_eq!(msg["payload"]["oldestOpenTaskCreatedAt"], created["createdAt"]);
        assert_eq!(get_ok(&p.admin, "/api/v1/stats/sla").await, msg["payload"], "REST twin");

        // Completing it: nothing overdue; a second young task is overdue on its own schedule.
        post_ok(&p.admin, &format!("/api/v1/tasks/{}/complete", id_of(&created)), &json!({})).await;
        wait_for(&mut ws, "stats:sla", Duration::from_secs(3), |v| {
            v["overdueTasks"] == 0 && v["oldestOpenTaskCreatedAt"].is_null()
        })
        .await;
        let second = task(&p.admin, "housekeeping", "Second").await;
        let (msg, _) =
            wait_for(&mut ws, "stats:sla", Duration::from_secs(SLA_SECONDS + 3), |v| v["overdueTasks"] == 1)
                .await;
        let late = Utc::now() - (time(&second["createdAt"]) + chrono::TimeDelta::seconds(SLA_SECONDS as i64));
        assert!(
            late <= chrono::TimeDelta::seconds(1),
            "second task overdue {late} after its deadline: {msg}"
        );
    }

    /// `escalatedAt`: null until escalated, the last escalation's time after, kept after a
    /// de-escalation; `stats:sla` counts escalated conversations like `stats:conversations`.
    pub async fn escalations_are_timed(db: TestDatabase) {
        let p = start(db).await;
        let token = p.admin.token().expect("token").to_owned();
        let (mut ws, _) = follow(&p.server, &token, &["stats:sla"]).await;
        let created =
            p.admin.post("/api/v1/conversations", &conversation_body("Ana")).await.expect("request");
        let conversation = created.expect_status(201).clone();
        assert!(
            conversation.get("escalatedAt").is_some_and(Value::is_null),
            "escalatedAt null at first: {conversation}"
        );
        let id = id_of(&conversation);
        let escalated =
            post_ok(&p.admin, &format!("/api/v1/conversations/{id}/escalate"), &json!({"reason": "Noise"}))
                .await;
        let first_escalation = escalated["escalatedAt"].clone();
        assert!(first_escalation.is_string(), "escalatedAt set: {escalated}");
        assert_eq!(
            get_ok(&p.admin, &format!("/api/v1/conversations/{id}")).await["escalatedAt"],
            first_escalation
        );
        let (msg, _) =
            wait_for(&mut ws, "stats:sla", Duration::from_secs(5), |v| v["escalatedConversations"] == 1)
                .await;
        assert_eq!(msg["payload"]["oldestEscalationAt"], first_escalation);
        let conversations = get_ok(&p.admin, "/api/v1/conversations/stats").await;
        assert_eq!(conversations["escalated"], msg["payload"]["escalatedConversations"]);

        let back = post_ok(&p.admin, &format!("/api/v1/conversations/{id}/deescalate"), &json!({})).await;
        assert_eq!(back["escalatedAt"], first_escalation, "kept after de-escalation: {back}");
        wait_for(&mut ws, "stats:sla", Duration::from_secs(5), |v| {
            v["escalatedConversations"] == 0 && v["oldestEscalationAt"].is_null()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let again =
            post_ok(&p.admin, &format!("/api/v1/conversations/{id}/escalate"), &json!({"reason": "Again"}))
                .await;
        assert!(time(&again["escalatedAt"]) > time(&first_escalation), "the last escalation counts: {again}");
        let resolved = post_ok(&p.admin, &format!("/api/v1/conversations/{id}/resolve"), &json!({})).await;
        assert_eq!(resolved["escalatedAt"], again["escalatedAt"], "kept after resolution");
        assert_eq!(get_ok(&p.admin, "/api/v1/stats/sla").await["escalatedConversations"], 0);
    }

    /// One point per minute in which the value changed, at the minute's end; the first
    /// point is the last at or before `since`, every later one after it.
    pub async fn history_keeps_a_point_per_changed_minute(db: TestDatabase) {
        let p = start(db).await;
        let start_at = Utc::now();
        for round in 0..3 {
            task(&p.admin, "housekeeping", &format!("round {round}")).await;
            tokio::time::sleep(BETWEEN_MINUTES).await;
        }
        // Let the last change's minute end and be written, and a quiet minute pass.
        tokio::time::sleep(Duration::from_secs(2 * BUCKET_SECONDS as u64 + 1)).await;
        let stats = get_ok(&p.admin, "/api/v1/tasks/stats").await;
        let points = history(&p.admin, "stats:tasks", "2000-01-01T00:00:00Z").await;
        check_points(&points);
        assert!(points.len() >= 3, "a point per changed minute (3 changes, starting value): {points:?}");
        assert_eq!(points.last().expect("a point")["payload"], stats, "the last point is the current value");
        let pendings: Vec<u64> = points.iter().filter_map(|p| p["payload"]["pending"].as_u64()).collect();
        for want in 1..=3 {
            assert!(pendings.contains(&want), "pending {want} recorded: {pendings:?}");
        }
        assert!(
            time(&points[0]["at"]) >= start_at - chrono::TimeDelta::seconds(BUCKET_SECONDS),
            "{points:?}"
        );

        // `since` between two points: the one before it, then those after it.
        let second = time(&points[1]["at"]);
        let since = (second + chrono::TimeDelta::milliseconds(500)).to_rfc3339();
        let from = history(&p.admin, "stats:tasks", &since).await;
        assert_eq!(from, points[1..].to_vec(), "since just after point 1");
        // `since` exactly on a point: that point starts the answer.
        let on = history(&p.admin, "stats:tasks", &second.to_rfc3339()).await;
        assert_eq!(on, points[1..].to_vec(), "since on point 1");
        // Before every point: all of them; after every point: the last one alone.
        assert_eq!(history(&p.admin, "stats:tasks", "1999-12-31T23:00:00-01:00").await, points);
        let future = (Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();
        assert_eq!(history(&p.admin, "stats:tasks", &future).await, points[points.len() - 1..].to_vec());
        // Every stats topic has a history; an opt-in one too.
        let sla = history(&p.admin, "stats:sla", "2000-01-01T00:00:00Z").await;
        check_points(&sla);
        assert!(!sla.is_empty(), "stats:sla has a starting point");
    }

    /// Bad inputs: a clear 400 each, and nothing changes.
    pub async fn history_refuses_bad_inputs(db: TestDatabase) {
        let p = start(db).await;
        task(&p.admin, "housekeeping", "one").await;
        tokio::time::sleep(Duration::from_secs(BUCKET_SECONDS as u64 + 1)).await;
        let before = history(&p.admin, "stats:tasks", "2000-01-01T00:00:00Z").await;
        let tasks_before = get_ok(&p.admin, "/api/v1/tasks/stats").await;
        for (query, mentions) in [
            ("topic=stats:tasks", "since"),
            ("topic=stats:tasks&since=", "since"),
            ("topic=stats:tasks&since=yesterday", "since"),
            ("topic=stats:tasks&since=2026-13-01T00:00:00Z", "since"),
            ("topic=stats:tasks&since=2026-12-01", "since"),
            ("since=2026-12-01T00:00:00Z", "topic"),
            ("topic=presence&since=2026-12-01T00:00:00Z", "topic"),
            ("topic=stats:nope&since=2026-12-01T00:00:00Z", "topic"),
            ("topic=conversation:1&since=2026-12-01T00:00:00Z", "topic"),
        ] {
            let resp = p.admin.get(&format!("/api/v1/stats/history?{query}")).await.expect("request");
            resp.expect_error(400, &["validation_failed", "bad_request"]);
            let message = resp.json.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
            assert!(message.contains(mentions), "{query}: the message names {mentions}: {message}");
        }
        let anonymous = p.admin.anonymous();
        for path in [
            "/api/v1/stats/history?topic=stats:tasks&since=2026-12-01T00:00:00Z",
            "/api/v1/stats/sla",
            "/api/v1/tasks/stats/departments",
        ] {
            anonymous.get(path).await.expect("request").expect_error(401, &["unauthorized"]);
        }
        assert_eq!(get_ok(&p.admin, "/api/v1/tasks/stats").await, tasks_before, "nothing changed");
        let after = history(&p.admin, "stats:tasks", "2000-01-01T00:00:00Z").await;
        assert_eq!(after[..before.len()], before[..], "the history is as it was");
    }
}

suites::both_databases!(
    cases =>
    departments_are_pushed_and_equal_rest,
    departments_are_truncated_at_200,
    sla_changes_with_time_alone,
    escalations_are_timed,
    history_keeps_a_point_per_changed_minute,
    history_refuses_bad_inputs,
);

// ---------------------------------------------------------------------------------------------
// two instances on one PostgreSQL database
// ---------------------------------------------------------------------------------------------

mod cluster {
    use suites::{Cluster, ClusterOptions};

    use super::*;

    async fn two() -> Cluster {
        let db = TestDatabase::postgres().expect("a PostgreSQL database");
        Cluster::start_with(2, db, ClusterOptions { server: options(), ..ClusterOptions::default() })
            .await
            .expect("two instances")
    }

    /// Both instances' subscribers see a task become overdue within 1 s of its deadline, with
    /// no request; departments follow changes made on the other instance.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sla_and_departments_across_instances() {
        let c = two().await;
        let token = c.admins[0].token().expect("token").to_owned();
        let (mut ws0, _) = follow(&c.servers[0], &token, &["stats:sla", "stats:departments"]).await;
        let (mut ws1, _) = follow(&c.servers[1], &token, &["stats:sla", "stats:departments"]).await;
        let created = task(&c.admins[1], "kitchen", "Breakfast tray").await;
        let want = json!({"departments": [{"department": "kitchen", "pending": 1, "inProgress": 0, "completed": 0, "total": 1}]});
        for ws in [&mut ws0, &mut ws1] {
            wait_for(ws, "stats:departments", Duration::from_secs(5), |v| *v == want).await;
        }
        let deadline = time(&created["createdAt"]) + chrono::TimeDelta::seconds(SLA_SECONDS as i64);
        for (i, ws) in [&mut ws0, &mut ws1].into_iter().enumerate() {
            let (msg, _) =
                wait_for(ws, "stats:sla", Duration::from_secs(SLA_SECONDS + 3), |v| v["overdueTasks"] == 1)
                    .await;
            let late = Utc::now() - deadline;
            assert!(
                late <= chrono::TimeDelta::seconds(1),
                "instance {i}: overdue {late} after the deadline: {msg}"
            );
        }
        assert_eq!(
            get_ok(&c.admins[0], "/api/v1/stats/sla").await,
            get_ok(&c.admins[1], "/api/v1/stats/sla").await,
            "every instance reaches the same value"
        );
    }

    /// With two instances recording, each minute has one point, and both answer the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_has_one_point_per_minute_with_two_instances() {
        let c = two().await;
        for round in 0..4 {
            task(&c.admins[round % 2], "housekeeping", &format!("round {round}")).await;
            tokio::time::sleep(BETWEEN_MINUTES).await;
        }
        tokio::time::sleep(Duration::from_secs(2 * BUCKET_SECONDS as u64 + 1)).await;
        let points = history(&c.admins[0], "stats:tasks", "2000-01-01T00:00:00Z").await;
        check_points(&points);
        assert_eq!(points, history(&c.admins[1], "stats:tasks", "2000-01-01T00:00:00Z").await);
        assert_eq!(
            points.last().expect("a point")["payload"],
            get_ok(&c.admins[0], "/api/v1/tasks/stats").await
        );
        let rows = suites::psql(
            c.db.url(),
            &["SELECT count(*) - count(DISTINCT minute) FROM stats_history WHERE topic = 'stats:tasks'"],
        )
        .await;
        assert_eq!(rows.trim(), "0", "one row per minute in the table");
        let pendings: Vec<u64> = points.iter().filter_map(|p| p["payload"]["pending"].as_u64()).collect();
        for want in 1..=4 {
            assert!(pendings.contains(&want), "pending {want} recorded: {pendings:?}");
        }
    }

    /// A cluster uses one `TASK_SLA_SECONDS`: an instance configured with another refuses to
    /// start and says why; one with the same value starts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_with_another_sla_refuses_to_start() {
        let c = two().await;
        let other = ServerOptions::default()
            .env("JWT_SECRET", c.servers[0].jwt_secret())
            .env("ADMIN_PASSWORD", c.servers[0].admin_password())
            .env("TASK_SLA_SECONDS", "900");
        let refused = ServerProcess::start(&c.db, other).await.expect_err("another SLA must not start");
        let why = format!("{refused:#}");
        assert!(why.contains("TASK_SLA_SECONDS is 900 here"), "says why: {why}");
        assert!(why.contains(&format!("use {SLA_SECONDS}")), "names the cluster's value: {why}");
        let same = ServerOptions::default()
            .env("JWT_SECRET", c.servers[0].jwt_secret())
            .env("ADMIN_PASSWORD", c.servers[0].admin_password())
            .env("TASK_SLA_SECONDS", SLA_SECONDS.to_string());
        ServerProcess::start(&c.db, same).await.expect("the same SLA starts");
    }
}
