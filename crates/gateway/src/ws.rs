//! `GET /ws`: admitted as every realtime connection is ([`crate::realtime::admit`]: the
//! ticket spent only once the upgrade is valid too), then ws-bridge's session served as the
//! response body in WebSocket frames.
//!
//! Two ways to carry the session, chosen by how the server was built:
//! - under [`crate::http_server`], the handler only admits; the upgraded connection then owns
//!   its socket ([`crate::socket`]): no HTTP dispatcher and none of its buffers remain;
//! - under any other actix server (an embedding application's `HttpServer`), the session is
//!   the `101` response's body ([`PushBody`]), polled by the HTTP dispatcher whenever the
//!   socket can take more.
//!
//! Either way there is no task and no channel per connection. Frames are the hub's shared
//! bytes, framed once for all clients ([`ws_bridge::Encoding::WebSocket`]); the client's
//! frames are decoded here ([`ClientFrames`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame as WsFrame, ProtocolError};
use actix_web::body::{BodyStream, MessageBody};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use ws_bridge::protocol::wire;
use ws_bridge::{Encoding, Incoming, Outgoing, session};

use crate::AppState;
use crate::error::ApiError;
use crate::limits::TransportKind;
use crate::realtime::{self, RealtimeQuery, SlotGuard};

/// Largest accepted client frame (contract: 64 KiB, else close 1009).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

pub(crate) async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<RealtimeQuery>,
) -> Result<HttpResponse, ApiError> {
    let admission = realtime::admit(&req, &state, &query, TransportKind::WebSocket).await?;
    let mut handshake = actix_http::ws::handshake(req.head())
        .map_err(|e| ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let (request, slot) = admission.spend_ticket(&state).await?;
    let request_id =
        req.extensions().get::<crate::access_log::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let span = tracing::info_span!("ws", id = %request_id, user = %request.user.username);
    if req.extensions().contains::<SocketHandover>() {
        let accepted = Accepted { hub: state.hub.clone(), config: state.ws.clone(), request, slot, span };
        let mut response: HttpResponse = handshake.finish().map_into_boxed_body().into();
        response.extensions_mut().insert(accepted);
        return Ok(response);
    }
    let incoming = ClientFrames::new(body.into_inner(), BytesMut::new());
    let outgoing = session(state.hub.clone(), state.ws.clone(), request, incoming);
    let body = PushBody { outgoing: Box::pin(outgoing), span, slot: slot.started() };
    let response = handshake.message_body(BodyStream::new(body).boxed()).map_err(|e| {
        ApiError::new(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?;
    Ok(response.into())
}

/// Set on an upgrade request by [`crate::http_server`]: the connection will be handed over
/// after a `101`, so the handler answers with [`Accepted`] instead of a body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketHandover;

/// A session admitted and waiting for its socket (in the `101` response's extensions).
pub(crate) struct Accepted {
    pub(crate) hub: ws_bridge::Hub,
    pub(crate) config: ws_bridge::ConnectionConfig,
    pub(crate) request: ws_bridge::ConnectionRequest,
    pub(crate) slot: SlotGuard,
    pub(crate) span: tracing::Span,
}

/// The bytes of a session's message on a WebSocket; `None` for [`Outgoing::End`].
pub(crate) fn websocket_bytes(message: &Outgoing) -> Option<Bytes> {
    Some(match message {
        Outgoing::Text(frame) => frame.encoded(Encoding::WebSocket),
        Outgoing::Ping => Bytes::from_static(PING),
        Outgoing::Pong(payload) => wire::websocket(0xA, payload),
        Outgoing::Close { code, reason } => {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason.as_bytes());
            wire::websocket(0x8, &payload)
        }
        Outgoing::End(_) => return None,
    })
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
            Some(Outgoing::End(end)) => {
                tracing::debug!(?end, "websocket closed");
                this.slot.ended(end);
                None
            }
            Some(message) => websocket_bytes(&message).map(Ok),
            None => None,
        })
    }
}

/// Where a client's bytes come from: the dispatcher's payload, or the socket itself.
pub(crate) trait ClientBytes {
    /// Appends what arrived to `buffer`: `Some(Ok)` when something did, `None` at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, buffer: &mut BytesMut) -> Poll<Option<Result<(), String>>>;
}

impl ClientBytes for actix_http::Payload {
    fn poll_fill(&mut self, cx: &mut Context<'_>, buffer: &mut BytesMut) -> Poll<Option<Result<(), String>>> {
        Poll::Ready(match std::task::ready!(Pin::new(self).poll_next(cx)) {
            Some(Ok(bytes)) => {
                buffer.extend_from_slice(&bytes);
                Some(Ok(()))
            }
            Some(Err(e)) => Some(Err(e.to_string())),
            None => None,
        })
    }
}

/// The client's frames, decoded from the upgraded connection's bytes (masked, at most
/// [`MAX_FRAME_BYTES`] each). Holds no buffer until the client sends something.
pub(crate) struct ClientFrames<B> {
    source: B,
    buffer: BytesMut,
    codec: Codec,
    ended: bool,
}

impl<B: ClientBytes> ClientFrames<B> {
    /// Frames from `source`, after those in `received` (bytes read with the handshake).
    pub(crate) fn new(source: B, received: BytesMut) -> Self {
        Self { source, buffer: received, codec: Codec::new().max_size(MAX_FRAME_BYTES), ended: false }
    }

    /// Bytes allocated for frames not yet complete.
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.buffer.capacity()
    }
}

impl<B: ClientBytes + Unpin> Stream for ClientFrames<B> {
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
            match std::task::ready!(this.source.poll_fill(cx, &mut this.buffer)) {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Incoming::Error(e)));
                }
                None => this.ended = true,
            }
        }
    }
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
