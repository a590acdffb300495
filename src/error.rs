//! The one table of stable error codes.
//!
//! Every failure a client can see carries one of these codes. The table fixes, per code, the
//! snake_case name on the wire and the HTTP status; WebSocket replies use the same status as their
//! `code`. Close codes for WebSocket connections are in [`CloseCode`].

use std::{borrow::Cow, sync::Arc};

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde::Serialize;

macro_rules! error_codes {
    ($($variant:ident => ($name:literal, $status:literal),)*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The HTTP status, also used as the `code` of a WebSocket reply.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
        }
    };
}

error_codes! {
    InvalidJson => ("invalid_json", 400),
    InvalidFrame => ("invalid_frame", 400),
    UnknownType => ("unknown_type", 400),
    UnknownAction => ("unknown_action", 400),
    UnsupportedFrame => ("unsupported_frame", 400),
    ValidationFailed => ("validation_failed", 400),
    MalformedRequest => ("malformed_request", 400),
    AlreadyAuthenticated => ("already_authenticated", 400),
    Unauthorized => ("unauthorized", 401),
    MissingSignature => ("missing_signature", 401),
    UnknownAppKey => ("unknown_app_key", 401),
    BadSignature => ("bad_signature", 401),
    StaleTimestamp => ("stale_timestamp", 401),
    NonceReplayed => ("nonce_replayed", 401),
    InvalidToken => ("invalid_token", 401),
    TokenExpired => ("token_expired", 401),
    TokenRevoked => ("token_revoked", 401),
    InvalidCredentials => ("invalid_credentials", 401),
    RefreshTokenReused => ("refresh_token_reused", 401),
    Forbidden => ("forbidden", 403),
    RejectedByHook => ("rejected_by_hook", 403),
    NotAMember => ("not_a_member", 403),
    // The same name for a request that names a non-member (a mention): the request is wrong,
    // not the caller's standing.
    MentionNotAMember => ("not_a_member", 400),
    InvalidReply => ("invalid_reply", 400),
    InvalidDevice => ("invalid_device", 400),
    TargetRefused => ("target_refused", 400),
    GuestSignupDisabled => ("guest_signup_disabled", 403),
    NotGuest => ("not_guest", 403),
    Banned => ("banned", 403),
    Blocked => ("blocked", 403),
    AdminOnly => ("admin_only", 403),
    OwnerOnly => ("owner_only", 403),
    Outranked => ("outranked", 403),
    OwnerProtected => ("owner_protected", 403),
    Muted => ("muted", 403),
    NotFound => ("not_found", 404),
    AppNotFound => ("app_not_found", 404),
    UserNotFound => ("user_not_found", 404),
    GroupNotFound => ("group_not_found", 404),
    ConversationNotFound => ("conversation_not_found", 404),
    MessageNotFound => ("message_not_found", 404),
    DeviceNotFound => ("device_not_found", 404),
    MethodNotAllowed => ("method_not_allowed", 405),
    RequestTimeout => ("request_timeout", 408),
    GroupDissolved => ("group_dissolved", 410),
    EmailTaken => ("email_taken", 409),
    Conflict => ("conflict", 409),
    GroupFull => ("group_full", 409),
    EditWindowPassed => ("edit_window_passed", 409),
    RecallWindowPassed => ("recall_window_passed", 409),
    MessageGone => ("message_gone", 409),
    PayloadTooLarge => ("payload_too_large", 413),
    RateLimited => ("rate_limited", 429),
    HeadersTooLarge => ("headers_too_large", 431),
    Internal => ("internal", 500),
    Unavailable => ("unavailable", 503),
    HookUnavailable => ("hook_unavailable", 503),
}

/// WebSocket close codes (design §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Normal,
    ServerShutdown,
    TooSlow,
    RateLimited,
    Unauthorized,
    TokenRevoked,
    Banned,
    FrameTooLarge,
    /// RFC 6455 violations: reserved bits or opcodes, bad control frames, bad fragmentation,
    /// unmasked frames, invalid close codes or reasons.
    ProtocolError,
    /// A text message that is not UTF-8.
    InvalidPayload,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::FrameTooLarge => 1009,
            CloseCode::ServerShutdown => 4001,
            CloseCode::TooSlow => 4002,
            CloseCode::RateLimited => 4003,
            CloseCode::Unauthorized => 4501,
            CloseCode::TokenRevoked => 4502,
            CloseCode::Banned => 4503,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        [
            CloseCode::Normal,
            CloseCode::ServerShutdown,
            CloseCode::TooSlow,
            CloseCode::RateLimited,
            CloseCode::Unauthorized,
            CloseCode::TokenRevoked,
            CloseCode::Banned,
            CloseCode::FrameTooLarge,
            CloseCode::ProtocolError,
            CloseCode::InvalidPayload,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// An error a caller can see: a stable code and a human-readable message, and for failures of
/// the server itself the cause, kept for the logs (never shown to the caller).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// An error and its causes, outermost first: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // Wrappers often repeat their cause in their own message.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into(), source: None }
    }

    pub fn validation(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    /// An infrastructure failure described in words: logged here, shown to the caller without it.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// An infrastructure failure with its cause: the whole chain is logged here and the cause
    /// kept as this error's source; the caller sees only `internal`.
    pub fn caused_by(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        tracing::error!(error = %chain(&err), "internal error");
        Self { code: ErrorCode::Internal, message: "internal error".into(), source: Some(Arc::new(err)) }
    }

    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody { error: ErrorDetail { code: self.code.as_str(), message: &self.message } }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        count_db_error(&err);
        ApiError::caused_by(err)
    }
}

/// Counts a database error on `natter_db_errors_total` by its kind.
pub fn count_db_error(err: &sqlx::Error) {
    let kind = match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => "pool_timeout",
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "io",
        sqlx::Error::Database(_) => "database",
        sqlx::Error::Protocol(_) => "protocol",
        _ => "other",
    };
    metrics::counter!("natter_db_errors_total", "kind" => kind).increment(1);
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        tracing::error!(error = format!("{err:#}"), "internal error");
        let source: Box<dyn std::error::Error + Send + Sync + 'static> = err.into();
        Self { code: ErrorCode::Internal, message: "internal error".into(), source: Some(Arc::from(source)) }
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub struct ErrorDetail<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Names two codes share, each pair documented in docs/protocol.md: `not_a_member` is 403
    /// when the caller is not a member and 400 when a request names a non-member (a mention).
    const SHARED_NAMES: &[&str] = &["not_a_member"];

    #[test]
    fn every_error_code_has_a_unique_snake_case_name() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert((name, code.status())), "duplicate {name}");
            assert!(
                SHARED_NAMES.contains(&name) || ErrorCode::ALL.iter().filter(|c| c.as_str() == name).count() == 1,
                "{name} names two codes"
            );
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!((400..600).contains(&code.status()), "{name}");
        }
    }

    #[test]
    fn the_protocol_document_lists_every_error_code() {
        let doc = include_str!("../docs/protocol.md");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status());
            assert!(doc.contains(&row), "docs/protocol.md lacks {row}");
        }
    }

    #[test]
    fn a_database_failure_keeps_its_cause_and_shows_the_caller_none_of_it() {
        let err = ApiError::from(sqlx::Error::Protocol("connection reset by peer".into()));
        assert_eq!(err.code, ErrorCode::Internal);
        assert_eq!(err.message, "internal error");
        let cause = std::error::Error::source(&err).expect("the cause is kept");
        assert!(cause.to_string().contains("connection reset by peer"), "{cause}");
        assert!(!String::from_utf8(serde_json::to_vec(&err.body()).unwrap()).unwrap().contains("reset"));
    }

    #[test]
    fn chains_name_every_cause_once() {
        let inner = std::io::Error::other("disk full");
        let outer = anyhow::Error::new(inner).context("writing the batch");
        let boxed: Box<dyn std::error::Error + Send + Sync> = outer.into();
        assert_eq!(chain(boxed.as_ref()), "writing the batch: disk full");
    }

    #[test]
    fn close_codes_round_trip() {
        for code in [1000, 1002, 1007, 1009, 4001, 4002, 4003, 4501, 4502, 4503] {
            assert_eq!(CloseCode::from_code(code).map(CloseCode::code), Some(code));
        }
        assert_eq!(CloseCode::from_code(4999), None);
    }
}
