//! Domain values, parsed once at the edge and trusted afterwards.
//!
//! Each newtype's `parse` is the only way to build it from outside input; serde goes through the
//! same `parse`, so a request body that deserializes holds only valid values.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was rejected; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn charset_ok(s: &str, extra: &[char]) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident, $label:literal, |$s:ident| $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(input: impl Into<String>) -> Result<Self, ParseError> {
                let $s: String = input.into();
                let rule: Result<String, String> = $check;
                rule.map($name).map_err(|why| ParseError(format!(concat!($label, ": {}"), why)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl $name {
            /// For values known valid at compile time; checked in debug builds.
            pub fn from_trusted(s: &'static str) -> Self {
                debug_assert!(Self::parse(s).is_ok(), "{s} is not valid");
                $name(s.to_string())
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A tenant's id: 1–64 of `[A-Za-z0-9_-]` (it appears in NATS subjects, so no dots).
    AppId, "app id", |s| {
        if s.is_empty() || s.len() > 64 || !charset_ok(&s, &['_', '-']) {
            Err("must be 1-64 characters of A-Z a-z 0-9 _ -".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A user's public id, unique per app: 1–64 of `[A-Za-z0-9_.@-]`.
    UserId, "user id", |s| {
        if s.is_empty() || s.len() > 64 || !charset_ok(&s, &['_', '.', '@', '-']) {
            Err("must be 1-64 characters of A-Z a-z 0-9 _ . @ -".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A group's id, which is also its conversation id: 1–64 of `[A-Za-z0-9_-]`, never starting
    /// with `dm_` (that prefix belongs to direct conversations).
    GroupId, "group id", |s| {
        if s.is_empty() || s.len() > 64 || !charset_ok(&s, &['_', '-']) {
            Err("must be 1-64 characters of A-Z a-z 0-9 _ -".into())
        } else if s.starts_with(DM_PREFIX) {
            Err(format!("must not start with {DM_PREFIX}"))
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A conversation's id: a group id or an opaque direct-conversation id.
    ConversationId, "conversation", |s| {
        if s.is_empty() || s.len() > 128 || !charset_ok(&s, &['_', '-']) {
            Err("must be 1-128 characters of A-Z a-z 0-9 _ -".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A normalised (trimmed, lower-cased) email address.
    Email, "email", |s| {
        let s = s.trim().to_ascii_lowercase();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                }
                None => false,
            };
        if valid { Ok(s) } else { Err("must look like name@example.com".into()) }
    }
);

string_newtype!(
    /// The id a client gives a message so that a resend is recognised: 1–64 printable characters.
    ClientMsgId, "client_msg_id", |s| {
        if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_control()) {
            Err("must be 1-64 printable characters".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A client's device id: 1–64 printable characters.
    DeviceId, "device_id", |s| {
        if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_control()) {
            Err("must be 1-64 printable characters".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// A person's or group's display name: trimmed, 1–100 characters, no control characters.
    Name, "name", |s| {
        let s = s.trim().to_string();
        if s.is_empty() || s.chars().count() > 100 || s.chars().any(|c| c.is_control()) {
            Err("must be 1-100 characters without control characters".into())
        } else { Ok(s) }
    }
);

string_newtype!(
    /// An avatar URL: http(s), at most 2048 characters.
    AvatarUrl, "avatar_url", |s| {
        let lower = s.to_ascii_lowercase();
        if s.len() > 2048 || !(lower.starts_with("https://") || lower.starts_with("http://"))
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            Err("must be an http(s) URL of at most 2048 characters".into())
        } else { Ok(s) }
    }
);

/// A user id is always a valid display name (1–64 printable characters), for users created
/// without one.
impl From<&UserId> for Name {
    fn from(id: &UserId) -> Name {
        Name(id.0.clone())
    }
}

/// Prefix of direct-conversation ids, reserved so group ids never collide with them.
pub const DM_PREFIX: &str = "dm_";

/// The 3,000 most common passwords (assets/README.md says where they come from).
fn common_passwords() -> &'static std::collections::HashSet<&'static str> {
    static LIST: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| include_str!("../assets/common-passwords.txt").lines().map(str::trim).collect())
}

/// A password as typed: 8–128 characters, not one of the 3,000 most common. Never printed.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Password(String);

impl Password {
    pub fn parse(s: impl Into<String>) -> Result<Self, ParseError> {
        let s = s.into();
        let n = s.chars().count();
        if !(8..=128).contains(&n) {
            return Err(ParseError("password: must be 8-128 characters".into()));
        }
        if common_passwords().contains(s.to_lowercase().as_str()) {
            return Err(ParseError("password: too common; choose one that is harder to guess".into()));
        }
        Ok(Password(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Password {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The immutable internal key of a user; history and subjects follow it, not the public id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserKey(pub i64);

/// What kind of account a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    User,
    Guest,
    Service,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::User => "user",
            UserKind::Guest => "guest",
            UserKind::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "user" => Ok(UserKind::User),
            "guest" => Ok(UserKind::Guest),
            "service" => Ok(UserKind::Service),
            other => Err(ParseError(format!("kind: unknown user kind {other:?}"))),
        }
    }
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(ParseError(format!("role: unknown role {other:?}"))),
        }
    }

    /// Owners and admins manage other members.
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// Direct conversations and groups share one model; this tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => "direct",
            ConversationKind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "direct" => Ok(ConversationKind::Direct),
            "group" => Ok(ConversationKind::Group),
            other => Err(ParseError(format!("conversation kind: unknown {other:?}"))),
        }
    }
}

/// The id of the direct conversation between two users, the same whoever asks.
pub fn direct_conversation_id(a: UserKey, b: UserKey) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    ConversationId(format!("{DM_PREFIX}{}_{}", lo.0, hi.0))
}

/// The two participants of a direct conversation, read back from its id.
pub fn direct_participants(conversation: &str) -> Option<(UserKey, UserKey)> {
    let rest = conversation.strip_prefix(DM_PREFIX)?;
    let (a, b) = rest.split_once('_')?;
    Some((UserKey(a.parse().ok()?), UserKey(b.parse().ok()?)))
}

/// Milliseconds since the Unix epoch: the one timestamp format on the wire and in the store.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A random URL-safe identifier with a prefix, for public ids the server makes up.
pub fn random_id(prefix: &str, bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    format!("{prefix}{}", hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_accept_the_documented_charset_and_length() {
        assert!(UserId::parse("alice.smith@example-1_x").is_ok());
        assert!(UserId::parse("a".repeat(64)).is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a".repeat(65)).is_err());
        assert!(UserId::parse("with space").is_err());
        assert!(UserId::parse("semi;colon").is_err());
        assert!(UserId::parse("ünïcode").is_err());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        for bad in ["", "alice", "@example.com", "alice@", "alice@example", "a@b@c.d", "a b@c.d", "a@.com", "a@c..d"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = Email::parse("nope").unwrap_err();
        assert!(err.0.starts_with("email:"), "{err}");
    }

    #[test]
    fn passwords_need_8_to_128_characters_and_never_print() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("x7!kq2zp").is_ok());
        for common in ["12345678", "password1", "Password1", "iloveyou", "qwertyuiop"] {
            let err = Password::parse(common).unwrap_err();
            assert!(err.0.contains("too common"), "{common}: {err}");
        }
        assert!(Password::parse("x".repeat(128)).is_ok());
        assert!(Password::parse("x".repeat(129)).is_err());
        let p = Password::parse("correct horse").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
    }

    #[test]
    fn group_ids_cannot_impersonate_direct_conversations() {
        assert!(GroupId::parse("team-42_a").is_ok());
        assert!(GroupId::parse("dm_1_2").is_err());
        assert!(GroupId::parse("has.dot").is_err());
        assert!(GroupId::parse("").is_err());
    }

    #[test]
    fn app_ids_have_no_dots_so_they_fit_in_subjects() {
        assert!(AppId::parse("default").is_ok());
        assert!(AppId::parse("my-app_2").is_ok());
        assert!(AppId::parse("a.b").is_err());
        assert!(AppId::parse("a*").is_err());
    }

    #[test]
    fn client_msg_ids_are_1_to_64_printable_characters() {
        assert!(ClientMsgId::parse("c-1").is_ok());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("x".repeat(65)).is_err());
        assert!(ClientMsgId::parse("a\nb").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse("x".repeat(101)).is_err());
        assert!(Name::parse("a\u{0}b").is_err());
    }

    #[test]
    fn avatar_urls_must_be_http() {
        assert!(AvatarUrl::parse("https://x.test/a.png").is_ok());
        assert!(AvatarUrl::parse("javascript:alert(1)").is_err());
        assert!(AvatarUrl::parse("https://x.test/a b.png").is_err());
    }

    #[test]
    fn conversation_ids_and_device_ids_are_bounded() {
        assert!(ConversationId::parse("dm_1_2").is_ok());
        assert!(ConversationId::parse("x".repeat(129)).is_err());
        assert!(ConversationId::parse("a/b").is_err());
        assert!(DeviceId::parse("phone-1").is_ok());
        assert!(DeviceId::parse("").is_err());
    }

    #[test]
    fn direct_conversation_ids_do_not_depend_on_who_asks() {
        let a = direct_conversation_id(UserKey(7), UserKey(3));
        let b = direct_conversation_id(UserKey(3), UserKey(7));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "dm_3_7");
        assert_eq!(direct_participants(a.as_str()), Some((UserKey(3), UserKey(7))));
        assert_eq!(direct_participants("team"), None);
        assert_eq!(direct_participants("dm_x_1"), None);
    }

    #[test]
    fn enums_parse_their_wire_names_only() {
        assert_eq!(UserKind::parse("guest").unwrap(), UserKind::Guest);
        assert!(UserKind::parse("root").is_err());
        assert_eq!(Role::parse("admin").unwrap(), Role::Admin);
        assert!(Role::parse("god").is_err());
        assert!(Role::Owner.can_manage() && !Role::Member.can_manage());
        assert_eq!(ConversationKind::parse("group").unwrap(), ConversationKind::Group);
    }

    #[test]
    fn serde_goes_through_parse() {
        let ok: Result<UserId, _> = serde_json::from_str("\"bob\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"bad id\"");
        assert!(bad.unwrap_err().to_string().contains("user id"));
    }
}
