//! WebSocket frames (design §5): parsing client frames and encoding replies.
//!
//! A frame is parsed in one pass into a borrowed envelope; its `data` is then parsed once into the
//! typed request of its action. Every failure carries the frame's `id` (when it had one) so the
//! client can match the error reply.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use crate::{
    accounts::{RegisterRequest, UserQueryRequest},
    chat::{HistoryRequest, ReadRequest, SendRequest, SyncRequest, TypingRequest},
    domain::{Announcement, AppId, AvatarUrl, ConversationId, DeviceId, Email, GroupId, Name, Password, Role, UserId},
    error::{ApiError, ErrorCode},
    groups::{
        CreateGroupRequest, MembersRequest,
        admin::{MemberUpdate, UpdateGroupRequest},
    },
    inbox::{ListRequest, PrefsRequest},
    lifecycle::{DeleteRequest, EditRequest, MessageRef, ReactRequest},
    moderation::BlockRequest,
};

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginData {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub password: Option<Password>,
    #[serde(default)]
    pub device_id: Option<DeviceId>,
    /// For email login: the app (else the socket's `X-App-Id`/`?app=`, else `default`).
    #[serde(default)]
    pub app: Option<AppId>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceData {
    #[serde(default)]
    pub subscribe: Vec<UserId>,
    #[serde(default)]
    pub unsubscribe: Vec<UserId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryData {
    pub conversation: ConversationId,
    #[serde(default)]
    pub after_seq: Option<i64>,
    #[serde(default)]
    pub before_seq: Option<i64>,
    #[serde(default)]
    pub limit: Option<i64>,
}

impl HistoryData {
    pub fn split(self) -> (ConversationId, HistoryRequest) {
        (
            self.conversation,
            HistoryRequest { after_seq: self.after_seq, before_seq: self.before_seq, limit: self.limit },
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    pub group: GroupId,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMembersData {
    pub group: GroupId,
    pub members: Vec<UserId>,
}

impl GroupMembersData {
    pub fn split(self) -> (GroupId, MembersRequest) {
        (self.group, MembersRequest { members: self.members })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberData {
    pub group: GroupId,
    pub member: UserId,
}

/// `group.update`: a group's profile and switches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdateData {
    pub group: GroupId,
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub avatar_url: Option<Option<AvatarUrl>>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub announcement: Option<Option<Announcement>>,
    #[serde(default)]
    pub muted: Option<bool>,
}

impl GroupUpdateData {
    pub fn split(self) -> (GroupId, UpdateGroupRequest) {
        let GroupUpdateData { group, name, avatar_url, announcement, muted } = self;
        (group, UpdateGroupRequest { name, avatar_url, announcement, muted })
    }
}

/// `group.member`: a member's role or mute.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberUpdateData {
    pub group: GroupId,
    pub member: UserId,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub muted_until: Option<Option<i64>>,
}

impl GroupMemberUpdateData {
    pub fn split(self) -> (GroupId, UserId, MemberUpdate) {
        (self.group, self.member, MemberUpdate { role: self.role, muted_until: self.muted_until })
    }
}

/// `conversation.set`: the caller's own settings of one conversation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationPrefs {
    pub conversation: ConversationId,
    #[serde(default)]
    pub pinned: Option<bool>,
    #[serde(default)]
    pub archived: Option<bool>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub muted_until: Option<Option<i64>>,
}

impl ConversationPrefs {
    pub fn split(self) -> (ConversationId, PrefsRequest) {
        (
            self.conversation,
            PrefsRequest { pinned: self.pinned, archived: self.archived, muted_until: self.muted_until },
        )
    }
}

#[derive(Debug)]
pub enum Action {
    Login(LoginData),
    Register(RegisterRequest),
    Ping,
    Query(UserQueryRequest),
    Sync(SyncRequest),
    Read(ReadRequest),
    Typing(TypingRequest),
    Presence(PresenceData),
    History(HistoryData),
    Conversations(ListRequest),
    Edit(EditRequest),
    Recall(MessageRef),
    Delete(DeleteRequest),
    React(ReactRequest),
    ConversationSet(ConversationPrefs),
    Block(BlockRequest),
    Unblock(BlockRequest),
    Blocks,
    GroupCreate(CreateGroupRequest),
    GroupList,
    GroupShow(GroupRef),
    GroupAdd(GroupMembersData),
    GroupRemove(GroupMemberData),
    GroupLeave(GroupRef),
    GroupUpdate(GroupUpdateData),
    GroupDissolve(GroupRef),
    GroupMember(GroupMemberUpdateData),
}

impl Action {
    /// Actions a socket may use before it has authenticated.
    pub fn allowed_before_login(&self) -> bool {
        matches!(self, Action::Login(_) | Action::Register(_) | Action::Ping)
    }
}

#[derive(Debug)]
pub enum ClientFrame {
    Action(Action),
    Message(SendRequest),
}

#[derive(Debug)]
pub struct Parsed {
    pub id: Option<Box<RawValue>>,
    pub frame: ClientFrame,
}

#[derive(Debug)]
pub struct FrameError {
    pub id: Option<Box<RawValue>>,
    pub error: ApiError,
}

fn data<T: DeserializeOwned>(raw: Option<&RawValue>) -> Result<T, ApiError> {
    let text = raw.map_or("{}", RawValue::get);
    if !text.starts_with('{') {
        return Err(ApiError::validation("data: must be a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| ApiError::validation(format!("data: {e}")))
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Parsed, FrameError> {
    let raw: RawFrame<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let error = if e.is_syntax() || e.is_eof() {
                ApiError::new(ErrorCode::InvalidJson, format!("frame is not valid JSON: {e}"))
            } else {
                ApiError::new(
                    ErrorCode::InvalidFrame,
                    format!("frame must be a JSON object with string type/action: {e}"),
                )
            };
            return Err(FrameError { id: None, error });
        }
    };
    let id = match raw.id {
        None => None,
        Some(id) if id.get() == "null" => None,
        Some(id) => {
            let first = id.get().as_bytes().first().copied().unwrap_or(b' ');
            if !(first == b'"' || first == b'-' || first.is_ascii_digit()) {
                let error = ApiError::new(ErrorCode::InvalidFrame, "id: must be a string or a number");
                return Err(FrameError { id: None, error });
            }
            Some(id.to_owned())
        }
    };
    let fail = |error: ApiError| FrameError { id: id.clone(), error };
    let frame = match raw.kind.as_deref() {
        None => return Err(fail(ApiError::new(ErrorCode::InvalidFrame, "type: missing"))),
        Some("message") => ClientFrame::Message(data(raw.data).map_err(fail)?),
        Some("action") => {
            let action = match raw.action.as_deref() {
                None => return Err(fail(ApiError::new(ErrorCode::InvalidFrame, "action: missing"))),
                Some("login") => Action::Login(data(raw.data).map_err(fail)?),
                Some("register") => Action::Register(data(raw.data).map_err(fail)?),
                Some("ping") => Action::Ping,
                Some("query") => Action::Query(data(raw.data).map_err(fail)?),
                Some("sync") => Action::Sync(data(raw.data).map_err(fail)?),
                Some("read") => Action::Read(data(raw.data).map_err(fail)?),
                Some("typing") => Action::Typing(data(raw.data).map_err(fail)?),
                Some("presence") => Action::Presence(data(raw.data).map_err(fail)?),
                Some("history") => Action::History(data(raw.data).map_err(fail)?),
                Some("conversations") => Action::Conversations(data(raw.data).map_err(fail)?),
                Some("conversation.set") => Action::ConversationSet(data(raw.data).map_err(fail)?),
                Some("edit") => Action::Edit(data(raw.data).map_err(fail)?),
                Some("recall") => Action::Recall(data(raw.data).map_err(fail)?),
                Some("delete") => Action::Delete(data(raw.data).map_err(fail)?),
                Some("react") => Action::React(data(raw.data).map_err(fail)?),
                Some("block") => Action::Block(data(raw.data).map_err(fail)?),
                Some("unblock") => Action::Unblock(data(raw.data).map_err(fail)?),
                Some("blocks") => Action::Blocks,
                Some("group.create") => Action::GroupCreate(data(raw.data).map_err(fail)?),
                Some("group.list") => Action::GroupList,
                Some("group.show") => Action::GroupShow(data(raw.data).map_err(fail)?),
                Some("group.add") => Action::GroupAdd(data(raw.data).map_err(fail)?),
                Some("group.remove") => Action::GroupRemove(data(raw.data).map_err(fail)?),
                Some("group.leave") => Action::GroupLeave(data(raw.data).map_err(fail)?),
                Some("group.update") => Action::GroupUpdate(data(raw.data).map_err(fail)?),
                Some("group.dissolve") => Action::GroupDissolve(data(raw.data).map_err(fail)?),
                Some("group.member") => Action::GroupMember(data(raw.data).map_err(fail)?),
                Some(other) => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(fail(ApiError::new(ErrorCode::UnknownAction, format!("unknown action {shown:?}"))));
                }
            };
            ClientFrame::Action(action)
        }
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return Err(fail(ApiError::new(ErrorCode::UnknownType, format!("unknown frame type {shown:?}"))));
        }
    };
    Ok(Parsed { id, frame })
}

#[derive(Serialize)]
struct Reply<'a, T: Serialize> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    code: u16,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a T>,
    /// Only on a page of a list: where the next page starts (`null` on the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

fn encode_reply<T: Serialize>(reply: &Reply<'_, T>) -> String {
    match serde_json::to_string(reply) {
        Ok(text) => text,
        Err(e) => error_reply(reply.id, &ApiError::internal(format_args!("encoding a reply: {e}"))),
    }
}

/// `{"type":"reply","id":…,"code":…,"msg":…,"data":…}`. Data that cannot be encoded turns into
/// an `internal` error reply to the same id (logged), never an empty frame.
pub fn reply<T: Serialize>(id: Option<&RawValue>, code: u16, msg: &str, data: Option<&T>) -> String {
    encode_reply(&Reply { r#type: "reply", id, code, msg, data, cursor: None, error: None })
}

/// A reply holding one page of a list: the items as `data`, and `cursor` beside it (`null` on
/// the last page), as REST answers a page.
pub fn reply_page<T: Serialize>(id: Option<&RawValue>, items: &[T], cursor: Option<&str>) -> String {
    encode_reply(&Reply {
        r#type: "reply",
        id,
        code: 200,
        msg: "ok",
        data: Some(&items),
        cursor: Some(cursor),
        error: None,
    })
}

/// An error reply: the HTTP-like status as `code`, the stable code as `error`.
pub fn error_reply(id: Option<&RawValue>, error: &ApiError) -> String {
    #[derive(Serialize)]
    struct ErrorReply<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
        code: u16,
        msg: &'a str,
        error: &'static str,
    }
    let reply =
        ErrorReply { r#type: "reply", id, code: error.code.status(), msg: &error.message, error: error.code.as_str() };
    // Strings, a number and an id that parsed as a JSON string or number: always encodable.
    serde_json::to_string(&reply).unwrap_or_else(|_| {
        format!(r#"{{"type":"reply","code":{},"msg":"","error":"{}"}}"#, error.code.status(), error.code.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        parse(text).unwrap_err().error.code
    }

    #[test]
    fn a_message_frame_parses_into_a_send_request() {
        let p = parse(r#"{"type":"message","id":7,"data":{"recipient":"bob","content":"hi","client_msg_id":"c1"}}"#)
            .unwrap();
        assert_eq!(p.id.unwrap().get(), "7");
        let ClientFrame::Message(m) = p.frame else { panic!("not a message") };
        assert_eq!(m.recipient.unwrap().as_str(), "bob");
        assert_eq!(m.content, "hi");
    }

    #[test]
    fn every_action_parses() {
        let frames = [
            r#"{"type":"action","action":"login","data":{"token":"t"}}"#,
            r#"{"type":"action","action":"register","data":{"email":"a@b.co","password":"x7!kq2zp-long","first_name":"A","last_name":"B"}}"#,
            r#"{"type":"action","action":"ping"}"#,
            r#"{"type":"action","action":"query","data":{"id":"bob"}}"#,
            r#"{"type":"action","action":"sync","data":{"conversations":{"dm_1_2":3}}}"#,
            r#"{"type":"action","action":"read","data":{"conversation":"dm_1_2","seq":3}}"#,
            r#"{"type":"action","action":"typing","data":{"conversation":"dm_1_2"}}"#,
            r#"{"type":"action","action":"presence","data":{"subscribe":["bob"]}}"#,
            r#"{"type":"action","action":"history","data":{"conversation":"g1","before_seq":9}}"#,
            r#"{"type":"action","action":"conversations"}"#,
            r#"{"type":"action","action":"group.create","data":{"name":"Team","members":["bob"]}}"#,
            r#"{"type":"action","action":"group.list"}"#,
            r#"{"type":"action","action":"group.show","data":{"group":"g1"}}"#,
            r#"{"type":"action","action":"group.add","data":{"group":"g1","members":["c"]}}"#,
            r#"{"type":"action","action":"group.remove","data":{"group":"g1","member":"c"}}"#,
            r#"{"type":"action","action":"group.leave","data":{"group":"g1"}}"#,
        ];
        for f in frames {
            assert!(parse(f).is_ok(), "{f}: {:?}", parse(f).err());
        }
    }

    #[test]
    fn malformed_frames_get_their_documented_codes() {
        use ErrorCode::*;
        let cases: [(&str, ErrorCode); 20] = [
            ("", InvalidJson),
            ("{", InvalidJson),
            ("not json", InvalidJson),
            ("[1,2]", InvalidFrame),
            ("42", InvalidFrame),
            ("\"str\"", InvalidFrame),
            ("{}", InvalidFrame),
            (r#"{"type":5}"#, InvalidFrame),
            (r#"{"type":"shout"}"#, UnknownType),
            (r#"{"type":"action"}"#, InvalidFrame),
            (r#"{"type":"action","action":"fly"}"#, UnknownAction),
            (r#"{"type":"action","action":"login","data":[]}"#, ValidationFailed),
            (r#"{"type":"message","data":{"recipient":"bob"}}"#, ValidationFailed),
            (r#"{"type":"message","data":{"recipient":"b b","content":"x","client_msg_id":"1"}}"#, ValidationFailed),
            (r#"{"type":"message","data":{"recipient":"bob","content":"x","client_msg_id":""}}"#, ValidationFailed),
            (r#"{"type":"message","data":{"recipient":"bob","content":7,"client_msg_id":"1"}}"#, ValidationFailed),
            (
                r#"{"type":"message","data":{"recipient":"bob","content":"x","client_msg_id":"1","extra":1}}"#,
                ValidationFailed,
            ),
            (r#"{"type":"action","action":"read","data":{"conversation":"dm_1_2","seq":"x"}}"#, ValidationFailed),
            (r#"{"type":"action","action":"ping","id":{"a":1}}"#, InvalidFrame),
            (r#"{"type":"action","action":"sync","data":{"conversations":{"c":"x"}}}"#, ValidationFailed),
        ];
        for (frame, code) in cases {
            assert_eq!(code_of(frame), code, "{frame}");
        }
    }

    #[test]
    fn errors_keep_the_frame_id() {
        let err = parse(r#"{"type":"action","action":"fly","id":"abc"}"#).unwrap_err();
        assert_eq!(err.id.unwrap().get(), "\"abc\"");
    }

    /// The reply a server sends for a frame that failed to parse, checked against the protocol.
    fn assert_documented_error_reply(text: &str) {
        if let Err(e) = parse(text) {
            let reply: serde_json::Value =
                serde_json::from_str(&error_reply(e.id.as_deref(), &e.error)).expect("reply is JSON");
            assert_eq!(reply["type"], "reply");
            let code = reply["error"].as_str().expect("error code");
            let documented = ErrorCode::ALL.iter().find(|c| c.as_str() == code).expect("documented code");
            assert_eq!(reply["code"], documented.status());
            assert!(reply["msg"].is_string());
        }
    }

    #[test]
    fn the_checked_in_corpus_parses_without_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/frames");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("corpus") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("frame");
            assert_documented_error_reply(&text);
            n += 1;
        }
        assert!(n >= 20, "corpus has {n} frames");
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,12}".prop_map(serde_json::Value::from),
            prop::sample::select(vec!["bob", "dm_1_2", "g1", "c-1", ""]).prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "recipient",
                        "group",
                        "content",
                        "client_msg_id",
                        "conversation",
                        "seq",
                        "token",
                        "email",
                        "password",
                        "members",
                        "subscribe",
                        "cursor",
                        "limit",
                        "kind",
                        "meta",
                        "x",
                    ]),
                    inner,
                    0..5
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    fn frame() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let structured = (
            prop::sample::select(vec!["action", "message", "reply", "event", ""]),
            prop::sample::select(vec![
                "login",
                "register",
                "ping",
                "query",
                "sync",
                "read",
                "typing",
                "presence",
                "history",
                "conversations",
                "group.create",
                "group.list",
                "group.show",
                "group.add",
                "group.remove",
                "group.leave",
                "nope",
            ]),
            json_value(),
            json_value(),
        )
            .prop_map(|(t, a, id, data)| {
                serde_json::json!({"type": t, "action": a, "id": id, "data": data}).to_string()
            });
        prop_oneof![3 => structured, 1 => ".*", 1 => "[{}\\[\\]\":,a-z0-9 ]{0,40}"]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 100_000, failure_persistence: None, .. Default::default() })]
        #[test]
        fn a_hundred_thousand_random_frames_never_panic_and_get_documented_replies(text in frame()) {
            assert_documented_error_reply(&text);
        }
    }

    #[test]
    fn replies_echo_the_id_and_carry_the_error_code() {
        let id = RawValue::from_string("\"x1\"".into()).unwrap();
        let text = error_reply(Some(&id), &ApiError::new(ErrorCode::NotAMember, "nope"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "reply");
        assert_eq!(v["id"], "x1");
        assert_eq!(v["code"], 403);
        assert_eq!(v["error"], "not_a_member");
        let text = reply(None, 200, "ok", Some(&serde_json::json!({"a":1})));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["data"]["a"], 1);
        assert!(v.get("id").is_none());
    }
}
