//! Requests refused before they reach the app get the same JSON error body as every other error.
//!
//! actix-http answers a request it cannot parse (400), a head too large to buffer (431) and a
//! head that never finishes (408) itself, with an empty body, and offers no hook to change that.
//! Those answers are always the connection's last bytes and have a fixed shape
//! (`HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n…`), which no
//! response of the app has (its errors all carry a body). This wrapper around the connection
//! rewrites exactly that shape as it is written; upgraded WebSockets take the bare socket back
//! with [`JsonRejections::into_inner`] and never pass through it.
//!
//! A 408 on a connection whose first request's head had arrived whole (read, or there to be read)
//! was the node's delay, not the client's: a worker behind on a reconnect storm gets to some connections only after the head
//! timeout. Those are answered 503 `unavailable` with `Retry-After` instead, so the client backs
//! off on the server's word rather than taking a "you were too slow" for an answer.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ApiError, ErrorCode};

/// A connection whose parser-level rejections are rewritten with JSON bodies.
pub struct JsonRejections<T> {
    io: T,
    /// A rewritten rejection still being written: the bytes and how many went out.
    pending: Option<(Vec<u8>, usize)>,
    /// Whether anything was written yet (a 408 as the first bytes may be the node's lateness).
    answered: bool,
    /// Whether the first request's head was received whole (its blank line read)…
    head_received: bool,
    /// … looked for across reads with the last bytes of the previous one.
    head_tail: [u8; 3],
}

impl<T> JsonRejections<T> {
    pub fn new(io: T) -> Self {
        Self { io, pending: None, answered: false, head_received: false, head_tail: [0; 3] }
    }

    /// Notes whether these bytes (read before the first answer) complete a request head.
    fn saw(&mut self, read: &[u8]) {
        if self.head_received || read.is_empty() {
            return;
        }
        // The blank line within this read, or across its start (the previous read's last bytes
        // and its first ones): no copy of the read itself.
        let n = read.len().min(3);
        let mut joint = [0u8; 6];
        joint[..3].copy_from_slice(&self.head_tail);
        joint[3..3 + n].copy_from_slice(&read[..n]);
        self.head_received = memchr::memmem::find(&joint[..3 + n], b"\r\n\r\n").is_some()
            || memchr::memmem::find(read, b"\r\n\r\n").is_some();
        if read.len() >= 3 {
            self.head_tail.copy_from_slice(&read[read.len() - 3..]);
        } else {
            self.head_tail.copy_from_slice(&joint[n..3 + n]);
        }
    }

    /// The connection itself (for upgrades, which happen before any rejection).
    pub fn into_inner(self) -> T {
        self.io
    }
}

/// The statuses actix-http writes itself, and what they mean on our error table.
const REJECTIONS: [(&[u8], ErrorCode, &str); 3] = [
    (b" 400 Bad Request\r\ncontent-length: 0\r\n", ErrorCode::MalformedRequest, "the request is not valid HTTP/1.1"),
    (
        b" 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        ErrorCode::HeadersTooLarge,
        "the request's headers are too large",
    ),
    (b" 408 Request Timeout\r\ncontent-length: 0\r\n", ErrorCode::RequestTimeout, "the request's head took too long"),
];

/// How long a client told that the node was behind waits before trying again (seconds).
const LATE_RETRY_AFTER_SECS: u64 = 5;

/// A 408 (the whole of `buf`, as actix-http writes it first on a connection) replaced by a 503
/// with `Retry-After` and the JSON error body; `None` when `buf` is not that 408.
fn rewrite_late(buf: &[u8]) -> Option<Vec<u8>> {
    let (shape, _, _) = REJECTIONS[2];
    if !buf.starts_with(b"HTTP/1.") || memchr::memmem::find(buf, shape) != Some(8) {
        return None;
    }
    let error = ApiError::new(ErrorCode::Unavailable, "this node is behind on its connections; retry later");
    let body = serde_json::to_vec(&error.body()).ok()?;
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: {LATE_RETRY_AFTER_SECS}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// `buf` with a bodiless rejection replaced by the same response with a JSON error body, or
/// `None` when it holds none.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    for (shape, code, message) in REJECTIONS {
        let Some(at) = memchr::memmem::find(buf, shape) else { continue };
        // The status line starts with "HTTP/1.x" right before the match.
        at.checked_sub(8).filter(|s| buf[*s..].starts_with(b"HTTP/1."))?;
        let head_end = at + memchr::memmem::find(&buf[at..], b"\r\n\r\n")? + 2;
        let body = serde_json::to_vec(&ApiError::new(code, message).body()).ok()?;
        let length_at = at + shape.len() - b"content-length: 0\r\n".len();
        let mut out = Vec::with_capacity(buf.len() + body.len() + 64);
        out.extend_from_slice(&buf[..length_at]);
        out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&buf[at + shape.len()..head_end]);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out.extend_from_slice(&buf[head_end + 2..]);
        return Some(out);
    }
    None
}

impl<T: AsyncWrite + Unpin> JsonRejections<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRejections<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if !this.answered && matches!(result, Poll::Ready(Ok(()))) {
            this.saw(&buf.filled()[before..]);
        }
        result
    }
}

impl<T: AsyncRead + Unpin> JsonRejections<T> {
    /// Whether the head arrived whole, counting bytes the client sent that were never read
    /// (looked at without waiting; the connection is about to be closed, so what is read here is
    /// not missed).
    fn head_arrived(&mut self, cx: &mut Context<'_>) -> bool {
        let mut bytes = [0u8; 8192];
        while !self.head_received {
            let mut probe = ReadBuf::new(&mut bytes);
            match Pin::new(&mut self.io).poll_read(cx, &mut probe) {
                Poll::Ready(Ok(())) if !probe.filled().is_empty() => {
                    let read = probe.filled().to_vec();
                    self.saw(&read);
                }
                _ => break,
            }
        }
        self.head_received
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for JsonRejections<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = !std::mem::replace(&mut this.answered, true);
        ready!(this.poll_pending(cx))?;
        // Late: the head had arrived whole (read, or waiting to be) when the timeout fired.
        let late = if first { rewrite_late(buf).filter(|_| this.head_arrived(cx)) } else { None };
        if late.is_some() {
            metrics::counter!("natter_ws_connects_total", "result" => "behind").increment(1);
        }
        if let Some(rewritten) = late.or_else(|| rewrite(buf)) {
            // Taken whole; what the socket does not take now goes out on the next flush.
            this.pending = Some((rewritten, 0));
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &[u8]) -> serde_json::Value {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|n| n.parse().ok()).unwrap();
        assert_eq!(length, body.len(), "{text}");
        assert!(head.contains("content-type: application/json"), "{head}");
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn a_bodiless_400_gets_the_json_error_body() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Mon, 30 Nov 2026 10:52:36 GMT\r\n\r\n";
        let out = rewrite(raw).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        assert_eq!(body_of(&out)["error"]["code"], "malformed_request");
    }

    #[test]
    fn a_431_behind_an_earlier_pipelined_response_is_rewritten_and_the_first_kept() {
        let first = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let raw = [
            &first[..],
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        ]
        .concat();
        let out = rewrite(&raw).unwrap();
        assert!(out.starts_with(first));
        assert_eq!(body_of(&out[first.len()..])["error"]["code"], "headers_too_large");
    }

    #[test]
    fn a_408_the_node_was_late_with_becomes_a_503_with_retry_after() {
        let raw = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\ndate: Mon, 30 Nov 2026 10:52:36 GMT\r\n\r\n";
        let out = rewrite_late(raw).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(std::str::from_utf8(&out).unwrap().contains("retry-after: 5\r\n"));
        assert_eq!(body_of(&out)["error"]["code"], "unavailable");
        assert!(rewrite_late(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[test]
    fn a_head_is_seen_whole_across_reads_and_not_before_its_blank_line() {
        let mut conn = JsonRejections::new(());
        conn.saw(b"GET /ws HTTP/1.1\r\nHost: natter\r");
        assert!(!conn.head_received);
        conn.saw(b"\n\r");
        assert!(!conn.head_received);
        conn.saw(b"\n");
        assert!(conn.head_received);
    }

    #[test]
    fn responses_of_the_app_pass_untouched() {
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 61\r\n\r\n{}").is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
