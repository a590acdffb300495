//! Hosted accounts: register, login, guests and their upgrade, refresh rotation, logout, profiles.
//! Shared by the REST API and the WebSocket `login`/`register`/`query` actions.

use serde::{Deserialize, Serialize};

use crate::{
    auth::{Identity, new_refresh_token, token_hash, tokens::NewToken},
    bus::Envelope,
    domain::{AppId, AvatarUrl, DeviceId, Email, Name, Password, UserId, UserKind, random_id},
    error::{ApiError, ApiResult, CloseCode, ErrorCode},
    node::Node,
    store::{
        apps::AppRecord,
        outbox::Hooks,
        users::{ImportUser, NewUser, ProfilePatch, RefreshUse, UserQuery, UserRecord, UserWriteError},
    },
};

/// A user as the API shows them; `email` only to the user themself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    pub kind: UserKind,
    pub created_at: i64,
}

impl UserView {
    pub fn of_self(user: &UserRecord) -> Self {
        Self { email: user.email.clone(), ..Self::public(user) }
    }

    pub fn public(user: &UserRecord) -> Self {
        Self {
            id: user.id.clone(),
            email: None,
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            nickname: user.nickname.clone(),
            avatar_url: user.avatar_url.clone(),
            kind: user.kind,
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Access-token expiry, unix milliseconds.
    pub expires_at: i64,
    pub user: UserView,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: Email,
    pub password: Password,
    pub first_name: Name,
    pub last_name: Name,
    #[serde(default)]
    pub device_id: Option<DeviceId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: Email,
    pub password: Password,
    #[serde(default)]
    pub device_id: Option<DeviceId>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRequest {
    #[serde(default)]
    pub first_name: Option<Name>,
    #[serde(default)]
    pub device_id: Option<DeviceId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    #[serde(default)]
    pub first_name: Option<Name>,
    #[serde(default)]
    pub last_name: Option<Name>,
    #[serde(default)]
    pub nickname: Option<Name>,
    #[serde(default)]
    pub avatar_url: Option<AvatarUrl>,
}

/// `GET /v1/users` and the `query` action: fields combined with AND.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQueryRequest {
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub id: Option<UserId>,
    #[serde(default)]
    pub first_name: Option<Name>,
    #[serde(default)]
    pub last_name: Option<Name>,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredentials, "email or password is wrong")
}

/// What the app asks for when it mints a user token through the server API (RongCloud's
/// getToken): the user, created or updated on the way.
pub struct AppTokenRequest<'a> {
    pub user_id: &'a UserId,
    pub name: Option<&'a Name>,
    pub avatar_url: Option<&'a AvatarUrl>,
    /// Seconds; at most the app's `max_user_token_ttl` (default: its access TTL).
    pub ttl: Option<u64>,
}

pub struct AppToken {
    pub user: UserRecord,
    pub token: String,
    pub expires_at: i64,
}

/// A token for one of the app's users, creating the user (or updating the name and avatar given).
pub async fn app_token(node: &Node, app: &AppRecord, req: AppTokenRequest<'_>) -> ApiResult<AppToken> {
    let max = app.settings.max_user_token_ttl;
    let default = if app.settings.access_ttl > 0 { app.settings.access_ttl } else { node.config.auth.access_ttl_secs };
    let ttl = req.ttl.unwrap_or(default.min(max));
    if ttl == 0 || ttl > max {
        return Err(ApiError::validation(format!("ttl: must be 1-{max} seconds (the app's max_user_token_ttl)")));
    }
    let fields = ImportUser { first_name: req.name, avatar_url: req.avatar_url, ..ImportUser::default() };
    let user = match node.store.user_by_id(&app.id, req.user_id).await? {
        Some(u) if req.name.is_none() && req.avatar_url.is_none() => u,
        _ => {
            node.store
                .upsert_user(&app.id, req.user_id, &fields, &Hooks::of(&app.settings), "token")
                .await
                .map_err(write_error)?
                .0
        }
    };
    let (token, expires_at) = node.tokens.issue(&NewToken {
        app: app.id.as_str(),
        user: user.key.0,
        session_id: None,
        device_id: None,
        version: user.token_version,
        ttl_secs: ttl,
    })?;
    Ok(AppToken { user, token, expires_at })
}

fn write_error(e: UserWriteError) -> ApiError {
    match e {
        UserWriteError::EmailTaken => ApiError::new(ErrorCode::EmailTaken, "email is already registered"),
        UserWriteError::IdTaken => ApiError::new(ErrorCode::Conflict, "user id is already taken"),
        UserWriteError::NotGuest => ApiError::new(ErrorCode::NotGuest, "only guest accounts can be upgraded"),
        UserWriteError::Db(e) => e.into(),
    }
}

/// An app's own lifetime setting, or the node default when the app leaves it at 0.
fn ttl(app_setting: u64, default: u64) -> u64 {
    if app_setting > 0 { app_setting } else { default }
}

/// Opens a device session for the user and issues its first token pair.
async fn issue(node: &Node, app: &AppRecord, user: &UserRecord, device: Option<&DeviceId>) -> ApiResult<AuthResponse> {
    crate::auth::refuse_banned(user)?;
    let refresh = new_refresh_token();
    let refresh_ttl = ttl(app.settings.refresh_ttl, node.config.auth.refresh_ttl_secs);
    let refresh_expires = crate::domain::now_millis() + refresh_ttl as i64 * 1000;
    let session = node
        .store
        .create_session(&app.id, user.key, device.map(DeviceId::as_str), &token_hash(&refresh), refresh_expires)
        .await?;
    let (access_token, expires_at) = node.tokens.issue(&NewToken {
        app: app.id.as_str(),
        user: user.key.0,
        session_id: Some(&session),
        device_id: device.map(DeviceId::as_str),
        version: user.token_version,
        ttl_secs: ttl(app.settings.access_ttl, node.config.auth.access_ttl_secs),
    })?;
    Ok(AuthResponse { access_token, refresh_token: refresh, expires_at, user: UserView::of_self(user) })
}

/// Counts a registration against the client's address (cluster-wide), before any hashing.
async fn limit_registration(node: &Node, app: &AppRecord, client_ip: &str) -> ApiResult<()> {
    let key = format!("register-ip:{}:{client_ip}", app.id);
    if let Err(over) = node.store.hit(&key, app.settings.registrations_per_hour, 3600).await? {
        metrics::counter!("natter_auth_failures_total", "reason" => "registration_rate_limited").increment(1);
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("too many registrations from this address; retry in {} s", over.retry_after_secs),
        ));
    }
    Ok(())
}

pub async fn register(node: &Node, app: &AppRecord, req: RegisterRequest, client_ip: &str) -> ApiResult<AuthResponse> {
    // A flood the hasher cannot take is turned away before it writes a rate-limit row.
    node.passwords.admit_hash()?;
    limit_registration(node, app, client_ip).await?;
    let hash = node.passwords.hash(&req.password).await?;
    let id = UserId::parse(random_id("u_", 8)).map_err(ApiError::caused_by)?;
    let user = node
        .store
        .insert_user(NewUser {
            app: &app.id,
            id: &id,
            email: Some(&req.email),
            password_hash: Some(&hash),
            first_name: &req.first_name,
            last_name: &req.last_name,
            kind: UserKind::User,
            hooks: &Hooks::of(&app.settings),
            via: "register",
        })
        .await
        .map_err(write_error)?;
    tracing::info!(app = %app.id, user = %user.id, "user registered");
    issue(node, app, &user, req.device_id.as_ref()).await
}

/// Counts a login attempt against the client's address and the account; both limits hold
/// cluster-wide, so spreading attempts over nodes does not help a guesser.
async fn limit_login(node: &Node, app: &AppRecord, email: &Email, client_ip: &str) -> ApiResult<()> {
    let by_ip =
        node.store.hit(&format!("login-ip:{}:{client_ip}", app.id), app.settings.login_attempts_per_ip, 900).await?;
    let by_account = node
        .store
        .hit(&format!("login-account:{}:{email}", app.id), app.settings.login_attempts_per_account, 900)
        .await?;
    if let Err(over) = by_ip.and(by_account) {
        metrics::counter!("natter_auth_failures_total", "reason" => "rate_limited").increment(1);
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("too many login attempts; retry in {} s", over.retry_after_secs),
        ));
    }
    Ok(())
}

pub async fn login(node: &Node, app: &AppRecord, req: LoginRequest, client_ip: &str) -> ApiResult<AuthResponse> {
    limit_login(node, app, &req.email, client_ip).await?;
    let user = node.store.user_by_email(&app.id, &req.email).await?;
    if user.is_none() && app.settings.login_or_register {
        let local = req.email.as_str().split('@').next().unwrap_or("user");
        let name = Name::parse(local).map_err(|e| ApiError::validation(e.0))?;
        let register = RegisterRequest {
            email: req.email,
            password: req.password,
            first_name: name.clone(),
            last_name: name,
            device_id: req.device_id,
        };
        return self::register(node, app, register, client_ip).await;
    }
    // Unknown emails still pay for one argon2 verification, so timing does not reveal them.
    let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
    if !node.passwords.verify(&req.password, hash).await? {
        metrics::counter!("natter_auth_failures_total", "reason" => "invalid_credentials").increment(1);
        return Err(invalid_credentials());
    }
    let user = user.ok_or_else(invalid_credentials)?;
    issue(node, app, &user, req.device_id.as_ref()).await
}

pub async fn guest(node: &Node, app: &AppRecord, client_ip: &str, req: GuestRequest) -> ApiResult<AuthResponse> {
    if !app.settings.guest_signup {
        return Err(ApiError::new(ErrorCode::GuestSignupDisabled, "guest sign-up is disabled for this app"));
    }
    let key = format!("guest:{}:{client_ip}", app.id);
    if let Err(over) = node.store.hit(&key, app.settings.guest_signups_per_hour, 3600).await? {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("too many guest sign-ups from this address; retry in {} s", over.retry_after_secs),
        ));
    }
    let id = UserId::parse(random_id("guest_", 8)).map_err(ApiError::caused_by)?;
    let first = match req.first_name {
        Some(name) => name,
        None => Name::parse("Guest").map_err(ApiError::caused_by)?,
    };
    let last = Name::parse(id.as_str()).map_err(ApiError::caused_by)?;
    let user = node
        .store
        .insert_user(NewUser {
            app: &app.id,
            id: &id,
            email: None,
            password_hash: None,
            first_name: &first,
            last_name: &last,
            kind: UserKind::Guest,
            hooks: &Hooks::of(&app.settings),
            via: "guest",
        })
        .await
        .map_err(write_error)?;
    issue(node, app, &user, req.device_id.as_ref()).await
}

/// A guest becomes a full account with the same id and history.
pub async fn upgrade(node: &Node, who: &Identity, req: RegisterRequest) -> ApiResult<AuthResponse> {
    if who.kind != UserKind::Guest {
        return Err(ApiError::new(ErrorCode::NotGuest, "only guest accounts can be upgraded"));
    }
    let app = node.app(&who.app).await?;
    let hash = node.passwords.hash(&req.password).await?;
    let user = node
        .store
        .upgrade_guest(&who.app, who.user, &req.email, &hash, &req.first_name, &req.last_name)
        .await
        .map_err(write_error)?;
    issue(node, &app, &user, req.device_id.as_ref()).await
}

/// Rotates a refresh token. Presenting a spent one revokes its whole session and its sockets.
pub async fn refresh(node: &Node, req: RefreshRequest) -> ApiResult<AuthResponse> {
    let next = new_refresh_token();
    let invalid = || ApiError::new(ErrorCode::InvalidToken, "refresh token is invalid");
    let expires = crate::domain::now_millis() + node.config.auth.refresh_ttl_secs as i64 * 1000;
    match node.store.use_refresh_token(&token_hash(&req.refresh_token), &token_hash(&next), expires).await? {
        RefreshUse::Valid { session_id, app_id, user_key, device_id } => {
            let app_id = AppId::parse(app_id).map_err(ApiError::caused_by)?;
            let app = node.app(&app_id).await?;
            let user = node.store.user_by_key(&app_id, user_key).await?.ok_or_else(invalid)?;
            // The presented token is spent: a banned user logs in again once the ban ends.
            crate::auth::refuse_banned(&user)?;
            let (access_token, expires_at) = node.tokens.issue(&NewToken {
                app: app_id.as_str(),
                user: user.key.0,
                session_id: Some(&session_id),
                device_id: device_id.as_deref(),
                version: user.token_version,
                ttl_secs: ttl(app.settings.access_ttl, node.config.auth.access_ttl_secs),
            })?;
            Ok(AuthResponse { access_token, refresh_token: next, expires_at, user: UserView::of_self(&user) })
        }
        RefreshUse::Reused { session_id, user_key } => {
            tracing::warn!(session = %session_id, "refresh token reused; session revoked");
            if let Ok(Some(app)) = node.store.session_app(&session_id).await {
                if let Err(e) = node.store.remove_session_devices(&app, &session_id).await {
                    tracing::warn!(error = %e, "removing a revoked session's push devices failed");
                }
                kick(node, &app, user_key.0, Some(session_id), CloseCode::TokenRevoked);
            }
            Err(ApiError::new(ErrorCode::RefreshTokenReused, "refresh token was already used; the session is revoked"))
        }
        RefreshUse::Expired => Err(ApiError::new(ErrorCode::TokenExpired, "refresh token has expired")),
        RefreshUse::Revoked => Err(ApiError::new(ErrorCode::TokenRevoked, "session has been revoked")),
        RefreshUse::Unknown => Err(invalid()),
    }
}

/// Ends the caller's device session: its refresh tokens and access tokens stop working and its
/// sockets close with 4502 on every node.
pub async fn logout(node: &Node, who: &Identity) -> ApiResult<()> {
    if let Some(session) = &who.session_id {
        node.store.revoke_session(&who.app, session).await?;
        // A signed-out device is no longer theirs to wake.
        node.store.remove_session_devices(&who.app, session).await?;
        kick(node, &who.app, who.user.0, Some(session.clone()), CloseCode::TokenRevoked);
    }
    Ok(())
}

/// Closes a user's sockets cluster-wide (all of them, or one device session's).
pub fn kick(node: &Node, app: &AppId, user: i64, session: Option<String>, code: CloseCode) {
    node.fanout.control(app.as_str(), &Envelope::Kick { user, session, code: code.code() }, b"");
}

pub async fn me(node: &Node, who: &Identity) -> ApiResult<UserView> {
    let user = node
        .store
        .user_by_key(&who.app, who.user)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, "user no longer exists"))?;
    Ok(UserView::of_self(&user))
}

pub async fn update_me(node: &Node, who: &Identity, req: ProfileRequest) -> ApiResult<UserView> {
    let patch = ProfilePatch {
        first_name: req.first_name.as_ref(),
        last_name: req.last_name.as_ref(),
        nickname: req.nickname.as_ref(),
        avatar_url: req.avatar_url.as_ref(),
    };
    let user = node
        .store
        .update_profile(&who.app, who.user, &patch)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound, "user no longer exists"))?;
    Ok(UserView::of_self(&user))
}

pub async fn query(node: &Node, app: &AppId, req: UserQueryRequest) -> ApiResult<Vec<UserView>> {
    if req.email.is_none() && req.id.is_none() && req.first_name.is_none() && req.last_name.is_none() {
        return Err(ApiError::validation("give at least one of email, id, first_name, last_name"));
    }
    let query = UserQuery {
        email: req.email,
        id: req.id,
        first_name: req.first_name.map(Name::into_inner),
        last_name: req.last_name.map(Name::into_inner),
    };
    let users = node.store.query_users(app, &query, 50).await?;
    Ok(users.iter().map(UserView::public).collect())
}

/// The app for an unauthenticated call: `X-App-Id`, or `default`.
pub async fn app_for(node: &Node, header: Option<&str>) -> ApiResult<AppRecord> {
    let raw = header.unwrap_or(crate::store::apps::DEFAULT_APP);
    let id = AppId::parse(raw).map_err(|e| ApiError::validation(format!("X-App-Id: {e}")))?;
    node.app(&id).await
}
