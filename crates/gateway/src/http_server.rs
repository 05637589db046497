//! Pulse's HTTP server: actix-web's HTTP/1 service with `HttpServer`'s defaults, plus one
//! thing `HttpServer` cannot do — a WebSocket, once upgraded, owns its socket
//! ([`crate::socket`]) instead of staying behind the HTTP dispatcher and its buffers.
//!
//! An upgrade request still goes through the whole app (middleware, admission, the access
//! log): the upgrade service calls the app itself, marked [`SocketHandover`]; a `101`
//! carrying an admitted session takes the socket, any other answer is written as it is and
//! the connection closed.
//!
//! The app's configuration is `AppConfig::default()` (host `localhost:8080`): actix-web
//! offers no public way to build the one `HttpServer` builds from the bound address, and it
//! only matters for a request without a `Host` header and for `url_for`, neither of which
//! Pulse uses.
//!
//! Architecture invariant: wiring only — no route, no check, no protocol.

use std::any::Any;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;

use actix_codec::{Framed, FramedParts};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::{ConnectionType, HttpService, KeepAlive, Request, Response, h1};
use actix_service::IntoServiceFactory;
use actix_web::dev::{
    AppConfig, Server, Service, ServiceFactory, ServiceRequest, ServiceResponse, fn_factory, fn_service,
};
use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpMessage, ResponseError};
use bytes::BytesMut;
use futures_util::SinkExt;

use crate::ws::{Accepted, SocketHandover};

/// How the server listens.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The address to listen on.
    pub bind: SocketAddr,
    /// Worker threads (`None`: one per core).
    pub workers: Option<usize>,
    /// Connections each worker holds at most; beyond, it stops accepting.
    pub max_connections_per_worker: usize,
    /// The listen backlog.
    pub backlog: u32,
    /// Seconds a graceful stop waits for connections before dropping them.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            workers: None,
            max_connections_per_worker: 50_000,
            backlog: 4096,
            shutdown_timeout_secs: 5,
        }
    }
}

/// Binds and builds the server for the app `app` makes (once per worker, twice: one for
/// plain requests, one for upgrades), and says where it listens (a port 0 is chosen by the
/// system). Signals are left to the caller; the returned server runs once awaited or
/// spawned.
///
/// Every accepted socket is tuned ([`crate::limits::tune_socket`]); a client that closes its
/// side has left (no half-closed connections: an event stream writes nothing for up to 25 s,
/// and a vanished client would otherwise hold its slot until then).
pub fn http_server<F, T, B>(app: F, options: &ServerOptions) -> io::Result<(Server, SocketAddr)>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let listener = listen(options.bind, options.backlog)?;
    let addr = listener.local_addr()?;
    let mut builder = actix_server::Server::build()
        .backlog(options.backlog)
        .max_concurrent_connections(options.max_connections_per_worker)
        .disable_signals()
        .shutdown_timeout(options.shutdown_timeout_secs);
    if let Some(workers) = options.workers {
        builder = builder.workers(workers);
    }
    let shutting_down = builder.graceful_shutdown_signal();
    let builder = builder.listen("pulse-http", listener, move || {
        let shutting_down = shutting_down.clone();
        let upgrade_app = actix_service::map_config(app().into_factory(), |()| AppConfig::default());
        let upgrade = fn_factory(move || {
            let app = upgrade_app.new_service(());
            async move {
                let app = Rc::new(app.await?);
                // Boxed, so that the HTTP dispatcher of every connection does not grow by its size.
                Ok::<_, ()>(fn_service(move |(req, framed)| Box::pin(upgraded(app.clone(), req, framed))))
            }
        });
        HttpService::build()
            .keep_alive(KeepAlive::default())
            .client_request_timeout(std::time::Duration::from_secs(5))
            .client_disconnect_timeout(std::time::Duration::from_secs(1))
            .h1_allow_half_closed(false)
            .local_addr(addr)
            .graceful_shutdown_signal(move || {
                let signal = shutting_down.clone();
                async move { signal.notified().await }
            })
            .on_connect_ext(|io: &TcpStream, extensions| {
                crate::limits::tune_socket(io as &dyn Any, extensions)
            })
            .upgrade(upgrade)
            .finish(actix_service::map_config(app().into_factory(), |()| AppConfig::default()))
            .tcp()
    })?;
    Ok((builder.run(), addr))
}

/// A listening socket as `HttpServer` makes one: address reuse, the given backlog.
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// An upgrade request: through the app, then either the socket goes to the admitted
/// session or the answer is written and the connection closed. A failure here is the
/// client's connection going away, not the server's: it is logged at debug level only.
async fn upgraded<S, B>(
    app: Rc<S>,
    req: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_web::Error>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    if let Err(error) = answer_upgrade(app, req, framed).await {
        tracing::debug!(%error, "an upgrade request's connection failed");
    }
    Ok(())
}

async fn answer_upgrade<S, B>(
    app: Rc<S>,
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> io::Result<()>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    req.extensions_mut().insert(SocketHandover);
    // Boxed: the app's future is large and done with once answered, and whatever this future
    // holds stays with the connection for as long as it is open.
    let mut response: Response<BoxBody> = match Box::pin(app.call(req)).await {
        Ok(response) => response.map_into_boxed_body().into(),
        Err(error) => error.into(),
    };
    let accepted = response.extensions_mut().remove::<Accepted>();
    if let Some(accepted) = accepted {
        let (head, _) = response.into_parts();
        framed.send(h1::Message::Item((head, BodySize::None))).await?;
        // The dispatcher's two 8 KiB buffers are dropped here; what the client sent after
        // its handshake is kept in a buffer of its own size.
        let FramedParts { io, read_buf, .. } = framed.into_parts();
        let received = if read_buf.is_empty() { BytesMut::new() } else { BytesMut::from(&read_buf[..]) };
        drop(read_buf);
        crate::socket::serve(io, received, accepted).await;
        return Ok(());
    }
    // Anything else is answered once, then the connection closes. Not a stream (`/sse` asked
    // with upgrade headers): nothing would notice the client leaving while it lasts.
    let response = if response.body().size() == BodySize::Stream {
        drop(response);
        crate::error::ApiError::bad_request("an upgrade request gets no stream: ask without `Upgrade`")
            .error_response()
            .into()
    } else {
        response
    };
    let (mut head, body) = response.into_parts();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = body.size();
    // Head and body queued, then written together: a client that reads the answer to its
    // refused upgrade in one read (as WebSocket clients do) gets the whole error.
    framed.feed(h1::Message::Item((head, size))).await?;
    if size != BodySize::None {
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            let chunk = chunk.map_err(|e| io::Error::other(e.to_string()))?;
            framed.feed(h1::Message::Chunk(Some(chunk))).await?;
        }
        framed.feed(h1::Message::Chunk(None)).await?;
    }
    framed.flush().await?;
    Ok(())
}
