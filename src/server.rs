//! Assembles a node (store, keys, bus, Router) and serves it over HTTP.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix::Actor;
use actix_codec::Framed;
use actix_http::{HttpService, Protocol, Request, h1};
use actix_rt::net::TcpStream;
use actix_service::{ServiceFactoryExt as _, fn_service, map_config};
use actix_web::{App, dev::AppConfig, dev::Service as _, web};
use anyhow::Context as _;

use crate::{
    auth::{password::PasswordHasher, tokens::TokenService},
    bus::{Bus, Subjects, local::LocalBus, nats::NatsBus},
    config::Config,
    domain::{AppId, random_id},
    fanout::Fanout,
    http::rejections::JsonRejections,
    hub::router::{DrainBatch, Router},
    node::{Node, NodeParts},
    presence::Presence,
    store::{Store, apps::DEFAULT_APP},
    webhooks::{dispatcher::Dispatcher, target::Clients},
};

/// A started node: its addresses, its shared state and the server future to await.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_addr: SocketAddr,
    pub node: Node,
    pub server: actix_web::dev::Server,
}

/// Opens the store, applies migrations and the `[default_app]` settings.
pub async fn prepare_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database).await?;
    store.migrate().await?;
    let default = AppId::parse(DEFAULT_APP).map_err(|e| anyhow::anyhow!(e.0))?;
    store.ensure_app(&default, &config.default_app).await.context("applying [default_app]")?;
    Ok(store)
}

/// Starts a node inside the current actix system.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    crate::telemetry::init_metrics();
    let push_window = config.push.enabled.then_some(config.push.coalesce_ms as i64);
    let store = prepare_store(&config).await?.with_push_window(push_window);
    let keys = match config.configured_signing_key()? {
        Some(key) => {
            use sha2::Digest;
            let kid = format!("cfg-{}", &hex::encode(sha2::Sha256::digest(&key))[..8]);
            vec![(kid, key)]
        }
        None => store.signing_keys().await.context("loading signing keys")?,
    };
    let tokens = TokenService::new(&config.auth.issuer, keys)?;
    let passwords = PasswordHasher::new(config.auth.password_hash_concurrency, config.auth.password_hash_queue)?;
    let id = if config.node.id.is_empty() { random_id("n_", 4) } else { config.node.id.clone() };
    let bus: Arc<dyn Bus> = if config.nats.url.is_empty() {
        Arc::new(LocalBus::new())
    } else {
        Arc::new(NatsBus::connect(&config.nats, &id).await?)
    };
    let subjects = Subjects::new(&config.nats.prefix);
    let lease = Duration::from_secs(config.node.lease_secs);
    store.renew_lease(&id, lease.as_millis() as i64).await.context("registering the node lease")?;
    let fanout = Fanout::start(bus.clone(), subjects.clone());
    let presence = Presence::start(store.clone(), fanout.clone(), id.clone());
    presence.keep_lease(store.clone(), fanout.clone(), id.clone(), lease);
    let router = Router::new(
        id.clone(),
        bus.clone(),
        subjects,
        presence.clone(),
        config.ws.max_connections_per_user,
        config.ws.outbound_queue_bytes,
    )
    .start();
    bus.attach(router.clone().recipient());
    let webhook_clients = Clients::new(Duration::from_millis(config.webhooks.timeout_ms))?;
    let node = Node::new(NodeParts {
        id,
        config: config.clone(),
        store,
        tokens,
        passwords,
        bus,
        router,
        presence,
        fanout,
        webhook_clients: webhook_clients.clone(),
    });
    Dispatcher::new(&node.id, node.store.clone(), webhook_clients.clone(), config.webhooks.clone()).start();
    if config.push.enabled {
        crate::push::dispatcher::Dispatcher::new(&node.id, node.store.clone(), webhook_clients, config.push.clone())
            .start();
    }
    actix_rt::spawn(crate::inbox::push_unread(node.clone()));

    let data = web::Data::new(node.clone());
    let max_body = config.http.max_body_bytes;
    let workers = if config.http.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.http.workers
    };
    let app = move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(crate::http::json_errors())
            .wrap(crate::http::security_headers())
            .wrap_fn(crate::http::cors)
            .wrap_fn(|req, srv| {
                // A request id per HTTP request: the caller's X-Request-Id, or a new one.
                let request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| v.len() <= 64)
                    .map(str::to_string)
                    .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
                let span =
                    tracing::info_span!("http", request_id = %request_id, method = %req.method(), path = %req.path());
                let started = std::time::Instant::now();
                let fut = tracing::Instrument::instrument(srv.call(req), span);
                async move {
                    let mut res = fut.await?;
                    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&request_id) {
                        res.headers_mut()
                            .insert(actix_web::http::header::HeaderName::from_static("x-request-id"), value);
                    }
                    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
                    let status = res.status().as_u16().to_string();
                    let took = started.elapsed().as_secs_f64();
                    metrics::histogram!("natter_http_request_duration_seconds", "route" => route.clone()).record(took);
                    metrics::counter!("natter_http_requests_total", "route" => route, "status" => status).increment(1);
                    Ok(res)
                }
            })
            .configure(crate::http::configure)
    };
    let listener =
        listen(&config.http.bind).with_context(|| format!("cannot listen on http.bind {}", config.http.bind))?;
    let addr = listener.local_addr().context("no listening address")?;
    let admin_listener = listen(&config.http.admin_bind)
        .with_context(|| format!("cannot listen on http.admin_bind {}", config.http.admin_bind))?;
    let admin_addr = admin_listener.local_addr().context("no admin listening address")?;
    let admin_data = web::Data::new(node.clone());
    let admin_app = move || {
        App::new()
            .app_data(admin_data.clone())
            .wrap(crate::http::json_errors())
            .configure(crate::http::health::configure_admin)
    };
    let upgrades = node.clone();
    let head_timeout = Duration::from_millis(node.config.http.head_timeout_ms);
    let server = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(node.config.http.max_pending_connections)
        .disable_signals()
        .shutdown_timeout(5)
        .listen("natter", listener, move || {
            let node = upgrades.clone();
            let http = HttpService::build()
                .local_addr(addr)
                .client_request_timeout(head_timeout)
                // WebSocket upgrades leave the HTTP stack here, connection and all (see `ws`).
                .upgrade(fn_service(move |(req, framed): (Request, Framed<JsonRejections<TcpStream>, h1::Codec>)| {
                    crate::ws::upgrade(node.clone(), req, framed)
                }))
                .finish(map_config(app(), |_| AppConfig::default()));
            fn_service(|io: TcpStream| async move {
                // Replies and pushes are small frames written back to back: without TCP_NODELAY,
                // Nagle holds the second until the client's delayed ACK (~40 ms on Linux).
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((JsonRejections::new(io), Protocol::Http1, peer))
            })
            .and_then(http)
        })?
        .listen("natter-admin", admin_listener, move || {
            HttpService::build().finish(map_config(admin_app(), |_| AppConfig::default())).tcp()
        })?
        .run();
    let keeper = node.clone();
    actix_rt::spawn(async move {
        let mut tick = actix_rt::time::interval(Duration::from_secs(5));
        let mut ticks = 0u64;
        loop {
            tick.tick().await;
            crate::telemetry::metrics_upkeep();
            metrics::gauge!("natter_bus_connected").set(if keeper.bus.is_connected() { 1.0 } else { 0.0 });
            let (in_use, idle) = keeper.store.pool_connections();
            metrics::gauge!("natter_db_pool_connections", "state" => "in_use").set(in_use as f64);
            metrics::gauge!("natter_db_pool_connections", "state" => "idle").set(idle as f64);
            ticks += 1;
            // Every minute: adopt signing keys rotated in elsewhere.
            if ticks.is_multiple_of(12) {
                keeper.reload_keys().await;
            }
        }
    });
    tracing::info!(%addr, %admin_addr, node = %node.id, "natter listening");
    Ok(Running { addr, admin_addr, node, server })
}

/// A listening socket with a backlog deep enough for reconnect storms (the kernel caps it at
/// `net.core.somaxconn`).
fn listen(bind: &str) -> anyhow::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = bind.to_socket_addrs()?.next().context("the address resolves to nothing")?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Readiness off, then sessions closed with 4001 in batches, then the server stops.
pub async fn drain(node: &Node, handle: &actix_web::dev::ServerHandle) {
    node.start_draining();
    tracing::info!("draining: closing sessions");
    loop {
        match node.router.send(DrainBatch { batch: 500 }).await {
            Ok(0) | Err(_) => break,
            Ok(_) => actix_rt::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // Let close frames and in-flight sends reach their peers, and the offline transitions land.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    node.presence.flush().await;
    node.presence.stop().await;
    if let Err(e) = node.store.retire_node(&node.id).await {
        tracing::warn!(error = %e, "could not retire the node's lease");
    }
    handle.stop(true).await;
}

/// Runs a node until SIGTERM or Ctrl-C, then drains it.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    let handle = running.server.handle();
    let node = running.node.clone();
    let node_after = running.node.clone();
    actix_rt::spawn(async move {
        wait_for_signal().await;
        drain(&node, &handle).await;
    });
    running.server.await.context("http server")?;
    node_after.presence.stop().await;
    node_after.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A node running on its own thread and actix system (tests, tools).
pub struct Spawned {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub node: Node,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawned {
    pub fn start(config: Config) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                match start(config).await {
                    Ok(running) => {
                        let addrs = (running.addr, running.admin_addr);
                        let _ = tx.send(Ok((addrs, running.node.clone(), running.server.handle())));
                        let _ = running.server.await;
                        running.node.presence.stop().await;
                        running.node.store.close().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        let ((addr, admin_addr), node, handle) = rx.recv().context("server thread died")??;
        Ok(Self { addr, admin_addr, node, handle, thread: Some(thread) })
    }

    /// Stops at once, like a crash would for the clients (no close frames).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let handle = self.handle.clone();
        off_thread(async move { handle.stop(false).await });
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a future to completion on a fresh thread and actix system, so callers inside another
/// runtime (async tests) can use it without nesting runtimes.
fn off_thread<F: std::future::Future<Output = ()> + Send + 'static>(fut: F) {
    let _ = std::thread::spawn(move || actix_rt::System::new().block_on(fut)).join();
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
        }
    }
}
