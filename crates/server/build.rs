//! Builds the browser dashboard (apps/dashboard) into OUT_DIR/dashboard, where the server
//! embeds it, so `cargo run -p server` serves it with no separate step.
//!
//! `PULSE_SKIP_DASHBOARD_BUILD=1` skips npm: an existing `apps/dashboard/dist` is embedded
//! if there is one, else a page explaining how to build it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let app = manifest.join("../../apps/dashboard");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("dashboard");
    for input in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", app.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=PULSE_SKIP_DASHBOARD_BUILD");

    let _ = std::fs::remove_dir_all(&out);
    let skip = std::env::var("PULSE_SKIP_DASHBOARD_BUILD").is_ok_and(|v| v == "1" || v == "true");
    if !skip {
        match build_with_npm(&app, &out) {
            Ok(()) => return,
            Err(why) => println!("cargo:warning=dashboard not built ({why}); serving a placeholder page"),
        }
    }
    let dist = app.join("dist");
    if dist.join("index.html").is_file() {
        copy_dir(&dist, &out).expect("copy apps/dashboard/dist");
    } else {
        std::fs::create_dir_all(&out).expect("create OUT_DIR/dashboard");
        std::fs::write(
            out.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>Pulse</title>\
             <p>The dashboard was not built. Install Node.js 20+ and npm, then rebuild the server \
             (or run <code>npm ci &amp;&amp; npm run build</code> in apps/dashboard).</p>",
        )
        .expect("write placeholder");
    }
}

fn build_with_npm(app: &Path, out: &Path) -> Result<(), String> {
    if !app.join("node_modules").is_dir() {
        run(Command::new("npm").arg("ci").arg("--no-audit").arg("--no-fund").current_dir(app), "npm ci")?;
    }
    run(
        Command::new("npm")
            .args(["run", "build", "--", "--outDir"])
            .arg(out)
            .arg("--emptyOutDir")
            .current_dir(app),
        "npm run build",
    )
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
        ))
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
