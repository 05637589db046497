//! HTTP load: login, task creations (preload, paced mutations, bursts) and stats pollers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::clients::{AllStats, ApprovalsStats, ConversationsStats, TasksStats};

fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A keep-alive JSON client with the admin's token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Deserialize)]
struct LoginResponse {
    token: String,
}

impl Api {
    /// Logs in; `pool` is the number of idle keep-alive connections kept.
    pub async fn login(base: &str, username: &str, password: &str, pool: usize) -> Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        let resp = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .context("login")?;
        if !resp.status().is_success() {
            bail!("login failed: HTTP {}", resp.status());
        }
        let token = resp.json::<LoginResponse>().await.context("login response")?.token;
        Ok(Self { http, base: base.to_owned(), token })
    }

    /// The JWT.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The same token against another base URL (after a restart on another port).
    pub fn rebase(&self, base: &str) -> Self {
        Self { http: self.http.clone(), base: base.to_owned(), token: self.token.clone() }
    }

    /// `GET /api/v1/tasks/stats`.
    pub async fn tasks_stats(&self) -> Result<TasksStats> {
        let resp = self
            .http
            .get(format!("{}/api/v1/tasks/stats", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("GET /api/v1/tasks/stats")?;
        if !resp.status().is_success() {
            bail!("GET /api/v1/tasks/stats: HTTP {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    /// `GET` a JSON body; fails on a non-2xx.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if !resp.status().is_success() {
            bail!("GET {path}: HTTP {}", resp.status());
        }
        resp.json().await.with_context(|| format!("GET {path}: body"))
    }

    /// The three stats endpoints (`/api/v1/approvals/stats` unwrapped from `{"stats": …}`).
    pub async fn all_stats(&self) -> Result<AllStats> {
        #[derive(Deserialize)]
        struct Wrapped {
            stats: ApprovalsStats,
        }
        let (tasks, approvals, conversations) = tokio::try_join!(
            self.get_json::<TasksStats>("/api/v1/tasks/stats"),
            self.get_json::<Wrapped>("/api/v1/approvals/stats"),
            self.get_json::<ConversationsStats>("/api/v1/conversations/stats"),
        )?;
        Ok(AllStats {
            tasks: Some(tasks),
            approvals: Some(approvals.stats),
            conversations: Some(conversations),
        })
    }

    /// `method path` with an optional JSON body; returns the status (0: no response) and the
    /// `id` of the JSON body, if any.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, Option<i64>) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let Ok(resp) = req.send().await else {
            return (0, None);
        };
        let status = resp.status().as_u16();
        let id = match resp.bytes().await {
            Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("id").and_then(serde_json::Value::as_i64)),
            Err(_) => return (0, None),
        };
        (status, id)
    }

    /// `POST /api/v1/tasks`; Ok(status) whatever the status (the body is read and dropped).
    pub async fn create_task(&self, n: u64, tag: &str) -> Result<u16> {
        let resp = self
            .http
            .post(format!("{}/api/v1/tasks", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"type": "bench", "department": tag, "description": format!("bench task {n}")}))
            .send()
            .await?;
        let status = resp.status().as_u16();
        resp.bytes().await?;
        Ok(status)
    }

    /// The counters of `GET /metrics` (Prometheus text; series of one name summed over their
    /// labels), or None when the server has no such endpoint.
    pub async fn metrics(&self) -> Option<BTreeMap<String, f64>> {
        let resp = self.http.get(format!("{}/metrics", self.base)).send().await.ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let text = resp.text().await.ok()?;
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if let Some(v) = line.split_whitespace().last().and_then(|v| v.parse::<f64>().ok())
                && !name.is_empty()
            {
                *out.entry(name.to_owned()).or_insert(0.0) += v;
            }
        }
        Some(out)
    }
}

/// Creates `n` tasks through the API, `concurrency` at a time; fails on any non-201.
pub async fn preload_api(api: &Api, n: u64, concurrency: usize) -> Result<()> {
    let failures = futures_util::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move { matches!(api.create_task(i, "preload").await, Ok(201)) }
        })
        .buffer_unordered(concurrency.max(1))
        .filter(|ok| std::future::ready(!ok))
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

/// `n` task creations, one at a time, the i-th sent at `start + i / rate` (or as soon as the
/// previous one answered, if that is later): with one request in flight, the total right after
/// mutation i is exactly the total before plus the successful mutations up to i.
pub async fn paced_mutations(api: &Api, n: usize, rate: f64, base: Instant) -> Vec<Mutation> {
    let start = Instant::now();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let sent_us = since(base);
        let status = api.create_task(i as u64, "mutation").await.unwrap_or(0);
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
        .map(|i| {
            let api = api.clone();
            async move {
                let status = api.create_task(i as u64, "burst").await.unwrap_or(0);
                (status, since(base))
            }
        })
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

/// Polls the three stats endpoints in turn at `rate` requests/s for `secs`, over at most
/// `connections` keep-alive connections (a request waits for a free one).
pub async fn poll(base_url: &str, token: &str, rate: f64, secs: f64, connections: usize) -> Result<Poll> {
    const PATHS: [&str; 3] =
        ["/api/v1/tasks/stats", "/api/v1/approvals/stats", "/api/v1/conversations/stats"];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let total = (rate * secs).round().max(1.0) as u64;
    let sem = Arc::new(Semaphore::new(connections.max(1)));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for i in 0..total {
        sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let permit = sem.clone().acquire_owned().await?;
        let (http, url, token) =
            (http.clone(), format!("{base_url}{}", PATHS[i as usize % 3]), token.to_owned());
        set.spawn(async move {
            let t = Instant::now();
            let ok = match http.get(url).bearer_auth(token).send().await {
                Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                Err(_) => false,
            };
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
