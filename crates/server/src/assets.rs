//! The dashboard, embedded at build time (see build.rs).

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
