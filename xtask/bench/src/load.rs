//! HTTP load over the suites' [`Api`] client: task creations (preload, paced mutations,
//! bursts), the stats and `/metrics` reads, and stats pollers.
//!
//! Changes when what the bench sends changes; never depends on the phases or the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use suites::{Api, Body, Method};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::clients::{AllStats, ApprovalsStats, ConversationsStats, TasksStats};

fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// `GET path` as JSON; fails on a non-2xx.
async fn get_json<T: DeserializeOwned>(api: &Api, path: &str) -> Result<T> {
    let resp = api.get(path).await?;
    if !(200..300).contains(&resp.status) {
        bail!("GET {path}: HTTP {} {}", resp.status, resp.text);
    }
    Ok(serde_json::from_value(resp.json)?)
}

/// `GET /api/v1/tasks/stats`.
pub async fn tasks_stats(api: &Api) -> Result<TasksStats> {
    get_json(api, "/api/v1/tasks/stats").await
}

/// The three stats endpoints (`/api/v1/approvals/stats` unwrapped from `{"stats": …}`).
pub async fn all_stats(api: &Api) -> Result<AllStats> {
    #[derive(Deserialize)]
    struct Wrapped {
        stats: ApprovalsStats,
    }
    let (tasks, approvals, conversations) = tokio::try_join!(
        get_json::<TasksStats>(api, "/api/v1/tasks/stats"),
        get_json::<Wrapped>(api, "/api/v1/approvals/stats"),
        get_json::<ConversationsStats>(api, "/api/v1/conversations/stats"),
    )?;
    Ok(AllStats { tasks: Some(tasks), approvals: Some(approvals.stats), conversations: Some(conversations) })
}

/// `method path` with an optional JSON body; the status (0: no response) and the `id` of the
/// JSON body, if any.
pub async fn send(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, Option<i64>) {
    let body = body.map_or(Body::None, |b| Body::Json(b.clone()));
    match api.request(method, path, body, None).await {
        Ok(resp) => (resp.status, resp.json.get("id").and_then(serde_json::Value::as_i64)),
        Err(_) => (0, None),
    }
}

/// `POST /api/v1/tasks`; the status (0: no response).
pub async fn create_task(api: &Api, n: u64, tag: &str) -> u16 {
    let body = json!({"type": "bench", "department": tag, "description": format!("bench task {n}")});
    api.post("/api/v1/tasks", &body).await.map_or(0, |r| r.status)
}

/// The counters of `GET /metrics` (Prometheus text; series of one name summed over their
/// labels), or None when the server has no such endpoint.
pub async fn metrics(api: &Api) -> Option<BTreeMap<String, f64>> {
    let resp = api.anonymous().get("/metrics").await.ok()?;
    if resp.status != 200 {
        return None;
    }
    let mut out = BTreeMap::new();
    for line in resp.text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if let Some(v) = line.split_whitespace().last().and_then(|v| v.parse::<f64>().ok())
            && !name.is_empty()
        {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    Some(out)
}

/// Creates `n` tasks through the API, `concurrency` at a time; fails on any non-201.
pub async fn preload_api(api: &Api, n: u64, concurrency: usize) -> Result<()> {
    let failures = futures_util::stream::iter(0..n)
        .map(|i| async move { create_task(api, i, "preload").await != 201 })
        .buffer_unordered(concurrency.max(1))
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if failures > 0 {
        bail!("{failures} of {n} preload creations failed");
    }
    Ok(())
}

/// One paced mutation.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// When the request was sent, µs since base.
    pub sent_us: u64,
    /// When its response arrived, µs since base.
    pub done_us: u64,
    /// HTTP status (0: no response).
    pub status: u16,
}

impl Mutation {
    /// A 201.
    pub fn ok(&self) -> bool {
        self.status == 201
    }
}

/// [`paced_mutations`] on a thread and runtime of their own, with connections of their own. On
/// the bench's runtime a change would wait behind thousands of clients' reads before it is even
/// written, and that wait would count as the server's latency (at 5,000 clients it was most of
/// it). The server's other callers do not share a runtime with its dashboards either.
pub async fn paced_mutations_apart(api: &Api, n: usize, rate: f64, base: Instant) -> Result<Vec<Mutation>> {
    let api = api.with_own_connections()?;
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("bench-changes".into()).spawn(move || {
        let mut done = done;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let outcome = runtime.map(|rt| {
            rt.block_on(async {
                // Open the connection before the clock starts; the first change would pay it.
                let _ = tasks_stats(&api).await;
                tokio::select! {
                    muts = paced_mutations(&api, n, rate, base) => muts,
                    // The run was cancelled (time limit, signal): send nothing more.
                    () = done.closed() => Vec::new(),
                }
            })
        });
        let _ = done.send(outcome);
    })?;
    Ok(result.await.map_err(|_| anyhow!("the paced-changes thread stopped (it panicked)"))??)
}

/// `n` task creations, one at a time, the i-th sent at `start + i / rate` (or as soon as the
/// previous one answered, if that is later): with one request in flight, the total right after
/// mutation i is exactly the total before plus the successful mutations up to i.
pub async fn paced_mutations(api: &Api, n: usize, rate: f64, base: Instant) -> Vec<Mutation> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let sent_us = since(base);
        let status = create_task(api, i as u64, "mutation").await;
        out.push(Mutation { sent_us, done_us: since(base), status });
    }
    out
}

/// A burst of creations.
#[derive(Debug, Clone, Default)]
pub struct Burst {
    /// When the first request was sent, µs since base.
    pub start_us: u64,
    /// When the last 2xx response arrived (the last commit the bench knows of), µs since base.
    pub last_ok_us: u64,
    /// 201 responses.
    pub ok: u64,
    /// Other outcomes.
    pub failed: u64,
    /// Failed outcomes by HTTP status (0: no response).
    pub failed_statuses: BTreeMap<u16, u64>,
}

/// `n` creations as fast as the server takes them, `concurrency` in flight.
pub async fn burst(api: &Api, n: usize, concurrency: usize, base: Instant) -> Burst {
    let start_us = since(base);
    let results: Vec<(u16, u64)> = futures_util::stream::iter(0..n)
        .map(|i| async move { (create_task(api, i as u64, "burst").await, since(base)) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let ok = results.iter().filter(|r| r.0 == 201).count() as u64;
    let last_ok_us = results.iter().filter(|r| r.0 == 201).map(|r| r.1).max().unwrap_or(start_us);
    let mut failed_statuses = BTreeMap::new();
    for r in results.iter().filter(|r| r.0 != 201) {
        *failed_statuses.entry(r.0).or_insert(0) += 1;
    }
    Burst { start_us, last_ok_us, ok, failed: n as u64 - ok, failed_statuses }
}

/// What the pollers saw.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    /// Requests sent.
    pub requests: u64,
    /// 200 responses.
    pub ok: u64,
    /// Wall-clock seconds from the first request to the last response.
    pub wall_secs: f64,
    /// Response times, µs.
    pub latencies_us: Vec<u64>,
}

/// Polls the three stats endpoints in turn at `rate` requests/s for `secs`, at most
/// `connections` requests (so keep-alive connections) at once: a request waits for a free one.
pub async fn poll(api: &Api, rate: f64, secs: f64, connections: usize) -> Result<Poll> {
    const PATHS: [&str; 3] =
        ["/api/v1/tasks/stats", "/api/v1/approvals/stats", "/api/v1/conversations/stats"];
    let total = (rate * secs).round().max(1.0) as u64;
    let sem = Arc::new(Semaphore::new(connections.max(1)));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for i in 0..total {
        sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let permit = sem.clone().acquire_owned().await?;
        let api = api.clone();
        set.spawn(async move {
            let t = Instant::now();
            let ok = api.get(PATHS[i as usize % 3]).await.is_ok_and(|r| r.status == 200);
            drop(permit);
            (ok, u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))
        });
    }
    let mut out = Poll { requests: total, ..Default::default() };
    while let Some(r) = set.join_next().await {
        let (ok, us) = r?;
        out.ok += u64::from(ok);
        out.latencies_us.push(us);
    }
    out.wall_secs = start.elapsed().as_secs_f64();
    Ok(out)
}
