//! Ephemeral signals shared between the instances serving one database: who is online and
//! who is typing. Unlike domain events they are not stored: losing one is harmless
//! (presence is re-announced periodically, typing expires on its own).

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// A user typing (or no longer typing) in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Typing {
    /// The conversation.
    pub conversation_id: i64,
    /// Who.
    pub user_id: i64,
    /// Their username.
    pub username: String,
    /// Typing now, or stopped.
    pub typing: bool,
}

/// One online user as seen by one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEntry {
    /// Who.
    pub user_id: i64,
    /// Their username.
    pub username: String,
    /// Open connections.
    pub connections: u32,
    /// What they last said they were looking at (a dashboard path).
    pub viewing: Option<String>,
}

/// What other instances said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSignal {
    /// Someone on another instance started or stopped typing.
    Typing(Typing),
    /// The users online on every *other* live instance (one entry per user and instance).
    RemotePresence(Vec<PresenceEntry>),
    /// A client message for a connection that some instance holds (an SSE client's POST
    /// that reached another instance); the holder delivers it and answers.
    Relayed(RelayedMessage),
    /// The holder's answer to a [`ClusterSignal::Relayed`].
    RelayAnswered {
        /// The relayed message's `request_id`.
        request_id: String,
        /// What became of it.
        outcome: RelayOutcome,
    },
}

/// A client message on its way to the instance holding its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayedMessage {
    /// Unique across instances; the answer names it.
    pub request_id: String,
    /// The connection (opaque; it names the instance holding it).
    pub connection_id: String,
    /// Who sent it: only that user's own connection takes it.
    pub user_id: i64,
    /// The message as the client sent it.
    pub text: String,
}

/// What became of a relayed client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayOutcome {
    /// Queued for the connection.
    Delivered,
    /// The connection's queue is full: try again shortly.
    Busy,
    /// No such connection of that user here.
    Unknown,
}

/// The link between instances for ephemeral signals.
pub trait Cluster: Send + Sync + 'static {
    /// Tells the other instances that someone here started or stopped typing.
    fn share_typing(&self, typing: &Typing);
    /// Tells the other instances who is online here (the whole list; it replaces the last).
    fn share_presence(&self, local: &[PresenceEntry]);
    /// What the other instances say from now on.
    fn subscribe(&self) -> broadcast::Receiver<ClusterSignal>;
    /// Sends a client message to every instance; the one holding its connection answers
    /// with [`Cluster::answer_relay`]. A single instance has no one to send it to.
    fn relay(&self, _message: &RelayedMessage) {}
    /// Answers a [`ClusterSignal::Relayed`] this instance took.
    fn answer_relay(&self, _request_id: &str, _outcome: RelayOutcome) {}
}

/// A single instance: nothing to share, nothing to hear.
#[derive(Debug, Clone)]
pub struct SingleInstance {
    silent: broadcast::Sender<ClusterSignal>,
}

impl Default for SingleInstance {
    fn default() -> Self {
        Self { silent: broadcast::channel(1).0 }
    }
}

impl Cluster for SingleInstance {
    fn share_typing(&self, _: &Typing) {}
    fn share_presence(&self, _: &[PresenceEntry]) {}
    fn subscribe(&self) -> broadcast::Receiver<ClusterSignal> {
        self.silent.subscribe()
    }
}
