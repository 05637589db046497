//! `GET /ws`: authenticate before the upgrade (a token, or a single-use ticket spent only
//! once every other check has passed), then hand the socket to ws-bridge's session.

use std::time::SystemTime;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message, ProtocolError};
use domain_events::model::Actor;
use futures_util::StreamExt;
use serde::Deserialize;
use tracing::Instrument;
use ws_bridge::connection::{Closed, MAX_SUBSCRIPTIONS, parse_topics};
use ws_bridge::{ConnectionRequest, Credential, Incoming, Outgoing, Transport, serve_connection};

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
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            state.connections.release_slot(slot);
            return Err(ApiError::bad_request(format!("not a WebSocket upgrade: {e}")));
        }
    };
    if let Some(ticket) = caller.ticket {
        // Spent last; of two upgrades racing with one ticket, one wins.
        let spent = state.db(async move |s| s.tickets.redeem(&ticket).await).await;
        if !matches!(spent, Ok(Some(_))) {
            state.connections.release_slot(slot);
            spent?;
            return Err(ApiError::unauthorized("the ticket is unknown, used or expired"));
        }
    }
    let incoming = stream.max_frame_size(MAX_FRAME_BYTES).filter_map(|item| async move { incoming(item) });
    let credential =
        Credential { expires_at: Some(caller.expires_at), issued_at_ms: Some(caller.issued_at_ms) };
    let request = ConnectionRequest { user: caller.actor, topics, credential };
    let request_id =
        req.extensions().get::<crate::access_log::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let span = tracing::info_span!("ws", id = %request_id, user = %request.user.username);
    actix_web::rt::spawn(
        async move {
            let username = request.user.username.clone();
            let transport = SessionTransport(session);
            let end = serve_connection(&state.hub, &state.ws, request, transport, Box::pin(incoming)).await;
            state.connections.finish(slot, end);
            tracing::debug!(user = %username, ?end, "websocket closed");
        }
        .instrument(span),
    );
    Ok(response)
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

fn incoming(item: Result<Message, ProtocolError>) -> Option<Incoming> {
    Some(match item {
        Ok(Message::Text(text)) => Incoming::Text(text.to_string()),
        Ok(Message::Binary(_) | Message::Continuation(_)) => Incoming::Binary,
        Ok(Message::Ping(bytes)) => Incoming::Ping(bytes.to_vec()),
        Ok(Message::Pong(_)) => Incoming::Pong,
        Ok(Message::Close(_)) => Incoming::Close,
        Ok(Message::Nop) => return None,
        Err(ProtocolError::Overflow) => Incoming::TooLarge,
        Err(e) => Incoming::Error(e.to_string()),
    })
}

/// actix-ws's session as a ws-bridge transport. Its channel is bounded (32 frames), so a
/// client that stops reading makes `send` wait, and the session's send timeout drops it.
struct SessionTransport(actix_ws::Session);

impl Transport for SessionTransport {
    async fn send(&mut self, message: Outgoing) -> Result<(), Closed> {
        let result = match message {
            Outgoing::Text(frame) => self.0.text(frame.text()).await,
            Outgoing::Ping => self.0.ping(b"").await,
            Outgoing::Pong(bytes) => self.0.pong(&bytes).await,
            Outgoing::Close { code, reason } => {
                let reason =
                    CloseReason { code: CloseCode::from(code), description: Some(reason.to_owned()) };
                self.0.clone().close(Some(reason)).await
            }
        };
        result.map_err(|_| Closed)
    }
}
