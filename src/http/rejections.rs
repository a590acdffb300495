//! Requests refused before they reach the app get the same JSON error body as every other error.
//!
//! actix-http answers a request it cannot parse (400), a head too large to buffer (431) and a
//! head that never finishes (408) itself, with an empty body, and offers no hook to change that.
//! Those answers are always the connection's last bytes and have a fixed shape
//! (`HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n…`), which no
//! response of the app has (its errors all carry a body). This wrapper around the connection
//! rewrites exactly that shape as it is written; upgraded WebSockets take the bare socket back
//! with [`JsonRejections::into_inner`] and never pass through it.

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
}

impl<T> JsonRejections<T> {
    pub fn new(io: T) -> Self {
        Self { io, pending: None }
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
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRejections<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(rewritten) = rewrite(buf) {
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
    fn responses_of_the_app_pass_untouched() {
        assert!(rewrite(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 61\r\n\r\n{}").is_none());
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
