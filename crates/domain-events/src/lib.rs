//! Pulse's domain vocabulary and its typed event bus.
//!
//! This crate holds what every other layer agrees on: the records of the domain
//! ([`model`]), the events a committed change produces ([`DomainEvent`] inside an
//! [`EventEnvelope`]), and the bus that carries them ([`EventPublisher`],
//! [`EventSubscriber`], [`InProcessBus`]), and the ephemeral signals instances share
//! ([`Cluster`]: presence and typing).
//!
//! Architecture invariant: this crate depends on no other crate of the workspace and on
//! no database, HTTP or WebSocket library. Services publish into it; the WebSocket
//! bridge subscribes to it; neither knows the other.

pub mod bus;
pub mod cluster;
pub mod event;
pub mod model;

pub use bus::{BusMessage, EventPublisher, EventStream, EventSubscriber, InProcessBus};
pub use cluster::{
    Cluster, ClusterSignal, PresenceEntry, RelayOutcome, RelayedMessage, SingleInstance, Typing,
};
pub use event::{Aggregate, DomainEvent, EventEnvelope};
