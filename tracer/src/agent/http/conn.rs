//! One connection: the TLS handshake and the request head within the head
//! deadline, then the password check and the response within the answer
//! deadline.

use std::sync::Arc;

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    time::{Instant, timeout, timeout_at},
};

use super::{Access, Handler, Limits, Response, Slot, request};

const TEXT: &str = "text/plain; charset=utf-8";

/// Serves one connection; whatever goes wrong closes it.
pub(super) async fn serve<C: AsyncRead + AsyncWrite + Unpin>(
    stream: C,
    slot: Slot,
    handler: Arc<dyn Handler>,
    access: Option<Arc<Access>>,
    limits: Limits,
) {
    let deadline = Instant::now() + limits.head_timeout;
    match access.as_ref().and_then(|a| a.tls.clone()) {
        Some(tls) => {
            if let Ok(Ok(stream)) = timeout_at(deadline, tls.accept(stream)).await {
                exchange(stream, slot, handler, access, limits, deadline).await;
            }
        }
        None => exchange(stream, slot, handler, access, limits, deadline).await,
    }
}

/// The end of reading a head.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed or reset the connection first.
    Gone,
}

async fn read_head<C: AsyncRead + Unpin>(stream: &mut C, max: usize) -> Head {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Head::Gone,
            Ok(n) => n,
        };
        // Only the new bytes and the three before them can complete "\r\n\r\n".
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = request::head_end(&head[from..]) {
            head.truncate(from + end);
            return Head::Complete(head);
        }
        if head.len() > max {
            return Head::TooLarge;
        }
    }
}

async fn exchange<C: AsyncRead + AsyncWrite + Unpin>(
    mut stream: C,
    mut slot: Slot,
    handler: Arc<dyn Handler>,
    access: Option<Arc<Access>>,
    limits: Limits,
    deadline: Instant,
) {
    let head = match timeout_at(deadline, read_head(&mut stream, limits.max_head)).await {
        // Too slow (slowloris), or gone: nothing to answer.
        Err(_) | Ok(Head::Gone) => return,
        Ok(Head::TooLarge) => None,
        Ok(Head::Complete(head)) => Some(head),
    };
    if !slot.answering() {
        return;
    }
    let _ = timeout(limits.answer_timeout, async {
        let (response, extra) = match head {
            Some(head) => answer(&String::from_utf8_lossy(&head), &*handler, access).await,
            None => (Response::new(431, TEXT, "request head too large\n"), ""),
        };
        let head = request::response_head(
            response.status,
            response.content_type,
            response.body.len(),
            extra,
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(response.body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// The response to a complete head, and the header lines it adds.
async fn answer(
    head: &str,
    handler: &dyn Handler,
    access: Option<Arc<Access>>,
) -> (Response, &'static str) {
    let Some(request) = request::parse(head) else {
        return (Response::new(400, TEXT, "bad request\n"), "");
    };
    let authenticated = access.as_ref().is_some_and(|a| a.users.is_some());
    if let Some(access) = access {
        if !access.authorized(request.authorization).await {
            return (
                Response::new(401, TEXT, "unauthorized\n"),
                "WWW-Authenticate: Basic realm=\"tracer\", charset=\"UTF-8\"\r\n",
            );
        }
    }
    match request.method {
        "GET" => (handler.handle(request.path, request.accept), ""),
        // A POST acts (writes a dump): never for whoever can reach the port.
        "POST" if !authenticated => (
            Response::new(
                403,
                TEXT,
                "POST needs basic authentication: basic_auth_users in the --web-config file\n",
            ),
            "",
        ),
        "POST" => (handler.post(request.path), ""),
        _ => (Response::new(405, TEXT, "only GET, and POST /dump\n"), ""),
    }
}
