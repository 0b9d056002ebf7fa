//! The agent's HTTP endpoint: `GET /metrics` and `GET /health`, nothing else.
//! A few lines over tokio rather than a web framework: one scraper, a few
//! requests a minute.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// What a request is answered with: status, content type, body.
pub type Response = (u16, &'static str, String);

/// Answers requests; implemented by the agent's shared state.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, path: &str, accept: &str) -> Response;
}

/// Serves `handler` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Arc<dyn Handler>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, handler)).await;
        });
    }
}

/// The request line's path and the Accept header of a request head.
pub fn parse_request(head: &str) -> Option<(&str, &str, &str)> {
    let mut lines = head.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let (method, target) = (request.next()?, request.next()?);
    let path = target.split('?').next().unwrap_or(target);
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map_or("", |(_, v)| v.trim());
    Some((method, path, accept))
}

async fn answer(mut stream: TcpStream, handler: Arc<dyn Handler>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let (status, content_type, body) = match parse_request(&head) {
        Some(("GET", path, accept)) => handler.handle(path, accept),
        Some(_) => (405, "text/plain; charset=utf-8", "only GET\n".to_owned()),
        None => (400, "text/plain; charset=utf-8", "bad request\n".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let head = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n";
        assert_eq!(
            parse_request(head),
            Some((
                "GET",
                "/metrics",
                "application/openmetrics-text; version=1.0.0"
            ))
        );
        assert_eq!(
            parse_request("POST / HTTP/1.1\r\n\r\n"),
            Some(("POST", "/", ""))
        );
        assert_eq!(parse_request(""), None);
    }

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, path: &str, _: &str) -> Response {
            (200, "text/plain", format!("you asked for {path}"))
        }
    }

    #[test]
    fn serves_over_tcp() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve(listener, Arc::new(Echo)));
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.ends_with("you asked for /health"), "{out}");
        });
    }
}
