//! Tencent IM's message shape, shared by its REST mount (`http::tencent`) and its callbacks
//! (`webhooks::tencent`): a message is a `MsgBody`, a list of elements
//! (`{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}`, `TIMCustomElem`, images, …), plus an
//! optional `CloudCustomData` string.
//!
//! In Natter such a message is stored with its text as `content` (what every Natter client
//! renders) and the elements whole in `meta.tencent`, so a client that knows Tencent's element
//! types renders them, and a callback gives back exactly the body that was sent.

use serde_json::{Value, json};

/// Tencent's group types; Natter keeps one kind of group, so the type is accepted, not stored.
pub const GROUP_TYPES: &[&str] = &["Private", "Public", "ChatRoom", "AVChatRoom", "Work", "Meeting", "Community"];

/// The element types Tencent defines.
const ELEMENT_TYPES: &[&str] = &[
    "TIMTextElem",
    "TIMCustomElem",
    "TIMFaceElem",
    "TIMLocationElem",
    "TIMImageElem",
    "TIMSoundElem",
    "TIMFileElem",
    "TIMVideoFileElem",
    "TIMRelayElem",
];

/// Elements one message may carry.
const MAX_ELEMENTS: usize = 20;

/// A message in Tencent's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TimMessage {
    body: Vec<Value>,
    custom: Option<String>,
}

impl TimMessage {
    /// Checks a `MsgBody`: 1-20 elements of Tencent's types, each with its `MsgContent` object,
    /// text elements with their `Text`.
    pub fn parse(body: &[Value], custom: Option<&str>) -> Result<TimMessage, String> {
        if body.is_empty() || body.len() > MAX_ELEMENTS {
            return Err(format!("MsgBody: give 1-{MAX_ELEMENTS} elements"));
        }
        for element in body {
            let kind = element.get("MsgType").and_then(Value::as_str).unwrap_or_default();
            if !ELEMENT_TYPES.contains(&kind) {
                return Err(format!("MsgBody: MsgType {kind:?} is not one of Tencent's element types"));
            }
            let Some(content) = element.get("MsgContent").filter(|c| c.is_object()) else {
                return Err(format!("MsgBody: {kind} needs a MsgContent object"));
            };
            if kind == "TIMTextElem" && !content.get("Text").is_some_and(Value::is_string) {
                return Err("MsgBody: TIMTextElem needs MsgContent.Text".into());
            }
        }
        Ok(TimMessage { body: body.to_vec(), custom: custom.map(str::to_string) })
    }

    /// What Natter clients show: the text elements' text; else a custom element's `Desc` or
    /// `Data`; else the first element's type in brackets (`[TIMImageElem]`).
    pub fn text(&self) -> String {
        let texts: String = self
            .body
            .iter()
            .filter(|e| e["MsgType"] == "TIMTextElem")
            .filter_map(|e| e["MsgContent"]["Text"].as_str())
            .collect();
        if !texts.is_empty() {
            return texts;
        }
        let custom = self.body.iter().filter(|e| e["MsgType"] == "TIMCustomElem").find_map(|e| {
            let c = &e["MsgContent"];
            [&c["Desc"], &c["Data"]].into_iter().filter_map(Value::as_str).find(|s| !s.is_empty())
        });
        match custom {
            Some(text) => text.to_string(),
            None => format!("[{}]", self.body[0]["MsgType"].as_str().unwrap_or("TIMCustomElem")),
        }
    }

    /// `{"tencent":{"MsgBody":[…],"CloudCustomData"?}}`: the message whole, for `meta`.
    pub fn meta(&self) -> Value {
        let mut tencent = json!({ "MsgBody": self.body });
        if let Some(custom) = &self.custom {
            tencent["CloudCustomData"] = json!(custom);
        }
        json!({ "tencent": tencent })
    }

    /// The same, as a message's `meta` (checked like any client's).
    pub fn to_meta(&self) -> Result<crate::domain::Meta, String> {
        crate::domain::Meta::parse(&self.meta().to_string()).map_err(|e| e.0)
    }

    /// The Tencent shape of a stored Natter message: the body it was sent with (from
    /// `meta.tencent`), or its content as one text element.
    pub fn of_stored(content: &str, meta: Option<&Value>) -> TimMessage {
        let tencent = meta.and_then(|m| m.get("tencent"));
        let body = tencent.and_then(|t| t.get("MsgBody")).and_then(Value::as_array).filter(|b| !b.is_empty());
        let custom = tencent.and_then(|t| t.get("CloudCustomData")).and_then(Value::as_str).map(str::to_string);
        match body {
            Some(body) => TimMessage { body: body.clone(), custom },
            None => TimMessage {
                body: vec![json!({ "MsgType": "TIMTextElem", "MsgContent": { "Text": content } })],
                custom,
            },
        }
    }

    pub fn body(&self) -> &[Value] {
        &self.body
    }

    pub fn custom(&self) -> Option<&str> {
        self.custom.as_deref()
    }
}

/// The `MsgRandom` a message was sent with through the REST mount (`client_msg_id`
/// `tim-<random>[-<seq>]`), else a number derived from its `client_msg_id`, stable across retries.
pub fn random_of(client_msg_id: &str) -> u64 {
    if let Some(rest) = client_msg_id.strip_prefix("tim-")
        && let Some(random) = rest.split('-').next().and_then(|r| r.parse::<u32>().ok())
    {
        return u64::from(random);
    }
    // FNV-1a, folded to 32 bits: any stable spread will do.
    let hash =
        client_msg_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash ^ (hash >> 32)) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_text_elements_else_a_custom_description_else_the_type() {
        let body = [
            json!({"MsgType":"TIMTextElem","MsgContent":{"Text":"hi "}}),
            json!({"MsgType":"TIMFaceElem","MsgContent":{"Index":1,"Data":"x"}}),
            json!({"MsgType":"TIMTextElem","MsgContent":{"Text":"there"}}),
        ];
        assert_eq!(TimMessage::parse(&body, None).unwrap().text(), "hi there");
        let custom = [json!({"MsgType":"TIMCustomElem","MsgContent":{"Data":"{\"order\":1}","Desc":"an order"}})];
        assert_eq!(TimMessage::parse(&custom, None).unwrap().text(), "an order");
        let image = [json!({"MsgType":"TIMImageElem","MsgContent":{"UUID":"1"}})];
        assert_eq!(TimMessage::parse(&image, None).unwrap().text(), "[TIMImageElem]");
    }

    #[test]
    fn bodies_tencent_would_refuse_are_refused() {
        assert!(TimMessage::parse(&[], None).is_err());
        assert!(TimMessage::parse(&[json!({"MsgType":"TIMTextElem"})], None).is_err());
        assert!(TimMessage::parse(&[json!({"MsgType":"TIMTextElem","MsgContent":{"Text":1}})], None).is_err());
        assert!(TimMessage::parse(&[json!({"MsgType":"Nope","MsgContent":{}})], None).is_err());
        assert!(TimMessage::parse(&[json!("TIMTextElem")], None).is_err());
    }

    #[test]
    fn a_stored_message_gives_back_the_body_it_was_sent_with() {
        let body = [json!({"MsgType":"TIMCustomElem","MsgContent":{"Data":"d"}})];
        let sent = TimMessage::parse(&body, Some("extra")).unwrap();
        assert_eq!(TimMessage::of_stored("d", Some(&sent.meta())), sent);
        let plain = TimMessage::of_stored("hello", None);
        assert_eq!(plain.body(), [json!({"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}})]);
    }

    #[test]
    fn the_random_of_a_rest_send_is_its_msg_random() {
        assert_eq!(random_of("tim-2837546"), 2837546);
        assert_eq!(random_of("tim-2837546-48374"), 2837546);
        assert_eq!(random_of("c-1"), random_of("c-1"));
        assert!(random_of("c-1") <= u64::from(u32::MAX));
    }
}
