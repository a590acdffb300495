//! Stopping a user: the app's bans (app-wide, timed or until lifted), a user's own blocks, and
//! the audit trail every moderation act leaves.
//!
//! A ban is a fact on the user's row: every way in (login, refresh, a token, a connect) reads
//! that row anyway and refuses a banned user (`auth::refuse_banned`), so a ban holds on every node
//! from its commit and ends by itself at its time with nothing to undo. Sockets already open are
//! closed with 4503 on every node through the control subject.

use serde::{Deserialize, Serialize};

use crate::{
    accounts,
    auth::Identity,
    bus::Envelope,
    domain::{AppId, UserId, UserKey, check_no_nul, now_millis},
    error::{ApiError, ApiResult, CloseCode, ErrorCode},
    node::Node,
    store::{
        audit::{AuditEntry, AuditQuery, NewAudit},
        blocks::Blocked,
        users::{BANNED_UNTIL_LIFTED, UserRecord},
    },
};

/// The longest timed ban: ten years (longer is "until lifted").
const MAX_BAN_MINUTES: u64 = 10 * 366 * 24 * 60;
/// Longest reason, in bytes.
const MAX_REASON_BYTES: usize = 512;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// How long; absent: until lifted.
    #[serde(default)]
    pub minutes: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BanView {
    pub user: String,
    /// Unix ms when it ends by itself; `null`: until lifted.
    pub until: Option<i64>,
    pub reason: Option<String>,
}

fn check_reason(reason: Option<&str>) -> ApiResult<()> {
    let Some(reason) = reason else { return Ok(()) };
    check_no_nul("reason", reason).map_err(|e| ApiError::validation(e.0))?;
    if reason.len() > MAX_REASON_BYTES || reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::validation(format!("reason: at most {MAX_REASON_BYTES} bytes of text")));
    }
    Ok(())
}

/// Bans a user (replacing any ban in force) and closes their sockets everywhere.
pub async fn ban(node: &Node, app: &AppId, user: &UserRecord, req: BanRequest) -> ApiResult<BanView> {
    check_reason(req.reason.as_deref())?;
    let until = match req.minutes {
        None => BANNED_UNTIL_LIFTED,
        Some(m) if (1..=MAX_BAN_MINUTES).contains(&m) => now_millis() + m as i64 * 60_000,
        Some(_) => return Err(ApiError::validation(format!("minutes: must be 1-{MAX_BAN_MINUTES}, or absent"))),
    };
    let shown = (until != BANNED_UNTIL_LIFTED).then_some(until);
    let data = serde_json::json!({ "until": shown });
    let entry = NewAudit {
        action: "user.banned",
        target_user: Some(&user.id),
        reason: req.reason.as_deref(),
        data: Some(&data),
        ..NewAudit::default()
    };
    node.store.ban_user(app, user.key, until, req.reason.as_deref(), &entry).await?;
    accounts::kick(node, app, user.key.0, None, CloseCode::Banned);
    tracing::info!(app = %app, user = %user.id, until = ?shown, "user banned");
    Ok(BanView { user: user.id.clone(), until: shown, reason: req.reason })
}

/// Lifts a user's ban; whether one was in force.
pub async fn lift(node: &Node, app: &AppId, user: &UserRecord) -> ApiResult<bool> {
    let entry = NewAudit { action: "user.unbanned", target_user: Some(&user.id), ..NewAudit::default() };
    Ok(node.store.lift_ban(app, user.key, &entry).await?)
}

/// The bans in force, soonest end first.
pub async fn bans(node: &Node, app: &AppId) -> ApiResult<Vec<BanView>> {
    let now = now_millis();
    let users = node.store.banned_users(app, now, 10_000).await?;
    Ok(users
        .into_iter()
        .filter_map(|u| u.ban_at(now).map(|b| BanView { user: u.id.clone(), until: b.until, reason: b.reason }))
        .collect())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRequest {
    #[serde(default)]
    pub user: Option<UserId>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub cursor: Option<String>,
}

/// The app's audit trail, newest first, paged with a cursor.
pub async fn audit(node: &Node, app: &AppId, req: &AuditRequest) -> ApiResult<AuditPage> {
    let limit = req.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit: must be 1-1000"));
    }
    let bad = || ApiError::validation("cursor: not a cursor this server returned");
    let before = match req.cursor.as_deref() {
        None => None,
        Some(c) => {
            let (at, id) = c.split_once('.').ok_or_else(bad)?;
            if id.is_empty() || !id.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return Err(bad());
            }
            Some((at.parse::<i64>().map_err(|_| bad())?, id))
        }
    };
    let query = AuditQuery { user: req.user.as_ref().map(UserId::as_str), group: req.group.as_deref(), before, limit };
    let entries = node.store.audit_log(app, &query).await?;
    let cursor =
        (entries.len() as i64 == limit).then(|| entries.last().map(|e| format!("{}.{}", e.at, e.id))).flatten();
    Ok(AuditPage { entries, cursor })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub user: UserId,
}

#[derive(Debug, Serialize)]
pub struct BlockView {
    pub user: String,
    pub blocked: bool,
}

/// The key of a user the caller names in a block (not themselves).
async fn other_user(node: &Node, who: &Identity, user: &UserId) -> ApiResult<UserKey> {
    let key = node
        .store
        .user_key_by_id(&who.app, user)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, format!("no user {user}")))?;
    if key == who.user {
        return Err(ApiError::validation("user: you cannot block yourself"));
    }
    Ok(key)
}

/// The caller blocks a user: their direct messages are refused (403 `blocked`, stored nowhere),
/// and their presence and typing no longer reach the caller. Idempotent.
pub async fn block(node: &Node, who: &Identity, user: &UserId) -> ApiResult<BlockView> {
    let key = other_user(node, who, user).await?;
    node.store.block(&who.app, who.user, key).await?;
    // The caller's sessions on every node stop watching the blocked user's presence.
    node.fanout.control(who.app.as_str(), &Envelope::Unwatch { user: who.user.0, target: key.0 }, b"");
    Ok(BlockView { user: user.as_str().to_string(), blocked: true })
}

/// Lifts the caller's block of a user (idempotent). Presence is watched again when the client
/// subscribes again.
pub async fn unblock(node: &Node, who: &Identity, user: &UserId) -> ApiResult<BlockView> {
    let key = other_user(node, who, user).await?;
    node.store.unblock(&who.app, who.user, key).await?;
    Ok(BlockView { user: user.as_str().to_string(), blocked: false })
}

/// Whom the caller blocks, newest first.
pub async fn blocks(node: &Node, who: &Identity) -> ApiResult<Vec<Blocked>> {
    Ok(node.store.blocked_by(&who.app, who.user).await?)
}
