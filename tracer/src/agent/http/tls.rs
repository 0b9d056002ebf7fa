//! The TLS server configuration from a certificate chain and a key in PEM
//! files, as the web configuration names them.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use tokio_rustls::rustls::{
    self, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};

/// Reads `cert` (the server's certificate, then any intermediates) and `key`
/// (PKCS#8, PKCS#1 or SEC1), and checks that they belong together.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .with_context(|| format!("cert_file {}", cert.display()))?;
    if chain.is_empty() {
        bail!("cert_file {}: no PEM certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("key_file {}: no PEM private key", key.display()))?;
    // ring, named here rather than installed process-wide: nothing else in
    // the process uses TLS.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("cert_file and key_file do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
