//! Pulse behind the reverse proxy it ships: nginx running `deploy/nginx/pulse.conf` (only the
//! upstream addresses, the listen port and the log folder replaced, see `suites::nginx`) in
//! front of two instances on one fresh PostgreSQL database, round-robin, each started with
//! `TRUSTED_PROXIES=127.0.0.1` as `docs/operations.md` says. From the outside:
//!
//! - requests are spread over both instances (round-robin, nginx's default);
//! - a WebSocket opened through the proxy is pushed a change made through the proxy;
//! - a client on one instance sees a change made through the other;
//! - the login limiter keys on the real client (the address nginx saw, which it forwards in
//!   `X-Forwarded-For`): two client addresses are limited apart, and an `X-Forwarded-For` a
//!   client sends itself neither frees it from its limit nor reaches Pulse;
//! - `/metrics` is refused through the proxy (however its path is spelled) though a loopback
//!   client would be served by Pulse itself, and is served on loopback directly.
//!
//! - a Server-Sent Events stream opened through the proxy (nginx's default buffering
//!   overridden only by the shipped file and the server's `X-Accel-Buffering: no`) gets each
//!   change at once, uncompressed though the client accepts gzip, and its client messages,
//!   POSTed through the proxy to whichever instance, are answered on it.
//!
//! [`Proxied`] holds the setup and the ways in (HTTP, WebSocket, SSE).
//!
//! ```text
//! PULSE_SERVER_BIN=target/debug/server TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo test -p suites --test proxy
//! ```

use std::net::IpAddr;

use serde_json::{Value, json};
use suites::{
    Api, Body, Cluster, ClusterOptions, Method, Nginx, ServerOptions, SseClient, TestDatabase, WAIT, Watcher,
    random_string,
};

/// The address nginx connects to the instances from, which they trust as a proxy.
const PROXY_ADDRESS: &str = "127.0.0.1";

/// How many failed logins one address may make per window, on each instance (the limiter is
/// per process; contract section 7).
const ADDRESS_LIMIT: usize = 50;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Two instances on one fresh PostgreSQL database, trusting nginx, behind nginx running the
/// shipped configuration.
struct Proxied {
    /// Declared first: stopped before the instances.
    nginx: Nginx,
    cluster: Cluster,
}

impl Proxied {
    async fn start() -> Self {
        let db = TestDatabase::postgres().expect("creating a PostgreSQL database");
        let options = ClusterOptions {
            server: ServerOptions::default().env("TRUSTED_PROXIES", PROXY_ADDRESS),
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start_with(2, db, options).await.expect("starting two instances");
        let nginx = Nginx::start(&Self::upstreams_of(&cluster)).await.expect("starting nginx");
        Self { nginx, cluster }
    }

    fn upstreams_of(cluster: &Cluster) -> Vec<String> {
        cluster.servers.iter().map(|s| s.base_url().trim_start_matches("http://").to_owned()).collect()
    }

    /// The instances' `127.0.0.1:<port>`, as nginx's upstream lists them.
    fn upstreams(&self) -> Vec<String> {
        Self::upstreams_of(&self.cluster)
    }

    /// The admin, through the proxy.
    fn admin(&self) -> Api {
        self.nginx.api().with_token(self.cluster.admin_token())
    }

    /// A client at `address` (a 127.0.0.x of its own), through the proxy.
    fn client_at(&self, address: &str) -> Api {
        Api::bound_to(self.nginx.base_url(), ip(address)).expect("an HTTP client")
    }

    /// A checked WebSocket client (the admin's) through the proxy.
    async fn watcher(&self, name: &str) -> Watcher {
        let url = self.nginx.ws_url(&format!("token={}", self.cluster.admin_token()));
        Watcher::connect_url(&url, name).await
    }

    /// The sum of the sample `name` over both instances' `/metrics`, read directly on loopback.
    async fn metric_sum(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for (i, server) in self.cluster.servers.iter().enumerate() {
            let value = server.metric(name).await.unwrap_or_else(|e| panic!("instance {i}: /metrics: {e:#}"));
            sum += value.unwrap_or_else(|| panic!("instance {i}: no {name} on /metrics"));
        }
        sum
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn task_body(i: usize) -> Value {
    json!({"type": "housekeeping", "department": "front", "description": format!("Towels for room {i}")})
}

async fn create_task(api: &Api, i: usize) {
    api.post("/api/v1/tasks", &task_body(i)).await.expect("request").expect_status(201);
}

/// A failed login (an unknown username) from `api`; its status.
async fn bad_login(api: &Api) -> u16 {
    let name = format!("nobody-{}", random_string(10));
    api.login_response(&name, "not-the-password").await.expect("request").status
}

/// Fails logins from `api` until two in a row are refused (429) — each instance counts on
/// its own and round-robin alternates, so that is both instances limiting the address — and
/// returns how many it took. Panics if that takes more than both limits and a margin.
async fn exhaust_address_limit(api: &Api) -> usize {
    let bound = 2 * ADDRESS_LIMIT + 10;
    let mut refused_in_a_row = 0;
    for attempt in 1..=bound {
        match bad_login(api).await {
            429 => refused_in_a_row += 1,
            401 => refused_in_a_row = 0,
            other => panic!("a bad login answered {other}"),
        }
        if refused_in_a_row == 2 {
            return attempt;
        }
    }
    panic!("{bound} bad logins from one address were not refused twice in a row");
}

// ---------------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spread_over_both_instances_and_a_websocket_through_the_proxy_is_pushed_changes() {
    let p = Proxied::start().await;
    let admin = p.admin();
    let mut watcher = p.watcher("through nginx").await;
    for i in 0..6 {
        create_task(&admin, i).await;
    }
    watcher.expect("stats:tasks", &json!({"total": 6, "pending": 6})).await;
    // Both instances served some of the creations (nginx logs the upstream of each request).
    let log = p.nginx.access_log();
    for upstream in p.upstreams() {
        let served =
            log.lines().filter(|l| l.contains("POST /api/v1/tasks ") && l.contains(&upstream)).count();
        assert!(served > 0, "instance {upstream} served none of the six creations:\n{log}");
    }
    // The socket is one instance's connection, counted as a WebSocket, and ends cleanly.
    let open = r#"pulse_connections{transport="ws"}"#;
    assert_eq!(p.metric_sum(open).await, 1.0, "WebSocket connections over both instances");
    // A close handshake through the proxy: the server answers the client's close frame.
    let mut ws = watcher.ws;
    ws.stream_mut().close(None).await.expect("sending a close frame");
    assert_eq!(ws.close_frame(WAIT).await.expect("the server's close frame"), Some(1000));
    let closed = r#"pulse_connections_closed_total{transport="ws",reason="client_closed"}"#;
    let deadline = std::time::Instant::now() + WAIT;
    while p.metric_sum(closed).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the closed socket was not counted within {WAIT:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(p.metric_sum(open).await, 0.0);
    // No credential reaches nginx's log: the shipped format leaves the query string out.
    let token = p.cluster.admin_token();
    // (nginx logs a proxied WebSocket once both its sides are closed.)
    let deadline = std::time::Instant::now() + WAIT;
    let log = loop {
        let log = p.nginx.access_log();
        if log.contains("GET /ws ") || std::time::Instant::now() >= deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(log.contains("GET /ws "), "the upgrade is not in nginx's log:\n{log}");
    assert!(!log.contains(token) && !log.contains("token="), "nginx logged the token:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_through_the_proxy_gets_every_change_at_once_and_its_posts_answered() {
    let p = Proxied::start().await;
    let admin = p.admin();
    let ticket = admin.post_empty("/api/v1/ws-ticket").await.expect("request").expect_status(200).clone();
    let ticket = ticket["ticket"].as_str().expect("a ticket").to_owned();
    let path = format!("/sse?ticket={ticket}");
    let mut stream = SseClient::open(&p.nginx.base_url(), &path, &[("Accept-Encoding", "gzip, deflate, br")])
        .await
        .expect("GET /sse through nginx");
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").is_some_and(|v| v.starts_with("text/event-stream")));
    assert_ne!(stream.header("content-encoding"), Some("gzip"), "the stream must not be compressed");
    let connected = stream.next_message(WAIT).await.expect("connected");
    assert_eq!(connected["type"], "connected", "{connected}");
    let id = connected["payload"]["connectionId"].as_str().expect("a connectionId").to_owned();
    let snapshot = stream.until("stats:tasks", WAIT).await.expect("the snapshot");
    assert_eq!(snapshot["payload"]["total"], 0);
    // A change made on each instance in turn arrives at once: nothing holds the events back
    // (a buffering proxy would deliver them only when its buffer fills or the stream ends).
    for (i, direct) in p.cluster.admins.iter().enumerate() {
        create_task(direct, i).await;
        let started = std::time::Instant::now();
        let value = stream.until("stats:tasks", std::time::Duration::from_secs(2)).await.expect("the change");
        assert_eq!(value["payload"]["total"], i + 1, "{value}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
    // Client messages through the proxy reach whichever instance; the one that does not hold
    // the stream relays them. Four pings over round-robin: both ways are taken.
    for n in 0..4 {
        let body = serde_json::to_vec(&json!({"type": "ping"})).expect("json");
        let answer = admin
            .request(
                Method::POST,
                &format!("/api/v1/realtime/{id}"),
                Body::Raw { content_type: Some("application/json".into()), bytes: body },
                None,
            )
            .await
            .expect("request");
        assert_eq!(answer.status, 202, "ping {n}");
        let pong = stream.until("pong", WAIT).await.expect("the pong");
        assert_eq!(pong["type"], "pong");
    }
    let log = p.nginx.access_log();
    for upstream in p.upstreams() {
        let served =
            log.lines().filter(|l| l.contains("POST /api/v1/realtime/") && l.contains(&upstream)).count();
        assert!(served > 0, "instance {upstream} received none of the four posts:\n{log}");
    }
    let open = r#"pulse_connections{transport="sse"}"#;
    assert_eq!(p.metric_sum(open).await, 1.0, "SSE connections over both instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_instance_sees_a_change_made_through_the_other() {
    let p = Proxied::start().await;
    let mut watcher = p.watcher("through nginx").await;
    // The socket lives on one of the two instances; a change is made on each in turn, straight
    // to the instance, so one of them is always the other instance's.
    for (i, admin) in p.cluster.admins.iter().enumerate() {
        create_task(admin, i).await;
        watcher.expect("stats:tasks", &json!({"total": i + 1})).await;
    }
    // A personal event too: a task assigned to a user on either instance reaches the user's
    // socket, opened through the proxy, wherever it lives.
    let (sam, _) = p.cluster.user("sam", "staff", 0).await.expect("a user");
    let url = p.nginx.ws_url(&format!("token={}", sam.token().expect("token")));
    let mut sams = Watcher::connect_url(&url, "sam through nginx").await;
    for (i, admin) in p.cluster.admins.iter().enumerate() {
        let mut body = task_body(10 + i);
        body["assignee"] = json!("sam");
        admin.post("/api/v1/tasks", &body).await.expect("request").expect_status(201);
    }
    let both = sams.wait_until(|w| w.assigned().len() == 2, WAIT).await;
    assert!(both, "sam's socket got task:assigned for {:?} of the two tasks", sams.assigned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_limiter_keys_on_the_client_nginx_saw_and_a_forwarded_header_cannot_escape_it() {
    let p = Proxied::start().await;
    let abuser = p.client_at("127.0.0.2");
    let attempts = exhaust_address_limit(&abuser).await;
    assert!(
        attempts > ADDRESS_LIMIT,
        "limited after {attempts} bad logins: both instances counted one address (the proxy's?)"
    );
    // Another client behind the same proxy is not limited, on either instance.
    let neighbour = p.client_at("127.0.0.3");
    assert_eq!([bad_login(&neighbour).await, bad_login(&neighbour).await], [401, 401], "127.0.0.3");
    // The abuser cannot pose as an address that was never limited: nginx replaces the header.
    let spoofing = abuser.with_header("x-forwarded-for", "127.0.0.4");
    assert_eq!([bad_login(&spoofing).await, bad_login(&spoofing).await], [429, 429], "a spoofed header");
    let spoofing_proxy = abuser.with_header("x-forwarded-for", "127.0.0.4, 127.0.0.1");
    assert_eq!(
        [bad_login(&spoofing_proxy).await, bad_login(&spoofing_proxy).await],
        [429, 429],
        "a spoofed chain ending in the trusted proxy"
    );
    // … which was never limited indeed.
    let real = p.client_at("127.0.0.4");
    assert_eq!([bad_login(&real).await, bad_login(&real).await], [401, 401], "127.0.0.4 itself");
    // What the instances logged as the client is what nginx saw, never what a client claimed.
    let logs: String = p.cluster.servers.iter().map(|s| s.logs()).collect();
    assert!(logs.contains("client=127.0.0.2"), "no request logged as from 127.0.0.2");
    let claimed =
        logs.lines().filter(|l| l.contains("/api/v1/auth/login") && l.contains("client=127.0.0.4")).count();
    assert_eq!(claimed, 2, "login lines from 127.0.0.4: only its own two, none of the spoofed ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_refused_through_the_proxy_and_served_on_loopback() {
    let p = Proxied::start().await;
    // Without the proxy's rule Pulse would serve it: the client nginx forwards is on loopback.
    let as_nginx_would = p.cluster.servers[0].api().with_header("x-forwarded-for", "127.0.0.1");
    let served = as_nginx_would.get("/metrics").await.expect("request");
    assert_eq!(served.status, 200, "{}", served.text);
    // Through the proxy, however the path is written.
    let outside = p.nginx.api();
    for path in ["/metrics", "/metrics?format=text", "/metrics/", "/%6Detrics", "//metrics"] {
        let refused = outside.get(path).await.expect("request");
        assert_eq!(refused.status, 403, "{path} through nginx: {}", refused.text);
        assert!(!refused.text.contains("pulse_"), "{path} through nginx leaked metrics");
    }
    // Directly, on loopback: Prometheus text with the families an operator reads.
    for server in &p.cluster.servers {
        let direct = server.api().get("/metrics").await.expect("request");
        assert_eq!(direct.status, 200);
        for family in [
            "# TYPE pulse_connections gauge",
            "# TYPE pulse_http_requests_total counter",
            "# TYPE pulse_http_request_duration_seconds histogram",
            "# TYPE pulse_messages_sent_total counter",
            "# TYPE pulse_fanout_resyncs_total counter",
            "pulse_fanout_listening 1",
        ] {
            assert!(direct.text.contains(family), "no {family:?} on /metrics:\n{}", direct.text);
        }
        // Every series the shipped Grafana dashboard reads is served.
        for name in dashboard_series() {
            let served =
                direct.text.contains(&format!("\n{name}{{")) || direct.text.contains(&format!("\n{name} "));
            assert!(
                served,
                "deploy/grafana/pulse-dashboard.json reads {name}, which /metrics does not serve"
            );
        }
    }
}

/// The `pulse_…` and `process_…` series named in the shipped Grafana dashboard's queries.
fn dashboard_series() -> std::collections::BTreeSet<String> {
    const DASHBOARD: &str = include_str!("../../../deploy/grafana/pulse-dashboard.json");
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a query");
            for (start, _) in expr.match_indices("pulse_").chain(expr.match_indices("process_")) {
                let rest = &expr[start..];
                let end = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(rest.len());
                names.insert(rest[..end].to_owned());
            }
        }
    }
    assert!(names.len() > 10, "the dashboard reads only {names:?}");
    names
}
