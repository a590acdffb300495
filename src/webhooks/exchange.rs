//! What a before-send call asks and what it may decide, whatever shape the call takes on the
//! wire (Natter's own in `hook`, Tencent's in `tencent`).

use serde::Serialize;

use crate::domain::Meta;

#[derive(Serialize)]
pub struct HookRequest<'a> {
    pub app: &'a str,
    pub sender: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'a str>,
    pub content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a Meta>,
    pub client_msg_id: &'a str,
    /// For an edit: the seq of the message being edited (`client_msg_id` is the original's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edit_of: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Reject(String),
    /// Store this content instead (and this meta, when the hook gave one).
    Modify {
        content: String,
        meta: Option<Meta>,
    },
    /// Answer the sender as if sent; store and deliver nothing (Tencent's `ErrorCode` 2).
    Drop,
}
