//! The WebSocket bridge: turns domain events into the messages of the wire contract and
//! fans them out to every connected client.
//!
//! Modules, each with one reason to change (imports run down this list, never up):
//!
//! - [`protocol`]: the wire format — client messages parsed, server messages built and
//!   serialized once and framed once per [`Encoding`] ([`Frame`]), close codes.
//! - [`topic`]: what can be followed — the whole-value topics an application registers
//!   ([`TopicSpec`], [`TopicSource`]: which events make a value stale, how it is computed,
//!   when it changes with time alone), `presence`, `conversation:{id}`.
//! - [`board`]: the newest value of every topic and of presence, one `watch` channel, and
//!   each connection's [`ClientFeed`] on it.
//! - [`freshness`]: read your writes — whether a published value reflects every change
//!   already answered.
//! - [`mailbox`]: one connection's bounded queue of personal and typing messages, and the
//!   order to close it.
//! - [`directory`]: who is connected here — presence, personal events, typing, changed
//!   users.
//! - [`hub`]: the above put together, linked to other instances through a
//!   [`domain_events::Cluster`], with one worker task.
//! - [`bridge`]: events → recomputed values (coalesced; time-driven values recomputed when
//!   they change), personal events and user changes to the hub; [`bridge::MarkStale`].
//! - [`connection`]: one client's session as a stream of messages, whatever the transport.
//! - [`metrics`]: counters and histograms.
//!
//! Architecture invariant: depends on `domain-events` and general-purpose crates only —
//! never on services, diesel, actix or any HTTP framework.

pub mod board;
pub mod bridge;
pub mod connection;
mod directory;
mod freshness;
pub mod hub;
pub mod mailbox;
pub mod metrics;
pub mod protocol;
pub mod topic;

pub use board::{BoardChanges, BoardView, ClientFeed, FeedEvent};
pub use bridge::{BridgeHandle, BridgeMetrics, MarkStale, start_bridge};
pub use connection::{
    ConnectionConfig, ConnectionEnd, ConnectionRequest, Credential, DirectFeed, Incoming, Outgoing,
    direct_session, session,
};
pub use hub::{Hub, Registration};
pub use metrics::HubMetrics;
pub use protocol::{ClientMessage, Encoding, Frame, close_code};
pub use topic::{StatsError, Topic, TopicId, TopicSource, TopicSpec, TopicValue, Topics};
