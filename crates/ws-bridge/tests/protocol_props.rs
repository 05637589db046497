//! Property tests of what clients can send: the parser never panics, accepts exactly the
//! well-formed messages, and topic names round-trip.

use std::sync::{Arc, LazyLock};

use domain_events::DomainEvent;
use futures_util::future::BoxFuture;
use proptest::prelude::*;
use serde_json::{Value, json};
use ws_bridge::protocol::{ClientMessage, MAX_TOPICS_PER_MESSAGE, MAX_VIEWING_PATH};
use ws_bridge::topic::{StatsError, Topic, TopicSource, TopicSpec, TopicValue, Topics};

/// A source that is never asked for anything here: only the names matter.
struct Unused;

impl TopicSource for Unused {
    fn dirtied_by(&self, _: &DomainEvent) -> bool {
        false
    }

    fn compute(&self) -> BoxFuture<'_, Result<TopicValue, StatsError>> {
        Box::pin(async { Ok(TopicValue::json(&0)) })
    }
}

static TOPICS: LazyLock<Topics> = LazyLock::new(|| {
    Topics::new(
        ["stats:tasks", "stats:approvals", "stats:conversations", "stats:sla"]
            .map(|name| TopicSpec::new(name, Arc::new(Unused))),
    )
    .expect("valid names")
});

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![Just("ping"), Just("subscribe"), Just("typing"), Just("viewing"), Just("unsubscribe")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("topics".into()),
                    Just("payload".into()),
                    Just("path".into()),
                    Just("conversationId".into()),
                    Just("typing".into()),
                    ".{0,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn topic() -> impl Strategy<Value = Topic> {
    prop_oneof![
        prop::sample::select(TOPICS.ids().collect::<Vec<_>>()).prop_map(Topic::Value),
        Just(Topic::Presence),
        (1..i64::MAX / 10).prop_map(Topic::Conversation),
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = ClientMessage::parse(&text);
    }

    #[test]
    fn arbitrary_json_is_accepted_only_in_a_valid_shape(value in any_json()) {
        let text = value.to_string();
        match ClientMessage::parse(&text) {
            Ok(ClientMessage::Ping) => prop_assert_eq!(&value["type"], "ping"),
            Ok(ClientMessage::Subscribe(topics)) | Ok(ClientMessage::Unsubscribe(topics)) => {
                prop_assert!(value["topics"].is_array());
                prop_assert!(topics.len() <= MAX_TOPICS_PER_MESSAGE);
            }
            Ok(ClientMessage::Viewing(path)) => {
                prop_assert_eq!(&value["type"], "viewing");
                prop_assert!(path.chars().count() <= MAX_VIEWING_PATH);
            }
            Ok(ClientMessage::Typing { conversation_id, typing }) => {
                prop_assert_eq!(&value["type"], "typing");
                prop_assert!(conversation_id > 0);
                prop_assert_eq!(value["payload"]["typing"].as_bool(), Some(typing));
            }
            Err(bad) => {
                prop_assert!(bad.code == "bad_message");
                prop_assert!(!bad.message.is_empty());
            }
        }
    }

    #[test]
    fn well_formed_messages_parse(topics in prop::collection::vec(topic(), 0..10), id in 1i64..1_000_000, typing: bool, path in "/[a-z/]{0,30}") {
        let names: Vec<String> = topics.iter().map(|t| t.name(&TOPICS)).collect();
        let subscribe = json!({"type": "subscribe", "topics": names}).to_string();
        prop_assert_eq!(ClientMessage::parse(&subscribe), Ok(ClientMessage::Subscribe(names.clone())));
        let typing_message = json!({"type": "typing", "payload": {"conversationId": id, "typing": typing}}).to_string();
        prop_assert_eq!(ClientMessage::parse(&typing_message), Ok(ClientMessage::Typing { conversation_id: id, typing }));
        let viewing = json!({"type": "viewing", "payload": {"path": path}}).to_string();
        prop_assert_eq!(ClientMessage::parse(&viewing), Ok(ClientMessage::Viewing(path)));
    }

    #[test]
    fn topic_names_round_trip(t in topic()) {
        prop_assert_eq!(Topic::parse(&t.name(&TOPICS), &TOPICS), Some(t));
    }

    #[test]
    fn arbitrary_topic_names_never_panic_and_reparse_exactly(name in ".{0,40}") {
        if let Some(t) = Topic::parse(&name, &TOPICS) {
            prop_assert_eq!(t.name(&TOPICS), name);
        }
    }
}
