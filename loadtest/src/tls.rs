//! TLS for `wss://` targets and `https://` server-API calls: the system's roots, plus the CA of
//! `--tls-ca` (a test certificate, or a private CA in front of a staging deployment).

use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls;

/// What `wss://` connections trust.
pub type TlsConfig = Arc<rustls::ClientConfig>;

/// A client configuration trusting the system's roots and, when given, the PEM file `ca`.
pub fn client_config(ca: Option<&str>) -> anyhow::Result<TlsConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca {
        let pem = std::fs::read(path).with_context(|| format!("--tls-ca {path}"))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.with_context(|| format!("--tls-ca {path}: a certificate"))?)?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "--tls-ca {path} holds no certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An HTTP client for the server API (and the floor's and Natter's REST), with the same trust.
pub fn http_client(ca: Option<&str>, timeout: std::time::Duration) -> anyhow::Result<reqwest::Client> {
    let config = Arc::unwrap_or_clone(client_config(ca)?);
    Ok(reqwest::Client::builder().timeout(timeout).use_preconfigured_tls(config).build()?)
}
