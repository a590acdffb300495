//! What a session does with each client frame: the dispatch of messages and actions to the
//! services, the connection's ordered send queue, and login over the socket.

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};
use serde::Serialize;

use super::{Id, WsSession, detached};
use crate::{
    accounts,
    auth::Identity,
    chat,
    domain::UserKey,
    error::{ApiError, ApiResult, ErrorCode},
    groups::{self, GroupActor, admin},
    hub::router::Watch,
    inbox,
    lifecycle::{self, Actor},
    moderation,
    node::Node,
    store::conversations::Active,
    ws::protocol::{self, Action, ClientFrame, LoginData, Parsed},
};

impl WsSession {
    pub(super) fn dispatch(&mut self, parsed: Parsed, ctx: &mut Context<Self>) {
        let Parsed { id, frame } = parsed;
        let Some(who) = self.identity.clone() else {
            return match frame {
                ClientFrame::Action(action) if action.allowed_before_login() => {
                    self.dispatch_anonymous(id, action, ctx)
                }
                _ => self.send_error(&id, &ApiError::new(ErrorCode::Unauthorized, "log in first")),
            };
        };
        match frame {
            ClientFrame::Message(req) => {
                if self.send_queue.len() >= self.node.config.ws.outbound_queue {
                    let error = ApiError::new(ErrorCode::RateLimited, "too many sends awaiting their reply; slow down");
                    return self.send_error(&id, &error);
                }
                self.send_queue.push_back((id, req));
                self.next_send(who, ctx);
            }
            ClientFrame::Action(action) => self.dispatch_action(id, who, action, ctx),
        }
    }

    fn dispatch_action(&mut self, id: Id, who: Identity, action: Action, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        match action {
            Action::Ping => self.send_reply(&id, 200, "pong", None::<&()>),
            Action::Login(_) | Action::Register(_) => {
                self.send_error(&id, &ApiError::new(ErrorCode::AlreadyAuthenticated, "already logged in"))
            }
            Action::Query(q) => self.run(ctx, id, async move { accounts::query(&node, &who.app, q).await }),
            Action::Conversations(req) => {
                let fut = detached(async move { inbox::list(&node, &who.app, who.user, req).await });
                ctx.spawn(fut.into_actor(self).map(move |res, act, _| match res {
                    Ok(page) => act.send_page(&id, &page.conversations, page.cursor.as_deref()),
                    Err(e) => act.send_error(&id, &e),
                }));
            }
            Action::ConversationSet(req) => {
                let (conversation, prefs) = req.split();
                self.run(ctx, id, async move { inbox::set_prefs(&node, &who, &conversation, prefs).await })
            }
            Action::Edit(req) => self.run(ctx, id, async move { lifecycle::edit(&node, Actor::User(&who), req).await }),
            Action::Recall(req) => {
                self.run(ctx, id, async move { lifecycle::recall(&node, Actor::User(&who), req).await })
            }
            Action::Delete(req) => {
                self.run(ctx, id, async move { lifecycle::delete(&node, Actor::User(&who), req).await })
            }
            Action::React(req) => {
                self.run(ctx, id, async move { lifecycle::react(&node, Actor::User(&who), req).await })
            }
            Action::Block(req) => self.run(ctx, id, async move { moderation::block(&node, &who, &req.user).await }),
            Action::Unblock(req) => self.run(ctx, id, async move { moderation::unblock(&node, &who, &req.user).await }),
            Action::Blocks => self.run(ctx, id, async move { moderation::blocks(&node, &who).await }),
            Action::History(h) => {
                let (conv, req) = h.split();
                let fut = detached(async move { chat::history(&node, &who, &conv, req).await });
                ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
                    if let Ok(messages) = &res {
                        for m in messages {
                            act.cursor.advance(&m.conversation_id, m.seq);
                        }
                    }
                    act.answer(&id, res.map(|messages| crate::wire::MessagePage { messages }));
                }));
            }
            Action::Sync(req) => {
                let fut = detached(async move { chat::sync(&node, &who, req).await });
                ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
                    if let Ok(sync) = &res {
                        for m in &sync.messages {
                            act.cursor.advance(&m.conversation_id, m.seq);
                        }
                    }
                    act.answer(&id, res);
                }));
            }
            Action::Read(req) => self.run(ctx, id, async move { chat::read(&node, &who, req).await }),
            Action::Typing(req) => {
                if !self.typing.try_take() {
                    let error = ApiError::new(ErrorCode::RateLimited, "typing notices are limited; slow down");
                    return self.send_error(&id, &error);
                }
                let origin = Some(self.origin());
                self.run(ctx, id, async move { chat::typing(&node, &who, req, origin).await })
            }
            Action::Presence(req) => {
                let session = self.id;
                let fut = async move { presence(&node, &who, session, req).await };
                self.run(ctx, id, fut)
            }
            Action::GroupCreate(req) => self.run(ctx, id, async move { groups::create(&node, &who, req).await }),
            Action::GroupList => self.run(ctx, id, async move { groups::list(&node, &who).await }),
            Action::GroupShow(g) => {
                self.run(ctx, id, async move { groups::show(&node, GroupActor::User(&who), &g.group).await })
            }
            Action::GroupAdd(data) => {
                let (group, req) = data.split();
                self.run(ctx, id, async move { admin::add_members(&node, GroupActor::User(&who), &group, req).await })
            }
            Action::GroupRemove(data) => self.run(ctx, id, async move {
                admin::remove_member(&node, GroupActor::User(&who), &data.group, &data.member).await
            }),
            Action::GroupLeave(g) => self.run(ctx, id, async move { admin::leave(&node, &who, &g.group).await }),
            Action::GroupUpdate(data) => {
                let (group, req) = data.split();
                self.run(ctx, id, async move { admin::update(&node, GroupActor::User(&who), &group, req).await })
            }
            Action::GroupDissolve(g) => {
                self.run(ctx, id, async move { admin::dissolve(&node, GroupActor::User(&who), &g.group).await })
            }
            Action::GroupMember(data) => {
                let (group, member, req) = data.split();
                self.run(ctx, id, async move {
                    admin::update_member(&node, GroupActor::User(&who), &group, &member, req).await
                })
            }
        }
    }

    /// Starts the next queued send unless one is in flight.
    fn next_send(&mut self, who: Identity, ctx: &mut Context<Self>) {
        if self.cursor.is_sending() {
            return;
        }
        let Some((id, req)) = self.send_queue.pop_front() else {
            return;
        };
        self.cursor.sending(Some(req.client_msg_id.as_str().to_string()));
        let node = self.node.clone();
        let origin = self.origin();
        let next_who = who.clone();
        let fut = detached(async move { chat::send(&node, &who, req, chat::Via::Client(origin)).await });
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.cursor.sending(None);
            match res {
                Ok(r) if r.dropped => act.send_reply(&id, 202, "accepted", Some(&r)),
                Ok(r) => {
                    act.cursor.sent(&r.conversation, r.seq);
                    let (code, msg) = if r.created { (201, "sent") } else { (200, "already sent") };
                    act.send_reply(&id, code, msg, Some(&r));
                }
                Err(e) => act.send_error(&id, &e),
            }
            act.next_send(next_who, ctx);
        }));
    }

    /// Runs a request and replies with its result.
    fn run<T, F>(&mut self, ctx: &mut Context<Self>, id: Id, fut: F)
    where
        T: Serialize + 'static,
        F: std::future::Future<Output = ApiResult<T>> + 'static,
    {
        ctx.spawn(detached(fut).into_actor(self).map(move |res, act, _| act.answer(&id, res)));
    }

    fn dispatch_anonymous(&mut self, id: Id, action: Action, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        let hint = self.app_hint.clone();
        let ip = self.client_ip.clone();
        let fut = detached(async move {
            match action {
                Action::Ping => Ok(None),
                Action::Login(data) => login(&node, hint, data, &ip).await.map(Some),
                Action::Register(req) => {
                    let app = accounts::app_for(&node, hint.as_ref().map(|a| a.as_str())).await?;
                    let auth = accounts::register(&node, &app, req, &ip).await?;
                    let (who, conversations) = node.authenticate_connection(&auth.access_token).await?;
                    let data = serde_json::to_value(&auth).map_err(ApiError::caused_by)?;
                    Ok(Some((who, conversations, data)))
                }
                _ => Err(ApiError::new(ErrorCode::Unauthorized, "log in first")),
            }
        });
        // `wait` holds back the socket's next frames until the login settles.
        ctx.wait(fut.into_actor(self).map(
            move |res: ApiResult<Option<(Identity, Vec<Active>, serde_json::Value)>>, act, ctx| match res {
                Ok(None) => act.send_reply(&id, 200, "pong", None::<&()>),
                Ok(Some((who, conversations, data))) => {
                    act.identity = Some(who);
                    act.conversations = conversations;
                    metrics::counter!("natter_ws_connects_total", "result" => "ok").increment(1);
                    // The login's reply, like any first reply, once the subscriptions are in force.
                    act.register(ctx, move |act| act.send_reply(&id, 200, "ok", Some(&data)));
                }
                Err(e) => act.send_error(&id, &e),
            },
        ));
    }
}

async fn login(
    node: &Node,
    hint: Option<crate::domain::AppId>,
    data: LoginData,
    ip: &str,
) -> ApiResult<(Identity, Vec<Active>, serde_json::Value)> {
    match (data.token, data.email, data.password) {
        (Some(token), None, None) => {
            let (who, conversations) = node.authenticate_connection(&token).await?;
            let user = accounts::me(node, &who).await?;
            Ok((who, conversations, serde_json::json!({ "user": user })))
        }
        (None, Some(email), Some(password)) => {
            let app = accounts::app_for(node, data.app.as_ref().or(hint.as_ref()).map(|a| a.as_str())).await?;
            let auth =
                accounts::login(node, &app, accounts::LoginRequest { email, password, device_id: data.device_id }, ip)
                    .await?;
            let (who, conversations) = node.authenticate_connection(&auth.access_token).await?;
            Ok((who, conversations, serde_json::to_value(&auth).map_err(ApiError::caused_by)?))
        }
        _ => Err(ApiError::validation("data: give either token, or email and password")),
    }
}

async fn presence(
    node: &Node,
    who: &Identity,
    session: u64,
    req: protocol::PresenceData,
) -> ApiResult<Vec<crate::presence::PresenceView>> {
    if req.subscribe.len() + req.unsubscribe.len() > 1000 {
        return Err(ApiError::validation("presence: at most 1000 users per request"));
    }
    let subscribed = node.store.users_by_ids(&who.app, &req.subscribe).await?;
    let unsubscribed = node.store.users_by_ids(&who.app, &req.unsubscribe).await?;
    if !unsubscribed.is_empty() {
        let users: Vec<UserKey> = unsubscribed.iter().map(|u| u.key).collect();
        node.router.send(Watch { id: session, users, subscribe: false }).await.map_err(ApiError::caused_by)?;
    }
    if subscribed.len() != req.subscribe.len() {
        let missing: Vec<&str> = req
            .subscribe
            .iter()
            .filter(|id| !subscribed.iter().any(|u| u.id == id.as_str()))
            .map(|id| id.as_str())
            .collect();
        return Err(ApiError::new(ErrorCode::UserNotFound, format!("unknown users: {}", missing.join(", "))));
    }
    // Users the caller blocks are not watched, and show as offline.
    let keys: Vec<UserKey> = subscribed.iter().map(|u| u.key).collect();
    let blocked = node.store.blocked_among(&who.app, who.user, &keys).await?;
    let users: Vec<UserKey> = keys.into_iter().filter(|k| !blocked.contains(k)).collect();
    // Watch first, then read the state: a transition in between is both read and pushed, never
    // missed.
    node.router.send(Watch { id: session, users, subscribe: true }).await.map_err(ApiError::caused_by)?;
    let mut views = crate::presence::presence_of(&node.store, &who.app, &subscribed).await?;
    for (view, user) in views.iter_mut().zip(&subscribed) {
        if blocked.contains(&user.key) {
            *view = crate::presence::PresenceView { user: user.id.clone(), status: "offline", last_seen: None };
        }
    }
    Ok(views)
}
