//! Configuration: the environment variables of `docs/protocol.md` §1, mirrored by flags.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// Pulse: live hotel operations dashboards over one WebSocket.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version, about)]
pub struct Config {
    /// Address the HTTP/WebSocket server listens on.
    #[arg(long = "bind", env = "BIND_ADDR", default_value = "127.0.0.1:3000")]
    pub bind_addr: SocketAddr,

    /// `sqlite://PATH` (embedded, single instance) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/pulse.db")]
    pub database_url: String,

    /// HS256 signing secret, at least 32 bytes. Default: generated once and kept in the
    /// data folder.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Username of the admin created when there are no users.
    #[arg(long, env = "ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,

    /// Password of that admin. Default: random, printed once in the log.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long a login token is valid, in minutes.
    #[arg(long, env = "TOKEN_TTL_MINUTES", default_value_t = 12 * 60)]
    pub token_ttl_minutes: u64,

    /// Seconds between WebSocket pings (two unanswered pings close the connection) and
    /// between Server-Sent Events keep-alive comments (at most 25).
    #[arg(long, env = "WS_HEARTBEAT_SECS", default_value_t = 25)]
    pub ws_heartbeat_secs: u64,

    /// Database connections (PostgreSQL; SQLite readers).
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long committed events stay in the event log (other instances catch up from it
    /// after a dropped connection), in minutes.
    #[arg(long, env = "EVENT_RETENTION_MINUTES", default_value_t = 60)]
    pub event_retention_minutes: u64,

    /// Serve the dashboard from this folder instead of the copy built into the binary.
    #[arg(long, env = "PULSE_DASHBOARD_DIR")]
    pub dashboard_dir: Option<std::path::PathBuf>,

    /// Serve `/metrics` to every address (default: loopback only).
    #[arg(long, env = "METRICS_PUBLIC", default_value_t = false)]
    pub metrics_public: bool,

    /// Origins allowed to open WebSockets besides the server's own (comma-separated;
    /// `*` for any). Clients without an `Origin` header (not browsers) are always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Realtime connections (WebSocket and Server-Sent Events) this process accepts.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 15_000)]
    pub ws_max_connections: usize,

    /// Realtime connections (WebSocket and Server-Sent Events) one user may hold on this
    /// process.
    #[arg(long, env = "WS_MAX_CONNECTIONS_PER_USER", default_value_t = 50)]
    pub ws_max_connections_per_user: usize,

    /// Client messages per second per connection (a burst of twice that is allowed);
    /// a connection that sends faster is closed with 1008.
    #[arg(long, env = "WS_MESSAGES_PER_SECOND", default_value_t = 20)]
    pub ws_messages_per_second: u32,

    /// Proxies whose `X-Forwarded-For` is believed: comma-separated addresses or CIDR ranges
    /// (`127.0.0.1,10.0.0.0/8`). For a request from one of them, the client is the first
    /// untrusted address of `X-Forwarded-For` read from the right; it is what the login
    /// limits, the access log and the `/metrics` loopback rule use. Default: none (the client
    /// is the TCP peer).
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: gateway::client_ip::TrustedProxies,

    /// When an open task becomes overdue, in seconds after its creation (1 to 2592000).
    /// Instances on one PostgreSQL database must agree: the first stores it, one configured
    /// with another refuses to start.
    #[arg(long, env = "TASK_SLA_SECONDS", default_value_t = services::TaskSla::DEFAULT_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=services::TaskSla::MAX_SECONDS))]
    pub task_sla_seconds: u64,

    /// How long one history "minute" lasts, in seconds: 60 in production; a divisor of 60
    /// shortens it for tests. 0 records no history (for measuring its cost).
    #[arg(long, env = "PULSE_HISTORY_BUCKET_SECONDS", default_value_t = 60, hide = true)]
    pub history_bucket_seconds: u32,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "WORKERS")]
    pub workers: Option<usize>,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The folder for generated state (the JWT secret): next to the SQLite file, or
    /// `./data` with PostgreSQL.
    pub fn data_dir(&self) -> std::path::PathBuf {
        let path =
            self.database_url.strip_prefix("sqlite://").or_else(|| self.database_url.strip_prefix("sqlite:"));
        match path.map(std::path::Path::new).and_then(|p| p.parent()) {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            Some(_) => std::path::PathBuf::from("."),
            None => std::path::PathBuf::from("data"),
        }
    }
}
