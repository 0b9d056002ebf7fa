//! Reading a request head and writing a response: the little of HTTP/1.1 the
//! agent speaks (`GET`, one request per connection, `Connection: close`).

/// What the agent needs from a request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The target without its query.
    pub path: &'a str,
    pub accept: &'a str,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<&'a str>,
}

/// Parses a request head (everything before the blank line).
pub fn parse(head: &str) -> Option<Request<'_>> {
    let mut lines = head.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let (method, target) = (request.next()?, request.next()?);
    let path = target.split('?').next().unwrap_or(target);
    let mut accept = "";
    let mut authorization = None;
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let name = name.trim();
        if name.eq_ignore_ascii_case("accept") {
            accept = value.trim();
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim());
        }
    }
    Some(Request {
        method,
        path,
        accept,
        authorization,
    })
}

/// The end of the head in what was read so far: the offset just past the
/// blank line.
pub fn head_end(read: &[u8]) -> Option<usize> {
    read.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The status line and headers of a response whose body is `length` bytes;
/// `extra` is more header lines, each ending in CRLF.
pub fn response_head(status: u16, content_type: &str, length: usize, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}Connection: close\r\n\r\n",
        reason(status)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let head = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text; version=1.0.0\r\nauthorization:  Basic eDp5 ";
        assert_eq!(
            parse(head),
            Some(Request {
                method: "GET",
                path: "/metrics",
                accept: "application/openmetrics-text; version=1.0.0",
                authorization: Some("Basic eDp5"),
            })
        );
        let post = parse("POST / HTTP/1.1").unwrap();
        assert_eq!((post.method, post.path, post.accept), ("POST", "/", ""));
        assert_eq!(post.authorization, None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn the_head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn response_heads() {
        assert_eq!(
            response_head(401, "text/plain", 3, "WWW-Authenticate: Basic\r\n"),
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
             WWW-Authenticate: Basic\r\nConnection: close\r\n\r\n"
        );
    }
}
