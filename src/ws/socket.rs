//! The WebSocket's bytes on the wire, under the session actor.
//!
//! An idle connection here holds no buffer at all. Reads go through a chunk on the stack and keep
//! only an unfinished frame; writes go straight to the kernel and queue only what it refuses, as
//! the shared `Bytes` the Router handed over (never copied per recipient). actix-web-actors, used
//! before, kept the HTTP/1 dispatcher alive under every socket with its read and write buffers,
//! plus the context's own frame buffer and payload channel: 20.9 KiB per idle connection against
//! the floor's 8.9 KiB (issue 11, `loadtest/results/`).

use std::{
    cell::RefCell,
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use actix_codec::Decoder;
use actix_http::ws::{CloseReason, Codec, Frame, Item, ProtocolError};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio::net::TcpStream;

/// How long a closing socket may take to hand its last bytes (the close frame) to a peer that
/// reads slowly, and to wait for the peer's own close, before it is dropped anyway.
const LINGER: Duration = Duration::from_secs(3);

/// Bytes read from the kernel at a time; only a frame left unfinished is kept between reads.
const CHUNK: usize = 4096;

/// Largest number of queued pieces handed to one vectored write.
const MAX_IOV: usize = 64;

/// Most frames one fragmented message may take: each costs a parse, so a stream of empty
/// continuation frames must end somewhere even though it never grows the message.
const MAX_FRAGMENTS: u32 = 1024;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

struct Shared {
    io: TcpStream,
    out: RefCell<Out>,
    /// Bytes handed over for this client and not yet taken by the kernel (the Router's
    /// slow-consumer check reads it).
    queued: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Out {
    queue: VecDeque<Bytes>,
    /// Frames (head and payload) that go out with the next frame written, in the same call,
    /// or at `flush_held`; counted in `queued` already.
    held: Vec<Bytes>,
    /// A task is waiting for the socket to become writable.
    flushing: bool,
    /// A close frame went out (or the session ended): nothing more is written.
    closing: Option<Instant>,
    /// The close frame is queued: after it, half-close and wait for the peer's close.
    linger: bool,
    broken: bool,
}

/// The sending side, owned by the session actor.
pub struct Socket(Rc<Shared>);

/// A client message as the session sees it: fragments assembled, text checked to be UTF-8, and
/// how many frames it took (each counts against the connection's frame limit).
#[derive(Debug)]
pub enum Inbound {
    Text { text: ByteString, frames: u32 },
    Binary { frames: u32 },
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Why the transport gives up on a connection.
#[derive(Debug)]
pub enum Failure {
    /// A message over `ws.max_frame_bytes` (or over `MAX_FRAGMENTS` frames): close 1009.
    TooLarge,
    /// A text message that is not UTF-8: close 1007.
    NotUtf8,
    /// Another RFC 6455 violation (close 1002), or the connection failing underneath.
    Protocol(ProtocolError),
}

/// A fragmented message being assembled.
struct Partial {
    text: bool,
    buf: BytesMut,
    frames: u32,
}

/// The receiving side: client messages as a stream the session actor consumes.
pub struct Incoming {
    shared: Rc<Shared>,
    buf: BytesMut,
    codec: Codec,
    max_size: usize,
    /// Boxed: most connections never fragment, and an idle one keeps only the pointer.
    partial: Option<Box<Partial>>,
    done: bool,
}

/// Splits an upgraded connection; `read` holds whatever arrived after the handshake request.
pub fn split(io: TcpStream, read: BytesMut, max_size: usize) -> (Socket, Incoming) {
    let shared = Rc::new(Shared { io, out: RefCell::new(Out::default()), queued: Arc::default() });
    let incoming = Incoming {
        shared: shared.clone(),
        buf: read,
        codec: Codec::new().max_size(max_size),
        max_size,
        partial: None,
        done: false,
    };
    (Socket(shared), incoming)
}

/// Takes `n` bytes off a queued-bytes counter (never below zero).
pub fn release(queued: &AtomicUsize, n: usize) {
    let _ = queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(n)));
}

/// A server frame's header (servers never mask): at most 10 bytes.
fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(short) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

impl Socket {
    /// Bytes handed to this socket and not yet taken by the kernel; the Router adds what it hands
    /// the session, the session and the writer take off what they are done with.
    pub fn queued(&self) -> Arc<AtomicUsize> {
        self.0.queued.clone()
    }

    /// Starts the task that flushes the queue (and lingers after a close) unless one runs.
    fn drive(&self, out: &mut Out) {
        if !out.flushing && !out.broken {
            out.flushing = true;
            actix_rt::spawn(drive(self.0.clone()));
        }
    }

    pub fn text(&self, payload: Bytes) {
        self.frame(OP_TEXT, payload);
    }

    pub fn ping(&self) {
        self.frame(OP_PING, Bytes::new());
    }

    pub fn pong(&self, payload: Bytes) {
        self.frame(OP_PONG, payload);
    }

    /// Sends a close frame; nothing is written after it. The connection ends once the peer
    /// answers it or `LINGER` passes.
    pub fn close(&self, reason: Option<CloseReason>) {
        let mut payload = Vec::new();
        if let Some(r) = reason {
            payload.extend_from_slice(&u16::from(r.code).to_be_bytes());
            if let Some(d) = r.description {
                // Control frames carry at most 125 bytes; cut the reason on a char boundary.
                let mut end = d.len().min(123);
                while !d.is_char_boundary(end) {
                    end -= 1;
                }
                payload.extend_from_slice(&d.as_bytes()[..end]);
            }
        }
        self.frame(OP_CLOSE, Bytes::from(payload));
        let mut out = self.0.out.borrow_mut();
        out.closing.get_or_insert_with(Instant::now);
        out.linger = true;
        self.drive(&mut out);
    }

    /// A text frame that may wait to share a write with the next frame (at most until
    /// `flush_held`): each frame written alone is a system call and a TCP segment of its own.
    /// True when nothing was held before it: the caller owes a `flush_held`.
    pub fn text_held(&self, payload: Bytes) -> bool {
        let (head, n) = header(OP_TEXT, payload.len());
        let mut out = self.0.out.borrow_mut();
        if out.closing.is_some() || out.broken {
            return false;
        }
        self.0.queued.fetch_add(n + payload.len(), Ordering::Relaxed);
        let first = out.held.is_empty();
        out.held.push(Bytes::copy_from_slice(&head[..n]));
        out.held.push(payload);
        first
    }

    /// Writes the held frames now, if the next frame did not take them.
    pub fn flush_held(&self) {
        let mut out = self.0.out.borrow_mut();
        if out.held.is_empty() {
            return;
        }
        self.send_queued(&mut out, Vec::new());
    }

    /// Queues the held frames and then `more`, and writes what the kernel takes in one call
    /// (unless a flush is already waiting for the socket, which then takes them in order).
    fn send_queued(&self, out: &mut Out, more: Vec<Bytes>) {
        let held = std::mem::take(&mut out.held);
        out.queue.extend(held);
        out.queue.extend(more);
        if out.closing.is_some() || out.broken {
            return;
        }
        if !out.flushing {
            match write_queued(&self.0, out) {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => {
                    out.broken = true;
                    return;
                }
            }
        }
        self.drive(out);
    }

    fn frame(&self, opcode: u8, payload: Bytes) {
        let (head, n) = header(opcode, payload.len());
        let shared = &self.0;
        let mut out = shared.out.borrow_mut();
        if out.closing.is_some() || out.broken {
            return;
        }
        let total = n + payload.len();
        if !out.held.is_empty() {
            shared.queued.fetch_add(total, Ordering::Relaxed);
            self.send_queued(&mut out, vec![Bytes::copy_from_slice(&head[..n]), payload]);
            return;
        }
        let mut written = 0;
        if out.queue.is_empty() {
            match shared.io.try_write_vectored(&[IoSlice::new(&head[..n]), IoSlice::new(&payload)]) {
                Ok(w) if w == total => return,
                Ok(w) => written = w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    out.broken = true;
                    return;
                }
            }
        }
        if written < n {
            out.queue.push_back(Bytes::copy_from_slice(&head[written..n]));
            out.queue.push_back(payload);
        } else {
            out.queue.push_back(payload.slice(written - n..));
        }
        shared.queued.fetch_add(total - written, Ordering::Relaxed);
        self.drive(&mut out);
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // The session ended: whatever is still queued gets `LINGER` to reach the peer.
        self.0.out.borrow_mut().closing.get_or_insert_with(Instant::now);
    }
}

/// Writes what the kernel takes from the queue; `Ok(true)` once it is empty.
fn write_queued(shared: &Shared, out: &mut Out) -> io::Result<bool> {
    while !out.queue.is_empty() {
        let slices: Vec<IoSlice<'_>> = out.queue.iter().take(MAX_IOV).map(|b| IoSlice::new(b)).collect();
        let mut written = match shared.io.try_write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        release(&shared.queued, written);
        while written > 0 {
            let Some(front) = out.queue.front_mut() else { break };
            if front.len() <= written {
                written -= front.len();
                out.queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Ok(true)
}

/// Flushes the queue whenever the socket can take more; after a close frame, half-closes and
/// waits (bounded) for the peer to close, so unread client bytes never turn our close frame into
/// a reset the client sees instead of it.
async fn drive(shared: Rc<Shared>) {
    loop {
        let done = {
            let mut out = shared.out.borrow_mut();
            match write_queued(&shared, &mut out) {
                Ok(done) => done,
                Err(_) => {
                    out.broken = true;
                    true
                }
            }
        };
        if done {
            break;
        }
        let deadline = shared.out.borrow().closing.map(|at| at + LINGER);
        let ready = match deadline {
            Some(at) => tokio::time::timeout_at(at.into(), shared.io.writable())
                .await
                .unwrap_or(Err(io::ErrorKind::TimedOut.into())),
            None => shared.io.writable().await,
        };
        if ready.is_err() {
            shared.out.borrow_mut().broken = true;
            break;
        }
    }
    let (linger, broken, since) = {
        let mut out = shared.out.borrow_mut();
        out.flushing = false;
        let remaining = out.queue.iter().map(Bytes::len).sum::<usize>();
        if remaining > 0 {
            out.queue.clear();
            release(&shared.queued, remaining);
        }
        (out.linger, out.broken, out.closing)
    };
    if linger && !broken {
        let deadline = since.unwrap_or_else(Instant::now) + LINGER;
        let _ = socket2::SockRef::from(&shared.io).shutdown(std::net::Shutdown::Write);
        let _ = tokio::time::timeout_at(deadline.into(), drain(&shared.io)).await;
    }
}

/// Reads and discards until the peer closes.
async fn drain(io: &TcpStream) {
    let mut chunk = [0u8; 512];
    loop {
        if io.readable().await.is_err() {
            return;
        }
        match io.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The payload length a frame's header announces, once enough of it has arrived.
fn announced_len(buf: &[u8]) -> Option<u64> {
    let b1 = *buf.get(1)? & 0x7F;
    match b1 {
        126 => buf.get(2..4).map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buf.get(2..10).map(|b| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
        n => Some(u64::from(n)),
    }
}

impl Incoming {
    fn fail(&mut self, e: Failure) -> Poll<Option<Result<Inbound, Failure>>> {
        self.done = true;
        self.buf = BytesMut::new();
        self.partial = None;
        Poll::Ready(Some(Err(e)))
    }

    /// What a decoded frame means: a whole message (or control frame) to hand on, `None` while a
    /// fragmented message is still being assembled.
    fn take(&mut self, frame: Frame) -> Result<Option<Inbound>, Failure> {
        let (chunk, last) = match frame {
            Frame::Text(bytes) => return text(bytes, 1).map(Some),
            Frame::Binary(_) => return Ok(Some(Inbound::Binary { frames: 1 })),
            Frame::Ping(payload) => return Ok(Some(Inbound::Ping(payload))),
            Frame::Pong(_) => return Ok(Some(Inbound::Pong)),
            Frame::Close(reason) => return Ok(Some(Inbound::Close(reason))),
            Frame::Continuation(Item::FirstText(b)) => {
                self.partial = Some(Box::new(Partial { text: true, buf: BytesMut::new(), frames: 0 }));
                (b, false)
            }
            Frame::Continuation(Item::FirstBinary(b)) => {
                self.partial = Some(Box::new(Partial { text: false, buf: BytesMut::new(), frames: 0 }));
                (b, false)
            }
            Frame::Continuation(Item::Continue(b)) => (b, false),
            Frame::Continuation(Item::Last(b)) => (b, true),
        };
        // The codec refuses a continuation without a first frame, so a message is in progress.
        let Some(partial) = self.partial.as_mut() else {
            return Err(Failure::Protocol(ProtocolError::ContinuationNotStarted));
        };
        partial.frames += 1;
        if partial.buf.len() + chunk.len() > self.max_size || partial.frames > MAX_FRAGMENTS {
            return Err(Failure::TooLarge);
        }
        // Binary messages are refused whole; only their size is kept track of.
        if partial.text {
            partial.buf.extend_from_slice(&chunk);
        } else {
            partial.buf.resize(partial.buf.len() + chunk.len(), 0);
        }
        if !last {
            return Ok(None);
        }
        let Some(done) = self.partial.take() else { return Ok(None) };
        if done.text {
            text(done.buf.freeze(), done.frames).map(Some)
        } else {
            Ok(Some(Inbound::Binary { frames: done.frames }))
        }
    }
}

fn text(bytes: Bytes, frames: u32) -> Result<Inbound, Failure> {
    ByteString::try_from(bytes).map(|text| Inbound::Text { text, frames }).map_err(|_| Failure::NotUtf8)
}

impl Stream for Incoming {
    type Item = Result<Inbound, Failure>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if !this.buf.is_empty() {
                // Refuse an oversized frame from its header, before buffering its payload.
                if announced_len(&this.buf).is_some_and(|n| n > this.max_size as u64) {
                    return this.fail(Failure::TooLarge);
                }
                match this.codec.decode(&mut this.buf) {
                    Ok(Some(frame)) => {
                        if this.buf.is_empty() {
                            // Idle sockets hold no read buffer.
                            this.buf = BytesMut::new();
                        }
                        match this.take(frame) {
                            Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                            Ok(None) => continue,
                            Err(e) => return this.fail(e),
                        }
                    }
                    Ok(None) => {}
                    Err(ProtocolError::Overflow) => return this.fail(Failure::TooLarge),
                    Err(e) => return this.fail(Failure::Protocol(e)),
                }
            }
            if let Err(e) = ready!(this.shared.io.poll_read_ready(cx)) {
                return this.fail(Failure::Protocol(ProtocolError::Io(e)));
            }
            let mut chunk = [0u8; CHUNK];
            match this.shared.io.try_read(&mut chunk) {
                Ok(0) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(n) => this.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return this.fail(Failure::Protocol(ProtocolError::Io(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(&header(OP_TEXT, 5).0[..2], &[0x81, 5]);
        let (h, n) = header(OP_TEXT, 300);
        assert_eq!(&h[..n], &[0x81, 126, 1, 44]);
        let (h, n) = header(OP_TEXT, 70_000);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    /// A connected pair on loopback: our socket's sending side, and the peer's stream.
    async fn pair() -> (Socket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (socket, _) = split(ours, BytesMut::new(), 1 << 16);
        (socket, peer)
    }

    async fn read_exactly(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0; n];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("the frames arrive within 5 s")
            .unwrap();
        got
    }

    #[actix_rt::test]
    async fn a_held_frame_goes_out_with_the_next_frame_and_before_it() {
        let (socket, mut peer) = pair().await;
        assert!(socket.text_held(Bytes::from_static(b"held")), "the first held frame asks for a flush");
        assert_eq!(socket.queued().load(Ordering::Relaxed), 6, "counted as queued while held");
        socket.text(Bytes::from_static(b"next"));
        assert_eq!(read_exactly(&mut peer, 12).await, b"\x81\x04held\x81\x04next");
        assert_eq!(socket.queued().load(Ordering::Relaxed), 0);
    }

    #[actix_rt::test]
    async fn held_frames_with_nothing_after_them_go_out_when_flushed_and_only_once() {
        let (socket, mut peer) = pair().await;
        socket.text_held(Bytes::from_static(b"a"));
        assert!(!socket.text_held(Bytes::from_static(b"b")), "one flush is owed already");
        socket.flush_held();
        assert_eq!(read_exactly(&mut peer, 6).await, b"\x81\x01a\x81\x01b");
        socket.flush_held();
        socket.text(Bytes::from_static(b"c"));
        assert_eq!(read_exactly(&mut peer, 3).await, b"\x81\x01c", "flushed frames are not written twice");
        assert_eq!(socket.queued().load(Ordering::Relaxed), 0);
    }

    #[actix_rt::test]
    async fn a_close_takes_the_held_frames_out_before_the_close_frame() {
        let (socket, mut peer) = pair().await;
        socket.text_held(Bytes::from_static(b"a"));
        socket.close(None);
        assert_eq!(read_exactly(&mut peer, 5).await, b"\x81\x01a\x88\x00");
    }

    #[test]
    fn announced_length_is_read_from_every_header_form() {
        assert_eq!(announced_len(&[0x81]), None);
        assert_eq!(announced_len(&[0x81, 0x85]), Some(5));
        assert_eq!(announced_len(&[0x81, 0xFE, 1]), None);
        assert_eq!(announced_len(&[0x81, 0xFE, 1, 44]), Some(300));
        assert_eq!(announced_len(&[0x81, 0xFF, 0, 0, 0, 0, 0, 1, 0x11, 0x70]), Some(70_000));
    }
}
