//! The route table: every route Pulse serves, written once ([`table`]). It both mounts the
//! handlers ([`crate::configure`]) and makes the OpenAPI document ([`crate::openapi`]), so
//! the two cannot disagree. Also the pieces handlers share: response sets, query filters, 405.
//!
//! Never depends on what a handler does: a route is its `#[utoipa::path]` and its function.

pub mod approvals;
pub mod auth;
pub mod conversations;
pub mod health;
pub mod insight;
pub mod tasks;
pub mod users;

use actix_web::http::Method;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use utoipa::OpenApi;

use crate::error::{ApiError, ErrorBody};
use crate::{metrics, openapi, sse, ws};

/// A REST route: the handler's `#[utoipa::path]` says where it is mounted and how it is
/// documented; the handler answers.
macro_rules! rest {
    ($($segment:ident)::+) => {{
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($segment)::+))]
        struct Operation;
        Entry::documented(Operation::openapi(), || web::to($($segment)::+))
    }};
}

/// A route that is not a REST resource (a WebSocket upgrade, Prometheus text): mounted, but
/// left out of the OpenAPI document.
macro_rules! undocumented {
    ($method:ident $path:literal => $($segment:ident)::+) => {
        Entry::undocumented(Method::$method, $path, || web::to($($segment)::+))
    };
}

/// Every route, in matching order: a literal segment (`/tasks/stats`) before a parameter in
/// its place (`/tasks/{id}`). Adding an endpoint: write the handler with its
/// `#[utoipa::path(method, path = …, responses(…))]`, then add one line here.
pub(crate) fn table() -> Vec<Entry> {
    vec![
        rest!(health::healthz),
        rest!(health::readyz),
        undocumented!(GET "/ws" => ws::upgrade),
        undocumented!(GET "/sse" => sse::open),
        undocumented!(GET "/metrics" => metrics::metrics),
        rest!(openapi::openapi_json),
        rest!(auth::login),
        rest!(auth::me),
        rest!(users::change_password),
        rest!(auth::ws_ticket),
        rest!(sse::realtime_message),
        rest!(users::list_users),
        rest!(users::create_user),
        rest!(users::update_user),
        rest!(tasks::list),
        rest!(tasks::create),
        rest!(tasks::stats),
        rest!(insight::departments),
        rest!(tasks::get),
        rest!(tasks::assign),
        rest!(tasks::complete),
        rest!(conversations::list),
        rest!(conversations::create),
        rest!(conversations::stats),
        rest!(conversations::get),
        rest!(conversations::update),
        rest!(conversations::escalate),
        rest!(conversations::deescalate),
        rest!(conversations::resolve),
        rest!(approvals::list),
        rest!(approvals::create),
        rest!(approvals::stats),
        rest!(approvals::get),
        rest!(approvals::decide),
        rest!(approvals::execute),
        rest!(insight::sla),
        rest!(insight::history),
    ]
}

/// A method and path Pulse serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `GET`, `POST`, …
    pub method: Method,
    /// The pattern, e.g. `/api/v1/tasks/{id}`.
    pub path: String,
    /// Whether the OpenAPI document describes it (not `/ws` nor `/metrics`).
    pub documented: bool,
}

/// One line of the [`table`]: a handler, where it is mounted and its part of the document.
pub(crate) struct Entry {
    endpoints: Vec<Endpoint>,
    operation: Option<utoipa::openapi::OpenApi>,
    handler: fn() -> actix_web::Route,
}

impl Entry {
    fn documented(operation: utoipa::openapi::OpenApi, handler: fn() -> actix_web::Route) -> Self {
        let endpoints = operation
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                methods(item).into_iter().map(|method| Endpoint {
                    method,
                    path: path.clone(),
                    documented: true,
                })
            })
            .collect();
        Self { endpoints, operation: Some(operation), handler }
    }

    fn undocumented(method: Method, path: &str, handler: fn() -> actix_web::Route) -> Self {
        let endpoints = vec![Endpoint { method, path: path.to_owned(), documented: false }];
        Self { endpoints, operation: None, handler }
    }

    /// Where it is mounted.
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Its operations, paths and the schemas they use, to merge into the document.
    pub(crate) fn into_operation(self) -> Option<utoipa::openapi::OpenApi> {
        self.operation
    }
}

/// The methods a path item documents.
fn methods(item: &utoipa::openapi::PathItem) -> Vec<Method> {
    [
        (&item.get, Method::GET),
        (&item.put, Method::PUT),
        (&item.post, Method::POST),
        (&item.delete, Method::DELETE),
        (&item.options, Method::OPTIONS),
        (&item.head, Method::HEAD),
        (&item.patch, Method::PATCH),
        (&item.trace, Method::TRACE),
    ]
    .into_iter()
    .filter_map(|(operation, method)| operation.is_some().then_some(method))
    .collect()
}

/// Mounts the [`table`]: one resource a path, with a route a method, so that any other
/// method on a known path answers 405 with `Allow`.
pub(crate) fn mount(cfg: &mut web::ServiceConfig) {
    let mut resources: Vec<(String, actix_web::Resource)> = Vec::new();
    for entry in table() {
        for endpoint in entry.endpoints() {
            let route = (entry.handler)().method(endpoint.method.clone());
            match resources.iter().position(|(path, _)| *path == endpoint.path) {
                Some(at) => {
                    let (path, resource) = resources.remove(at);
                    resources.insert(at, (path, resource.route(route)));
                }
                None => resources.push((endpoint.path.clone(), resource(&endpoint.path).route(route))),
            }
        }
    }
    for (_, resource) in resources {
        cfg.service(resource);
    }
}

/// Every method and path of the [`table`], for `Allow` and for tests.
pub fn endpoints() -> Vec<Endpoint> {
    table().iter().flat_map(|entry| entry.endpoints().to_vec()).collect()
}

/// The answers of every route that authenticates its caller by bearer token: the token
/// (and the account behind it) is checked against the database.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its documentation is used
pub(crate) enum Authenticated {
    /// Refused token.
    #[response(
        status = 401,
        description = "Missing, malformed, expired, retired or badly signed token, or a deactivated user"
    )]
    Unauthorized(ErrorBody),
    /// Database down.
    #[response(status = 503, description = "The database cannot be reached")]
    Unavailable(ErrorBody),
}

/// The answers of every route that reads a JSON body, besides its own 400.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its documentation is used
pub(crate) enum JsonBody {
    /// Too large.
    #[response(status = 413, description = "Body over 64 KiB")]
    TooLarge(ErrorBody),
    /// Not JSON.
    #[response(status = 415, description = "Body not sent as `application/json`")]
    NotJson(ErrorBody),
}

/// The answer for a known path with a method it does not support: 405 with the `Allow`
/// header RFC 9110 requires, listing the methods the OpenAPI document gives the route.
pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut response = ApiError::method_not_allowed().error_response();
    let allow = req.match_pattern().and_then(|pattern| crate::openapi::allowed_methods(&pattern));
    if let Some(value) = allow.and_then(|a| HeaderValue::from_str(a).ok()) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// A resource whose unsupported methods answer 405 in the contract's error shape.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

// Listing queries keep `limit` and `cursor` as plain fields: serde's `flatten` would turn
// them into strings and reject every number.

/// An optional enum filter from the query string; an unknown value is a 400.
pub(crate) fn parse_filter<T>(field: &'static str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr<Err = domain_events::model::UnknownValue>,
{
    value
        .filter(|v| !v.is_empty())
        .map(|v| services::validate::enum_value(field, v))
        .transpose()
        .map_err(|e| ApiError::validation(e.to_string()))
}
