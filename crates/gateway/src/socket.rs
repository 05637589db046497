//! A WebSocket that owns its TCP socket once upgraded (under [`crate::http_server`]): the
//! session's frames go straight from the hub's shared bytes to the socket, several with one
//! `writev`, and the client's frames are read from the socket into a buffer that exists only
//! while a frame is arriving. No HTTP dispatcher — and none of its two 8 KiB buffers — stays
//! behind an open dashboard.
//!
//! Backpressure is the socket's: while the kernel will not take more, the session is not
//! polled (stats conflate on the hub's board, personal messages wait in the bounded mailbox)
//! and nothing more queues here than the one batch the socket refused. A socket that takes
//! nothing for [`STALLED_WRITE_TIMEOUT`] is closed and counted as too slow, so a close
//! ordered for it (deactivation, expiry, shutdown) waits at most that long.
//!
//! Architecture invariant: moves bytes; what to send is the session's (ws-bridge) and how
//! a connection is admitted is [`crate::ws`]'s.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{ErrorKind, IoSlice};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::rt::net::TcpStream;
use bytes::{Buf, BytesMut};
use futures_util::Stream;
use tracing::Instrument;
use ws_bridge::{ConnectionEnd, Outgoing, session};

use crate::ws::{Accepted, ClientBytes, ClientFrames, websocket_bytes};

/// How long a socket may take nothing while frames wait for it before it is closed.
pub const STALLED_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, after the close frame, the client may take to close its side (the closing
/// handshake) before the socket is dropped.
const CLOSING_TIMEOUT: Duration = Duration::from_secs(2);

/// Most frames gathered for one `writev`.
const MAX_BATCH: usize = 64;

/// Bytes read from the socket at a time (a client sends little: subscriptions and pongs).
const READ_CHUNK: usize = 4096;

/// Serves an admitted session on `io` until it ends, then closes the socket.
pub(crate) async fn serve(io: TcpStream, received: BytesMut, accepted: Accepted) {
    let Accepted { hub, config, request, slot, span } = accepted;
    let mut slot = slot.started();
    let io = Rc::new(io);
    let end = {
        let incoming = ClientFrames::new(SocketReader(io.clone()), received);
        let mut outgoing = pin!(session(hub, config, request, incoming));
        let mut pump = Pump { outbox: Outbox::default(), stalled: None, end: None };
        poll_fn(|cx| pump.poll(cx, &io, outgoing.as_mut())).instrument(span.clone()).await
    };
    span.in_scope(|| tracing::debug!(?end, "websocket closed"));
    slot.ended(end);
    drop(slot);
    if end.close_frame().is_some() {
        linger(&io).await;
    }
}

/// The session's frames on their way to the socket.
struct Pump {
    outbox: Outbox,
    /// Since the socket last took something while frames waited; `None` when it is not full.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How the session ended, once it has; its last frames may still be waiting.
    end: Option<ConnectionEnd>,
}

impl Pump {
    /// Moves frames from the session to the socket; ready once the session has ended and its
    /// last frame is written, or the socket is gone or stalled.
    fn poll<S: Stream<Item = Outgoing>>(
        &mut self,
        cx: &mut Context<'_>,
        io: &TcpStream,
        mut session: Pin<&mut S>,
    ) -> Poll<ConnectionEnd> {
        loop {
            // Only an empty outbox takes more: what the socket refuses waits on the board
            // (conflated) or in the mailbox (bounded), not here.
            let mut session_pending = false;
            if self.outbox.is_empty() {
                while self.end.is_none() && self.outbox.frames.len() < MAX_BATCH {
                    match session.as_mut().poll_next(cx) {
                        Poll::Ready(Some(Outgoing::End(end))) => self.end = Some(end),
                        Poll::Ready(Some(message)) => self.outbox.extend(websocket_bytes(&message)),
                        Poll::Ready(None) => self.end = Some(ConnectionEnd::SocketGone),
                        Poll::Pending => {
                            session_pending = true;
                            break;
                        }
                    }
                }
            }
            match self.outbox.flush(cx, io) {
                Err(()) => return Poll::Ready(ConnectionEnd::SocketGone),
                Ok(true) => self.stalled = None,
                Ok(false) => {}
            }
            if self.outbox.is_empty() {
                if let Some(end) = self.end {
                    return Poll::Ready(end);
                }
                if session_pending {
                    return Poll::Pending;
                }
                continue;
            }
            // The socket is full (its readiness is registered): wait, but not for ever.
            let deadline =
                self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(STALLED_WRITE_TIMEOUT)));
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(ConnectionEnd::TooSlow);
            }
            return Poll::Pending;
        }
    }
}

/// Frames accepted from the session and not yet taken by the socket, the first possibly in
/// part. Each is the hub's shared bytes: queuing one costs a reference count.
#[derive(Default)]
struct Outbox {
    frames: VecDeque<bytes::Bytes>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn extend(&mut self, frame: Option<bytes::Bytes>) {
        if let Some(frame) = frame.filter(|f| !f.is_empty()) {
            self.frames.push_back(frame);
        }
    }

    /// Writes as much as the socket takes, with one `writev` per round. `Ok(true)` when it
    /// took something; when it is full, its readiness is registered with `cx`.
    fn flush(&mut self, cx: &mut Context<'_>, io: &TcpStream) -> Result<bool, ()> {
        let mut progressed = false;
        while !self.frames.is_empty() {
            match io.poll_write_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(())) => {}
            }
            let mut slices = [IoSlice::new(&[]); MAX_BATCH];
            let mut count = 0;
            for (slice, frame) in slices.iter_mut().zip(&self.frames) {
                *slice = IoSlice::new(frame);
                count += 1;
            }
            match io.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(()),
                Ok(written) => {
                    self.advance(written);
                    progressed = true;
                }
                // Readiness was stale: polling it again registers the waker.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(progressed)
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.frames.front_mut() else { return };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.frames.pop_front();
        }
    }
}

/// The client's bytes, read from the socket the writer shares.
struct SocketReader(Rc<TcpStream>);

impl ClientBytes for SocketReader {
    fn poll_fill(&mut self, cx: &mut Context<'_>, buffer: &mut BytesMut) -> Poll<Option<Result<(), String>>> {
        loop {
            if let Err(e) = std::task::ready!(self.0.poll_read_ready(cx)) {
                return Poll::Ready(Some(Err(e.to_string())));
            }
            buffer.reserve(READ_CHUNK);
            match self.0.try_read_buf(buffer) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => return Poll::Ready(Some(Ok(()))),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Poll::Ready(Some(Err(e.to_string()))),
            }
        }
    }
}

/// The closing handshake's end: no more writes (FIN after the close frame), then what the
/// client still sends is read and dropped until it closes its side or [`CLOSING_TIMEOUT`].
/// Closing a socket with unread bytes would reset it, and a reset may destroy the close
/// frame before the client reads it.
async fn linger(io: &TcpStream) {
    if socket2::SockRef::from(io).shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0_u8; 512];
        loop {
            if io.readable().await.is_err() {
                return;
            }
            match io.try_read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(CLOSING_TIMEOUT, drain).await;
}
