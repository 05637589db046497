//! `GET /ws`: authenticate before the upgrade (a token, or a single-use ticket spent only
//! once every other check has passed), then serve ws-bridge's session as the response body.
//!
//! No task and no channel per connection: the HTTP dispatcher polls the session whenever the
//! socket can take more, writes every frame that is ready with one syscall, and drops the
//! session when the socket goes away. Frames are the hub's shared bytes, framed once for all
//! clients ([`ws_bridge::Encoding::WebSocket`]); the client's frames are decoded here.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame as WsFrame, ProtocolError};
use actix_web::body::{BodyStream, MessageBody};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use domain_events::model::Actor;
use futures_util::Stream;
use serde::Deserialize;
use ws_bridge::connection::{MAX_SUBSCRIPTIONS, parse_topics};
use ws_bridge::protocol::wire;
use ws_bridge::{ConnectionRequest, Credential, Encoding, Incoming, Outgoing, session};

use crate::AppState;
use crate::error::ApiError;

/// Largest accepted client frame (contract: 64 KiB, else close 1009).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
    /// A single-use ticket from `POST /api/v1/ws-ticket`, instead of a token.
    ticket: Option<String>,
    /// `a,b`: the topics to start with (default: the three stats topics).
    topics: Option<String>,
}

pub(crate) async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, ApiError> {
    // Order: a browser from a foreign site learns nothing (403), then who it is (401),
    // then what it asks for (400), then whether there is room (503). A ticket is only looked
    // at until every check has passed and the handshake is valid; then it is spent, so a
    // refused upgrade leaves it usable.
    crate::limits::check_origin(&req, &state.limits)?;
    let caller = authenticate(&state, &query).await?;
    let topics = match query.topics.as_deref() {
        None => state.hub.topics().defaults(),
        Some(list) => {
            let names: Vec<&str> = list.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
            if names.len() > MAX_SUBSCRIPTIONS {
                return Err(ApiError::validation(format!("at most {MAX_SUBSCRIPTIONS} topics")));
            }
            parse_topics(&names, state.hub.topics())
                .map_err(|e| ApiError::validation(format!("topics: {e}")))?
        }
    };
    if state.hub.is_shutting_down() {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let slot = state.connections.acquire(caller.actor.user_id, &state.limits)?;
    let slot = SlotGuard { counter: state.connections.clone(), slot: Some(slot), started: false, end: None };
    let handshake = actix_http::ws::handshake(req.head())
        .map_err(|e| ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    if let Some(ticket) = caller.ticket {
        // Spent last; of two upgrades racing with one ticket, one wins.
        let spent = state.db(async move |s| s.tickets.redeem(&ticket).await).await;
        if !matches!(spent, Ok(Some(_))) {
            spent?;
            return Err(ApiError::unauthorized("the ticket is unknown, used or expired"));
        }
    }
    let credential =
        Credential { expires_at: Some(caller.expires_at), issued_at_ms: Some(caller.issued_at_ms) };
    let request = ConnectionRequest { user: caller.actor, topics, credential };
    let request_id =
        req.extensions().get::<crate::access_log::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let span = tracing::info_span!("ws", id = %request_id, user = %request.user.username);
    let incoming = ClientFrames::new(body.into_inner());
    let outgoing = session(state.hub.clone(), state.ws.clone(), request, incoming);
    let body = PushBody { outgoing: Box::pin(outgoing), span, slot: slot.started() };
    let mut handshake = handshake;
    let response = handshake.message_body(BodyStream::new(body).boxed()).map_err(|e| {
        ApiError::new(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?;
    Ok(response.into())
}

/// Gives the connection's place back when the connection ends, however it ends, and counts
/// the end by its reason.
struct SlotGuard {
    counter: Arc<crate::limits::ConnectionCounter>,
    slot: Option<crate::limits::OwnedSlot>,
    /// Whether a session was started; `end` says how it ended (`None`: the socket went away).
    started: bool,
    end: Option<ws_bridge::ConnectionEnd>,
}

impl SlotGuard {
    fn started(mut self) -> Self {
        self.started = true;
        self
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if self.started {
                let end = self.end.unwrap_or(ws_bridge::ConnectionEnd::SocketGone);
                self.counter.finish(slot, end);
            } else {
                self.counter.release_slot(slot);
            }
        }
    }
}

/// The session's messages as WebSocket bytes: the response body the dispatcher polls.
struct PushBody<S> {
    outgoing: Pin<Box<S>>,
    span: tracing::Span,
    slot: SlotGuard,
}

/// A ping with no payload, the same bytes every time.
const PING: &[u8] = &[0x89, 0x00];

impl<S: Stream<Item = Outgoing>> Stream for PushBody<S> {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        Poll::Ready(match std::task::ready!(this.outgoing.as_mut().poll_next(cx)) {
            Some(Outgoing::Text(frame)) => Some(Ok(frame.encoded(Encoding::WebSocket))),
            Some(Outgoing::Ping) => Some(Ok(Bytes::from_static(PING))),
            Some(Outgoing::Pong(payload)) => Some(Ok(wire::websocket(0xA, &payload))),
            Some(Outgoing::Close { code, reason }) => {
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(reason.as_bytes());
                Some(Ok(wire::websocket(0x8, &payload)))
            }
            Some(Outgoing::End(end)) => {
                tracing::debug!(?end, "websocket closed");
                this.slot.end = Some(end);
                None
            }
            None => None,
        })
    }
}

/// The client's frames, decoded from the upgraded connection's bytes (masked, at most
/// [`MAX_FRAME_BYTES`] each). Holds no buffer until the client sends something.
struct ClientFrames {
    payload: actix_http::Payload,
    buffer: BytesMut,
    codec: Codec,
    ended: bool,
}

impl ClientFrames {
    fn new(payload: actix_http::Payload) -> Self {
        Self { payload, buffer: BytesMut::new(), codec: Codec::new().max_size(MAX_FRAME_BYTES), ended: false }
    }
}

impl Stream for ClientFrames {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let this = &mut *self;
        loop {
            match this.codec.decode(&mut this.buffer) {
                Ok(Some(frame)) => {
                    if this.buffer.is_empty() {
                        // An idle connection keeps no buffer.
                        this.buffer = BytesMut::new();
                    }
                    return Poll::Ready(Some(incoming(frame)));
                }
                Ok(None) => {}
                Err(ProtocolError::Overflow) => {
                    this.ended = true;
                    return Poll::Ready(Some(Incoming::TooLarge));
                }
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Incoming::Error(e.to_string())));
                }
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.payload).poll_next(cx)) {
                Some(Ok(bytes)) => this.buffer.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Incoming::Error(e.to_string())));
                }
                None => this.ended = true,
            }
        }
    }
}

/// Who opens a socket, from what, and until when.
struct Caller {
    actor: Actor,
    /// When the session must end (the token's expiry).
    expires_at: SystemTime,
    /// The token's `iat` (for a ticket, its token's), in milliseconds.
    issued_at_ms: i64,
    /// The ticket to spend once every other check has passed.
    ticket: Option<String>,
}

/// The caller of an upgrade, from `?ticket=` (looked at, not yet spent) or `?token=` (a
/// JWT), checked against the user's current state: a deactivated user, or a credential
/// issued before a role or password change, is refused with 401.
async fn authenticate(state: &AppState, query: &WsQuery) -> Result<Caller, ApiError> {
    let caller = if let Some(ticket) = query.ticket.clone() {
        let looked_up = ticket.clone();
        let Some(grant) = state.db(async move |s| s.tickets.peek(&looked_up).await).await? else {
            return Err(ApiError::unauthorized("the ticket is unknown, used or expired"));
        };
        Caller {
            actor: grant.actor,
            expires_at: SystemTime::from(grant.session_expires_at),
            issued_at_ms: grant.token_issued_at_ms,
            ticket: Some(ticket),
        }
    } else {
        let token = query
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("missing token"))?;
        let claims = state.jwt.verify(token)?;
        Caller {
            actor: claims.actor()?,
            expires_at: claims.expires_at(),
            issued_at_ms: claims.iat.millis(),
            ticket: None,
        }
    };
    let actor =
        crate::auth::current_actor(state, caller.actor.user_id, caller.actor.role, caller.issued_at_ms)
            .await?;
    Ok(Caller { actor, ..caller })
}

fn incoming(frame: WsFrame) -> Incoming {
    match frame {
        WsFrame::Text(bytes) => match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Incoming::Text(text),
            Err(_) => Incoming::Error("a text frame that is not UTF-8".to_owned()),
        },
        WsFrame::Binary(_) | WsFrame::Continuation(_) => Incoming::Binary,
        WsFrame::Ping(bytes) => Incoming::Ping(bytes.to_vec()),
        WsFrame::Pong(_) => Incoming::Pong,
        WsFrame::Close(_) => Incoming::Close,
    }
}
