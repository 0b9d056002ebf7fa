//! The server with a web configuration: TLS with a certificate the test's own
//! authority signed, and basic authentication against bcrypt hashes.

use std::{net::SocketAddr, path::Path, sync::Arc};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName},
};

use super::{web_config::WebConfig, *};

struct Echo;

impl Handler for Echo {
    fn handle(&self, path: &str, _: &str) -> Response {
        Response::new(200, "text/plain", format!("you asked for {path}"))
    }

    fn post(&self, path: &str) -> Response {
        Response::new(202, "text/plain", format!("you posted {path}"))
    }
}

/// An authority, and a certificate it signed for 127.0.0.1 with its key, in
/// `dir`; returns the authority's certificate (DER).
fn certificates(dir: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    // A key of another pair, for the mismatch test.
    std::fs::write(
        dir.join("other.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    ca.der().clone()
}

/// The web configuration's text: TLS with the files in `dir`, and the user
/// `prometheus` whose password is "s3cret".
fn web_config(dir: &Path, key: &str) -> WebConfig {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let text = format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: {key}\n\
         basic_auth_users:\n  prometheus: '{hash}'\n"
    );
    WebConfig::parse(&text, dir).unwrap()
}

fn start(access: Access) -> (Server, SocketAddr) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start(
        listener,
        Arc::new(Echo),
        Some(Arc::new(access)),
        Limits::default(),
    )
    .unwrap();
    (server, addr)
}

/// A request over TLS, trusting `ca`: the whole response.
async fn get_tls(
    addr: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
    authorization: Option<&str>,
) -> String {
    request_tls(addr, ca, "GET /metrics", authorization).await
}

/// `line` (method and path) over TLS, trusting `ca`: the whole response.
async fn request_tls(
    addr: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
    line: &str,
    authorization: Option<&str>,
) -> String {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    tls.write_all(format!("{line} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    // Closed without close_notify is an error to rustls; what arrived counts.
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

#[tokio::test]
async fn over_tls_only_the_right_password_gets_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let (_server, addr) = start(web_config(dir.path(), "server.key").access().unwrap());

    let ok = get_tls(addr, &ca, Some(&basic("prometheus", "s3cret"))).await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.ends_with("you asked for /metrics"), "{ok}");
    // Again: from the remembered match this time.
    let again = get_tls(addr, &ca, Some(&basic("prometheus", "s3cret"))).await;
    assert!(again.starts_with("HTTP/1.1 200 OK\r\n"), "{again}");

    for wrong in [
        Some(basic("prometheus", "guess")),
        Some(basic("root", "s3cret")),
        Some("Bearer s3cret".to_owned()),
        None,
    ] {
        let out = get_tls(addr, &ca, wrong.as_deref()).await;
        assert!(
            out.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{wrong:?}: {out}"
        );
        assert!(
            out.contains("\r\nWWW-Authenticate: Basic realm=\"tracer\""),
            "{out}"
        );
        assert!(!out.contains("you asked for"), "{out}");
    }
}

#[tokio::test]
async fn plain_http_gets_nothing_from_a_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (_server, addr) = start(web_config(dir.path(), "server.key").access().unwrap());
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        !out.contains("you asked for") && !out.starts_with("HTTP/"),
        "{out}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let e = web_config(dir.path(), "other.key")
        .access()
        .err()
        .expect("refused");
    assert!(
        format!("{e:#}").contains("do not make a usable pair"),
        "{e:#}"
    );
    let e = web_config(dir.path(), "server.pem")
        .access()
        .err()
        .expect("refused");
    assert!(format!("{e:#}").contains("no PEM private key"), "{e:#}");
}

#[tokio::test]
async fn a_post_is_answered_only_behind_basic_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let (_server, addr) = start(web_config(dir.path(), "server.key").access().unwrap());
    let ok = request_tls(
        addr,
        &ca,
        "POST /dump",
        Some(&basic("prometheus", "s3cret")),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 202 "), "{ok}");
    assert!(ok.ends_with("you posted /dump"), "{ok}");
    for wrong in [Some(basic("prometheus", "guess")), None] {
        let out = request_tls(addr, &ca, "POST /dump", wrong.as_deref()).await;
        assert!(out.starts_with("HTTP/1.1 401 "), "{wrong:?}: {out}");
    }
    let other = request_tls(
        addr,
        &ca,
        "DELETE /dump",
        Some(&basic("prometheus", "s3cret")),
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 405 "), "{other}");
    // TLS without users: anyone who reaches the port could, so nobody may.
    let text = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
    let access = WebConfig::parse(text, dir.path())
        .unwrap()
        .access()
        .unwrap();
    let (_server, addr) = start(access);
    let out = request_tls(addr, &ca, "POST /dump", None).await;
    assert!(out.starts_with("HTTP/1.1 403 "), "{out}");
    assert!(out.contains("basic_auth_users"), "{out}");
}
