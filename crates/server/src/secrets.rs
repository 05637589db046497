//! The JWT secret and the first admin.

use std::path::Path;

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};

/// `JWT_SECRET`, or the secret kept in `data_dir/jwt-secret` (generated on first start).
pub fn jwt_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt-secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        return Ok(secret.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 64);
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(path = %path.display(), "JWT_SECRET is not set: generated a secret and kept it in the data folder");
    Ok(secret.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(content.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)
}

/// Creates the first admin when there are no users; with no password configured, a random
/// one is printed once in the log.
pub async fn bootstrap_admin(
    users: &services::UserService,
    username: &str,
    password: Option<&str>,
) -> anyhow::Result<()> {
    let generated = password.is_none().then(|| Alphanumeric.sample_string(&mut rand::rng(), 20));
    let password = password.or(generated.as_deref()).unwrap_or_default();
    match users.bootstrap_admin(username, password).await.context("creating the first admin")? {
        Some(user) if generated.is_some() => tracing::warn!(
            username = %user.username,
            password = %password,
            "created the first admin with a random password (shown only this once): log in and keep it safe"
        ),
        Some(user) => tracing::info!(username = %user.username, "created the first admin"),
        None => {}
    }
    Ok(())
}
