//! The dashboard: embedded at build time (see build.rs), or read from a folder at run time
//! when `PULSE_DASHBOARD_DIR` names one (for working on the dashboard without rebuilding).

use gateway::{Asset, DashboardAssets};

#[derive(rust_embed::RustEmbed)]
#[folder = "$OUT_DIR/dashboard"]
struct Files;

/// The built dashboard inside the binary.
pub struct EmbeddedDashboard;

impl DashboardAssets for EmbeddedDashboard {
    fn get(&self, path: &str) -> Option<Asset> {
        let file = Files::get(path)?;
        Some(Asset { data: file.data, mime: file.metadata.mimetype().to_owned() })
    }
}

/// The dashboard read from a folder (a `dist/` built by `npm run build`).
pub struct DashboardDir(pub std::path::PathBuf);

impl DashboardAssets for DashboardDir {
    fn get(&self, path: &str) -> Option<Asset> {
        // Only plain relative paths inside the folder.
        if path.split('/').any(|part| part == ".." || part.starts_with('.')) || path.contains('\\') {
            return None;
        }
        let file = self.0.join(path);
        let data = std::fs::read(&file).ok()?;
        let mime = mime_guess::from_path(&file).first_or_octet_stream().to_string();
        Some(Asset { data: data.into(), mime })
    }
}
