//! A certificate authority and a server certificate for 127.0.0.1, made for
//! one test, so that a TLS client can verify the agent as Prometheus would.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct TestTls {
    /// The authority's certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate and key: what the agent serves.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestTls {
    /// Writes `ca.pem`, `server.pem` and `server.key` into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tracer test CA");
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;

        // rcgen makes "127.0.0.1" an IP address SAN, which is what a client
        // that dials 127.0.0.1 checks.
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;

        let tls = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&tls.ca, ca.pem())?;
        std::fs::write(&tls.cert, cert.pem())?;
        std::fs::write(&tls.key, key.serialize_pem())?;
        Ok(tls)
    }
}
