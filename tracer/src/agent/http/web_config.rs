//! The web configuration file of Prometheus' exporters (exporter-toolkit's
//! format, `--web-config` / `web_config`), the part the agent serves:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: tls.crt        # PEM; relative paths are from this file's directory
//!   key_file: tls.key
//! basic_auth_users:           # user: bcrypt hash (htpasswd -nbBC 10 USER PASSWORD)
//!   prometheus: $2y$10$...
//! ```
//!
//! Either section may be left out. The format's other keys (client
//! certificates, cipher and version choices, `http_server_config`) are
//! refused by name rather than ignored: a security setting that silently did
//! nothing would be worse than an error.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::{auth::Users, tls};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// A web configuration, parsed and checked; the files it names not read yet.
#[derive(Clone, Debug, PartialEq)]
pub struct WebConfig {
    /// The certificate and key files, if TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// User names and their bcrypt hashes; empty if no authentication.
    pub users: BTreeMap<String, String>,
}

impl WebConfig {
    /// Parses a web configuration's text; relative paths are taken from `dir`.
    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<Self> {
        // An empty file is valid (and turns nothing on), as for exporters.
        let file: File = match text.trim() {
            "" => File {
                tls_server_config: None,
                basic_auth_users: None,
            },
            _ => serde_norway::from_str(text)?,
        };
        let tls = match file.tls_server_config {
            None => None,
            Some(TlsFile {
                cert_file: Some(cert),
                key_file: Some(key),
            }) if !cert.as_os_str().is_empty() && !key.as_os_str().is_empty() => {
                Some((dir.join(cert), dir.join(key)))
            }
            Some(_) => bail!("tls_server_config: both cert_file and key_file are needed"),
        };
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.is_empty() || user.contains(':') {
                bail!("basic_auth_users: {user:?} cannot be a user name (empty, or with a colon)");
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                bail!(
                    "basic_auth_users: {user}'s password must be a bcrypt hash ($2y$..., from htpasswd -nbBC 10 {user} PASSWORD), not {} characters of something else",
                    hash.len()
                );
            }
        }
        Ok(Self { tls, users })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the web configuration {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).with_context(|| format!("in {}", path.display()))
    }

    /// Reads the certificate and key, ready to serve.
    pub fn access(&self) -> anyhow::Result<Access> {
        Ok(Access {
            tls: match &self.tls {
                Some((cert, key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
                None => None,
            },
            users: (!self.users.is_empty()).then(|| Arc::new(Users::new(self.users.clone()))),
            checking: Arc::new(Semaphore::new(1)),
            checks_started: AtomicUsize::new(0),
        })
    }
}

/// TLS and who may ask, as the web configuration says.
pub struct Access {
    pub tls: Option<TlsAcceptor>,
    pub users: Option<Arc<Users>>,
    /// One bcrypt check at a time. A request waits for its turn here, where
    /// giving up (its deadline, its client gone) costs nothing; once handed
    /// to the blocking thread a check runs to its end regardless.
    checking: Arc<Semaphore>,
    /// bcrypt checks handed to the blocking thread so far.
    checks_started: AtomicUsize,
}

impl Access {
    /// Whether a request with this `Authorization` header may be answered.
    pub async fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(users) = &self.users else {
            return true;
        };
        let Some((user, password)) = authorization.and_then(super::auth::decode) else {
            return false;
        };
        if users.matched_before(&user, &password) {
            return true;
        }
        let Ok(turn) = self.checking.clone().acquire_owned().await else {
            return false;
        };
        // The slow check off the server's runtime thread, so that other
        // connections are served meanwhile; the turn ends with the check.
        let users = users.clone();
        self.checks_started.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            users.verify(&user, &password)
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const HASH: &str = "$2y$04$CzdFbLKjCANdPvDvfjJbUOkgTxM1PCZvbCU0x3I6HV.mI8iUNSZ2O";

    fn parse(text: &str) -> anyhow::Result<WebConfig> {
        WebConfig::parse(text, Path::new("/etc/tracer"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn tls_and_users() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: tls/agent.crt\n  key_file: /abs/agent.key\n\
             basic_auth_users:\n  prometheus: {HASH}\n  'grafana': '{HASH}'\n"
        ))
        .unwrap();
        assert_eq!(
            c.tls,
            Some((
                PathBuf::from("/etc/tracer/tls/agent.crt"),
                PathBuf::from("/abs/agent.key")
            ))
        );
        assert_eq!(
            c.users.keys().collect::<Vec<_>>(),
            ["grafana", "prometheus"]
        );
        assert_eq!(c.users["prometheus"], HASH);
    }

    #[test]
    fn either_section_alone_or_none() {
        let c = parse(&format!("basic_auth_users:\n  p: {HASH}\n")).unwrap();
        assert_eq!((c.tls, c.users.len()), (None, 1));
        let c = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n").unwrap();
        assert!(c.tls.is_some() && c.users.is_empty());
        assert_eq!(parse("").unwrap(), parse("# nothing\n").unwrap());
        assert!(parse("").unwrap().tls.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            err("tls_server_config:\n  cert_file: a\n").contains("both cert_file and key_file")
        );
        assert!(err("tls_server_config:\n  cert_file: a\n  key_file: ''\n").contains("key_file"));
        // Settings the agent does not implement are refused, not ignored.
        let e = err(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
        );
        assert!(e.contains("client_auth_type"), "{e}");
        assert!(err("http_server_config:\n  http2: false\n").contains("http_server_config"));
        let e = err("basic_auth_users:\n  prometheus: hunter2\n");
        assert!(e.contains("bcrypt") && !e.contains("hunter2"), "{e}");
        assert!(err(&format!("basic_auth_users:\n  'a:b': {HASH}\n")).contains("user name"));
        assert!(err("basic_auth_users: [a, b]\n").contains("basic_auth_users"));
        assert!(
            err("tls_server_config: [\n").contains("line"),
            "YAML syntax"
        );
    }

    #[test]
    fn files_are_read_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("web.yml");
        assert!(
            format!("{:#}", WebConfig::load(&missing).unwrap_err())
                .contains("cannot read the web configuration")
        );
        std::fs::write(
            &missing,
            "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n",
        )
        .unwrap();
        let c = WebConfig::load(&missing).unwrap();
        let e = format!("{:#}", c.access().err().expect("missing files refused"));
        assert!(e.contains("none.crt"), "{e}");
    }

    /// A client that gives up while waiting for its password check (its
    /// deadline passed, it left) must not leave a check queued: else a flood
    /// of wrong passwords would pile up bcrypt work without bound.
    #[tokio::test]
    async fn abandoned_password_checks_do_not_pile_up() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let access = WebConfig {
            tls: None,
            users: BTreeMap::from([("prometheus".to_owned(), hash)]),
        }
        .access()
        .unwrap();
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("prometheus:guess")
        );
        // A check under way (one of cost 4 could otherwise end before the
        // next request, and the test would depend on how fast bcrypt runs).
        let under_way = access.checking.clone().try_acquire_owned().unwrap();
        for _ in 0..50 {
            // Polled once, then dropped, as a connection past its deadline.
            let check = access.authorized(Some(&wrong));
            let _ = tokio::time::timeout(std::time::Duration::ZERO, check).await;
        }
        let started = access.checks_started.load(Ordering::Relaxed);
        assert_eq!(started, 0, "checks started for 50 abandoned requests");
        drop(under_way);
        assert!(!access.authorized(Some(&wrong)).await);
        assert_eq!(access.checks_started.load(Ordering::Relaxed), 1);
    }
}
