//! The server under clients that misbehave: the cap on connections, the
//! deadline on a request head, accept failures. Real sockets where the kernel's
//! behaviour matters; an in-memory listener on tokio's paused clock where the
//! test needs accept to fail on cue.

use std::{
    collections::VecDeque,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, ReadBuf};

use super::*;

/// Answers with the path it was asked for, and counts the requests it saw.
#[derive(Default)]
struct Echo(AtomicUsize);

impl Handler for Echo {
    fn handle(&self, path: &str, _: &str) -> Response {
        self.0.fetch_add(1, Ordering::Relaxed);
        Response::new(200, "text/plain", format!("you asked for {path}"))
    }
}

fn start(handler: Arc<Echo>, limits: Limits) -> (Server, SocketAddr) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start(listener, handler, None, limits).unwrap();
    (server, addr)
}

/// `GET path` as a well-behaved client: the whole request at once.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Whether the server has closed its end (without waiting).
fn closed_by_server(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    !matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Polls `f` every 20 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn a_post_without_a_web_configuration_is_refused() {
    let (_server, addr) = start(Arc::new(Echo::default()), Limits::default());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "POST /dump HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 403 "), "{out}");
}

#[test]
fn serves_over_tcp() {
    let (_server, addr) = start(Arc::default(), Limits::default());
    let out = get(addr, "/health");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("you asked for /health"), "{out}");
}

#[test]
fn connections_that_never_send_are_capped_and_a_scraper_still_gets_through() {
    const CAP: usize = 16;
    const FLOOD: usize = 200;
    let echo = Arc::new(Echo::default());
    let limits = Limits {
        connections: CAP,
        // Only the cap may close them here.
        head_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    let (_server, addr) = start(echo.clone(), limits);
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Behind the whole flood in the accept queue.
    let out = get(addr, "/metrics");
    assert!(out.ends_with("you asked for /metrics"), "{out}");
    let mut open = FLOOD;
    let capped = eventually(Duration::from_secs(5), || {
        open = flood.iter().filter(|s| !closed_by_server(s)).count();
        open <= CAP
    });
    assert!(
        capped,
        "the server still holds {open} of {FLOOD} silent connections, cap {CAP}"
    );
    assert_eq!(echo.0.load(Ordering::Relaxed), 1);
}

#[test]
fn a_head_sent_one_byte_at_a_time_is_cut_off_at_the_deadline() {
    let echo = Arc::new(Echo::default());
    let limits = Limits {
        head_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (_server, addr) = start(echo.clone(), limits);
    let mut slow = TcpStream::connect(addr).unwrap();
    // A head that never ends, 400 bytes at 20 ms each: 8 s if nobody stops it.
    let head = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}", "a".repeat(400));
    let mut sent = 0;
    for byte in head.bytes() {
        if closed_by_server(&slow) || slow.write_all(&[byte]).is_err() {
            break;
        }
        sent += 1;
        if sent == 5 {
            // Served meanwhile.
            assert!(get(addr, "/health").ends_with("you asked for /health"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sent < head.len(),
        "the server waited for all {sent} bytes of a head dribbled past its deadline"
    );
    assert_eq!(echo.0.load(Ordering::Relaxed), 1, "only the good client");
}

/// An in-memory connection that gives its descriptor back when dropped.
struct Counted(DuplexStream, Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A listener in a process with `limit` descriptors for connections: accept
/// fails with EMFILE while they are all open. Every accept is timed (on
/// tokio's clock); after 1,000 refusals it stops answering, so that a server
/// that spins ends the test instead of hanging it.
struct Scarce {
    backlog: VecDeque<DuplexStream>,
    open: Arc<AtomicUsize>,
    limit: usize,
    refusals: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl Scarce {
    fn new(limit: usize, backlog: Vec<DuplexStream>) -> Self {
        Self {
            backlog: backlog.into(),
            open: Arc::default(),
            limit,
            refusals: Arc::default(),
        }
    }
}

impl Listen for Scarce {
    type Conn = Counted;
    async fn accept(&mut self) -> std::io::Result<Counted> {
        let refused = self.refusals.lock().unwrap().len();
        if self.backlog.is_empty() || refused >= 1000 {
            std::future::pending::<()>().await;
        }
        if self.open.load(Ordering::Relaxed) >= self.limit {
            self.refusals
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        let conn = self.backlog.pop_front().expect("not empty");
        Ok(Counted(conn, self.open.clone()))
    }
}

#[tokio::test(start_paused = true)]
async fn accept_failing_for_lack_of_descriptors_backs_off() {
    // Never a free descriptor, nothing the server could close to get one.
    let (_client, conn) = tokio::io::duplex(1024);
    let scarce = Scarce::new(0, vec![conn]);
    let refusals = scarce.refusals.clone();
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        serve(scarce, Arc::new(Echo::default()), None, Limits::default()),
    )
    .await;
    assert!(served.is_err(), "serve returned");
    let refusals = refusals.lock().unwrap();
    assert!(
        refusals.len() <= 30,
        "{} accepts in 10 s of EMFILE, the first {:?}",
        refusals.len(),
        &refusals[..5.min(refusals.len())]
    );
}

#[tokio::test(start_paused = true)]
async fn out_of_descriptors_the_oldest_silent_connections_make_room() {
    // Four descriptors, held by silent clients; a scraper queued behind six more.
    let mut clients = Vec::new();
    let mut backlog = Vec::new();
    for _ in 0..10 {
        let (client, conn) = tokio::io::duplex(64 * 1024);
        clients.push(client);
        backlog.push(conn);
    }
    let (mut scraper, conn) = tokio::io::duplex(64 * 1024);
    scraper
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    backlog.push(conn);
    let limits = Limits {
        // Only freeing descriptors may let the scraper in.
        head_timeout: Duration::from_secs(600),
        ..Limits::default()
    };
    tokio::spawn(serve(
        Scarce::new(4, backlog),
        Arc::new(Echo::default()),
        None,
        limits,
    ));
    let mut out = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(60), scraper.read_to_string(&mut out)).await;
    assert!(read.is_ok(), "the scraper was never answered");
    assert!(out.ends_with("you asked for /health"), "{out}");
}
