//! The agent's HTTP endpoint: `GET /metrics`, `GET /health` and, for a
//! client that authenticated, `POST /dump`, nothing else, over TLS and
//! behind basic authentication if the web configuration asks.
//! A few lines over tokio rather than a web framework: one scraper, a few
//! requests a minute.
//!
//! It runs on a thread and a runtime of its own ([`Server`]), so that no
//! client, however slow or numerous, delays the agent's reads of the kernel's
//! maps. A client holds at most a slot of a fixed number ([`Limits`]); when
//! they are all taken, the connection that has waited longest for its request
//! head makes room, so that a flood of silent connections cannot keep a
//! scraper out.

pub mod auth;
mod conn;
pub mod request;
pub mod tls;
pub mod web_config;

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    os::fd::AsRawFd as _,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

pub use self::web_config::Access;

/// A response body; shared, so that every scrape of one snapshot sends the
/// same rendered page.
pub type Body = Arc<str>;

/// What a request is answered with.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Body>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }
}

/// Answers requests; implemented by the agent's shared state.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, path: &str, accept: &str) -> Response;

    /// A `POST`, which only an authenticated client gets here (see
    /// `conn::answer`).
    fn post(&self, _path: &str) -> Response {
        Response::new(405, "text/plain; charset=utf-8", "only GET\n")
    }
}

/// Where connections come from: a TCP listener, or a stand-in in tests.
pub trait Listen: Send + 'static {
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Listen for TcpListener {
    type Conn = TcpStream;
    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

/// What clients may hold. Each connection costs a task, a descriptor and at
/// most `max_head` bytes; pages are shared, not copied per connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections held at once.
    pub connections: usize,
    /// From accept to the end of the request head, TLS handshake included:
    /// a scraper sends its request at once; a client that dribbles it
    /// (slowloris) is cut off.
    pub head_timeout: Duration,
    /// From the end of the head to the last byte of the response, checking
    /// the password included.
    pub answer_timeout: Duration,
    /// A longer head gets 431.
    pub max_head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 64,
            head_timeout: Duration::from_secs(5),
            // Prometheus' default scrape_timeout.
            answer_timeout: Duration::from_secs(10),
            max_head: 8 * 1024,
        }
    }
}

/// Binds the agent's listening socket.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    // std listens with a backlog of 128: a burst of connections beyond it
    // would wait for SYN retransmits, a scraper's among them. Linux takes a
    // second listen() as a new backlog (capped by net.core.somaxconn).
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), 1024) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// The connections held, by age.
struct Connections {
    next_id: u64,
    /// Still waiting for their request head, oldest first: the ones closed
    /// to make room.
    waiting: BTreeMap<u64, AbortHandle>,
    answering: usize,
    cap: usize,
    /// Whether accept has run out of descriptors (said once).
    starved: bool,
}

/// Connections kept even when descriptors run out.
const MIN_CONNECTIONS: usize = 4;
/// Descriptors left to the rest of the agent (cgroup directories, /proc,
/// dumps) once accept has run out of them.
const SPARE_DESCRIPTORS: usize = 8;

impl Connections {
    fn live(&self) -> usize {
        self.waiting.len() + self.answering
    }

    /// Closes the connection that has waited longest for its head; false if
    /// none is waiting.
    fn evict_oldest(&mut self) -> bool {
        match self.waiting.pop_first() {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Accept failed for lack of descriptors: from now on hold
    /// [`SPARE_DESCRIPTORS`] fewer connections than now, so that the agent's
    /// own reads find descriptors, and close the oldest waiting ones to get
    /// there. Returns whether any was closed (and a retry may succeed).
    fn out_of_descriptors(&mut self) -> bool {
        let cap = self
            .live()
            .saturating_sub(SPARE_DESCRIPTORS)
            .max(MIN_CONNECTIONS);
        if cap < self.cap || !self.starved {
            eprintln!(
                "tracer agent: out of file descriptors (RLIMIT_NOFILE) accepting a connection; \
                 now holding at most {cap} connections"
            );
            self.starved = true;
        }
        self.cap = self.cap.min(cap);
        let mut evicted = false;
        while self.live() > self.cap.saturating_sub(1) && self.evict_oldest() {
            evicted = true;
        }
        // Already under the new cap, the descriptors are held elsewhere in
        // the agent: closing one waiting connection still frees one for the
        // queue. With none waiting, the caller waits before retrying.
        evicted || self.evict_oldest()
    }
}

type Shared = Arc<Mutex<Connections>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Connections> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection's entry in [`Connections`]: waiting until its head has
/// arrived, then answering; removed when the connection's task ends, however
/// it ends.
struct Slot {
    id: u64,
    shared: Shared,
    answering: bool,
}

impl Slot {
    /// The head has arrived. False if the connection was evicted meanwhile
    /// (its task is being cancelled).
    fn answering(&mut self) -> bool {
        let mut c = lock(&self.shared);
        if c.waiting.remove(&self.id).is_some() {
            c.answering += 1;
            self.answering = true;
        }
        self.answering
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.shared);
        if self.answering {
            c.answering -= 1;
        } else {
            c.waiting.remove(&self.id);
        }
    }
}

/// Waits between failed accepts: from 10 ms, doubling to 1 s.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        wait
    }
}

/// Errors of accept that mean the process (or the system) is out of
/// descriptors or memory, rather than one client's connection failing.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves `handler` on `listener` until the future is dropped.
pub async fn serve<L: Listen>(
    mut listener: L,
    handler: Arc<dyn Handler>,
    access: Option<Arc<Access>>,
    limits: Limits,
) {
    let shared: Shared = Arc::new(Mutex::new(Connections {
        next_id: 0,
        waiting: BTreeMap::new(),
        answering: 0,
        cap: limits.connections.max(1),
        starved: false,
    }));
    let mut backoff = Backoff(Backoff::FIRST);
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => {
                backoff = Backoff(Backoff::FIRST);
                stream
            }
            Err(e) => {
                // A retry right away would fail the same way: the connection
                // stays queued in the kernel. Free a descriptor of ours if we
                // can (the closed task gives it back when it is dropped, which
                // the yield lets happen), else wait.
                if out_of_descriptors(&e) && lock(&shared).out_of_descriptors() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(backoff.next()).await;
                }
                continue;
            }
        };
        let slot = {
            let mut c = lock(&shared);
            if c.live() >= c.cap && !c.evict_oldest() {
                // Every slot is answering a request: they end within
                // `answer_timeout`. The newcomer is closed at once.
                continue;
            }
            let id = c.next_id;
            c.next_id += 1;
            Slot {
                id,
                shared: shared.clone(),
                answering: false,
            }
        };
        let id = slot.id;
        let task = tokio::spawn(conn::serve(
            stream,
            slot,
            handler.clone(),
            access.clone(),
            limits,
        ));
        // The runtime is single-threaded: the task has not run yet, so it is
        // registered before it can look itself up.
        lock(&shared).waiting.insert(id, task.abort_handle());
        // Lets the new connection read what its client sent with the connect
        // (a scraper's whole request), and tasks just evicted close, before
        // the next accept: else a burst of accepts could evict a scraper
        // that was never polled.
        tokio::task::yield_now().await;
    }
}

/// The server on a thread and a single-threaded runtime of its own.
pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(
        listener: std::net::TcpListener,
        handler: Arc<dyn Handler>,
        access: Option<Arc<Access>>,
        limits: Limits,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Password checks (bcrypt, slow on purpose) run there one at a
            // time: a flood of wrong passwords costs one core at most.
            .max_blocking_threads(1)
            .thread_name("tracer-http")
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("tracer-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("tracer agent: cannot serve HTTP: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = serve(listener, handler, access, limits) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops serving: open connections are closed.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut();
    }
}

#[cfg(test)]
mod access_tests;
#[cfg(test)]
mod tests;
