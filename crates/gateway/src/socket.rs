//! A WebSocket that owns its TCP socket once upgraded (under [`crate::http_server`]): the
//! session's frames go straight from the hub's shared bytes to the socket, several with one
//! `send`, and the client's frames are read from the socket into a buffer that exists only
//! while a frame is arriving. No HTTP dispatcher — and none of its two 8 KiB buffers — stays
//! behind an open dashboard.
//!
//! Stats and presence values do not even wake the connection: each worker thread has one
//! [`WorkerFanout`] task that, when the hub's board changes, writes the newer values to every
//! idle connection of that worker ([`ws_bridge::direct_session`]) — one wake-up per change
//! and worker, then one `send` per socket, as the kernel's floor does. A connection that is
//! busy (its session has something to send, or its socket is full) takes them itself later.
//!
//! Backpressure is the socket's: while the kernel will not take more, the session is not
//! polled (stats conflate on the hub's board, personal messages wait in the bounded mailbox)
//! and nothing more queues here than the one batch the socket refused. A socket that takes
//! nothing for [`STALLED_WRITE_TIMEOUT`] is closed and counted as too slow, so a close
//! ordered for a client that reads nothing (deactivation, expiry, shutdown) waits at most
//! that long; one that reads slowly gets what was queued before the close, then the close.
//!
//! Architecture invariant: moves bytes; what to send is the session's (ws-bridge) and how
//! a connection is admitted is [`crate::ws`]'s.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io::{ErrorKind, IoSlice};
use std::pin::{Pin, pin};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_web::rt::net::TcpStream;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::Interest;
use tracing::Instrument;
use ws_bridge::{
    BoardChanges, BoardView, ConnectionEnd, DirectFeed, Encoding, Hub, Outgoing, direct_session,
};

use crate::ws::{Accepted, ClientBytes, ClientFrames, websocket_bytes};

/// How long a socket may take nothing while frames wait for it before it is closed.
pub const STALLED_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, after the close frame, the client may take to close its side (the closing
/// handshake) before the socket is dropped.
const CLOSING_TIMEOUT: Duration = Duration::from_secs(2);

/// Most frames gathered for one `send`.
const MAX_BATCH: usize = 64;

/// Bytes read from the socket at a time (a client sends little: subscriptions and pongs).
const READ_CHUNK: usize = 4096;

/// Serves an admitted session on `io` until it ends, then closes the socket.
pub(crate) async fn serve(io: TcpStream, received: BytesMut, accepted: Accepted) {
    let Accepted { hub, config, request, slot, span } = accepted;
    let mut slot = slot.started();
    let fanout = WorkerFanout::of(&hub);
    let (end, connection) = {
        let (connection, outgoing) = Connection::open(io, received, hub, config, request);
        let _member = fanout.join(connection.clone());
        let mut outgoing = pin!(outgoing);
        let mut pump = Pump { stalled: None, end: None };
        let end = poll_fn(|cx| pump.poll(cx, &connection, outgoing.as_mut())).instrument(span.clone()).await;
        (end, connection)
    };
    span.in_scope(|| tracing::debug!(?end, "websocket closed"));
    slot.ended(end);
    drop(slot);
    if end.close_frame().is_some() {
        linger(&connection.io).await;
    }
}

/// One WebSocket, shared by its own task (the [`Pump`]) and its worker's [`WorkerFanout`].
struct Connection {
    /// Inline, not behind another pointer: the fan-out writes to thousands of these per
    /// change, and each pointer followed is a cache miss.
    io: TcpStream,
    /// What the socket has not taken yet, in order. Only an empty outbox lets the fan-out
    /// write directly (order is kept).
    outbox: RefCell<Outbox>,
    direct: DirectFeed,
    /// The connection's task, for the fan-out to wake.
    waker: RefCell<Option<Waker>>,
    /// A direct write failed: the socket is gone.
    failed: Cell<bool>,
    /// Its place in the worker's list.
    index: Cell<usize>,
}

impl Connection {
    /// The connection and its session, which reads from the connection (its reader refers
    /// back to it). A function of its own, not code in [`serve`]: what it builds with would
    /// otherwise be laid out in `serve`'s future, kept for the connection's life.
    fn open(
        io: TcpStream,
        received: BytesMut,
        hub: Hub,
        config: ws_bridge::ConnectionConfig,
        request: ws_bridge::ConnectionRequest,
    ) -> (Rc<Connection>, impl Stream<Item = Outgoing> + use<>) {
        let mut outgoing = None;
        let connection = Rc::new_cyclic(|this: &Weak<Connection>| {
            let incoming = ClientFrames::new(SocketReader(this.clone()), received);
            let (stream, direct) = direct_session(hub, config, request, incoming);
            outgoing = Some(stream);
            Connection {
                io,
                outbox: RefCell::new(Outbox::default()),
                direct,
                waker: RefCell::new(None),
                failed: Cell::new(false),
                index: Cell::new(usize::MAX),
            }
        });
        let Some(outgoing) = outgoing else { unreachable!("`Rc::new_cyclic` calls its closure once") };
        (connection, outgoing)
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Takes the indexes in `view` of the board's newer values into `picks` if the
    /// connection is idle, for [`Connection::write_direct`] to write before anything else
    /// runs on this thread; otherwise leaves them to its session (poked).
    fn take_direct(&self, now: tokio::time::Instant, view: &BoardView, picks: &mut Vec<u32>) {
        if self.failed.get() || !self.direct.may_write(now) {
            // Busy: its session takes the newer values before it waits again. Or closing:
            // its session is about to send the close, and nothing goes before it.
            return;
        }
        if !self.outbox.borrow().is_empty() {
            // Its socket is full: the session takes them once the outbox has drained.
            self.direct.poke();
            return;
        }
        if !self.direct.take_newer_in(view, picks) {
            // Shutting down (the session sends the close), or values wait in its feed.
            self.direct.poke();
            self.wake();
        }
    }

    /// Writes the frames `picks` names in `wire` (a view's frames, encoded), taken by
    /// [`Connection::take_direct`] with nothing run on this thread since (so the outbox is
    /// still empty); returns how many it handed on (written or queued).
    fn write_direct(&self, wire: &[Option<Bytes>], picks: &[u32]) -> u64 {
        if self.direct.is_closing() {
            // A close was ordered (from another thread) since they were taken: nothing goes
            // before the close, and the session is about to send it. (An expiry is checked
            // once per chunk, as the session's own timer has that slack too: a credential
            // that expires within the chunk's ~1 ms may see one more value.)
            return 0;
        }
        debug_assert!(
            picks.iter().all(|&pick| wire.get(pick as usize).is_some_and(Option::is_some)),
            "every pick names a value of the view"
        );
        let frames = || picks.iter().filter_map(|&pick| wire.get(pick as usize).and_then(Option::as_ref));
        // Bare: the outbox is empty, so the socket is not known to be full.
        let written = send_frames(&self.io, frames());
        let total: usize = frames().map(Bytes::len).sum();
        let mut outbox = self.outbox.borrow_mut();
        match written {
            Ok(n) if n == total => {}
            Ok(n) => {
                outbox.frames.extend(frames().cloned());
                outbox.advance(n);
                self.wake();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                outbox.frames.extend(frames().cloned());
                self.wake();
            }
            Err(e) => {
                log_send_error(&e);
                self.failed.set(true);
                self.wake();
                return 0;
            }
        }
        picks.len() as u64
    }
}

/// The WebSocket connections of one worker thread on one hub, and the task that writes the
/// board's changes to them.
struct WorkerFanout {
    hub: Hub,
    connections: RefCell<Vec<Rc<Connection>>>,
    /// Ends the task once the fan-out is gone (its worker's last connection left).
    retired: Rc<tokio::sync::Notify>,
}

impl Drop for WorkerFanout {
    fn drop(&mut self) {
        self.retired.notify_one();
    }
}

thread_local! {
    /// This worker's fan-outs (one per hub; a server has one hub).
    static FANOUTS: RefCell<Vec<Rc<WorkerFanout>>> = const { RefCell::new(Vec::new()) };
}

impl WorkerFanout {
    /// This worker's fan-out for `hub`, started on first use.
    fn of(hub: &Hub) -> Rc<Self> {
        FANOUTS.with_borrow_mut(|fanouts| {
            if let Some(fanout) = fanouts.iter().find(|f| f.hub.is(hub)) {
                return fanout.clone();
            }
            let retired = Rc::new(tokio::sync::Notify::new());
            let fanout = Rc::new(WorkerFanout {
                hub: hub.clone(),
                connections: RefCell::new(Vec::new()),
                retired: retired.clone(),
            });
            // Changes are watched from now on, before any connection of this fan-out
            // registers: none can fall between its snapshot and the first pass.
            actix_web::rt::spawn(fan_out(Rc::downgrade(&fanout), hub.clone(), hub.board_changes(), retired));
            fanouts.push(fanout.clone());
            fanout
        })
    }

    fn join(self: &Rc<Self>, connection: Rc<Connection>) -> Membership {
        let mut connections = self.connections.borrow_mut();
        connection.index.set(connections.len());
        connections.push(connection.clone());
        Membership { fanout: self.clone(), connection }
    }
}

/// A connection's place in its worker's fan-out, given back when it ends.
struct Membership {
    fanout: Rc<WorkerFanout>,
    connection: Rc<Connection>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut connections = self.fanout.connections.borrow_mut();
        let index = self.connection.index.get();
        if index < connections.len() && Rc::ptr_eq(&connections[index], &self.connection) {
            connections.swap_remove(index);
            if let Some(moved) = connections.get(index) {
                moved.index.set(index);
            }
        }
        if connections.is_empty() {
            // The last one here: the fan-out (its task, its hold on the hub) goes too.
            FANOUTS.with_borrow_mut(|fanouts| fanouts.retain(|f| !Rc::ptr_eq(f, &self.fanout)));
        }
    }
}

/// Connections written between two yields of a pass.
const PASS_CHUNK: usize = 256;

/// The worker's fan-out task: on every board change, the newer values to every idle
/// connection of the worker.
async fn fan_out(
    fanout: Weak<WorkerFanout>,
    hub: Hub,
    mut changes: BoardChanges,
    retired: Rc<tokio::sync::Notify>,
) {
    let mut scratch = PassScratch::default();
    // A change came during the last pass: the connections it had already written need
    // another pass, at once.
    let mut again = false;
    loop {
        if !again {
            tokio::select! {
                changed = changes.changed() => if !changed { return },
                () = retired.notified() => return,
            }
        }
        // This pass's connections. One that leaves during the pass is skipped (its session is
        // gone, so it may not be written); one that joins takes the newest values itself.
        let Some(connections) = fanout.upgrade().map(|f| f.connections.borrow().clone()) else { return };
        let (handed_on, changed_meanwhile) = pass(&connections, &mut changes, &mut scratch).await;
        again = changed_meanwhile;
        hub.metrics().frames_sent.fetch_add(handed_on, Ordering::Relaxed);
    }
}

/// What a fan-out pass needs of a connection.
trait DirectTarget {
    /// Appends to `picks` the indexes of `view`'s values the connection is to get now.
    fn take_direct(&self, now: tokio::time::Instant, view: &BoardView, picks: &mut Vec<u32>);
    /// Writes those values' `wire` bytes; returns how many frames it handed on.
    fn write_direct(&self, wire: &[Option<Bytes>], picks: &[u32]) -> u64;
}

impl DirectTarget for Rc<Connection> {
    fn take_direct(&self, now: tokio::time::Instant, view: &BoardView, picks: &mut Vec<u32>) {
        Connection::take_direct(self, now, view, picks);
    }

    fn write_direct(&self, wire: &[Option<Bytes>], picks: &[u32]) -> u64 {
        Connection::write_direct(self, wire, picks)
    }
}

/// A pass's buffers, kept between passes.
#[derive(Default)]
struct PassScratch {
    picks: Vec<u32>,
    taken: Vec<(usize, std::ops::Range<usize>)>,
}

/// One pass over `connections`: the frames handed on, and whether the board changed during
/// it (the connections written before that change then need another pass).
async fn pass<T: DirectTarget>(
    connections: &[T],
    changes: &mut BoardChanges,
    scratch: &mut PassScratch,
) -> (u64, bool) {
    let PassScratch { picks, taken } = scratch;
    let mut handed_on = 0;
    let mut changed_meanwhile = false;
    // The board read at the start and again only when it changed, its frames encoded once
    // per read: each connection then costs no lock and no reference count, only its own state
    // and a `send`. Reading it marks what it holds as seen.
    let mut view = changes.newer_view().unwrap_or_else(|| changes.view());
    let mut wire = wire_frames(&view);
    // A pass over thousands of sockets takes milliseconds: the worker's requests,
    // handshakes and close orders run between chunks.
    for (number, chunk) in connections.chunks(PASS_CHUNK).enumerate() {
        // A change since the chunk before goes to the rest of this pass now, not after it.
        if number > 0
            && let Some(newer) = changes.newer_view()
        {
            view = newer;
            wire = wire_frames(&view);
            changed_meanwhile = true;
        }
        // In two rounds: first what each connection is to get (its state, read from memory
        // that is cold by now: these reads overlap, as no system call sits between them),
        // then one `send` each.
        let now = tokio::time::Instant::now();
        picks.clear();
        taken.clear();
        for (index, connection) in chunk.iter().enumerate() {
            let start = picks.len();
            connection.take_direct(now, &view, picks);
            if picks.len() > start {
                taken.push((index, start..picks.len()));
            }
        }
        for (index, range) in taken.drain(..) {
            handed_on += chunk[index].write_direct(&wire, &picks[range]);
        }
        tokio::task::yield_now().await;
    }
    (handed_on, changed_meanwhile)
}

/// A view's frames, encoded for the socket once per view.
fn wire_frames(view: &BoardView) -> Vec<Option<Bytes>> {
    view.frames().map(|f| f.map(|f| f.encoded(Encoding::WebSocket))).collect()
}

/// The session's frames on their way to the socket.
struct Pump {
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
        connection: &Connection,
        mut session: Pin<&mut S>,
    ) -> Poll<ConnectionEnd> {
        {
            let mut waker = connection.waker.borrow_mut();
            match waker.as_ref() {
                Some(known) if known.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        loop {
            if connection.failed.get() {
                return Poll::Ready(ConnectionEnd::SocketGone);
            }
            // Only an empty outbox takes more: what the socket refuses waits on the board
            // (conflated) or in the mailbox (bounded), not here.
            let mut session_pending = false;
            if connection.outbox.borrow().is_empty() {
                while self.end.is_none() && connection.outbox.borrow().frames.len() < MAX_BATCH {
                    // Not borrowed while the session runs: it may end, which drops nothing
                    // here, but the fan-out never runs in between (one thread).
                    let next = session.as_mut().poll_next(cx);
                    let mut outbox = connection.outbox.borrow_mut();
                    match next {
                        Poll::Ready(Some(Outgoing::End(end))) => self.end = Some(end),
                        Poll::Ready(Some(message)) => outbox.extend(websocket_bytes(&message)),
                        Poll::Ready(None) => self.end = Some(ConnectionEnd::SocketGone),
                        Poll::Pending => {
                            session_pending = true;
                            break;
                        }
                    }
                }
            }
            let mut outbox = connection.outbox.borrow_mut();
            match outbox.flush(cx, &connection.io) {
                Err(()) => return Poll::Ready(ConnectionEnd::SocketGone),
                Ok(true) => self.stalled = None,
                Ok(false) => {}
            }
            if outbox.is_empty() {
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

    /// Writes as much as the socket takes, with one `send` per round. `Ok(true)` when it
    /// took something; when it is full, its readiness is registered with `cx`.
    fn flush(&mut self, cx: &mut Context<'_>, io: &TcpStream) -> Result<bool, ()> {
        let mut progressed = false;
        while !self.frames.is_empty() {
            match io.poll_write_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(())) => {}
            }
            match io.try_io(Interest::WRITABLE, || send_frames(io, &self.frames)) {
                Ok(0) => return Err(()),
                Ok(written) => {
                    self.advance(written);
                    progressed = true;
                }
                // Readiness was stale: polling it again registers the waker.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log_send_error(&e);
                    return Err(());
                }
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
        // A drained outbox that held a large batch gives its room back (idle connections).
        if self.frames.is_empty() && self.frames.capacity() > OUTBOX_KEPT {
            self.frames.shrink_to(OUTBOX_KEPT);
        }
    }
}

/// Frames a drained outbox may keep room for.
const OUTBOX_KEPT: usize = 8;

/// Offers the first [`MAX_BATCH`] of `frames` to the socket without waiting, with one
/// `send` (one frame) or `sendmsg` (several); returns how many bytes it took. A socket's
/// `send` skips the file layer that `write`/`writev` go through (the floor writes with `send`
/// too). Called bare, it skips tokio's readiness check as well: a `WouldBlock` then leaves
/// tokio's readiness stale, which the next [`Outbox::flush`] corrects.
fn send_frames<'a>(io: &TcpStream, frames: impl IntoIterator<Item = &'a Bytes>) -> std::io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_BATCH];
    let mut count = 0;
    for (slice, frame) in slices.iter_mut().zip(frames) {
        *slice = IoSlice::new(frame);
        count += 1;
    }
    let socket = socket2::SockRef::from(io);
    match &slices[..count] {
        [one] => socket.send_with_flags(one, SEND_FLAGS),
        several => socket.send_vectored_with_flags(several, SEND_FLAGS),
    }
}

/// No SIGPIPE for a peer that has gone (the error says so), even in a process that has not
/// ignored the signal as Rust's runtime does.
#[cfg(unix)]
const SEND_FLAGS: std::ffi::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(unix))]
const SEND_FLAGS: std::ffi::c_int = 0;

/// A failed `send`: a peer that went away is routine; anything else (a refused flag, a
/// filtered system call) would end every connection, and must be seen.
fn log_send_error(error: &std::io::Error) {
    match error.kind() {
        ErrorKind::BrokenPipe
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::TimedOut
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::NetworkDown => {
            tracing::debug!(%error, "websocket send failed: the client has gone");
        }
        _ => tracing::warn!(%error, "websocket send failed"),
    }
}

/// The client's bytes, read from the connection's socket.
struct SocketReader(Weak<Connection>);

impl ClientBytes for SocketReader {
    fn poll_fill(&mut self, cx: &mut Context<'_>, buffer: &mut BytesMut) -> Poll<Option<Result<(), String>>> {
        // The connection outlives its session (it owns nothing of it); gone, it reads as closed.
        let Some(connection) = self.0.upgrade() else { return Poll::Ready(None) };
        poll_read_into(&connection.io, cx, buffer)
    }
}

/// Appends what `io` holds to `buffer`: `Some(Ok)` when something arrived, `None` at the end.
/// Readiness stays set after a read until one finds nothing, so the wake-up after each frame
/// (a pong every heartbeat) reads nothing; a buffer reserved for that read is dropped again,
/// or every idle connection would keep 4 KiB from its first pong on.
fn poll_read_into(
    io: &TcpStream,
    cx: &mut Context<'_>,
    buffer: &mut BytesMut,
) -> Poll<Option<Result<(), String>>> {
    loop {
        if let Err(e) = std::task::ready!(io.poll_read_ready(cx)) {
            return Poll::Ready(Some(Err(e.to_string())));
        }
        buffer.reserve(READ_CHUNK);
        match io.try_read_buf(buffer) {
            Ok(0) => return Poll::Ready(None),
            Ok(_) => return Poll::Ready(Some(Ok(()))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                if buffer.is_empty() {
                    *buffer = BytesMut::new();
                }
            }
            Err(e) => return Poll::Ready(Some(Err(e.to_string()))),
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use ws_bridge::Incoming;

    use super::*;

    /// Polls `frames` once: `None` while it waits for the socket.
    async fn poll_once(frames: &mut ClientFrames<Reader>) -> Option<Option<Incoming>> {
        poll_fn(|cx| {
            Poll::Ready(match frames.poll_next_unpin(cx) {
                Poll::Ready(item) => Some(item),
                Poll::Pending => None,
            })
        })
        .await
    }

    /// The socket's bytes, read as a connection's reader reads them.
    struct Reader(TcpStream);

    impl ClientBytes for Reader {
        fn poll_fill(
            &mut self,
            cx: &mut Context<'_>,
            buffer: &mut BytesMut,
        ) -> Poll<Option<Result<(), String>>> {
            poll_read_into(&self.0, cx, buffer)
        }
    }

    /// A connection as a pass sees it: the `seq` it holds of the one topic.
    #[derive(Default)]
    struct FakeConnection {
        seq: Cell<u64>,
        /// Published by this connection's write (a change in the middle of a pass).
        publishes: Option<(Hub, ws_bridge::TopicId, u64)>,
    }

    /// The `seq` in a frame's text.
    fn seq_in(bytes: &[u8]) -> u64 {
        let text = String::from_utf8_lossy(bytes);
        let after = text.split("\"seq\":").nth(1).expect("a seq");
        after.chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("digits")
    }

    impl DirectTarget for FakeConnection {
        fn take_direct(&self, _now: tokio::time::Instant, view: &BoardView, picks: &mut Vec<u32>) {
            if let Some(Some(frame)) = view.frames().next()
                && seq_in(frame.as_str().as_bytes()) > self.seq.get()
            {
                picks.push(0);
            }
        }

        fn write_direct(&self, wire: &[Option<Bytes>], picks: &[u32]) -> u64 {
            for &pick in picks {
                let frame = wire[pick as usize].as_ref().expect("a frame");
                self.seq.set(seq_in(frame));
            }
            if let Some((hub, topic, n)) = &self.publishes {
                hub.publish(*topic, &ws_bridge::TopicValue::json(&serde_json::json!({ "n": n })));
            }
            picks.len() as u64
        }
    }

    struct NoSource;

    impl ws_bridge::TopicSource for NoSource {
        fn dirtied_by(&self, _: &domain_events::DomainEvent) -> bool {
            false
        }

        fn compute(
            &self,
        ) -> futures_util::future::BoxFuture<'_, Result<ws_bridge::TopicValue, ws_bridge::StatsError>>
        {
            Box::pin(async { Err(ws_bridge::StatsError("not computed in this test".into())) })
        }
    }

    #[tokio::test]
    async fn a_change_during_a_pass_reaches_the_rest_of_it_and_then_the_connections_before() {
        let topics =
            ws_bridge::Topics::new([ws_bridge::TopicSpec::new("stats:test", std::sync::Arc::new(NoSource))])
                .expect("topics");
        let hub = Hub::new(std::sync::Arc::new(topics));
        let topic = hub.topics().ids().next().expect("a topic");
        let mut changes = hub.board_changes();
        hub.publish(topic, &ws_bridge::TopicValue::json(&serde_json::json!({ "n": 1 })));
        let first_seq =
            changes.view().frames().next().flatten().map(|f| seq_in(f.as_str().as_bytes())).expect("v1");
        // Three chunks; the last connection of the first chunk publishes a newer value when written.
        let mut connections: Vec<FakeConnection> =
            (0..3 * PASS_CHUNK).map(|_| FakeConnection::default()).collect();
        connections[PASS_CHUNK - 1].publishes = Some((hub.clone(), topic, 2));
        let mut scratch = PassScratch::default();

        let (handed_on, again) = pass(&connections, &mut changes, &mut scratch).await;
        assert_eq!(handed_on, connections.len() as u64, "one frame each");
        assert!(again, "the board changed during the pass");
        let newer_seq = connections[PASS_CHUNK].seq.get();
        assert!(newer_seq > first_seq, "the rest of the pass got the newer value");
        assert!(connections[2 * PASS_CHUNK..].iter().all(|c| c.seq.get() == newer_seq));
        assert!(connections[..PASS_CHUNK].iter().all(|c| c.seq.get() == first_seq), "written before it");

        connections[PASS_CHUNK - 1].publishes = None;
        let (handed_on, again) = pass(&connections, &mut changes, &mut scratch).await;
        assert_eq!(handed_on, PASS_CHUNK as u64, "the pass again reaches the ones written before");
        assert!(!again, "nothing changed during it");
        assert!(connections.iter().all(|c| c.seq.get() == newer_seq), "every connection holds the newest");
    }

    #[test]
    fn a_drained_outbox_gives_back_the_room_of_a_large_batch() {
        let frame = Bytes::from_static(b"0123456789");
        let mut outbox = Outbox { frames: VecDeque::new() };
        for _ in 0..MAX_BATCH {
            outbox.extend(Some(frame.clone()));
        }
        outbox.advance(frame.len() * (MAX_BATCH - 1) + 3);
        assert_eq!(outbox.frames.len(), 1, "part of the last frame is left");
        assert_eq!(outbox.frames.front().map(|f| f.len()), Some(frame.len() - 3));
        outbox.advance(frame.len() - 3);
        assert!(outbox.is_empty());
        assert!(outbox.frames.capacity() <= 2 * OUTBOX_KEPT, "an idle connection keeps no room for a batch");
        outbox.extend(Some(frame.clone()));
        outbox.advance(frame.len());
        assert!(outbox.frames.capacity() > 0, "a small outbox keeps its room");
    }

    #[tokio::test]
    async fn a_connection_keeps_no_read_buffer_between_frames() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut frames = ClientFrames::new(Reader(server), BytesMut::new());
        // Masked pongs with an empty payload, as a browser answers each heartbeat.
        let pong = [0x8A, 0x80, 1, 2, 3, 4];
        for heartbeat in 0..3 {
            client.write_all(&pong).await.expect("write");
            assert_eq!(frames.next().await, Some(Incoming::Pong), "heartbeat {heartbeat}");
            // The wake-up after the frame finds nothing more to read.
            assert_eq!(poll_once(&mut frames).await, None, "nothing more was sent");
            assert_eq!(frames.buffered_capacity(), 0, "an idle connection holds no buffer");
        }
        // A frame that arrives in pieces is kept between them: wait (woken by the socket) until
        // the first piece is read.
        client.write_all(&pong[..3]).await.expect("write");
        let half_read = poll_fn(|cx| match frames.poll_next_unpin(cx) {
            Poll::Pending if frames.buffered_capacity() > 0 => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(item) => Poll::Ready(Err(item)),
        });
        let half_read = tokio::time::timeout(Duration::from_secs(5), half_read).await.expect("read in time");
        assert_eq!(half_read, Ok(()), "half a frame is no frame");
        client.write_all(&pong[3..]).await.expect("write");
        assert_eq!(frames.next().await, Some(Incoming::Pong));
        drop(client);
        assert_eq!(frames.next().await, None, "the client closed");
    }
}
