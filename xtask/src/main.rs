//! Pulse's developer tasks. `cargo xtask ci` runs everything CI runs; if it passes
//! locally, CI is green.
//!
//! ```text
//! cargo xtask ci            # all of the below, in order
//! cargo xtask fmt|lint|layers|test|dashboard|integration|e2e|schemathesis|bench-smoke|soak-smoke
//! cargo xtask api-types     # the dashboard's REST types from the OpenAPI document (part of `dashboard`)
//! cargo xtask bench [BENCH ARGS]   # the load bench, release build (xtask/bench/README.md)
//! cargo xtask soak [SOAK ARGS]     # the soak run (default: 10,000 clients, 10 min, 50 changes/s)
//! ```

// A command-line tool: printing is its job (the lint is for libraries).
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let root = project_root();
    std::env::set_current_dir(&root)?;
    if task == "bench" {
        return bench(&args[1..]);
    }
    if task == "soak" {
        let mut soak = vec!["soak".to_owned()];
        soak.extend(args[1..].iter().cloned());
        return bench(&soak);
    }
    let steps: Vec<&str> = match task {
        "ci" => vec![
            "postgres",
            "fmt",
            "lint",
            "layers",
            "test",
            "dashboard",
            "integration",
            "e2e",
            "schemathesis",
            "bench-smoke",
            "soak-smoke",
        ],
        "fmt" | "lint" | "layers" | "test" | "dashboard" | "api-types" | "integration" | "e2e"
        | "postgres" | "bench-smoke" | "schemathesis" | "soak-smoke" => {
            vec![task]
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|fmt|lint|layers|test|dashboard|api-types|integration|e2e|schemathesis|bench-smoke|soak-smoke>\n       cargo xtask bench [ARGS] | soak [ARGS]"
            );
            return Ok(());
        }
    };
    let started = Instant::now();
    for step in steps {
        let t = Instant::now();
        eprintln!("\n==> xtask {step}");
        run_step(step).with_context(|| format!("xtask {step} failed"))?;
        eprintln!("==> xtask {step}: ok ({:.1}s)", t.elapsed().as_secs_f64());
    }
    eprintln!("\nxtask {task}: all green in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn run_step(step: &str) -> anyhow::Result<()> {
    match step {
        "postgres" => check_postgres(),
        "fmt" => cargo(&["fmt", "--all", "--", "--check"]),
        "lint" => cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        "layers" => check_layers(),
        "test" => cargo(&["test", "--workspace", "--exclude", "suites", "--exclude", "bench"]),
        "dashboard" => dashboard(),
        "api-types" => api_types(),
        "integration" => integration(),
        "e2e" => e2e(),
        "bench-smoke" => bench_smoke(),
        "soak-smoke" => soak_smoke(),
        "schemathesis" => {
            let bin = server_binary()?;
            run(Command::new("bash").arg("xtask/schemathesis/run.sh").env("PULSE_SERVER_BIN", bin))
        }
        other => bail!("unknown step {other}"),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} exited with {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(args))
}

fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.into())
}

/// The PostgreSQL tests must run: fail clearly instead of skipping.
fn check_postgres() -> anyhow::Result<()> {
    let url = test_database_url();
    let output = Command::new("psql").arg(&url).args(["-tAc", "SELECT version()"]).output();
    match output {
        Ok(out) if out.status.success() => {
            eprintln!("PostgreSQL: {}", String::from_utf8_lossy(&out.stdout).trim());
            Ok(())
        }
        Ok(out) => bail!(
            "PostgreSQL is required and is not reachable at {url}: {}\nStart it (see README) or set TEST_DATABASE_URL.",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!("psql is needed to check PostgreSQL at {url}: {e}"),
    }
}

/// The architecture invariants of docs/architecture.md, checked on the real dependency graph.
fn check_layers() -> anyhow::Result<()> {
    let rules: &[(&str, &[&str])] = &[
        (
            "domain-events",
            &["diesel", "diesel-async", "actix-web", "actix-ws", "services", "ws-bridge", "gateway"],
        ),
        (
            "ws-bridge",
            &["diesel", "diesel-async", "actix-web", "actix-ws", "actix-http", "services", "gateway"],
        ),
        ("services", &["actix-web", "actix-ws", "actix-http", "ws-bridge", "gateway"]),
        ("pg-fanout", &["actix-web", "actix-ws", "actix-http", "services", "ws-bridge", "gateway"]),
        ("gateway", &["server", "pg-fanout"]),
    ];
    let mut broken = Vec::new();
    for (krate, forbidden) in rules {
        let output = Command::new("cargo")
            .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}"])
            .output()
            .context("running cargo tree")?;
        if !output.status.success() {
            bail!("cargo tree -p {krate}: {}", String::from_utf8_lossy(&output.stderr));
        }
        let tree = String::from_utf8_lossy(&output.stdout);
        for line in tree.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if forbidden.contains(&name) {
                broken.push(format!("{krate} depends on {name}"));
            }
        }
        eprintln!("{krate}: none of {}", forbidden.join(", "));
    }
    for krate in ["domain-events", "services", "ws-bridge", "pg-fanout", "gateway"] {
        let lib = format!("crates/{krate}/src/lib.rs");
        let text = std::fs::read_to_string(&lib).with_context(|| format!("reading {lib}"))?;
        if !text.trim_start().starts_with("//!") {
            broken.push(format!("{lib} has no //! doc comment saying what the crate is for"));
        }
    }
    broken.sort();
    broken.dedup();
    if !broken.is_empty() {
        bail!("layering broken:\n  {}", broken.join("\n  "));
    }
    Ok(())
}

fn npm(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("npm").args(args).current_dir("apps/dashboard"))
}

fn dashboard() -> anyhow::Result<()> {
    if !Path::new("apps/dashboard/node_modules").is_dir() {
        npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    api_types()?;
    npm(&["run", "typecheck"])?;
    npm(&["test"])?;
    Ok(())
}

/// The file the dashboard's REST types are generated into (committed).
const API_TYPES: &str = "apps/dashboard/src/lib/openapi.gen.ts";

/// Regenerates the dashboard's REST types from the server's OpenAPI document (printed by
/// `cargo run -p gateway --example openapi`, no server needed) and fails when they differ
/// from the committed ones: the API and the dashboard cannot drift apart unnoticed.
fn api_types() -> anyhow::Result<()> {
    if !Path::new("apps/dashboard/node_modules").is_dir() {
        npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["run", "-q", "-p", "gateway", "--example", "openapi"])
        .output()
        .context("starting cargo run -p gateway --example openapi")?;
    if !output.status.success() {
        bail!("cargo run -p gateway --example openapi failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let document = std::path::absolute(target_dir().join("openapi.json"))?;
    std::fs::write(&document, &output.stdout).with_context(|| format!("writing {}", document.display()))?;
    let document = document.to_str().context("the target folder's path is not UTF-8")?;
    npm(&["run", "api-types", "--", document])?;
    let diff = Command::new("git").args(["status", "--porcelain", "--", API_TYPES]).output()?;
    if !diff.status.success() {
        bail!("git status failed: {}", String::from_utf8_lossy(&diff.stderr));
    }
    if !diff.stdout.is_empty() {
        let _ = run(Command::new("git").args(["--no-pager", "diff", "--stat", "--", API_TYPES]));
        bail!(
            "{API_TYPES} differs from the server's OpenAPI document: it was regenerated just now; \
             review and commit it (the API changed, or the file was edited by hand)"
        );
    }
    Ok(())
}

/// Builds the server once (the dashboard embedded) and returns its path.
fn server_binary() -> anyhow::Result<PathBuf> {
    cargo(&["build", "-p", "server"])?;
    let target =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("target"));
    let bin = target.join("debug/server");
    std::fs::canonicalize(&bin).with_context(|| format!("finding {}", bin.display()))
}

fn integration() -> anyhow::Result<()> {
    let bin = server_binary()?;
    // The abuse suite measures latency under a flood: a property of an optimised build (the
    // debug server spends ~0.4 ms on a request that takes the release one ~30 µs). The one
    // release build CI makes (`cargo xtask bench` uses the same binary).
    cargo(&["build", "--release", "-p", "server"])?;
    let release = std::fs::canonicalize(target_dir().join("release/server"))?;
    run(Command::new("cargo")
        .args(["test", "-p", "suites"])
        .env("PULSE_SERVER_BIN", &bin)
        .env("PULSE_RELEASE_SERVER_BIN", &release)
        .env("TEST_DATABASE_URL", test_database_url()))
}

/// The contract sections whose browser tests must run (a "not run" fails CI): those the server
/// has: 2 (users), 8 (SSE) and 9 (insight).
const E2E_REQUIRED_SECTIONS: &str = "2,8,9";

fn e2e() -> anyhow::Result<()> {
    let bin = server_binary()?;
    if !Path::new("/usr/bin/chromium").exists() {
        bail!(
            "Chromium is needed for the browser suite: apt-get install -y --no-install-recommends chromium"
        );
    }
    if !Path::new("apps/dashboard/node_modules").is_dir() {
        npm(&["ci", "--no-audit", "--no-fund"])?;
    }
    run(Command::new("node")
        .arg("e2e/run.mjs")
        .current_dir("apps/dashboard")
        .env("PULSE_SERVER_BIN", &bin)
        .env("PULSE_E2E_REQUIRE", E2E_REQUIRED_SECTIONS))?;
    // A restart with 300 dashboards running their real reconnect code: all back, spread out (issue #8).
    run(Command::new("node")
        .args(["e2e/reconnect-spread.mjs", "--clients", "300"])
        .current_dir("apps/dashboard")
        .env("PULSE_SERVER_BIN", &bin))
}

/// The Node peer the load bench runs beside Pulse (issue 15), outside the repository.
const PEER_DIR: &str = "../shared/peers/node-seed";

/// The load bench at full size (or as `args` say), against a release build of the server.
/// The Node peer runs beside Pulse when its folder and `node` are there; its packages are
/// installed there first (`npm ci --omit=dev`: they stay out of this repository).
fn bench(args: &[String]) -> anyhow::Result<()> {
    // `cargo xtask bench -- --clients 10` and `cargo xtask bench --clients 10` both work.
    let args: Vec<&String> = args.iter().filter(|a| a.as_str() != "--").collect();
    let soak = args.first().is_some_and(|a| a.as_str() == "soak");
    let peer = args.iter().position(|a| a.as_str() == "--peer").and_then(|i| args.get(i + 1));
    let peer = peer.map_or_else(|| PathBuf::from(PEER_DIR), PathBuf::from);
    let wants_peer = !soak && !args.iter().any(|a| a.as_str() == "--no-peer");
    if wants_peer && peer.join("package-lock.json").is_file() && !peer.join("node_modules").is_dir() {
        eprintln!("xtask bench: installing the Node peer's packages in {}", peer.display());
        if let Err(e) =
            run(Command::new("npm").args(["ci", "--omit=dev", "--no-audit", "--no-fund"]).current_dir(&peer))
        {
            eprintln!("xtask bench: {e:#}; the bench will run without the peer");
        }
    }
    cargo(&["build", "--release", "-p", "server"])?;
    let server = std::fs::canonicalize(target_dir().join("release/server"))?;
    let mut command = Command::new("cargo");
    command.args(["run", "--release", "-p", "bench", "--", "--server-bin"]).arg(&server).args(args);
    run(&mut command)
}

/// The bench at smoke size on both databases, against the debug server: it keeps the bench
/// working and asserts no timing (CI). PostgreSQL runs two instances on its one database, so
/// the cross-instance path (and the single-instance path, on instance 0) stays covered. The
/// floor runs 3 rounds in each, then paced like the changes; the Node peer runs beside the SQLite run only where its
/// packages are installed (never installed here: CI does not need it).
fn bench_smoke() -> anyhow::Result<()> {
    let server = server_binary()?;
    for db in [["--db", "sqlite", "--instances", "1"], ["--db", "postgres", "--instances", "2"]] {
        let peer: &[&str] = if db[1] == "sqlite" { &[] } else { &["--no-peer"] };
        let mut command = Command::new("cargo");
        command
            .args(["run", "-p", "bench", "--", "--server-bin"])
            .arg(&server)
            .args(db)
            .args(["--clients", "200", "--mutations", "20", "--burst", "200"])
            .args(["--idle-secs", "2", "--poll-secs", "2", "--floor-rounds", "3"])
            .args(peer)
            .env("TEST_DATABASE_URL", test_database_url());
        run(&mut command)?;
    }
    run(Command::new("cargo").args(["run", "-p", "bench", "--", "floor"]).args([
        "--sockets",
        "200",
        "--rounds",
        "3",
        "--paced-rate",
        "20",
        "--paced-rounds",
        "10",
        "--paced-sockets",
        "200,100",
    ]))
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("target"))
}

/// A short soak on both databases against the debug server: zero errors and every client
/// converged (CI; memory flatness needs a longer run, see xtask/bench/README.md).
fn soak_smoke() -> anyhow::Result<()> {
    let server = server_binary()?;
    let mut command = Command::new("cargo");
    command
        .args(["run", "-p", "bench", "--", "--server-bin"])
        .arg(&server)
        .args(["soak", "--db", "both", "--clients", "200", "--secs", "30", "--rate", "20"])
        .env("TEST_DATABASE_URL", test_database_url());
    run(&mut command)
}
