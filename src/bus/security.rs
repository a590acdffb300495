//! How a node proves itself to NATS and checks the servers: TLS (a CA bundle or the system's
//! roots, and a client certificate for mutual TLS) and NKey or `.creds` authentication, read once
//! from `[nats]` and shared by the publishing and the subscribing connection.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::config::NatsConfig;

/// What the node presents beyond `user:password@` in the URL.
#[derive(Clone)]
pub enum Auth {
    None,
    /// An NKey seed: the server checks the signature against the public key.
    NKey(Arc<nkeys::KeyPair>),
    /// A user JWT and the seed that signs for it.
    Creds {
        jwt: String,
        key: Arc<nkeys::KeyPair>,
    },
}

impl Auth {
    /// The CONNECT fields that sign the server's `nonce` (from its INFO).
    pub fn connect_fields(&self, nonce: Option<&str>, info: &mut serde_json::Value) -> anyhow::Result<()> {
        let (key, jwt) = match self {
            Auth::None => return Ok(()),
            Auth::NKey(key) => (key, None),
            Auth::Creds { jwt, key } => (key, Some(jwt)),
        };
        let Some(nonce) = nonce else { bail!("the NATS server sent no nonce to sign") };
        let sig = key.sign(nonce.as_bytes()).map_err(|e| anyhow::anyhow!("signing the NATS nonce: {e}"))?;
        info["sig"] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig).into();
        match jwt {
            Some(jwt) => info["jwt"] = jwt.as_str().into(),
            None => info["nkey"] = key.public_key().into(),
        }
        Ok(())
    }
}

/// TLS and authentication for NATS connections.
#[derive(Clone)]
pub struct Security {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS on every connection, whatever the server's INFO says (a `tls://` URL or a CA given).
    pub tls_required: bool,
    pub auth: Auth,
}

impl Security {
    pub fn from_config(config: &NatsConfig) -> anyhow::Result<Self> {
        let auth = if !config.credentials_file.is_empty() {
            let text = std::fs::read_to_string(&config.credentials_file)
                .with_context(|| format!("nats.credentials_file {}", config.credentials_file))?;
            let jwt = creds_section(&text, "NATS USER JWT").context("nats.credentials_file: no user JWT")?;
            let seed = creds_section(&text, "USER NKEY SEED").context("nats.credentials_file: no NKey seed")?;
            let key = nkeys::KeyPair::from_seed(&seed).map_err(|e| anyhow::anyhow!("nats.credentials_file: {e}"))?;
            Auth::Creds { jwt, key: Arc::new(key) }
        } else if !config.nkey_seed_file.is_empty() {
            let seed = std::fs::read_to_string(&config.nkey_seed_file)
                .with_context(|| format!("nats.nkey_seed_file {}", config.nkey_seed_file))?;
            let key =
                nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| anyhow::anyhow!("nats.nkey_seed_file: {e}"))?;
            Auth::NKey(Arc::new(key))
        } else {
            Auth::None
        };
        let tls_url = super::server_urls(config.url.expose()).iter().any(|u| u.starts_with("tls://"));
        let wanted = tls_url || !config.tls_ca_file.is_empty() || !config.tls_cert_file.is_empty();
        let tls = Some(Arc::new(client_config(config)?));
        Ok(Security { tls, tls_required: wanted, auth })
    }

    /// Wraps a connection in TLS for `host`.
    pub async fn wrap(
        &self,
        io: tokio::net::TcpStream,
        host: &str,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let Some(config) = &self.tls else { bail!("no TLS configuration") };
        let name = ServerName::try_from(host.to_string()).context("the NATS server's name for TLS")?;
        tokio_rustls::TlsConnector::from(config.clone()).connect(name, io).await.context("NATS TLS handshake")
    }
}

/// The text between `-----BEGIN <label>-----` and the next `-----END`/`------END` line of a
/// `.creds` file.
fn creds_section(text: &str, label: &str) -> Option<String> {
    let begin = format!("BEGIN {label}");
    let start = text.find(&begin)?;
    let after = &text[start..];
    let body_start = after.find('\n')? + 1;
    let body = &after[body_start..];
    let end = body.find("END")?;
    let value = body[..end].trim_end_matches('-').trim();
    (!value.is_empty()).then(|| value.lines().map(str::trim).collect())
}

fn client_config(config: &NatsConfig) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if config.tls_ca_file.is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    } else {
        let pem =
            std::fs::read(&config.tls_ca_file).with_context(|| format!("nats.tls_ca_file {}", config.tls_ca_file))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.context("nats.tls_ca_file: a certificate")?).context("nats.tls_ca_file")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    if config.tls_cert_file.is_empty() != config.tls_key_file.is_empty() {
        bail!("nats.tls_cert_file and nats.tls_key_file go together");
    }
    if config.tls_cert_file.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let pem =
        std::fs::read(&config.tls_cert_file).with_context(|| format!("nats.tls_cert_file {}", config.tls_cert_file))?;
    let chain =
        rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>().context("nats.tls_cert_file")?;
    let pem =
        std::fs::read(&config.tls_key_file).with_context(|| format!("nats.tls_key_file {}", config.tls_key_file))?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .context("nats.tls_key_file")?
        .context("nats.tls_key_file holds no private key")?;
    builder.with_client_auth_cert(chain, key).context("nats.tls_cert_file and nats.tls_key_file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creds_file_gives_its_jwt_and_seed() {
        let creds = "-----BEGIN NATS USER JWT-----\neyJ0eXAi.abc.def\n------END NATS USER JWT------\n\n\
                     ************************* IMPORTANT *************************\n\
                     -----BEGIN USER NKEY SEED-----\nSUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n------END USER NKEY SEED------\n";
        assert_eq!(creds_section(creds, "NATS USER JWT").as_deref(), Some("eyJ0eXAi.abc.def"));
        assert_eq!(
            creds_section(creds, "USER NKEY SEED").as_deref(),
            Some("SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4")
        );
        assert_eq!(creds_section(creds, "NOPE"), None);
    }

    #[test]
    fn an_nkey_signs_the_nonce_the_server_checks() {
        let key = nkeys::KeyPair::new_user();
        let public = key.public_key();
        let mut info = serde_json::json!({});
        Auth::NKey(Arc::new(key)).connect_fields(Some("n0nce"), &mut info).unwrap();
        assert_eq!(info["nkey"], public.as_str());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(info["sig"].as_str().unwrap()).unwrap();
        assert!(nkeys::KeyPair::from_public_key(&public).unwrap().verify(b"n0nce", &sig).is_ok());
        assert!(Auth::NKey(Arc::new(nkeys::KeyPair::new_user())).connect_fields(None, &mut info).is_err());
    }
}
