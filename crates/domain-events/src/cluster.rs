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
}

/// The link between instances for ephemeral signals.
pub trait Cluster: Send + Sync + 'static {
    /// Tells the other instances that someone here started or stopped typing.
    fn share_typing(&self, typing: &Typing);
    /// Tells the other instances who is online here (the whole list; it replaces the last).
    fn share_presence(&self, local: &[PresenceEntry]);
    /// What the other instances say from now on.
    fn subscribe(&self) -> broadcast::Receiver<ClusterSignal>;
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
