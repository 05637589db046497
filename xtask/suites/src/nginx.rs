//! A real reverse proxy in front of Pulse: Debian's nginx (`/usr/sbin/nginx`, or
//! `PULSE_NGINX_BIN`), run as a child process with a configuration of the suite's own — its
//! own prefix folder and port, `daemon off`, a master and two workers (stopped with SIGQUIT
//! when dropped, so nothing is left behind), error and access logs in that folder — never
//! the system service.
//!
//! It proxies HTTP and WebSocket upgrades to one or several upstream servers (several are
//! used round-robin, nginx's default), appends the client's address to `X-Forwarded-For`
//! (`$proxy_add_x_forwarded_for`) and keeps the `Host` the client sent.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::{Api, free_port};

/// Environment variable naming the nginx binary (default `/usr/sbin/nginx`).
pub const NGINX_BIN_ENV: &str = "PULSE_NGINX_BIN";

/// An nginx process proxying to Pulse. Dropping it stops it (its workers too) and removes
/// its folder.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    port: u16,
    prefix: tempfile::TempDir,
}

impl Nginx {
    /// The nginx binary: `PULSE_NGINX_BIN`, or Debian's `/usr/sbin/nginx`.
    pub fn bin() -> PathBuf {
        std::env::var_os(NGINX_BIN_ENV).map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from)
    }

    /// Starts nginx on a free port of 127.0.0.1 in front of `upstreams` (`127.0.0.1:3000`, …;
    /// several are used round-robin) and waits (10 s at most) until `/healthz` answers 200
    /// through it.
    pub async fn start(upstreams: &[String]) -> Result<Self> {
        if upstreams.is_empty() {
            bail!("nginx needs at least one upstream");
        }
        let bin = Self::bin();
        if !bin.is_file() {
            bail!("no nginx at {} (apt-get install -y nginx, or set {NGINX_BIN_ENV})", bin.display());
        }
        let prefix = tempfile::Builder::new().prefix("pulse-nginx-").tempdir().context("nginx folder")?;
        std::fs::create_dir_all(prefix.path().join("tmp")).context("nginx temp folder")?;
        let port = free_port()?;
        let config = config(prefix.path(), port, upstreams, running_as_root());
        let config_path = prefix.path().join("nginx.conf");
        std::fs::write(&config_path, config).context("writing nginx.conf")?;
        let stderr = std::fs::File::create(prefix.path().join("stderr.log")).context("nginx stderr file")?;
        let mut prefix_arg = prefix.path().as_os_str().to_owned();
        prefix_arg.push("/");
        let child = Command::new(&bin)
            .arg("-p")
            .arg(&prefix_arg)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(prefix.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut nginx = Self { child, port, prefix };
        nginx.wait_ready(Duration::from_secs(10)).await?;
        Ok(nginx)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("{}/healthz", self.base_url());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("nginx exited at start ({status}):\n{}", self.logs());
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nginx did not proxy /healthz within {timeout:?}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:<port>/ws` with `query` (`token=…`).
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }

    /// An [`Api`] client (no token) going through nginx.
    pub fn api(&self) -> Api {
        Api::new(self.base_url())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What nginx wrote to its error log and stderr so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.prefix.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// nginx's access log so far (`$remote_addr` first on each line).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: the master stops its workers, then exits. Killing the master alone
        // (SIGKILL) would leave the workers running.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-QUIT").arg(pid.to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// As root, nginx's workers would become `nobody` (or `www-data`), who cannot write to the
/// suite's folder: keep them root.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|l| l.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// The configuration: a master and two workers, everything in `prefix`, a WebSocket-aware
/// proxy.
fn config(prefix: &Path, port: u16, upstreams: &[String], root: bool) -> String {
    let p = prefix.display();
    let servers: String = upstreams.iter().map(|u| format!("        server {u};\n")).collect();
    let user = if root { "user root;\n" } else { "" };
    format!(
        r#"# Written by xtask/suites (nginx.rs) for one test run.
daemon off;
worker_processes 2;
{user}worker_rlimit_nofile 20000;
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    worker_connections 10000;
    multi_accept off;
}}

http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;

    upstream pulse {{
{servers}        keepalive 256;
    }}

    # WebSocket upgrades pass through; other requests reuse upstream connections.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ""      "";
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;

        location / {{
            proxy_pass http://pulse;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_lists_every_upstream_and_keeps_everything_in_the_prefix() {
        let text = config(Path::new("/tmp/x"), 8081, &["127.0.0.1:1".into(), "127.0.0.1:2".into()], false);
        assert!(text.contains("server 127.0.0.1:1;") && text.contains("server 127.0.0.1:2;"));
        assert!(text.contains("listen 127.0.0.1:8081"));
        assert!(text.contains("daemon off;") && text.contains("worker_processes 2;"));
        assert!(!text.contains("user root"));
        for line in text.lines().filter(|l| l.contains("_path ") || l.contains("_log ") || l.contains("pid "))
        {
            assert!(line.contains("/tmp/x/"), "outside the prefix: {line}");
        }
    }
}
