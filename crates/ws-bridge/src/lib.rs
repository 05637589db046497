//! The WebSocket bridge: turns domain events into the messages of the wire contract and
//! fans them out to every connected client.
//!
//! - [`topic`]: which stats topic an event dirties.
//! - [`bridge`]: recomputes dirty topics through a [`StatsSource`] the application
//!   provides, coalescing bursts (at most one recompute in flight and one queued per topic).
//! - [`hub`]: the latest value of each stats topic and of presence, serialized once and
//!   shared by every client (a slow client only ever holds the newest value); per-connection
//!   bounded mailboxes for personal events and typing; presence and typing shared with other
//!   instances through the [`domain_events::Cluster`] trait.
//! - [`connection`]: one client's session (topics, snapshot, pushes, ping/pong, presence,
//!   typing, heartbeat, token expiry, shutdown), generic over the socket so it is tested
//!   with plain channels.
//! - [`protocol`]: the client and server messages.
//!
//! Architecture invariant: depends on `domain-events` and general-purpose crates only —
//! never on services, diesel, actix or any HTTP framework.

pub mod bridge;
pub mod connection;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod topic;

pub use bridge::{BridgeHandle, BridgeMetrics, StatsError, StatsSource, spawn_bridge};
pub use connection::{
    ConnectionConfig, ConnectionEnd, Credential, Incoming, Outgoing, Transport, serve_connection,
};
pub use hub::{Frame, Hub, HubMetrics, Registration};
pub use protocol::{ClientMessage, ConnectedUser};
pub use topic::{StatsTopic, StatsValue, Topic};
