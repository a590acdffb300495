//! How messages and events look on the wire: the one encoding of a stored message (push `data`,
//! history, sync and webhook payloads) and of push and event frames, below every module that
//! sends them.

mod json;

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

pub use self::json::{Encode, Object, object};
use crate::{domain::ConversationKind, store::conversations::StoredMessage};

/// How a message looks on the wire (push `data`, history and sync entries, webhook payloads).
impl Encode for StoredMessage {
    fn encode(&self, o: &mut Object<'_>) {
        o.str("id", &self.id).str("conversation", &self.conversation_id).int("seq", self.seq);
        o.opt_str("sender", self.sender.as_deref());
        match self.conversation_kind {
            ConversationKind::Direct => o.opt_str("recipient", self.recipient.as_deref()),
            ConversationKind::Group => o.str("group", &self.conversation_id),
        };
        o.str("content", &self.content).str("client_msg_id", &self.client_msg_id).int("created_at", self.created_at);
        if let Some(kind) = &self.kind {
            o.str("kind", kind);
        }
        o.opt_int("edited_at", self.edited_at).bool("recalled", self.recalled).bool("deleted", self.deleted);
        o.opt_int("reply_to", self.reply_to).strs("mentions", &self.mentions);
        o.object("reactions", |o| {
            for r in &self.reactions {
                o.object(&r.key, |o| {
                    o.int("count", r.count).bool("me", r.me);
                });
            }
        });
        // Writes refuse meta that is not valid JSON; a row from before that rule (or altered in
        // the database) is shown without it and reported, never failing the page it is on.
        if let Some(meta) = self.meta.as_deref() {
            match serde_json::from_str::<&RawValue>(meta) {
                Ok(raw) => {
                    o.raw("meta", raw);
                }
                Err(e) => {
                    metrics::counter!("natter_unrenderable_fields_total", "field" => "meta").increment(1);
                    tracing::warn!(conversation = %self.conversation_id, seq = self.seq, error = %e, "stored meta is not JSON; left out");
                }
            }
        }
    }
}

/// The same encoding where serde writes the body (REST pages, webhook payloads).
impl Serialize for StoredMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = object(|o| self.encode(o));
        let raw = RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// `{"type":"message","data":…}`: the push frame, encoded once per message.
pub fn push_frame(message: &StoredMessage) -> String {
    object(|o| {
        o.str("type", "message").nested("data", message);
    })
}

/// `{"type":"event","event":…,"data":…}`.
pub fn event_frame(event: &str, data: &impl Encode) -> String {
    object(|o| {
        o.str("type", "event").str("event", event).nested("data", data);
    })
}

/// A page of messages, as history answers it on REST and WebSocket alike.
#[derive(Debug, Serialize)]
pub struct MessagePage {
    pub messages: Vec<StoredMessage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: ConversationKind) -> StoredMessage {
        StoredMessage {
            id: "m1".into(),
            conversation_id: "c1".into(),
            conversation_kind: kind,
            seq: 3,
            sender: Some("alice".into()),
            recipient: Some("bob".into()),
            client_msg_id: "c-1".into(),
            kind: None,
            content: "hi".into(),
            meta: Some(r#"{"x":1}"#.into()),
            created_at: 10,
            edited_at: None,
            recalled: false,
            deleted: false,
            reply_to: Some(2),
            mentions: vec!["bob".into()],
            reactions: vec![crate::store::conversations::ReactionCount { key: "👍".into(), count: 2, me: true }],
            change_seq: 4,
        }
    }

    #[test]
    fn a_direct_push_names_its_recipient_and_a_group_push_its_group() {
        let v: serde_json::Value = serde_json::from_str(&push_frame(&message(ConversationKind::Direct))).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["data"]["recipient"], "bob");
        assert_eq!(v["data"]["meta"]["x"], 1);
        assert!(v["data"].get("group").is_none());
        assert_eq!(v["data"]["edited_at"], serde_json::Value::Null);
        assert_eq!((v["data"]["recalled"].as_bool(), v["data"]["deleted"].as_bool()), (Some(false), Some(false)));
        assert_eq!(v["data"]["reply_to"], 2);
        assert_eq!(v["data"]["mentions"], serde_json::json!(["bob"]));
        assert_eq!(v["data"]["reactions"], serde_json::json!({"👍": {"count": 2, "me": true}}));
        let v: serde_json::Value = serde_json::from_str(&push_frame(&message(ConversationKind::Group))).unwrap();
        assert_eq!(v["data"]["group"], "c1");
        assert!(v["data"].get("recipient").is_none());
    }

    #[test]
    fn history_and_webhooks_see_the_same_message_as_the_push() {
        let m = message(ConversationKind::Direct);
        let pushed: serde_json::Value = serde_json::from_str(&push_frame(&m)).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), pushed["data"]);
    }

    #[test]
    fn a_stored_meta_that_is_not_json_is_left_out_and_the_rest_is_written() {
        let mut m = message(ConversationKind::Group);
        m.meta = Some("{not json".into());
        let v: serde_json::Value = serde_json::from_str(&push_frame(&m)).unwrap();
        assert!(v["data"].get("meta").is_none());
        assert_eq!(v["data"]["content"], "hi");
    }
}
