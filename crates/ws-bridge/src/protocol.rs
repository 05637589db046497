//! Messages between client and server (`docs/protocol.md`).

use domain_events::model::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::Frame;

/// Who a connection belongs to, as sent in `connected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedUser {
    /// User id.
    pub user_id: i64,
    /// Username.
    pub username: String,
    /// Role.
    pub role: Role,
}

/// A message a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type": "ping"}`: answered with `{"type": "pong"}`.
    Ping,
}

/// Why a client message was not understood; answered with an `error` message, and the
/// connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadMessage {
    /// The contract's error code (`bad_message`).
    pub code: &'static str,
    /// Plain words for the developer.
    pub message: String,
}

impl BadMessage {
    fn new(message: impl Into<String>) -> Self {
        Self { code: "bad_message", message: message.into() }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Value,
}

impl ClientMessage {
    /// Parses one text frame.
    ///
    /// ```
    /// use ws_bridge::ClientMessage;
    /// assert_eq!(ClientMessage::parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
    /// assert!(ClientMessage::parse("{oops").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, BadMessage> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| BadMessage::new(format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(BadMessage::new("a message must be a JSON object with a \"type\""));
        }
        let envelope: Envelope = serde_json::from_value(value)
            .map_err(|_| BadMessage::new("a message must be a JSON object with a \"type\""))?;
        match envelope.kind.as_str() {
            Some("ping") => Ok(ClientMessage::Ping),
            Some(other) => Err(BadMessage::new(format!("unknown message type {:?}", truncate(other, 64)))),
            None => Err(BadMessage::new("\"type\" must be a string")),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A server message: `type` first, then the payload.
#[derive(Serialize)]
struct Message<'a, P: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: P,
}

#[derive(Serialize)]
struct ErrorPayload<'a> {
    code: &'a str,
    message: &'a str,
}

/// Builders for the server's messages, each serialized once.
pub mod server {
    use super::*;

    /// `{"type": "connected", "payload": {"userId", "username", "role"}}`
    pub fn connected(user: &ConnectedUser) -> Frame {
        Frame::json(&Message { kind: "connected", payload: user })
    }

    /// `{"type": "pong"}`
    pub fn pong() -> Frame {
        Frame::from_static(r#"{"type":"pong"}"#)
    }

    /// `{"type": "error", "payload": {"code", "message"}}`
    pub fn error(error: &BadMessage) -> Frame {
        Frame::json(&Message {
            kind: "error",
            payload: ErrorPayload { code: error.code, message: &error.message },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> String {
        ClientMessage::parse(text).expect_err("should be rejected").message
    }

    #[test]
    fn parses_ping_and_ignores_extra_fields() {
        assert_eq!(ClientMessage::parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(ClientMessage::parse(r#"{"type":"ping","id":3}"#), Ok(ClientMessage::Ping));
    }

    #[test]
    fn explains_what_is_wrong() {
        assert!(rejected("{not json").starts_with("malformed JSON"));
        assert!(rejected("").starts_with("malformed JSON"));
        assert!(rejected("[1,2]").contains("JSON object"));
        assert!(rejected("\"ping\"").contains("JSON object"));
        assert!(rejected("{}").contains("JSON object"));
        assert!(rejected(r#"{"type":7}"#).contains("must be a string"));
        assert_eq!(rejected(r#"{"type":"dance"}"#), "unknown message type \"dance\"");
    }

    #[test]
    fn server_messages_have_the_contract_shape() {
        let user = ConnectedUser { user_id: 4, username: "ana".into(), role: Role::Staff };
        let json: Value = serde_json::from_str(server::connected(&user).as_str()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"connected","payload":{"userId":4,"username":"ana","role":"staff"}})
        );
        let error: Value =
            serde_json::from_str(server::error(&BadMessage::new("nope")).as_str()).expect("json");
        assert_eq!(
            error,
            serde_json::json!({"type":"error","payload":{"code":"bad_message","message":"nope"}})
        );
        assert_eq!(server::pong().as_str(), r#"{"type":"pong"}"#);
    }
}
