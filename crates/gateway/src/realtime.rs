//! What the two realtime transports (`/ws` and `/sse`) share: admission — Origin, who
//! connects, what it follows, whether there is room, the ticket spent last — the connection
//! slot, and the inboxes through which a Server-Sent Events client's POSTed messages reach
//! its session, on whichever instance holds it.
//!
//! One reason to change: the rules for opening a realtime connection and for reaching it.
//! Never depends on how a transport frames bytes (`ws`, `sse`), nor on pg-fanout (other
//! instances are reached through [`domain_events::Cluster`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use actix_web::HttpRequest;
use domain_events::model::Actor;
use domain_events::{Cluster, ClusterSignal, RelayOutcome, RelayedMessage};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use ws_bridge::connection::{MAX_SUBSCRIPTIONS, parse_topics};
use ws_bridge::{ConnectionEnd, ConnectionRequest, Credential, Incoming};

use crate::AppState;
use crate::error::ApiError;
use crate::limits::TransportKind;

/// The query of `/ws` and `/sse`.
#[derive(Deserialize)]
pub(crate) struct RealtimeQuery {
    token: Option<String>,
    /// A single-use ticket from `POST /api/v1/ws-ticket`, instead of a token.
    ticket: Option<String>,
    /// `a,b`: the topics to start with (default: the hub's defaults).
    topics: Option<String>,
}

/// A connection that passed every check but the transport's own; its ticket is not spent.
pub(crate) struct Admission {
    request: ConnectionRequest,
    slot: SlotGuard,
    ticket: Option<String>,
}

/// Checks a realtime connection in the contract's order: a browser from a foreign site
/// learns nothing (403), then who it is (401), then what it asks for (400), then whether
/// there is room (503). The ticket is only looked at: [`Admission::spend_ticket`] spends it
/// once the transport's own checks have passed too, so a refused request leaves it usable.
pub(crate) async fn admit(
    req: &HttpRequest,
    state: &actix_web::web::Data<AppState>,
    query: &RealtimeQuery,
    transport: TransportKind,
) -> Result<Admission, ApiError> {
    crate::limits::check_origin(req, &state.limits)?;
    let caller = authenticate(state, query).await?;
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
    let slot = state.connections.acquire_for(transport, caller.actor.user_id, &state.limits)?;
    let slot = SlotGuard { counter: state.connections.clone(), slot: Some(slot), started: false, end: None };
    let credential =
        Credential { expires_at: Some(caller.expires_at), issued_at_ms: Some(caller.issued_at_ms) };
    let request = ConnectionRequest { user: caller.actor, topics, credential, connection_id: None };
    Ok(Admission { request, slot, ticket: caller.ticket })
}

impl Admission {
    /// Spends the ticket, if the connection came with one (of two requests racing with one
    /// ticket, one wins); then the connection may start.
    pub(crate) async fn spend_ticket(
        self,
        state: &AppState,
    ) -> Result<(ConnectionRequest, SlotGuard), ApiError> {
        if let Some(ticket) = self.ticket {
            let spent = state.db(async move |s| s.tickets.redeem(&ticket).await).await;
            if !matches!(spent, Ok(Some(_))) {
                spent?;
                return Err(ApiError::unauthorized("the ticket is unknown, used or expired"));
            }
        }
        Ok((self.request, self.slot))
    }
}

/// Gives the connection's place back when the connection ends, however it ends, and counts
/// the end by its reason.
pub(crate) struct SlotGuard {
    counter: Arc<crate::limits::ConnectionCounter>,
    slot: Option<crate::limits::OwnedSlot>,
    /// Whether a session was started; `end` says how it ended (`None`: the client went away).
    started: bool,
    end: Option<ConnectionEnd>,
}

impl SlotGuard {
    /// The session starts now: from here on its end is counted.
    pub(crate) fn started(mut self) -> Self {
        self.started = true;
        self
    }

    /// How the session ended (its stream's last item).
    pub(crate) fn ended(&mut self, end: ConnectionEnd) {
        self.end = Some(end);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if self.started {
                self.counter.finish(slot, self.end.unwrap_or(ConnectionEnd::SocketGone));
            } else {
                self.counter.release_slot(slot);
            }
        }
    }
}

/// Who opens a connection, from what, and until when.
struct Caller {
    actor: Actor,
    /// When the session must end (the token's expiry).
    expires_at: SystemTime,
    /// The token's `iat` (for a ticket, its token's), in milliseconds.
    issued_at_ms: i64,
    /// The ticket to spend once every other check has passed.
    ticket: Option<String>,
}

/// The caller, from `?ticket=` (looked at, not yet spent) or `?token=` (a JWT), checked
/// against the user's current state: a deactivated user, or a credential issued before a
/// role or password change, is refused with 401.
async fn authenticate(state: &AppState, query: &RealtimeQuery) -> Result<Caller, ApiError> {
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

/// Client messages waiting for one SSE session; a POST finding it full is answered 429.
pub const INBOX_CAPACITY: usize = 32;
/// How long a POST waits for the instance holding the connection to answer.
pub const RELAY_WAIT: Duration = Duration::from_secs(2);

/// The SSE connections of this process, by id, and the relayed messages awaiting an answer.
///
/// A connection id is `<node>.<random>`: the node names this process (random, so unique
/// across instances), which lets a POST for a connection here, or for an id no instance can
/// hold, be answered without asking the others.
pub struct Inboxes {
    node: String,
    /// Whether other instances exist to ask (PostgreSQL); on a single instance an id that is
    /// not here is nowhere.
    clustered: bool,
    open: Mutex<HashMap<String, Inbox>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<RelayOutcome>>>,
    /// Relays in flight per user: each costs every instance a notification to read, so one
    /// user (with made-up ids, say) gets at most [`MAX_RELAYS_PER_USER`] at once.
    relaying: Mutex<HashMap<i64, u32>>,
    requests: AtomicU64,
}

/// Relays one user may have waiting for an answer at once; more are answered `Busy` (429).
pub const MAX_RELAYS_PER_USER: u32 = 4;

struct Inbox {
    user_id: i64,
    sender: mpsc::Sender<Incoming>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inboxes {
    /// Inboxes of a process; `clustered`: other instances may hold connections.
    pub fn new(clustered: bool) -> Self {
        Self {
            node: format!("{:016x}", rand::random::<u64>()),
            clustered,
            open: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            relaying: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        }
    }

    /// A new inbox for `user_id`'s connection: its id and the stream of what is posted to
    /// it (the inbox closes when the stream is dropped).
    pub(crate) fn open(self: &Arc<Self>, user_id: i64) -> (String, InboxStream) {
        let id = format!("{}.{:032x}", self.node, rand::random::<u128>());
        let (sender, receiver) = mpsc::channel(INBOX_CAPACITY);
        lock(&self.open).insert(id.clone(), Inbox { user_id, sender });
        (id.clone(), InboxStream { receiver, inboxes: self.clone(), id })
    }

    /// SSE connections open here.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    /// Whether none is open here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Delivers `text` from `user_id` to connection `id` if it is here.
    fn deliver_here(&self, id: &str, user_id: i64, text: String) -> RelayOutcome {
        let open = lock(&self.open);
        let Some(inbox) = open.get(id).filter(|inbox| inbox.user_id == user_id) else {
            return RelayOutcome::Unknown;
        };
        match inbox.sender.try_send(Incoming::Text(text)) {
            Ok(()) => RelayOutcome::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => RelayOutcome::Busy,
            Err(mpsc::error::TrySendError::Closed(_)) => RelayOutcome::Unknown,
        }
    }

    /// Delivers `text` from `user_id` to connection `id`, wherever it lives: here at once,
    /// on another instance through `cluster` (waiting at most [`RELAY_WAIT`] for its answer;
    /// no answer means no instance holds it).
    pub(crate) async fn deliver(
        &self,
        cluster: &dyn Cluster,
        id: &str,
        user_id: i64,
        text: String,
    ) -> RelayOutcome {
        let Some((node, _)) = id.split_once('.') else { return RelayOutcome::Unknown };
        if node == self.node {
            return self.deliver_here(id, user_id, text);
        }
        if !self.clustered || node.len() != self.node.len() {
            return RelayOutcome::Unknown;
        }
        {
            let mut relaying = lock(&self.relaying);
            let in_flight = relaying.entry(user_id).or_insert(0);
            if *in_flight >= MAX_RELAYS_PER_USER {
                return RelayOutcome::Busy;
            }
            *in_flight += 1;
        }
        let request_id = format!("{}-{}", self.node, self.requests.fetch_add(1, Ordering::Relaxed));
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(request_id.clone(), answer);
        let waiting = Waiting { inboxes: self, request_id: &request_id, user_id };
        cluster.relay(&RelayedMessage {
            request_id: request_id.clone(),
            connection_id: id.to_owned(),
            user_id,
            text,
        });
        let outcome = tokio::time::timeout(RELAY_WAIT, answered).await;
        drop(waiting);
        match outcome {
            Ok(Ok(outcome)) => outcome,
            _ => RelayOutcome::Unknown,
        }
    }

    /// Answers what other instances say: delivers a relayed message meant for a connection
    /// here (and answers it), or hands an answer to the POST waiting for it.
    pub(crate) fn on_signal(&self, cluster: &dyn Cluster, signal: ClusterSignal) {
        match signal {
            ClusterSignal::Relayed(message) => {
                let here = message.connection_id.split_once('.').is_some_and(|(node, _)| node == self.node);
                if here {
                    let outcome = self.deliver_here(&message.connection_id, message.user_id, message.text);
                    cluster.answer_relay(&message.request_id, outcome);
                }
            }
            ClusterSignal::RelayAnswered { request_id, outcome } => {
                if let Some(waiting) = lock(&self.waiting).remove(&request_id) {
                    let _ = waiting.send(outcome);
                }
            }
            ClusterSignal::Typing(_) | ClusterSignal::RemotePresence(_) => {}
        }
    }
}

/// Forgets a relay's waiting answer however the POST ends (answered, timed out, dropped).
struct Waiting<'a> {
    inboxes: &'a Inboxes,
    request_id: &'a str,
    user_id: i64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.inboxes.waiting).remove(self.request_id);
        let mut relaying = lock(&self.inboxes.relaying);
        if let Some(in_flight) = relaying.get_mut(&self.user_id) {
            *in_flight = in_flight.saturating_sub(1);
            if *in_flight == 0 {
                relaying.remove(&self.user_id);
            }
        }
    }
}

/// Answers relayed messages and their answers for this process, as long as the cluster
/// speaks.
pub(crate) fn spawn_relay(inboxes: Arc<Inboxes>, cluster: Arc<dyn Cluster>) {
    let mut signals = cluster.subscribe();
    tokio::spawn(async move {
        loop {
            match signals.recv().await {
                Ok(signal) => inboxes.on_signal(cluster.as_ref(), signal),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "relay signals lagged; their senders time out");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// What is posted to one SSE connection, as its session's incoming stream. Never ends on
/// its own (the session ends with the response); dropping it closes the inbox.
pub(crate) struct InboxStream {
    receiver: mpsc::Receiver<Incoming>,
    inboxes: Arc<Inboxes>,
    id: String,
}

impl Stream for InboxStream {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        match self.receiver.poll_recv(cx) {
            // The sender lives in the inbox until this stream drops: never the end.
            Poll::Ready(None) => Poll::Pending,
            other => other,
        }
    }
}

impl Drop for InboxStream {
    fn drop(&mut self) {
        lock(&self.inboxes.open).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain_events::SingleInstance;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_message_reaches_only_its_users_connection_here_and_a_full_inbox_says_busy() {
        let inboxes = Arc::new(Inboxes::new(false));
        let cluster = SingleInstance::default();
        let (id, mut stream) = inboxes.open(7);
        assert_eq!(inboxes.deliver(&cluster, &id, 8, "{}".into()).await, RelayOutcome::Unknown);
        assert_eq!(inboxes.deliver(&cluster, "nonsense", 7, "{}".into()).await, RelayOutcome::Unknown);
        assert_eq!(
            inboxes.deliver(&cluster, "0000000000000000.1", 7, "{}".into()).await,
            RelayOutcome::Unknown
        );
        assert_eq!(inboxes.deliver(&cluster, &id, 7, "a".into()).await, RelayOutcome::Delivered);
        assert_eq!(stream.next().await, Some(Incoming::Text("a".into())));
        for _ in 0..INBOX_CAPACITY {
            assert_eq!(inboxes.deliver(&cluster, &id, 7, "x".into()).await, RelayOutcome::Delivered);
        }
        assert_eq!(inboxes.deliver(&cluster, &id, 7, "x".into()).await, RelayOutcome::Busy);
        drop(stream);
        assert!(inboxes.is_empty());
        assert_eq!(inboxes.deliver(&cluster, &id, 7, "x".into()).await, RelayOutcome::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn one_user_has_at_most_four_relays_in_flight_and_gets_room_back_when_they_end() {
        // A cluster that relays into the void: nobody answers, every relay waits its 2 s.
        let inboxes = Arc::new(Inboxes::new(true));
        let cluster = Arc::new(SingleInstance::default());
        let foreign = |i: u32| format!("ffffffffffffffff.{i}");
        let mut waits = Vec::new();
        for i in 0..MAX_RELAYS_PER_USER {
            let (inboxes, cluster) = (inboxes.clone(), cluster.clone());
            waits.push(tokio::spawn(async move {
                inboxes.deliver(cluster.as_ref(), &foreign(i), 7, "{}".into()).await
            }));
        }
        tokio::task::yield_now().await;
        assert_eq!(
            inboxes.deliver(cluster.as_ref(), &foreign(99), 7, "{}".into()).await,
            RelayOutcome::Busy,
            "a fifth relay of the same user waits for nothing"
        );
        let other_user = tokio::spawn({
            let (inboxes, cluster) = (inboxes.clone(), cluster.clone());
            async move { inboxes.deliver(cluster.as_ref(), &foreign(5), 8, "{}".into()).await }
        });
        for wait in waits {
            assert_eq!(wait.await.expect("join"), RelayOutcome::Unknown, "no holder answered");
        }
        assert_eq!(other_user.await.expect("join"), RelayOutcome::Unknown, "another user was not held back");
        assert!(lock(&inboxes.relaying).is_empty(), "every slot given back");
        assert_eq!(
            inboxes.deliver(cluster.as_ref(), &foreign(1), 7, "{}".into()).await,
            RelayOutcome::Unknown
        );
    }

    #[tokio::test]
    async fn a_relayed_message_is_delivered_by_its_holder_and_the_answer_reaches_the_sender() {
        struct Loopback(tokio::sync::broadcast::Sender<ClusterSignal>);
        impl Cluster for Loopback {
            fn share_typing(&self, _: &domain_events::Typing) {}
            fn share_presence(&self, _: &[domain_events::PresenceEntry]) {}
            fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ClusterSignal> {
                self.0.subscribe()
            }
            fn relay(&self, message: &RelayedMessage) {
                let _ = self.0.send(ClusterSignal::Relayed(message.clone()));
            }
            fn answer_relay(&self, request_id: &str, outcome: RelayOutcome) {
                let _ = self.0.send(ClusterSignal::RelayAnswered { request_id: request_id.into(), outcome });
            }
        }
        let cluster: Arc<dyn Cluster> = Arc::new(Loopback(tokio::sync::broadcast::channel(16).0));
        let (sender, holder) = (Arc::new(Inboxes::new(true)), Arc::new(Inboxes::new(true)));
        spawn_relay(sender.clone(), cluster.clone());
        spawn_relay(holder.clone(), cluster.clone());
        let (id, mut stream) = holder.open(3);
        assert_eq!(sender.deliver(cluster.as_ref(), &id, 3, "hi".into()).await, RelayOutcome::Delivered);
        assert_eq!(stream.next().await, Some(Incoming::Text("hi".into())));
        assert_eq!(sender.deliver(cluster.as_ref(), &id, 4, "hi".into()).await, RelayOutcome::Unknown);
        assert!(lock(&sender.waiting).is_empty());
    }
}
