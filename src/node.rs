//! Everything one running node shares: config, store, bus, router, keys, hashers and limits.

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use actix::Addr;

use crate::{
    auth::{Identity, password::PasswordHasher, tokens::TokenService},
    bus::Bus,
    config::Config,
    domain::{AppId, UserId, UserKey},
    error::{ApiError, ApiResult, ErrorCode},
    fanout::Fanout,
    hub::router::Router,
    presence::Presence,
    store::{Store, apps::AppRecord, conversations::Active},
};

pub struct NodeInner {
    pub id: String,
    pub config: Config,
    pub store: Store,
    pub tokens: TokenService,
    pub passwords: PasswordHasher,
    pub bus: Arc<dyn Bus>,
    pub router: Addr<Router>,
    /// Connections open and starting on this node, against `ws.max_connections` / `max_starting`.
    pub admission: Arc<crate::hub::admission::Admission>,
    pub presence: Presence,
    /// Every payload this node puts on the bus goes through here.
    pub fanout: Fanout,
    pub webhook_clients: crate::webhooks::target::Clients,
    draining: AtomicBool,
    keys_reloaded_at: std::sync::atomic::AtomicI64,
}

/// A cheap handle on the node, given to every handler and session.
#[derive(Clone)]
pub struct Node(Arc<NodeInner>);

impl Deref for Node {
    type Target = NodeInner;
    fn deref(&self) -> &NodeInner {
        &self.0
    }
}

pub struct NodeParts {
    pub id: String,
    pub config: Config,
    pub store: Store,
    pub tokens: TokenService,
    pub passwords: PasswordHasher,
    pub bus: Arc<dyn Bus>,
    pub router: Addr<Router>,
    pub presence: Presence,
    pub fanout: Fanout,
    pub webhook_clients: crate::webhooks::target::Clients,
}

impl Node {
    pub fn new(parts: NodeParts) -> Self {
        let ws = &parts.config.ws;
        let admission = crate::hub::admission::Admission::new(ws.max_connections, ws.max_starting);
        Node(Arc::new(NodeInner {
            id: parts.id,
            config: parts.config,
            store: parts.store,
            tokens: parts.tokens,
            passwords: parts.passwords,
            bus: parts.bus,
            router: parts.router,
            admission,
            presence: parts.presence,
            fanout: parts.fanout,
            webhook_clients: parts.webhook_clients,
            draining: AtomicBool::new(false),
            keys_reloaded_at: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The app, or `app_not_found`.
    pub async fn app(&self, id: &AppId) -> ApiResult<AppRecord> {
        self.store
            .app(id)
            .await
            .map_err(|e| ApiError::internal(format_args!("{e}")))?
            .ok_or_else(|| ApiError::new(ErrorCode::AppNotFound, format!("no app {id}")))
    }

    /// Verifies an access token and the standing of its user and device session.
    pub async fn authenticate(&self, token: &str) -> ApiResult<Identity> {
        let result = self.authenticate_inner(token).await;
        if let Err(e) = &result {
            metrics::counter!("natter_auth_failures_total", "reason" => e.code.as_str()).increment(1);
        }
        result
    }

    async fn authenticate_inner(&self, token: &str) -> ApiResult<Identity> {
        self.authenticate_for(token, false).await.map(|(who, _)| who)
    }

    /// [`Node::authenticate`] for a WebSocket connection: also the conversations the user is
    /// in, read in the same statement as the token's subject where the token is ours.
    pub async fn authenticate_connection(&self, token: &str) -> ApiResult<(Identity, Vec<Active>)> {
        let result = match self.authenticate_for(token, true).await {
            Ok((who, Some(conversations))) => Ok((who, conversations)),
            Ok((who, None)) => match self.store.active_conversations(&who.app, who.user).await {
                Ok(conversations) => Ok((who, conversations)),
                Err(e) => Err(ApiError::from(e)),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            metrics::counter!("natter_auth_failures_total", "reason" => e.code.as_str()).increment(1);
        }
        result
    }

    /// The token's identity; with `conversations`, also the user's conversations when the
    /// token is one of ours (app-signed tokens leave them to the caller).
    async fn authenticate_for(&self, token: &str, conversations: bool) -> ApiResult<(Identity, Option<Vec<Active>>)> {
        if self.tokens.names_unknown_key_of_ours(token) {
            self.reload_keys().await;
        }
        if crate::auth::usersig::looks_like(token) {
            return crate::auth::usersig::verify(&self.store, token).await.map(|who| (who, None));
        }
        if !self.tokens.issued_here(token) {
            return crate::auth::app_tokens::verify(&self.store, token).await.map(|who| (who, None));
        }
        let claims = self.tokens.verify(token)?;
        let invalid = || ApiError::new(ErrorCode::InvalidToken, "token is invalid");
        let app = AppId::parse(claims.aud.clone()).map_err(|_| invalid())?;
        let key = UserKey(claims.sub.parse().map_err(|_| invalid())?);
        let sid = claims.sid.as_deref();
        let subject = if conversations {
            self.store.connect_subject(&app, key, sid).await?.map(|(u, ok, convs)| (u, ok, Some(convs)))
        } else {
            self.store.token_subject(&app, key, sid).await?.map(|(u, ok)| (u, ok, None))
        };
        let (user, session_ok, convs) =
            subject.ok_or_else(|| ApiError::new(ErrorCode::InvalidToken, "token's user no longer exists"))?;
        crate::auth::refuse_banned(&user)?;
        if !session_ok || user.token_version != claims.ver {
            return Err(ApiError::new(ErrorCode::TokenRevoked, "token has been revoked"));
        }
        let who = Identity {
            app,
            user: key,
            id: UserId::parse(user.id).map_err(ApiError::caused_by)?,
            kind: user.kind,
            session_id: claims.sid,
            device_id: claims.did,
        };
        Ok((who, convs))
    }

    /// Re-reads the signing keys from the store (at most every few seconds), so tokens signed
    /// with a key rotated in on another node verify here too.
    pub async fn reload_keys(&self) {
        if !self.config.auth.signing_key.is_empty() || !self.config.auth.signing_key_file.is_empty() {
            return;
        }
        let now = crate::domain::now_millis();
        let last = self.keys_reloaded_at.load(Ordering::Relaxed);
        if now - last < 5_000
            || self.keys_reloaded_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        match self.store.signing_keys().await {
            Ok(keys) => {
                if let Err(e) = self.tokens.replace_keys(keys) {
                    tracing::warn!(error = %e, "reloading signing keys failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading signing keys failed"),
        }
    }
}
