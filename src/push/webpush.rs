//! Web Push: RFC 8030 delivery of an RFC 8291 `aes128gcm` payload, authorised by RFC 8292
//! VAPID. No push service sees the text: only the browser holding the subscription's private
//! key can read it.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use p256::{PublicKey, SecretKey, elliptic_curve::sec1::ToEncodedPoint, pkcs8::EncodePrivateKey};
use ring::{aead, agreement, rand::SystemRandom};
use sha2::Sha256;

use super::{Message, Outcome, PushError, status_outcome};
use crate::store::devices::WebPushKeys;

/// Record size written into the header: one record holds the whole payload.
const RECORD_SIZE: u32 = 4096;
/// Push services accept 4,096 bytes of body: less the header (86), the tag (16) and the
/// delimiter (1).
pub const MAX_PAYLOAD: usize = 4096 - 86 - 16 - 1;

/// A browser subscription's keys, decoded and checked.
pub struct Subscriber {
    /// The user agent's public key, uncompressed (65 bytes).
    p256dh: Vec<u8>,
    auth: [u8; 16],
}

impl Subscriber {
    pub fn parse(keys: &WebPushKeys) -> Result<Self, PushError> {
        let p256dh = decode_b64(&keys.p256dh).map_err(|_| PushError::Invalid("keys.p256dh is not base64url".into()))?;
        let public = PublicKey::from_sec1_bytes(&p256dh)
            .map_err(|_| PushError::Invalid("keys.p256dh is not a P-256 public key".into()))?;
        let p256dh = public.to_encoded_point(false).as_bytes().to_vec();
        let auth = decode_b64(&keys.auth).map_err(|_| PushError::Invalid("keys.auth is not base64url".into()))?;
        let auth: [u8; 16] =
            auth.try_into().map_err(|_| PushError::Invalid("keys.auth must be 16 bytes (base64url)".into()))?;
        Ok(Subscriber { p256dh, auth })
    }
}

/// Base64url with or without padding (browsers give it without; some libraries pad).
pub fn decode_b64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim().trim_end_matches('='))
}

/// Encrypts `plain` for the subscriber (RFC 8291 §3.4, one record, RFC 8188 header carrying
/// the server's ephemeral public key).
pub fn encrypt(plain: &[u8], to: &Subscriber) -> Result<Vec<u8>, PushError> {
    if plain.len() > MAX_PAYLOAD {
        return Err(PushError::Invalid(format!("payload of {} bytes is over {MAX_PAYLOAD}", plain.len())));
    }
    let rng = SystemRandom::new();
    let ephemeral = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| PushError::Crypto("ephemeral key"))?;
    let as_public = ephemeral.compute_public_key().map_err(|_| PushError::Crypto("ephemeral public key"))?;
    let as_public = as_public.as_ref();
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &to.p256dh);

    // IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32)
    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(&to.p256dh);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    agreement::agree_ephemeral(ephemeral, &peer, |shared| {
        Hkdf::<Sha256>::new(Some(&to.auth), shared).expand(&key_info, &mut ikm)
    })
    .map_err(|_| PushError::Crypto("ecdh"))?
    .map_err(|_| PushError::Crypto("hkdf ikm"))?;

    let salt: [u8; 16] = rand::random();
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).map_err(|_| PushError::Crypto("hkdf cek"))?;
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|_| PushError::Crypto("hkdf nonce"))?;

    // The last (only) record ends with the 0x02 delimiter; no padding.
    let mut sealed = Vec::with_capacity(plain.len() + 1 + 16);
    sealed.extend_from_slice(plain);
    sealed.push(2);
    let key = aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| PushError::Crypto("aes key"))?;
    aead::LessSafeKey::new(key)
        .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::empty(), &mut sealed)
        .map_err(|_| PushError::Crypto("aes-gcm"))?;

    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.len() as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// An app's VAPID key pair.
pub struct Vapid {
    /// The public key as browsers take it (`applicationServerKey`): base64url, uncompressed.
    pub public_key: String,
    signing: jsonwebtoken::EncodingKey,
}

impl Vapid {
    /// From the private key as `web-push generate-vapid-keys` prints it (base64url, 32 bytes).
    pub fn from_private(text: &str) -> Result<Self, PushError> {
        let raw = decode_b64(text).map_err(|_| PushError::Invalid("vapid_private_key is not base64url".into()))?;
        let secret = SecretKey::from_slice(&raw)
            .map_err(|_| PushError::Invalid("vapid_private_key is not a 32-byte P-256 private key".into()))?;
        let public_key = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let der = secret.to_pkcs8_der().map_err(|_| PushError::Crypto("vapid key encoding"))?;
        Ok(Vapid { public_key, signing: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()) })
    }

    /// A fresh key pair: (private, public), base64url.
    pub fn generate() -> (String, String) {
        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        (URL_SAFE_NO_PAD.encode(secret.to_bytes()), public)
    }

    /// `Authorization: vapid t=<JWT>, k=<public key>` for a push to `endpoint` (RFC 8292 §2:
    /// `aud` is the push service's origin, `exp` within a day).
    pub fn authorization(&self, endpoint: &reqwest::Url, subject: &str, now_secs: i64) -> Result<String, PushError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            aud: String,
            exp: i64,
            #[serde(skip_serializing_if = "str::is_empty")]
            sub: &'a str,
        }
        let aud = endpoint.origin().ascii_serialization();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("JWT".into());
        let claims = Claims { aud, exp: now_secs + 12 * 3600, sub: subject };
        let token =
            jsonwebtoken::encode(&header, &claims, &self.signing).map_err(|_| PushError::Crypto("vapid jwt"))?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}

/// Sends one push to a subscription.
pub async fn send(
    client: &reqwest::Client,
    endpoint: reqwest::Url,
    vapid: &Vapid,
    subject: &str,
    to: &Subscriber,
    message: &Message<'_>,
) -> Outcome {
    let plain = match serde_json::to_vec(&message.payload) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("payload: {e}")),
    };
    let body = match encrypt(&plain, to) {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let authorization = match vapid.authorization(&endpoint, subject, crate::domain::now_millis() / 1000) {
        Ok(a) => a,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    let request = client
        .post(endpoint)
        .header("authorization", authorization)
        .header("content-encoding", "aes128gcm")
        .header("content-type", "application/octet-stream")
        .header("ttl", message.ttl_secs.to_string())
        .header("urgency", "high")
        .header("topic", message.collapse_key.as_str())
        .timeout(message.timeout)
        .body(body);
    match request.send().await {
        Ok(response) => {
            let (status, retry_after, text) = super::answer(response).await;
            match status {
                // 404 and 410: the subscription expired or was unsubscribed (RFC 8030 §7.3).
                404 | 410 => Outcome::Gone(format!("HTTP {status}")),
                _ => status_outcome(status, retry_after, &text),
            }
        }
        Err(e) => super::request_failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 §5's example: the receiver's keys and auth secret decrypt what we encrypt.
    #[test]
    fn a_payload_encrypted_for_a_subscription_decrypts_with_its_private_key() {
        let ua_private = decode_b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94").unwrap();
        let ua_secret = SecretKey::from_slice(&ua_private).unwrap();
        let keys = WebPushKeys {
            p256dh: URL_SAFE_NO_PAD.encode(ua_secret.public_key().to_encoded_point(false).as_bytes()),
            auth: "BTBZMqHH6r4Tts7J_aSIgg".into(),
        };
        let to = Subscriber::parse(&keys).unwrap();
        let body = encrypt(b"When I grow up, I want to be a watermelon", &to).unwrap();

        // Decrypt as a user agent would (RFC 8291 §3.4 from the receiving side).
        let (salt, rest) = body.split_at(16);
        assert_eq!(&rest[..4], &RECORD_SIZE.to_be_bytes());
        assert_eq!(rest[4], 65);
        let as_public = PublicKey::from_sec1_bytes(&rest[5..70]).unwrap();
        let sealed = &rest[70..];
        let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), as_public.as_affine());
        let mut info = b"WebPush: info\0".to_vec();
        info.extend_from_slice(&to.p256dh);
        info.extend_from_slice(&rest[5..70]);
        let mut ikm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&to.auth), shared.raw_secret_bytes()).expand(&info, &mut ikm).unwrap();
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
        let mut sealed = sealed.to_vec();
        let plain =
            key.open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::empty(), &mut sealed).unwrap();
        assert_eq!(plain, b"When I grow up, I want to be a watermelon\x02");
    }

    #[test]
    fn a_vapid_key_signs_tokens_its_public_key_verifies() {
        let (private, public) = Vapid::generate();
        let vapid = Vapid::from_private(&private).unwrap();
        assert_eq!(vapid.public_key, public);
        let endpoint = reqwest::Url::parse("https://push.example.net:8443/wpush/abc").unwrap();
        let header = vapid.authorization(&endpoint, "mailto:ops@example.com", 1_700_000_000).unwrap();
        let token = header.strip_prefix("vapid t=").unwrap().split(", k=").next().unwrap();
        let point = decode_b64(&public).unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..65]),
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["https://push.example.net:8443"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap().claims;
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        assert_eq!(claims["exp"], 1_700_000_000 + 12 * 3600);
    }

    #[test]
    fn malformed_subscription_keys_are_refused() {
        let bad =
            |p256dh: &str, auth: &str| Subscriber::parse(&WebPushKeys { p256dh: p256dh.into(), auth: auth.into() });
        assert!(bad("not base64!", "BTBZMqHH6r4Tts7J_aSIgg").is_err());
        assert!(bad("AAAA", "BTBZMqHH6r4Tts7J_aSIgg").is_err());
        let (_, public) = Vapid::generate();
        assert!(bad(&public, "short").is_err());
        assert!(bad(&public, "BTBZMqHH6r4Tts7J_aSIgg").is_ok());
    }
}
