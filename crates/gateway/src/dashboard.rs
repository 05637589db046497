//! Serving the browser dashboard: assets from whatever [`DashboardAssets`] the host
//! provides, long cache for hashed files, `index.html` for client routes.

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::error::ApiError;

/// One file of the built dashboard.
#[derive(Debug, Clone)]
pub struct Asset {
    /// The bytes.
    pub data: Cow<'static, [u8]>,
    /// Its MIME type.
    pub mime: String,
}

/// Where the dashboard's files come from (the server embeds them at build time).
pub trait DashboardAssets: Send + Sync + 'static {
    /// The file at `path` (no leading slash, e.g. `assets/index-1a2b.js`).
    fn get(&self, path: &str) -> Option<Asset>;
}

/// Answers any route the API does not know: a dashboard file, `index.html` for a client
/// route, or a JSON 404.
pub(crate) fn serve(
    assets: Option<&dyn DashboardAssets>,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let path = req.path().trim_start_matches('/');
    let not_found = || ApiError::not_found(format!("no route for {} {}", req.method(), req.path()));
    let is_api = path.starts_with("api/") || path == "api" || path == "ws" || path == "metrics";
    let Some(assets) = assets.filter(|_| !is_api) else { return Err(not_found()) };
    if req.method() != actix_web::http::Method::GET && req.method() != actix_web::http::Method::HEAD {
        return Err(not_found());
    }
    if let Some(asset) = assets.get(path).filter(|_| !path.is_empty()) {
        let immutable = path.starts_with("assets/");
        return Ok(file_response(asset, immutable));
    }
    // Client routes (no file extension) get the app shell.
    let last = path.rsplit('/').next().unwrap_or("");
    if !last.contains('.')
        && let Some(index) = assets.get("index.html")
    {
        return Ok(file_response(index, false));
    }
    Err(not_found())
}

fn file_response(asset: Asset, immutable: bool) -> HttpResponse {
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.mime))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        ))
        .body(asset.data.into_owned())
}
