//! Webhooks and the before-send hook in Tencent IM's callback shape, for an app with
//! `webhook_format = "tencent"`: its callback handler keeps working with Natter.
//!
//! Events still travel through the outbox (written with their change, retried, dead-lettered);
//! only the request changes at delivery: the URL gains Tencent's query string
//! (`SdkAppid`, `CallbackCommand`, `contenttype=json`, `ClientIP`, `OptPlatform`, and `Sign` =
//! hex sha256(webhook_secret + `RequestTime`) with `RequestTime` when the app has a secret), and
//! the body is Tencent's for the command. Events Tencent has no callback for are not sent (they
//! are marked delivered, counted as `skipped`).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::exchange::{HookRequest, Verdict};
use crate::{config::AppSettings, tencent::TimMessage};

/// Tencent's group type in callbacks: Natter keeps no type, and `Public` is what a group
/// created through Tencent's REST API defaults to.
const GROUP_TYPE: &str = "Public";

/// One callback: Tencent's command name and its body.
#[derive(Debug, PartialEq)]
pub struct Call {
    pub command: &'static str,
    pub body: Value,
}

/// Points a webhook or hook URL at a command, with Tencent's query string.
pub fn address(url: &mut reqwest::Url, settings: &AppSettings, command: &str) {
    let mut q = url.query_pairs_mut();
    q.append_pair("SdkAppid", &settings.tencent_sdkappid.to_string())
        .append_pair("CallbackCommand", command)
        .append_pair("contenttype", "json")
        .append_pair("ClientIP", "")
        .append_pair("OptPlatform", "RESTAPI");
    if !settings.webhook_secret.is_empty() {
        let time = (crate::domain::now_millis() / 1000).to_string();
        q.append_pair("RequestTime", &time).append_pair("Sign", &sign(settings.webhook_secret.expose(), &time));
    }
}

/// Tencent's callback authentication: hex sha256 of the token followed by the request time.
fn sign(token: &str, time: &str) -> String {
    hex::encode(Sha256::digest(format!("{token}{time}").as_bytes()))
}

/// The account Tencent names for an act: the user, or the administrator for the app's own.
fn account<'a>(id: &'a Value, admin: &'a str) -> &'a str {
    id.as_str().unwrap_or(admin)
}

fn members(ids: &Value) -> Vec<Value> {
    ids.as_array()
        .map(|ids| ids.iter().filter_map(Value::as_str).map(|id| json!({ "Member_Account": id })).collect())
        .unwrap_or_default()
}

/// The message fields every message callback carries.
fn message_fields(body: &mut Value, message: &TimMessage) {
    body["MsgBody"] = json!(message.body());
    if let Some(custom) = message.custom() {
        body["CloudCustomData"] = json!(custom);
    }
}

/// The callback for an outbox event (`{type, timestamp, app, data}`), if Tencent has one.
pub fn callback(event: &str, payload: &str, admin: &str) -> Option<Call> {
    let payload: Value = serde_json::from_str(payload).ok()?;
    let at = payload["timestamp"].as_i64().unwrap_or_default();
    let d = &payload["data"];
    let (command, mut body) = match event {
        "message.sent" => {
            let message = TimMessage::of_stored(d["content"].as_str().unwrap_or_default(), d.get("meta"));
            let from = account(&d["sender"], admin);
            let random = crate::tencent::random_of(d["client_msg_id"].as_str().unwrap_or_default());
            let time = d["created_at"].as_i64().unwrap_or(at) / 1000;
            let mut body = match d["group"].as_str() {
                Some(group) => json!({
                    "CallbackCommand": "Group.CallbackAfterSendMsg",
                    "GroupId": group, "Type": GROUP_TYPE,
                    "From_Account": from, "Operator_Account": from,
                    "Random": random, "MsgSeq": d["seq"], "MsgTime": time, "OnlineOnlyFlag": 0,
                }),
                None => json!({
                    "CallbackCommand": "C2C.CallbackAfterSendMsg",
                    "From_Account": from, "To_Account": d["recipient"],
                    "MsgSeq": d["seq"], "MsgRandom": random, "MsgTime": time, "MsgKey": d["id"],
                    "OnlineOnlyFlag": 0, "SendMsgResult": 0, "ErrorInfo": "send msg succeed", "UnreadMsgNum": 0,
                }),
            };
            message_fields(&mut body, &message);
            let command =
                if d["group"].is_string() { "Group.CallbackAfterSendMsg" } else { "C2C.CallbackAfterSendMsg" };
            (command, body)
        }
        "group.created" => {
            let group = &d["group"];
            let all = group["members"].as_array().cloned().unwrap_or_default();
            let owner = all.iter().find(|m| m["role"] == "owner").and_then(|m| m["id"].as_str()).unwrap_or(admin);
            let others: Vec<Value> = all
                .iter()
                .filter_map(|m| m["id"].as_str())
                .filter(|id| *id != owner)
                .map(|id| json!({ "Member_Account": id }))
                .collect();
            let body = json!({
                "CallbackCommand": "Group.CallbackAfterCreateGroup",
                "GroupId": group["id"], "Type": GROUP_TYPE,
                "Operator_Account": account(&d["by"], admin), "Owner_Account": owner,
                "Name": group["name"], "MemberList": others, "UserDefinedDataList": [],
            });
            ("Group.CallbackAfterCreateGroup", body)
        }
        "group.member_added" => {
            let body = json!({
                "CallbackCommand": "Group.CallbackAfterNewMemberJoin",
                "GroupId": d["group"], "Type": GROUP_TYPE, "JoinType": "Invited",
                "Operator_Account": account(&d["by"], admin), "NewMemberList": members(&d["members"]),
            });
            ("Group.CallbackAfterNewMemberJoin", body)
        }
        "group.member_removed" => {
            let quit = d["members"].as_array().is_some_and(|m| m.len() == 1 && m[0] == d["by"]);
            let body = json!({
                "CallbackCommand": "Group.CallbackAfterMemberExit",
                "GroupId": d["group"], "Type": GROUP_TYPE, "ExitType": if quit { "Quit" } else { "Kicked" },
                "Operator_Account": account(&d["by"], admin), "ExitMemberList": members(&d["members"]),
            });
            ("Group.CallbackAfterMemberExit", body)
        }
        "group.updated" => {
            let mut body = json!({
                "CallbackCommand": "Group.CallbackAfterGroupInfoChanged",
                "GroupId": d["group"], "Type": GROUP_TYPE, "Operator_Account": account(&d["by"], admin),
                "Name": d["name"],
            });
            if let Some(notice) = d["announcement"].as_str() {
                body["Notification"] = json!(notice);
            }
            if let Some(face) = d["avatar_url"].as_str() {
                body["FaceUrl"] = json!(face);
            }
            ("Group.CallbackAfterGroupInfoChanged", body)
        }
        "group.dissolved" => {
            let body = json!({
                "CallbackCommand": "Group.CallbackAfterGroupDestroyed",
                "GroupId": d["group"], "Type": GROUP_TYPE, "Operator_Account": account(&d["by"], admin),
            });
            ("Group.CallbackAfterGroupDestroyed", body)
        }
        "message.recalled" => {
            // Tencent's C2C recall callback names both accounts and the MsgKey, which the
            // event does not carry; only group recalls are sent.
            let conversation = d["conversation"].as_str()?;
            if conversation.starts_with(crate::domain::DM_PREFIX) {
                return None;
            }
            let body = json!({
                "CallbackCommand": "Group.CallbackAfterRecallMsg",
                "GroupId": conversation, "Type": GROUP_TYPE, "Operator_Account": account(&d["by"], admin),
                "MsgSeqList": [{ "MsgSeq": d["seq"] }],
            });
            ("Group.CallbackAfterRecallMsg", body)
        }
        "user.online" | "user.offline" => {
            let online = event == "user.online";
            let (action, reason) = match (online, d["reason"].is_string()) {
                (true, _) => ("Login", "Register"),
                (false, false) => ("Disconnect", "LinkClose"),
                (false, true) => ("Disconnect", "TimeOut"),
            };
            let body = json!({
                "CallbackCommand": "State.StateChange",
                "Info": { "Action": action, "To_Account": d["user"], "Reason": reason },
                "KickedDevice": [],
            });
            ("State.StateChange", body)
        }
        _ => return None,
    };
    body["EventTime"] = json!(at);
    Some(Call { command, body })
}

/// The before-send call for a message (or an edit) a client sends.
pub fn before_send(r: &HookRequest<'_>, admin: &str) -> Call {
    let meta = r.meta.and_then(|m| serde_json::from_str::<Value>(m.as_str()).ok());
    let message = TimMessage::of_stored(r.content, meta.as_ref());
    let from = r.sender.unwrap_or(admin);
    let random = crate::tencent::random_of(r.client_msg_id);
    let now = crate::domain::now_millis();
    let (command, mut body) = match r.group {
        Some(group) => (
            "Group.CallbackBeforeSendMsg",
            json!({
                "CallbackCommand": "Group.CallbackBeforeSendMsg",
                "GroupId": group, "Type": GROUP_TYPE, "From_Account": from, "Operator_Account": from,
                "Random": random, "OnlineOnlyFlag": 0,
            }),
        ),
        None => (
            "C2C.CallbackBeforeSendMsg",
            json!({
                "CallbackCommand": "C2C.CallbackBeforeSendMsg",
                "From_Account": from, "To_Account": r.recipient, "MsgRandom": random,
                "MsgTime": now / 1000, "OnlineOnlyFlag": 0,
            }),
        ),
    };
    message_fields(&mut body, &message);
    body["EventTime"] = json!(now);
    Call { command, body }
}

/// Reads a before-send answer: `ErrorCode` 0 allows (a `MsgBody` given replaces the message),
/// 1 rejects, 2 drops silently, 120001-130000 rejects with the app's `ErrorInfo`.
pub fn verdict(answer: &[u8]) -> Result<Verdict, String> {
    let v: Value = serde_json::from_slice(answer).map_err(|e| format!("hook answer not understood: {e}"))?;
    let code = v["ErrorCode"].as_i64().ok_or("hook answer has no ErrorCode")?;
    let info = v["ErrorInfo"].as_str().filter(|i| !i.is_empty());
    match code {
        0 => match v["MsgBody"].as_array() {
            Some(body) => {
                let message = TimMessage::parse(body, v["CloudCustomData"].as_str())
                    .map_err(|e| format!("hook answer's MsgBody: {e}"))?;
                let meta = message.to_meta().map_err(|e| format!("hook answer's MsgBody: {e}"))?;
                Ok(Verdict::Modify { content: message.text(), meta: Some(meta) })
            }
            None => Ok(Verdict::Allow),
        },
        1 | 120_001..=130_000 => Ok(Verdict::Reject(info.unwrap_or("rejected by the app").to_string())),
        2 => Ok(Verdict::Drop),
        other => Err(format!("hook answered ErrorCode {other}, which Tencent does not define")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: &str, data: Value) -> String {
        json!({ "type": event, "timestamp": 1_700_000_000_123_i64, "app": "a", "data": data }).to_string()
    }

    #[test]
    fn a_direct_message_is_cs_after_send_with_the_body_it_was_sent_with() {
        let meta = json!({"tencent":{"MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"d"}}],"CloudCustomData":"x"}});
        let data = json!({"id":"m1","conversation":"dm_1_2","seq":7,"sender":"jared","recipient":"jonh",
            "content":"d","client_msg_id":"tim-2837546","created_at":1_700_000_000_000_i64,"meta":meta});
        let call = callback("message.sent", &payload("message.sent", data), "administrator").unwrap();
        assert_eq!(call.command, "C2C.CallbackAfterSendMsg");
        let b = &call.body;
        assert_eq!((b["From_Account"].as_str(), b["To_Account"].as_str()), (Some("jared"), Some("jonh")));
        assert_eq!(
            (b["MsgSeq"].as_i64(), b["MsgRandom"].as_i64(), b["MsgTime"].as_i64()),
            (Some(7), Some(2837546), Some(1_700_000_000))
        );
        assert_eq!(b["MsgBody"][0]["MsgType"], "TIMCustomElem");
        assert_eq!((b["CloudCustomData"].as_str(), b["MsgKey"].as_str()), (Some("x"), Some("m1")));
        assert_eq!(b["EventTime"], 1_700_000_000_123_i64);
    }

    #[test]
    fn a_group_message_from_the_app_names_the_administrator() {
        let data = json!({"id":"m2","conversation":"team","group":"team","seq":3,"content":"hello",
            "client_msg_id":"welcome","created_at":1_700_000_000_000_i64});
        let call = callback("message.sent", &payload("message.sent", data), "administrator").unwrap();
        assert_eq!(call.command, "Group.CallbackAfterSendMsg");
        assert_eq!(call.body["From_Account"], "administrator");
        assert_eq!(call.body["MsgBody"], json!([{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]));
    }

    #[test]
    fn a_created_group_lists_its_owner_apart_from_its_members() {
        let data = json!({"group":{"id":"team","name":"Team","members":[{"id":"leckie","role":"owner"},{"id":"bob","role":"member"}]},"by":"leckie"});
        let call = callback("group.created", &payload("group.created", data), "administrator").unwrap();
        assert_eq!(call.body["Owner_Account"], "leckie");
        assert_eq!(call.body["MemberList"], json!([{"Member_Account":"bob"}]));
    }

    #[test]
    fn presence_is_state_change_and_events_tencent_lacks_are_not_sent() {
        let call = callback("user.offline", &payload("user.offline", json!({"user":"bob","at":1})), "admin").unwrap();
        assert_eq!(call.body["Info"], json!({"Action":"Disconnect","To_Account":"bob","Reason":"LinkClose"}));
        assert!(callback("user.registered", &payload("user.registered", json!({})), "admin").is_none());
        assert!(callback("message.edited", &payload("message.edited", json!({})), "admin").is_none());
    }

    #[test]
    fn before_send_answers_read_as_tencent_defines_them() {
        assert_eq!(verdict(br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#), Ok(Verdict::Allow));
        assert_eq!(verdict(br#"{"ErrorCode":1,"ErrorInfo":"no"}"#), Ok(Verdict::Reject("no".into())));
        assert_eq!(verdict(br#"{"ErrorCode":120002,"ErrorInfo":"custom"}"#), Ok(Verdict::Reject("custom".into())));
        assert_eq!(verdict(br#"{"ErrorCode":2}"#), Ok(Verdict::Drop));
        let modified = verdict(br#"{"ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}]}"#);
        assert!(
            matches!(modified, Ok(Verdict::Modify { ref content, meta: Some(_) }) if content == "***"),
            "{modified:?}"
        );
        assert!(verdict(br#"{"ErrorCode":7}"#).is_err());
        assert!(verdict(b"not json").is_err());
    }

    #[test]
    fn the_sign_is_sha256_of_token_and_time() {
        assert_eq!(sign("", ""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
