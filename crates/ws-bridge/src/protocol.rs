//! Messages between client and server (`docs/protocol.md` §5 and §6):
//! the client's messages parsed, the server's built and serialized once as a [`Frame`].
//!
//! Architecture invariant: knows the wire format only — nothing of connections, the hub
//! or how values are computed.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use bytestring::ByteString;
use domain_events::model::{Actor, Task};
use domain_events::{PresenceEntry, Typing};
use serde::Serialize;
use serde_json::Value;

/// A message serialized once, shared by every recipient (cloning is a reference count), and
/// framed once per transport: a server-to-client WebSocket frame is not masked, so its bytes
/// are the same for every client (RFC 6455, section 5.1), and so is a Server-Sent Event.
#[derive(Clone)]
pub struct Frame(Arc<Encoded>);

struct Encoded {
    text: ByteString,
    /// The frame as each [`Encoding`] puts it on the wire, made by the first connection
    /// that sends it that way.
    wire: [OnceLock<Bytes>; 2],
}

/// How a transport puts a [`Frame`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One unmasked WebSocket text frame (FIN set).
    WebSocket = 0,
    /// One Server-Sent Event: `data: <json>\n\n`.
    EventStream = 1,
}

impl Frame {
    /// Serializes `value` as JSON.
    pub fn json(value: &impl Serialize) -> Self {
        // Serializing plain data structures to a string cannot fail.
        Self::from_text(ByteString::from(serde_json::to_string(value).unwrap_or_default()))
    }

    /// A frame of fixed text.
    pub fn from_static(text: &'static str) -> Self {
        Self::from_text(ByteString::from_static(text))
    }

    fn from_text(text: ByteString) -> Self {
        Frame(Arc::new(Encoded { text, wire: [OnceLock::new(), OnceLock::new()] }))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The shared text, for a transport that takes ownership.
    pub fn text(&self) -> ByteString {
        self.0.text.clone()
    }

    /// The bytes `encoding` puts on the wire, encoded once for all connections.
    pub fn encoded(&self, encoding: Encoding) -> Bytes {
        self.0.wire[encoding as usize].get_or_init(|| wire::encode(encoding, self.as_str())).clone()
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Frame {}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Frame").field(&self.as_str()).finish()
    }
}

/// Framing on the wire (the transports' shared bytes; control frames are the transport's).
pub mod wire {
    use bytes::{BufMut, Bytes, BytesMut};

    use super::Encoding;

    /// `text` framed as `encoding` says.
    pub fn encode(encoding: Encoding, text: &str) -> Bytes {
        match encoding {
            Encoding::WebSocket => websocket(0x1, text.as_bytes()),
            Encoding::EventStream => {
                // `text` is one line of JSON: serde_json escapes every newline in strings.
                let mut out = BytesMut::with_capacity(text.len() + 8);
                out.put_slice(b"data: ");
                out.put_slice(text.as_bytes());
                out.put_slice(b"\n\n");
                out.freeze()
            }
        }
    }

    /// One unmasked, final WebSocket frame with `opcode` and `payload` (RFC 6455, 5.2).
    pub fn websocket(opcode: u8, payload: &[u8]) -> Bytes {
        let len = payload.len();
        let mut out = BytesMut::with_capacity(len + 10);
        out.put_u8(0x80 | opcode);
        match (u8::try_from(len), u16::try_from(len)) {
            (Ok(tiny), _) if tiny < 126 => out.put_u8(tiny),
            (_, Ok(short)) => {
                out.put_u8(126);
                out.put_u16(short);
            }
            _ => {
                out.put_u8(127);
                out.put_u64(u64::try_from(len).unwrap_or(u64::MAX));
            }
        }
        out.put_slice(payload);
        out.freeze()
    }
}

/// Close codes the server uses (see `docs/protocol.md`).
pub mod close_code {
    /// The client closed, or the server closed normally.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down, or the client stopped answering pings: reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent messages faster than allowed.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client does not read fast enough: reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The token expired, or was retired by a role or password change: log in again, do not
    /// retry with the same token.
    pub const TOKEN_EXPIRED: u16 = 4401;
    /// The user was deactivated: do not reconnect.
    pub const USER_DEACTIVATED: u16 = 4403;
}

/// Most topics one `subscribe`/`unsubscribe` message may name.
pub const MAX_TOPICS_PER_MESSAGE: usize = 50;
/// Longest `viewing` path accepted, in characters.
pub const MAX_VIEWING_PATH: usize = 200;

/// A message a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type": "ping"}`: answered with `{"type": "pong"}`.
    Ping,
    /// `{"type": "subscribe", "topics": [...]}`
    Subscribe(Vec<String>),
    /// `{"type": "unsubscribe", "topics": [...]}`
    Unsubscribe(Vec<String>),
    /// `{"type": "viewing", "payload": {"path": "/tasks"}}`
    Viewing(String),
    /// `{"type": "typing", "payload": {"conversationId": 7, "typing": true}}`
    Typing {
        /// The conversation.
        conversation_id: i64,
        /// Typing or stopped.
        typing: bool,
    },
}

/// Why a client message was refused; answered with an `error` message, and the
/// connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadMessage {
    /// The error code (`bad_message`, `unknown_topic`).
    pub code: &'static str,
    /// Plain words for the developer.
    pub message: String,
}

impl BadMessage {
    /// A `bad_message` error.
    pub fn new(message: impl Into<String>) -> Self {
        Self { code: "bad_message", message: message.into() }
    }

    /// An `unknown_topic` error.
    pub fn unknown_topic(name: &str) -> Self {
        Self { code: "unknown_topic", message: format!("unknown topic {:?}", truncate(name, 64)) }
    }
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
        let Value::Object(object) = value else {
            return Err(BadMessage::new("a message must be a JSON object with a \"type\""));
        };
        let kind = match object.get("type") {
            None => return Err(BadMessage::new("a message must be a JSON object with a \"type\"")),
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(BadMessage::new("\"type\" must be a string")),
        };
        match kind {
            "ping" => Ok(ClientMessage::Ping),
            "subscribe" => topics(&object).map(ClientMessage::Subscribe),
            "unsubscribe" => topics(&object).map(ClientMessage::Unsubscribe),
            "viewing" => {
                let path = payload(&object)?
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BadMessage::new("viewing needs payload.path, a string"))?;
                if path.chars().count() > MAX_VIEWING_PATH || path.chars().any(char::is_control) {
                    return Err(BadMessage::new(format!(
                        "payload.path must be at most {MAX_VIEWING_PATH} printable characters"
                    )));
                }
                Ok(ClientMessage::Viewing(path.to_owned()))
            }
            "typing" => {
                let payload = payload(&object)?;
                let conversation_id =
                    payload.get("conversationId").and_then(Value::as_i64).filter(|id| *id > 0).ok_or_else(
                        || BadMessage::new("typing needs payload.conversationId, a positive integer"),
                    )?;
                let typing = payload
                    .get("typing")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| BadMessage::new("typing needs payload.typing, true or false"))?;
                Ok(ClientMessage::Typing { conversation_id, typing })
            }
            other => Err(BadMessage::new(format!("unknown message type {:?}", truncate(other, 64)))),
        }
    }
}

fn payload(object: &serde_json::Map<String, Value>) -> Result<&serde_json::Map<String, Value>, BadMessage> {
    object
        .get("payload")
        .and_then(Value::as_object)
        .ok_or_else(|| BadMessage::new("\"payload\" must be an object"))
}

fn topics(object: &serde_json::Map<String, Value>) -> Result<Vec<String>, BadMessage> {
    let Some(Value::Array(items)) = object.get("topics") else {
        return Err(BadMessage::new("\"topics\" must be an array of topic names"));
    };
    if items.len() > MAX_TOPICS_PER_MESSAGE {
        return Err(BadMessage::new(format!("at most {MAX_TOPICS_PER_MESSAGE} topics per message")));
    }
    items
        .iter()
        .map(|item| {
            item.as_str().map(str::to_owned).ok_or_else(|| BadMessage::new("topic names must be strings"))
        })
        .collect()
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

#[derive(Serialize)]
struct Topics<'a> {
    topics: &'a [String],
}

#[derive(Serialize)]
struct Online<'a> {
    online: &'a [PresenceEntry],
}

/// Builders for the server's messages, each serialized once.
pub mod server {
    use super::*;

    /// `{"type": "connected", "payload": {"userId", "username", "role"}}`
    ///
    /// With a `connection_id` (Server-Sent Events) the payload also has `"connectionId"`.
    pub fn connected(user: &Actor, connection_id: Option<&str>) -> Frame {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Connected<'a> {
            #[serde(flatten)]
            user: &'a Actor,
            #[serde(skip_serializing_if = "Option::is_none")]
            connection_id: Option<&'a str>,
        }
        Frame::json(&Message { kind: "connected", payload: Connected { user, connection_id } })
    }

    /// `{"type": "close", "payload": {"code": n}}`: how a Server-Sent Events stream says what
    /// a WebSocket says with a close frame, before it ends.
    pub fn close(code: u16) -> Frame {
        Frame::from_text(ByteString::from(format!(r#"{{"type":"close","payload":{{"code":{code}}}}}"#)))
    }

    /// `{"type": <topic>, "seq": n, "payload": <payload>}`: a whole value of a topic, its
    /// payload already serialized (once, for every connection).
    pub fn value(topic: &str, seq: u64, payload: &str) -> Frame {
        let kind = serde_json::to_string(topic).unwrap_or_default();
        Frame::from_text(ByteString::from(format!(r#"{{"type":{kind},"seq":{seq},"payload":{payload}}}"#)))
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

    /// `{"type": "subscribed", "payload": {"topics": [...]}}`
    pub fn subscribed(topics: &[String]) -> Frame {
        Frame::json(&Message { kind: "subscribed", payload: Topics { topics } })
    }

    /// `{"type": "presence", "payload": {"online": [{"userId", "username", "connections", "viewing"}]}}`
    pub fn presence(online: &[PresenceEntry]) -> Frame {
        Frame::json(&Message { kind: "presence", payload: Online { online } })
    }

    /// `{"type": "typing", "payload": {"conversationId", "userId", "username", "typing"}}`
    pub fn typing(typing: &Typing) -> Frame {
        Frame::json(&Message { kind: "typing", payload: typing })
    }

    /// `{"type": "task:assigned", "payload": <task>}`
    pub fn task_assigned(task: &Task) -> Frame {
        Frame::json(&Message { kind: "task:assigned", payload: task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame read back as RFC 6455 says: (FIN and opcode byte, payload).
    fn read_websocket_frame(bytes: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(bytes[1] & 0x80, 0, "a server frame is never masked");
        let (len, start) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"))).expect("len"),
                10,
            ),
            short => (usize::from(short), 2),
        };
        assert_eq!(bytes.len(), start + len, "the length field covers the payload exactly");
        (bytes[0], bytes[start..].to_vec())
    }

    #[test]
    fn websocket_frames_carry_any_length_with_the_shortest_length_field() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let text = "x".repeat(len);
            let frame = Frame::from_text(ByteString::from(text.clone()));
            let bytes = frame.encoded(Encoding::WebSocket);
            let (head, payload) = read_websocket_frame(&bytes);
            assert_eq!(head, 0x81, "final text frame");
            assert_eq!(payload, text.as_bytes());
            let header = bytes.len() - len;
            assert_eq!(
                header,
                if len < 126 {
                    2
                } else if len <= 65_535 {
                    4
                } else {
                    10
                },
                "len {len}"
            );
        }
    }

    #[test]
    fn a_frame_is_encoded_once_per_encoding_and_shared() {
        let frame = server::pong();
        let copy = frame.clone();
        let first = frame.encoded(Encoding::WebSocket);
        assert_eq!(first.as_ptr(), copy.encoded(Encoding::WebSocket).as_ptr(), "the same bytes, not a copy");
        assert_eq!(&frame.encoded(Encoding::EventStream)[..], b"data: {\"type\":\"pong\"}\n\n");
        assert_eq!(read_websocket_frame(&first).1, br#"{"type":"pong"}"#);
    }

    #[test]
    fn an_event_is_one_data_line_even_when_strings_hold_newlines() {
        let frame = Frame::json(&serde_json::json!({"type": "x", "payload": "a\nb\r\nc"}));
        let event = frame.encoded(Encoding::EventStream);
        let body = std::str::from_utf8(&event).expect("utf-8");
        assert!(body.starts_with("data: ") && body.ends_with("\n\n"));
        assert_eq!(body.matches('\n').count(), 2, "{body:?}");
        assert!(!body.contains('\r'));
    }

    fn rejected(text: &str) -> BadMessage {
        ClientMessage::parse(text).expect_err("should be rejected")
    }

    #[test]
    fn parses_every_client_message_and_ignores_extra_fields() {
        assert_eq!(ClientMessage::parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(ClientMessage::parse(r#"{"type":"ping","id":3}"#), Ok(ClientMessage::Ping));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"subscribe","topics":["presence","stats:tasks"]}"#),
            Ok(ClientMessage::Subscribe(vec!["presence".into(), "stats:tasks".into()]))
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"unsubscribe","topics":[]}"#),
            Ok(ClientMessage::Unsubscribe(vec![]))
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"viewing","payload":{"path":"/tasks"}}"#),
            Ok(ClientMessage::Viewing("/tasks".into()))
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"typing","payload":{"conversationId":7,"typing":true}}"#),
            Ok(ClientMessage::Typing { conversation_id: 7, typing: true })
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        assert!(rejected("{not json").message.starts_with("malformed JSON"));
        assert!(rejected("").message.starts_with("malformed JSON"));
        assert!(rejected("[1,2]").message.contains("JSON object"));
        assert!(rejected("\"ping\"").message.contains("JSON object"));
        assert!(rejected("{}").message.contains("JSON object"));
        assert!(rejected(r#"{"type":7}"#).message.contains("must be a string"));
        assert_eq!(rejected(r#"{"type":"dance"}"#).message, "unknown message type \"dance\"");
        assert!(rejected(r#"{"type":"subscribe"}"#).message.contains("topics"));
        assert!(rejected(r#"{"type":"subscribe","topics":[1]}"#).message.contains("strings"));
        let many = format!(r#"{{"type":"subscribe","topics":[{}]}}"#, vec!["\"presence\""; 51].join(","));
        assert!(rejected(&many).message.contains("at most 50"));
        assert!(rejected(r#"{"type":"viewing","payload":{}}"#).message.contains("path"));
        let long = format!(r#"{{"type":"viewing","payload":{{"path":"{}"}}}}"#, "a".repeat(201));
        assert!(rejected(&long).message.contains("at most 200"));
        assert!(
            rejected(r#"{"type":"typing","payload":{"conversationId":0,"typing":true}}"#)
                .message
                .contains("positive")
        );
        assert!(
            rejected(r#"{"type":"typing","payload":{"conversationId":3,"typing":"yes"}}"#)
                .message
                .contains("true or false")
        );
        assert!(rejected(r#"{"type":"typing"}"#).message.contains("payload"));
        assert!(rejected("{}").code == "bad_message");
    }

    #[test]
    fn server_messages_have_the_contract_shape() {
        let user = Actor { user_id: 4, username: "ana".into(), role: domain_events::model::Role::Staff };
        let json: Value = serde_json::from_str(server::connected(&user, None).as_str()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"connected","payload":{"userId":4,"username":"ana","role":"staff"}})
        );
        let json: Value = serde_json::from_str(server::connected(&user, Some("c-1")).as_str()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"connected","payload":{"userId":4,"username":"ana","role":"staff","connectionId":"c-1"}})
        );
        assert_eq!(server::close(4403).as_str(), r#"{"type":"close","payload":{"code":4403}}"#);
        assert_eq!(
            &server::close(1001).encoded(Encoding::EventStream)[..],
            b"data: {\"type\":\"close\",\"payload\":{\"code\":1001}}\n\n"
        );
        let error: Value =
            serde_json::from_str(server::error(&BadMessage::unknown_topic("x")).as_str()).expect("json");
        assert_eq!(
            error,
            serde_json::json!({"type":"error","payload":{"code":"unknown_topic","message":"unknown topic \"x\""}})
        );
        assert_eq!(server::pong().as_str(), r#"{"type":"pong"}"#);
        assert_eq!(
            server::value("stats:tasks", 3, r#"{"pending":1}"#).as_str(),
            r#"{"type":"stats:tasks","seq":3,"payload":{"pending":1}}"#
        );
        assert_eq!(
            server::subscribed(&["presence".into()]).as_str(),
            r#"{"type":"subscribed","payload":{"topics":["presence"]}}"#
        );
        let entry = PresenceEntry {
            user_id: 1,
            username: "ana".into(),
            connections: 2,
            viewing: Some("/tasks".into()),
        };
        assert_eq!(
            server::presence(&[entry]).as_str(),
            r#"{"type":"presence","payload":{"online":[{"userId":1,"username":"ana","connections":2,"viewing":"/tasks"}]}}"#
        );
        let typing = Typing { conversation_id: 3, user_id: 1, username: "ana".into(), typing: true };
        assert_eq!(
            server::typing(&typing).as_str(),
            r#"{"type":"typing","payload":{"conversationId":3,"userId":1,"username":"ana","typing":true}}"#
        );
    }
}
