//! A real reverse proxy in front of Pulse: Debian's nginx (`/usr/sbin/nginx`, or
//! `PULSE_NGINX_BIN`) running the configuration Pulse ships, `deploy/nginx/pulse.conf`, as a
//! child process — never the system service.
//!
//! The shipped file is what an operator includes in nginx's `http` block. The suite wraps it
//! in a main configuration of its own, as `/etc/nginx/nginx.conf` would (its own prefix
//! folder, `daemon off`, a master and two workers stopped with SIGQUIT when dropped, so
//! nothing is left behind), and changes only what differs on this machine: the upstream's
//! `server` lines (the instances under test, round-robin), the listen port (`127.0.0.1` and
//! a free port instead of `80`) and the log folder (the prefix instead of `/var/log/nginx/`).
//! Anything else in the file — headers, `X-Forwarded-For`, timeouts, buffering, the
//! `/metrics` refusal — is tested as shipped.

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
        let site = shipped_site(SHIPPED_CONFIG, prefix.path(), port, upstreams)?;
        std::fs::write(prefix.path().join("pulse.conf"), site).context("writing pulse.conf")?;
        let config = main_config(prefix.path(), running_as_root());
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

    /// `http://127.0.0.1:<port>/sse` with `query` (`ticket=…`).
    pub fn sse_url(&self, query: &str) -> String {
        format!("http://127.0.0.1:{}/sse?{query}", self.port)
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

    /// nginx's access log so far (the shipped `pulse` format: `$remote_addr` first on each
    /// line, no query strings).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("pulse.access.log")).unwrap_or_default()
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

/// `deploy/nginx/pulse.conf`, as shipped.
pub const SHIPPED_CONFIG: &str = include_str!("../../../deploy/nginx/pulse.conf");

/// The shipped site configuration with what differs on this machine replaced: the `server`
/// lines of `upstream pulse` (by `upstreams`), `listen 80` (by `127.0.0.1:<port>`, its
/// parameters kept) and `/var/log/nginx/` (by `prefix`). Fails if the file no longer has
/// exactly those, so a change to it cannot silently leave the suite testing something else.
pub fn shipped_site(shipped: &str, prefix: &Path, port: u16, upstreams: &[String]) -> Result<String> {
    let mut out = String::with_capacity(shipped.len() + 256);
    let (mut in_upstream, mut upstreams_written, mut listens, mut logs) = (false, false, 0, 0);
    for line in shipped.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.starts_with("upstream pulse") {
            in_upstream = true;
        } else if in_upstream && code == "}" {
            in_upstream = false;
        } else if in_upstream && code.starts_with("server ") {
            if !upstreams_written {
                for upstream in upstreams {
                    out.push_str(&format!("    server {upstream};\n"));
                }
                upstreams_written = true;
            }
            continue;
        }
        if let Some(rest) = code.strip_prefix("listen 80").filter(|r| r.starts_with([' ', ';'])) {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!("{indent}listen 127.0.0.1:{port}{rest}\n"));
            listens += 1;
            continue;
        }
        if code.contains("/var/log/nginx/") {
            logs += 1;
        }
        out.push_str(&line.replace("/var/log/nginx/", &format!("{}/", prefix.display())));
        out.push('\n');
    }
    if !upstreams_written || listens != 1 || logs == 0 {
        bail!(
            "deploy/nginx/pulse.conf changed shape: expected `server` lines in `upstream pulse` \
             (found: {upstreams_written}), one `listen 80` (found {listens}) and a log under \
             /var/log/nginx/ (found {logs})"
        );
    }
    Ok(out)
}

/// The main configuration around the shipped site (what `/etc/nginx/nginx.conf` is to it): a
/// master and two workers, everything in `prefix`.
fn main_config(prefix: &Path, root: bool) -> String {
    let p = prefix.display();
    let user = if root { "user root;\n" } else { "" };
    format!(
        r#"# Written by xtask/suites (nginx.rs) for one test run; the site is deploy/nginx/pulse.conf.
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

    include {p}/pulse.conf;
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_site_gets_only_the_upstreams_the_port_and_the_log_folder_replaced() {
        let upstreams = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        let site =
            shipped_site(SHIPPED_CONFIG, Path::new("/tmp/x"), 8081, &upstreams).expect("the shipped file");
        assert!(site.contains("    server 127.0.0.1:1;\n    server 127.0.0.1:2;\n"), "{site}");
        assert!(!site.contains("pulse-1:3000"), "{site}");
        assert!(site.contains("listen 127.0.0.1:8081 backlog=4096 reuseport;"), "{site}");
        assert!(site.contains("access_log /tmp/x/pulse.access.log pulse;"), "{site}");
        // Everything else is the shipped file, line for line.
        let changed = |l: &&str| {
            l.contains("server ") && l.contains(':') || l.contains("listen") || l.contains("access_log")
        };
        let shipped: Vec<_> = SHIPPED_CONFIG.lines().filter(|l| !changed(l)).collect();
        let tested: Vec<_> = site.lines().filter(|l| !changed(l)).collect();
        assert_eq!(shipped, tested);
        let text = main_config(Path::new("/tmp/x"), false);
        assert!(text.contains("include /tmp/x/pulse.conf;") && text.contains("daemon off;"));
        assert!(!text.contains("user root"));
        for line in text.lines().filter(|l| l.contains("_path ") || l.contains("_log ") || l.contains("pid "))
        {
            assert!(line.contains("/tmp/x/"), "outside the prefix: {line}");
        }
    }

    #[test]
    fn a_shipped_file_of_another_shape_is_refused() {
        let port = |text: &str| shipped_site(text, Path::new("/tmp/x"), 1, &["127.0.0.1:1".to_owned()]);
        assert!(port(&SHIPPED_CONFIG.replace("listen 80", "listen 8080")).is_err());
        assert!(port(&SHIPPED_CONFIG.replace("upstream pulse", "upstream other")).is_err());
    }
}
