//! Server-Sent Events (contract section 8): `GET /sse` serves ws-bridge's session as an
//! event stream, and `POST /api/v1/realtime/{connectionId}` carries the client's messages
//! to it, on whichever instance holds it ([`crate::realtime::Inboxes`]).
//!
//! The same session as `/ws`, only other bytes: every message is the frame's shared
//! `data: <json>\n\n` ([`ws_bridge::Encoding::EventStream`]), a ping becomes a comment line
//! (the client cannot answer it, so silence never ends the stream) and a close frame
//! becomes a `close` event before the stream ends. Never compressed: `Compress` would hold
//! the small chunks back (`Content-Encoding: identity` makes it pass the body through).
//!
//! One reason to change: the SSE wire. Admission is [`crate::realtime`]'s; the protocol's
//! semantics are ws-bridge's.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use domain_events::RelayOutcome;
use futures_util::{Stream, StreamExt};
use ws_bridge::protocol::server;
use ws_bridge::{ConnectionConfig, Encoding, Outgoing, session};

use crate::auth::AuthUser;
use crate::error::{ApiError, ErrorBody};
use crate::limits::TransportKind;
use crate::realtime::{self, RealtimeQuery, SlotGuard};
use crate::routes::{Authenticated, JsonBody};
use crate::{AppState, MAX_BODY_BYTES};

/// The longest silence on a stream: a comment line goes out at least this often, so
/// proxies do not close an idle stream (contract: at most 25 s).
pub const MAX_KEEPALIVE: Duration = Duration::from_secs(25);

/// The session's timings over SSE: the heartbeat (a comment) at most every
/// [`MAX_KEEPALIVE`], and no heartbeat timeout (the client has no way to answer).
pub fn session_config(websocket: &ConnectionConfig) -> ConnectionConfig {
    ConnectionConfig {
        heartbeat_interval: websocket.heartbeat_interval.min(MAX_KEEPALIVE),
        missed_heartbeats: None,
        ..websocket.clone()
    }
}

/// `GET /sse`: the same checks, in the same order, as `/ws`; then the event stream.
pub(crate) async fn open(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<RealtimeQuery>,
) -> Result<HttpResponse, ApiError> {
    let admission = realtime::admit(&req, &state, &query, TransportKind::ServerSentEvents).await?;
    let (mut request, slot) = admission.spend_ticket(&state).await?;
    let (connection_id, inbox) = state.inboxes.open(request.user.user_id);
    let request_id =
        req.extensions().get::<crate::access_log::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let span = tracing::info_span!("sse", id = %request_id, user = %request.user.username);
    request.connection_id = Some(connection_id);
    let outgoing = session(state.hub.clone(), session_config(&state.ws), request, inbox);
    let body = EventStreamBody { outgoing: Box::pin(outgoing), span, slot: slot.started() };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .streaming(body))
}

/// The session's messages as event-stream bytes: the response body the dispatcher polls.
struct EventStreamBody<S> {
    outgoing: Pin<Box<S>>,
    span: tracing::Span,
    slot: SlotGuard,
}

/// The keep-alive: a comment line, which an `EventSource` ignores.
const KEEPALIVE: &[u8] = b":\n\n";

impl<S: Stream<Item = Outgoing>> Stream for EventStreamBody<S> {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        loop {
            return Poll::Ready(match std::task::ready!(this.outgoing.as_mut().poll_next(cx)) {
                Some(Outgoing::Text(frame)) => Some(Ok(frame.encoded(Encoding::EventStream))),
                Some(Outgoing::Ping) => Some(Ok(Bytes::from_static(KEEPALIVE))),
                // Only a WebSocket client sends pings.
                Some(Outgoing::Pong(_)) => continue,
                Some(Outgoing::Close { code, .. }) => {
                    Some(Ok(server::close(code).encoded(Encoding::EventStream)))
                }
                Some(Outgoing::End(end)) => {
                    tracing::debug!(?end, "event stream ended");
                    this.slot.ended(end);
                    None
                }
                None => None,
            });
        }
    }
}

/// `POST /api/v1/realtime/{connectionId}`: one client message for an SSE connection of the
/// caller's, delivered wherever it lives. `202` once queued for the session (whose replies
/// come on the stream); `415` unless sent as `application/json`; `400` if it is not a JSON object with a string `type`; `413` over
/// 64 KiB; `404` if no instance holds a connection of the caller's with that id; `429`
/// (`Retry-After: 1`) if the connection already has 32 messages waiting.
#[utoipa::path(
    post,
    path = "/api/v1/realtime/{connectionId}",
    tag = "realtime",
    params(("connectionId" = String, Path, description = "The `connectionId` of the stream's `connected` message")),
    request_body(
        content = Object,
        content_type = "application/json",
        description = "A client message as a WebSocket client would send it: a JSON object with a string `type` (`ping`, `subscribe`, `unsubscribe`, `viewing`, `typing`); replies come on the stream"
    ),
    responses(
        (status = 202, description = "Queued for the connection (an unknown type or a bad payload is answered on the stream with `error`)"),
        (status = 400, description = "Not a JSON object with a string `type`", body = ErrorBody),
        (status = 404, description = "No instance holds a connection of the caller's with this id", body = ErrorBody),
        (status = 429, description = "The connection has too many messages waiting", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        Authenticated,
        JsonBody,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn realtime_message(
    req: HttpRequest,
    user: AuthUser,
    path: web::Path<String>,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if req.content_type() != "application/json" {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent as application/json",
        ));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than 64 KiB",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let text =
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let typed = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|value| value.get("type").is_some_and(serde_json::Value::is_string));
    if !typed {
        return Err(ApiError::bad_request("the body must be a JSON object with a string \"type\""));
    }
    let cluster = state.hub.cluster();
    match state.inboxes.deliver(cluster.as_ref(), &path, user.actor.user_id, text).await {
        RelayOutcome::Delivered => Ok(HttpResponse::Accepted().finish()),
        RelayOutcome::Busy => {
            Err(ApiError::too_many_requests("this connection has too many messages waiting; try again", 1))
        }
        RelayOutcome::Unknown => Err(ApiError::not_found("no such realtime connection of yours")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keepalive_is_at_most_25_s_and_silence_never_ends_a_stream() {
        let slow =
            ConnectionConfig { heartbeat_interval: Duration::from_secs(60), ..ConnectionConfig::default() };
        let config = session_config(&slow);
        assert_eq!(config.heartbeat_interval, MAX_KEEPALIVE);
        assert_eq!(config.missed_heartbeats, None);
        assert_eq!(config.messages_per_second, slow.messages_per_second);
        let fast =
            ConnectionConfig { heartbeat_interval: Duration::from_secs(1), ..ConnectionConfig::default() };
        assert_eq!(session_config(&fast).heartbeat_interval, Duration::from_secs(1));
    }
}
