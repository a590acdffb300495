//! How messages and events look on the wire: the one encoding of a stored message (push `data`,
//! history, sync and webhook payloads) and of push and event frames, below every module that
//! sends them.

use serde::{Serialize, Serializer, ser::SerializeStruct};
use serde_json::value::RawValue;

use crate::{
    domain::ConversationKind,
    error::{ApiError, ApiResult},
    store::conversations::StoredMessage,
};

/// How a message looks on the wire (push `data`, history and sync entries).
impl Serialize for StoredMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Writes refuse meta that is not valid JSON; a row from before that rule (or altered in the
        // database) is shown without it and reported, never failing the page it is on.
        let meta = self.meta.as_deref().and_then(|m| match serde_json::from_str::<&RawValue>(m) {
            Ok(raw) => Some(raw),
            Err(e) => {
                metrics::counter!("natter_unrenderable_fields_total", "field" => "meta").increment(1);
                tracing::warn!(conversation = %self.conversation_id, seq = self.seq, error = %e, "stored meta is not JSON; left out");
                None
            }
        });
        let mut s = serializer.serialize_struct("Message", 11)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("conversation", &self.conversation_id)?;
        s.serialize_field("seq", &self.seq)?;
        s.serialize_field("sender", &self.sender)?;
        match self.conversation_kind {
            ConversationKind::Direct => s.serialize_field("recipient", &self.recipient)?,
            ConversationKind::Group => s.serialize_field("group", &self.conversation_id)?,
        }
        s.serialize_field("content", &self.content)?;
        s.serialize_field("client_msg_id", &self.client_msg_id)?;
        s.serialize_field("created_at", &self.created_at)?;
        if let Some(kind) = &self.kind {
            s.serialize_field("kind", kind)?;
        }
        if let Some(meta) = meta {
            s.serialize_field("meta", meta)?;
        }
        s.end()
    }
}

/// `{"type":"message","data":…}`: the push frame, encoded once per message.
pub fn push_frame(message: &StoredMessage) -> ApiResult<Vec<u8>> {
    #[derive(Serialize)]
    struct Push<'a> {
        r#type: &'static str,
        data: &'a StoredMessage,
    }
    serde_json::to_vec(&Push { r#type: "message", data: message }).map_err(ApiError::caused_by)
}

/// `{"type":"event","event":…,"data":…}`.
pub fn event_frame(event: &str, data: &impl Serialize) -> ApiResult<Vec<u8>> {
    #[derive(Serialize)]
    struct Event<'a, T> {
        r#type: &'static str,
        event: &'a str,
        data: &'a T,
    }
    serde_json::to_vec(&Event { r#type: "event", event, data }).map_err(ApiError::caused_by)
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
        }
    }

    #[test]
    fn a_direct_push_names_its_recipient_and_a_group_push_its_group() {
        let v: serde_json::Value =
            serde_json::from_slice(&push_frame(&message(ConversationKind::Direct)).unwrap()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["data"]["recipient"], "bob");
        assert_eq!(v["data"]["meta"]["x"], 1);
        assert!(v["data"].get("group").is_none());
        let v: serde_json::Value =
            serde_json::from_slice(&push_frame(&message(ConversationKind::Group)).unwrap()).unwrap();
        assert_eq!(v["data"]["group"], "c1");
        assert!(v["data"].get("recipient").is_none());
    }
}
