//! One actor per WebSocket connection.
//!
//! It holds the identity, heartbeats, counts the client's frames against its limit, hands them
//! to `dispatch`, and writes pushes as its delivery cursor decides: in per-conversation seq order,
//! fetching a gap from the store first (its mailbox paused meanwhile), never a seq twice.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler, WrapFuture};
use actix_http::ws::{CloseReason, ProtocolError};
use bytes::Bytes;
use bytestring::ByteString;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    cursor::{Cursor, Next, Sender},
    protocol,
    socket::{Failure, Inbound, Socket},
};
use crate::{
    auth::Identity,
    bus::Origin,
    chat,
    error::{ApiError, ApiResult, CloseCode, ErrorCode},
    hub::{
        Push, SessionHandle, ToSession,
        admission::Ticket,
        registry::Joining,
        router::{Connect, Disconnect},
    },
    node::Node,
    ratelimit::TokenBucket,
    store::conversations::{Active, StoredMessage},
};

mod dispatch;

type Id = Option<Box<RawValue>>;

/// Heartbeats are rounded up to multiples of this, counted from one process-wide origin.
const HEARTBEAT_SLOT: Duration = Duration::from_millis(250);

/// The time from now to the first slot boundary at least `interval` away.
fn until_slot_after(interval: Duration) -> Duration {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let due = origin.elapsed() + interval;
    let slot = HEARTBEAT_SLOT.as_nanos();
    let rounded = due.as_nanos().div_ceil(slot) * slot;
    interval + Duration::from_nanos((rounded - due.as_nanos()) as u64)
}

/// Runs request work as its own task. A session pauses its mailbox during gap repair
/// (`ctx.wait`); work that holds database connections or row locks must keep going meanwhile,
/// or paused sessions could starve the pool that their own repair needs.
fn detached<T: 'static>(
    fut: impl std::future::Future<Output = ApiResult<T>> + 'static,
) -> impl std::future::Future<Output = ApiResult<T>> {
    let handle = actix_rt::spawn(fut);
    async move { handle.await.map_err(ApiError::caused_by)? }
}

pub struct WsSession {
    id: u64,
    node: Node,
    socket: Socket,
    /// Its place on the node: open while the session lives, starting until it is registered.
    ticket: Ticket,
    identity: Option<Identity>,
    /// Conversations loaded at authentication: the groups are handed to the Router at
    /// registration, and every head becomes the delivered baseline.
    conversations: Vec<Active>,
    /// Why a token given at connect was refused: the socket closes with 4501 (4503 when the
    /// user is banned) at once.
    rejected: Option<ApiError>,
    app_hint: Option<crate::domain::AppId>,
    /// The client's address, for login rate limits.
    client_ip: String,
    /// Bytes the Router handed over that this session has not written yet.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    registered: bool,
    last_heard: Instant,
    /// What was written to the client, per conversation, and which messages are its own.
    cursor: Cursor,
    frames: TokenBucket,
    typing: TokenBucket,
    refusals: u32,
    /// Sends waiting for the one in flight: a connection's messages are stored in the order it
    /// sent them, even when the client does not wait for each reply.
    send_queue: std::collections::VecDeque<(Id, chat::SendRequest)>,
}

/// Longest an `unread` event waits for a frame to share a write with. Counts are pushed at most
/// every `chat.unread_push_ms` (500 by default); this adds at most a twentieth of that.
const UNREAD_HOLD: Duration = Duration::from_millis(25);

/// What the handshake settled for a new session.
pub struct Opened {
    pub ticket: Ticket,
    pub identity: Option<(Identity, Vec<Active>)>,
    pub rejected: Option<ApiError>,
    pub app_hint: Option<crate::domain::AppId>,
    pub client_ip: String,
}

impl WsSession {
    pub fn new(id: u64, node: Node, socket: Socket, opened: Opened) -> Self {
        let Opened { ticket, identity, rejected, app_hint, client_ip } = opened;
        let ws = &node.config.ws;
        let frames = TokenBucket::new(ws.messages_per_second, ws.message_burst);
        let typing = TokenBucket::new(node.config.chat.typing_per_second, node.config.chat.typing_per_second);
        let (identity, conversations) = match identity {
            Some((i, c)) => (Some(i), c),
            None => (None, Vec::new()),
        };
        Self {
            id,
            node,
            ticket,
            queued: socket.queued(),
            socket,
            identity,
            conversations,
            rejected,
            app_hint,
            client_ip,
            registered: false,
            last_heard: Instant::now(),
            cursor: Cursor::default(),
            frames,
            typing,
            refusals: 0,
            send_queue: std::collections::VecDeque::new(),
        }
    }

    fn origin(&self) -> Origin {
        Origin { node: self.node.id.clone(), session: self.id }
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, reason: &str) {
        metrics::counter!("natter_ws_disconnects_total", "code" => code.code().to_string()).increment(1);
        self.socket.close(Some(CloseReason {
            code: actix_http::ws::CloseCode::from(code.code()),
            description: Some(reason.to_string()),
        }));
        ctx.stop();
    }

    fn send_reply<T: Serialize>(&self, id: &Id, code: u16, msg: &str, data: Option<&T>) {
        crate::telemetry::count_frame_sent();
        self.socket.text(Bytes::from(protocol::reply(id.as_deref(), code, msg, data)));
    }

    fn send_page<T: Serialize>(&self, id: &Id, items: &[T], cursor: Option<&str>) {
        crate::telemetry::count_frame_sent();
        self.socket.text(Bytes::from(protocol::reply_page(id.as_deref(), items, cursor)));
    }

    fn send_error(&self, id: &Id, error: &ApiError) {
        crate::telemetry::count_frame_sent();
        self.socket.text(Bytes::from(protocol::error_reply(id.as_deref(), error)));
    }

    fn answer<T: Serialize>(&self, id: &Id, result: ApiResult<T>) {
        match result {
            Ok(data) => self.send_reply(id, 200, "ok", Some(&data)),
            Err(e) => self.send_error(id, &e),
        }
    }

    /// Joins the Router, then runs `then` once its subscriptions are in force.
    fn register(&mut self, ctx: &mut Context<Self>, then: impl FnOnce(&mut Self) + 'static) {
        if self.identity.is_none() {
            return;
        }
        // Heads read before subscribing: a push for a later seq that arrives first is a gap to
        // repair, not the start of the conversation.
        let mut groups = Vec::new();
        for c in std::mem::take(&mut self.conversations) {
            self.cursor.advance(&c.id, c.head);
            if c.group {
                groups.push(c.id);
            }
        }
        let Some(who) = &self.identity else { return };
        let connected = self.node.router.send(Connect(Joining {
            id: self.id,
            app: who.app.as_str().to_string(),
            user: who.user.0,
            user_id: who.id.as_str().to_string(),
            auth_session: who.session_id.clone(),
            groups,
            handle: SessionHandle { mailbox: ctx.address().recipient(), queued: self.queued.clone() },
        }));
        // Nothing more is read or answered until the Router's subscriptions are in force: a
        // client that has seen a reply (or sent a ping and got its pong) misses no push after it.
        ctx.wait(connected.into_actor(self).map(move |_, act, _| {
            act.ticket.started();
            then(act)
        }));
        self.registered = true;
    }

    /// Schedules the next heartbeat. Beats fall on shared slot boundaries, so one timer wake
    /// serves every session due in that slot instead of one wake per session.
    fn heartbeat(&self, ctx: &mut Context<Self>) {
        let interval = Duration::from_secs(self.node.config.ws.heartbeat_interval_secs);
        ctx.run_later(until_slot_after(interval), move |act, ctx| {
            let timeout = Duration::from_secs(act.node.config.ws.client_timeout_secs);
            let silent = act.last_heard.elapsed();
            if silent > timeout {
                return act.close(ctx, CloseCode::Normal, "idle timeout");
            }
            // A client heard from within the interval needs no ping to prove it is there, unless
            // the next beat would otherwise find it past the timeout.
            if silent >= interval || silent + interval >= timeout {
                act.socket.ping();
            }
            act.heartbeat(ctx);
        });
    }

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        metrics::counter!("natter_ws_frames_received_total").increment(1);
        let parsed = protocol::parse(text);
        let id = match &parsed {
            Ok(p) => p.id.clone(),
            Err(e) => e.id.clone(),
        };
        if !self.admit(ctx, &id, true) {
            return;
        }
        match parsed {
            Ok(parsed) => self.dispatch(parsed, ctx),
            Err(e) => self.send_error(&e.id, &e.error),
        }
    }

    /// Counts a frame against the connection's limit, whatever it holds (JSON that does not
    /// parse, binary, pings and fragments cost the server as much as good frames). Past the
    /// limit: a 429 reply (`reply`), and after a burst's worth of refusals in a row, close 4003.
    fn admit(&mut self, ctx: &mut Context<Self>, id: &Id, reply: bool) -> bool {
        if self.frames.try_take() {
            self.refusals = 0;
            return true;
        }
        self.refusals += 1;
        if self.refusals > self.node.config.ws.message_burst {
            self.close(ctx, CloseCode::RateLimited, "rate limit exceeded");
        } else if reply {
            let retry = self.frames.retry_after_secs();
            self.send_error(id, &ApiError::new(ErrorCode::RateLimited, format!("slow down; retry in {retry} s")));
        }
        false
    }

    /// An `unread` event waits up to `UNREAD_HOLD` to share a write with the session's next
    /// frame: the unread pusher hands a busy group's members their counts all at once, and
    /// written alone those frames were a burst of a system call and a TCP segment per member
    /// in front of the next message's fan-out.
    fn hold_unread(&mut self, frame: ByteString, ctx: &mut Context<Self>) {
        crate::telemetry::count_delivery();
        if self.socket.text_held(frame.into_bytes()) {
            ctx.run_later(UNREAD_HOLD, |act, _| act.socket.flush_held());
        }
    }

    fn write_push(&mut self, frame: ByteString) {
        crate::telemetry::count_delivery();
        self.socket.text(frame.into_bytes());
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.node.config.ws.outbound_queue);
        if let Some(error) = self.rejected.take() {
            metrics::counter!("natter_ws_connects_total", "result" => "rejected").increment(1);
            let reason = format!("{}: {}", error.code.as_str(), error.message);
            // A banned user is told so in the close code too (4503), the rest with 4501.
            let code = if error.code == ErrorCode::Banned { CloseCode::Banned } else { CloseCode::Unauthorized };
            return self.close(ctx, code, &reason);
        }
        self.heartbeat(ctx);
        if self.identity.is_some() {
            metrics::counter!("natter_ws_connects_total", "result" => "ok").increment(1);
            self.register(ctx, |_| {});
        } else {
            let timeout = Duration::from_secs(self.node.config.ws.auth_timeout_secs);
            ctx.run_later(timeout, |act, ctx| {
                if act.identity.is_none() {
                    metrics::counter!("natter_ws_connects_total", "result" => "auth_timeout").increment(1);
                    act.close(ctx, CloseCode::Unauthorized, "unauthorized: no login within the time allowed");
                }
            });
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if self.registered {
            self.node.router.do_send(Disconnect { id: self.id });
        }
    }
}

impl Handler<ToSession> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Self::Context) {
        match msg {
            ToSession::Push(push) => self.deliver(push, ctx),
            ToSession::Close { code, reason } => self.close(ctx, code, &reason),
            ToSession::Renamed { id } => {
                if let (Some(who), Ok(id)) = (self.identity.as_mut(), crate::domain::UserId::parse(id)) {
                    who.id = id;
                }
            }
            ToSession::CatchUp { conv } => {
                let after = self.cursor.last(&conv);
                self.repair(conv, after, i64::MAX, ctx, |_| {});
            }
        }
    }
}

impl WsSession {
    /// Writes a push in its conversation's seq order: a push that skips ahead waits for the gap
    /// to be read from the store (the mailbox paused meanwhile); one already delivered is dropped.
    fn deliver(&mut self, push: Push, ctx: &mut Context<Self>) {
        // Written (or dropped as already seen) now: no longer queued for this client.
        super::socket::release(&self.queued, push.len());
        let (conv, seq, origin, frame) = match push {
            Push::Event { frame } => return self.write_push(frame),
            Push::Unread { frame } => return self.hold_unread(frame, ctx),
            Push::Message { conv, seq, origin, frame } => (conv, seq, origin, frame),
        };
        let sender = if origin == Some(self.id) { Sender::ThisSession } else { Sender::Other };
        let own = self.cursor.is_own(sender, &conv, seq);
        match self.cursor.next(&conv, seq) {
            Next::Drop => {}
            Next::Write => {
                if !own {
                    self.write_push(frame);
                }
                self.cursor.advance(&conv, seq);
            }
            Next::Repair { after } => self.repair(conv.clone(), after, seq - 1, ctx, move |act| {
                if !own {
                    act.write_push(frame);
                }
                act.cursor.advance(&conv, seq);
            }),
        }
    }

    /// Reads the seqs after `after` up to `upto` (within what the member may read) and writes
    /// them, then runs `then`; the mailbox is paused meanwhile, so later pushes wait behind it.
    fn repair(
        &mut self,
        conv: Arc<str>,
        after: i64,
        upto: i64,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self) + 'static,
    ) {
        let (Some(who), node) = (self.identity.clone(), self.node.clone()) else {
            return;
        };
        let conv_key = conv.clone();
        let fut = detached(async move { chat::gap(&node, &who, &conv_key, after, upto).await });
        ctx.wait(fut.into_actor(self).map(move |res: ApiResult<Vec<StoredMessage>>, act, _| {
            match res {
                Ok(missing) => act.write_repaired(&conv, missing),
                Err(e) => {
                    tracing::warn!(error = %e, "gap repair failed; the client will catch up with sync")
                }
            }
            then(act);
        }));
    }

    /// Writes what gap repair read, skipping what was written meanwhile and the session's own.
    fn write_repaired(&mut self, conv: &str, missing: Vec<StoredMessage>) {
        let me = self.identity.as_ref().map(|who| who.id.as_str().to_string());
        for m in missing {
            if self.cursor.has(conv, m.seq) {
                continue;
            }
            let sender = match &me {
                Some(me) if m.sender.as_deref() == Some(me.as_str()) => {
                    Sender::ThisUser { client_msg_id: &m.client_msg_id }
                }
                _ => Sender::Other,
            };
            if !self.cursor.is_own(sender, conv, m.seq) {
                self.write_push(ByteString::from(crate::wire::push_frame(&m)));
            }
            self.cursor.advance(conv, m.seq);
        }
    }
}

impl StreamHandler<Result<Inbound, Failure>> for WsSession {
    fn handle(&mut self, item: Result<Inbound, Failure>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let inbound = match item {
            Ok(inbound) => inbound,
            Err(e) => return self.transport_failed(e, ctx),
        };
        match inbound {
            Inbound::Close(reason) => {
                metrics::counter!("natter_ws_disconnects_total", "code" => "client").increment(1);
                self.socket.close(reason);
                ctx.stop();
            }
            Inbound::Text { text, frames } => {
                // A fragmented message's extra frames count too.
                if (1..frames).all(|_| self.admit(ctx, &None, false)) {
                    self.handle_text(&text, ctx);
                }
            }
            Inbound::Binary { frames } => {
                if (0..frames).all(|_| self.admit(ctx, &None, true)) {
                    let error =
                        ApiError::new(ErrorCode::UnsupportedFrame, "binary frames are not supported; send JSON text");
                    self.send_error(&None, &error);
                }
            }
            Inbound::Ping(payload) => {
                if self.admit(ctx, &None, false) {
                    self.socket.pong(payload);
                }
            }
            Inbound::Pong => {
                self.admit(ctx, &None, false);
            }
        }
    }
}

impl WsSession {
    /// The transport gave up: RFC 6455 failures close with a close frame saying why (1009 for
    /// size, 1007 for text that is not UTF-8, 1002 for the rest); a connection that broke
    /// underneath just ends.
    fn transport_failed(&mut self, e: Failure, ctx: &mut Context<Self>) {
        tracing::debug!(error = ?e, "websocket transport failure");
        match e {
            Failure::TooLarge => self.close(ctx, CloseCode::FrameTooLarge, "message too large"),
            Failure::NotUtf8 => self.close(ctx, CloseCode::InvalidPayload, "text message is not UTF-8"),
            // actix's codec reports non-zero reserved bits as InvalidData; other I/O errors are
            // the connection itself failing, with nobody left to tell.
            Failure::Protocol(ProtocolError::Io(io)) if io.kind() != std::io::ErrorKind::InvalidData => ctx.stop(),
            Failure::Protocol(other) => {
                let reason = match other {
                    ProtocolError::Io(_) => "reserved bits set without an extension".to_string(),
                    ProtocolError::BadOpCode => "invalid close code or close reason".to_string(),
                    other => other.to_string(),
                };
                self.close(ctx, CloseCode::ProtocolError, &reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_land_on_shared_slots_no_sooner_than_the_interval() {
        let interval = Duration::from_secs(25);
        for _ in 0..50 {
            let wait = until_slot_after(interval);
            assert!(wait >= interval && wait <= interval + HEARTBEAT_SLOT, "{wait:?}");
            std::thread::sleep(Duration::from_millis(7));
        }
        // Two sessions starting a few milliseconds apart beat in the same slot.
        let a = Instant::now() + until_slot_after(interval);
        std::thread::sleep(Duration::from_millis(3));
        let b = Instant::now() + until_slot_after(interval);
        let apart = if a > b { a - b } else { b - a };
        assert!(apart < Duration::from_millis(2) || apart >= HEARTBEAT_SLOT - Duration::from_millis(5), "{apart:?}");
    }
}
