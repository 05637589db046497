//! `GET /ws`: admitted as every realtime connection is ([`crate::realtime::admit`]: the
//! ticket spent only once the upgrade is valid too), then ws-bridge's session served as the
//! response body in WebSocket frames.
//!
//! No task and no channel per connection: the HTTP dispatcher polls the session whenever the
//! socket can take more, writes every frame that is ready with one syscall, and drops the
//! session when the socket goes away. Frames are the hub's shared bytes, framed once for all
//! clients ([`ws_bridge::Encoding::WebSocket`]); the client's frames are decoded here.

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
    let handshake = actix_http::ws::handshake(req.head())
        .map_err(|e| ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let (request, slot) = admission.spend_ticket(&state).await?;
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
                this.slot.ended(end);
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
