//! The REST API: client endpoints under `/v1`, health, metrics, its OpenAPI document, and JSON errors for every
//! rejection (never an HTML page, never a stack trace).

pub mod auth;
pub mod chat;
pub mod client_ip;
pub mod console;
pub mod credentials;
pub mod devices;
pub mod groups;
pub mod health;
pub mod openapi;
pub mod rejections;
pub mod rongcloud;
pub mod server;
pub mod server_groups;
pub mod server_messages;
pub mod server_moderation;
pub mod tencent;
pub mod users;

use actix_web::{
    FromRequest, HttpRequest, HttpResponse,
    dev::{Payload, ServiceResponse},
    http::{StatusCode, header},
    middleware::{ErrorHandlerResponse, ErrorHandlers},
    web,
};
use futures_util::future::LocalBoxFuture;
use serde::{Serialize, de::DeserializeOwned};

use actix_web::ResponseError as _;

pub use credentials::{bearer_token, client_ip, peer_ip};

use crate::{
    auth::Identity,
    domain::{ConversationId, GroupId, UserId},
    error::{ApiError, ApiResult, ErrorCode},
    node::Node,
};

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default().error_handler(|err, _| ApiError::validation(format!("query: {err}")).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|err, _| ApiError::validation(format!("path: {err}")).into()))
    .service(web::resource("/").route(web::get().to(console::index)))
    .service(web::resource("/console/{file:.+}").route(web::get().to(console::asset)))
    .service(web::resource("/healthz").route(web::get().to(health::healthz)))
    .service(web::resource("/readyz").route(web::get().to(health::readyz)))
    .service(web::resource("/openapi.json").route(web::get().to(openapi::json)))
    .service(web::resource("/openapi.yaml").route(web::get().to(openapi::yaml)))
    .service(web::resource(crate::ws::PATH).route(web::get().to(crate::ws::not_upgraded)))
    .service(web::resource("/compat/rongcloud/{method:.*}").route(web::post().to(rongcloud::handle)))
    .service(web::resource("/compat/tencent/v4/{service}/{command}").route(web::post().to(tencent::handle)))
    .service(
        web::scope("/v1")
            .service(web::resource("/auth/register").route(web::post().to(auth::register)))
            .service(web::resource("/auth/login").route(web::post().to(auth::login)))
            .service(web::resource("/auth/guest").route(web::post().to(auth::guest)))
            .service(web::resource("/auth/upgrade").route(web::post().to(auth::upgrade)))
            .service(web::resource("/auth/refresh").route(web::post().to(auth::refresh)))
            .service(web::resource("/auth/logout").route(web::post().to(auth::logout)))
            .service(web::resource("/me").route(web::get().to(users::me)).route(web::patch().to(users::update_me)))
            .service(
                web::resource("/me/blocks").route(web::post().to(users::block)).route(web::get().to(users::blocks)),
            )
            .service(web::resource("/me/blocks/{user}").route(web::delete().to(users::unblock)))
            .service(
                web::resource("/me/devices")
                    .route(web::post().to(devices::register))
                    .route(web::get().to(devices::list)),
            )
            .service(web::resource("/me/devices/{id}").route(web::delete().to(devices::remove)))
            .service(web::resource("/push/vapid").route(web::get().to(devices::vapid)))
            .service(web::resource("/users").route(web::get().to(users::query)))
            .service(web::resource("/groups").route(web::post().to(groups::create)).route(web::get().to(groups::list)))
            .service(
                web::resource("/groups/{id}")
                    .route(web::get().to(groups::show))
                    .route(web::patch().to(groups::update))
                    .route(web::delete().to(groups::dissolve)),
            )
            .service(web::resource("/groups/{id}/leave").route(web::post().to(groups::leave)))
            .service(web::resource("/groups/{id}/members").route(web::post().to(groups::add_members)))
            .service(
                web::resource("/groups/{id}/members/{user}")
                    .route(web::patch().to(groups::update_member))
                    .route(web::delete().to(groups::remove_member)),
            )
            .service(web::resource("/conversations").route(web::get().to(chat::conversations)))
            .service(web::resource("/conversations/{id}/messages").route(web::get().to(chat::messages)))
            .service(web::resource("/conversations/{id}").route(web::patch().to(chat::set_conversation)))
            .service(
                web::resource("/conversations/{id}/messages/{seq}")
                    .route(web::patch().to(chat::edit))
                    .route(web::delete().to(chat::delete)),
            )
            .service(web::resource("/conversations/{id}/messages/{seq}/recall").route(web::post().to(chat::recall)))
            .service(
                web::resource("/conversations/{id}/messages/{seq}/reactions/{key}")
                    .route(web::put().to(chat::react_on))
                    .route(web::delete().to(chat::react_off)),
            )
            .service(web::resource("/server/users/token").route(web::post().to(server::user_token)))
            .service(web::resource("/server/users").route(web::post().to(server::import_user)))
            .service(web::resource("/server/users/{id}").route(web::get().to(server::get_user)))
            .service(web::resource("/server/users/{id}/change-id/{new_id}").route(web::patch().to(server::change_id)))
            .service(web::resource("/server/users/{id}/revoke-tokens").route(web::post().to(server::revoke_tokens)))
            .service(web::resource("/server/users/{id}/presence").route(web::get().to(server::user_presence)))
            .service(web::resource("/server/users/{id}/devices").route(web::get().to(devices::server_list)))
            .service(
                web::resource("/server/users/{id}/devices/{device}").route(web::delete().to(devices::server_remove)),
            )
            .service(web::resource("/server/presence/query").route(web::post().to(server::presence_query)))
            .service(web::resource("/server/groups").route(web::post().to(server_groups::create)))
            .service(
                web::resource("/server/groups/{id}")
                    .route(web::get().to(server_groups::show))
                    .route(web::patch().to(server_groups::update))
                    .route(web::delete().to(server_groups::dissolve)),
            )
            .service(web::resource("/server/groups/{id}/members").route(web::post().to(server_groups::add_members)))
            .service(
                web::resource("/server/groups/{id}/members/{user}")
                    .route(web::patch().to(server_groups::update_member))
                    .route(web::delete().to(server_groups::kick)),
            )
            .service(web::resource("/server/messages").route(web::post().to(server::send_message)))
            .service(
                web::resource("/server/users/{id}/conversations").route(web::get().to(server_messages::conversations)),
            )
            .service(
                web::resource("/server/users/{id}/ban")
                    .route(web::post().to(server_moderation::ban))
                    .route(web::delete().to(server_moderation::lift)),
            )
            .service(web::resource("/server/bans").route(web::get().to(server_moderation::bans)))
            .service(web::resource("/server/audit").route(web::get().to(server_moderation::audit)))
            .service(
                web::resource("/server/conversations/{id}/messages/{seq}")
                    .route(web::patch().to(server_messages::edit))
                    .route(web::delete().to(server_messages::delete)),
            )
            .service(
                web::resource("/server/conversations/{id}/messages/{seq}/recall")
                    .route(web::post().to(server_messages::recall)),
            )
            .service(
                web::resource("/server/conversations/{id}/messages/{seq}/reactions/{key}")
                    .route(web::put().to(server_messages::react_on))
                    .route(web::delete().to(server_messages::react_off)),
            ),
    );
}

/// Turns any error response that is not already ours (404 for an unknown path, 405, 413, …) into
/// the JSON error shape.
pub fn json_errors<B>() -> ErrorHandlers<B>
where
    B: 'static,
{
    ErrorHandlers::new().default_handler(render_json_error)
}

fn render_json_error<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json =
        res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::ValidationFailed,
    };
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    // A 405 names the methods the path has (RFC 9110 §15.5.6).
    let allow = res.headers().get(header::ALLOW).cloned();
    let (req, _) = res.into_parts();
    let mut reply = HttpResponse::build(status);
    if let Some(allow) = allow {
        reply.insert_header((header::ALLOW, allow));
    }
    let body = reply.json(ApiError::new(code, message).body());
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, body).map_into_right_body()))
}

/// Headers every response carries: the API serves JSON only, never to be framed or sniffed.
pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"))
        .add(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
        .add(("Cross-Origin-Resource-Policy", "same-site"))
}

fn allowed_origin(req: &actix_web::dev::ServiceRequest) -> Option<header::HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let node = req.app_data::<web::Data<Node>>()?;
    let list = &node.config.http.cors_origins;
    let ok = list.iter().any(|o| o == "*" || origin.to_str().is_ok_and(|v| v == o));
    ok.then(|| origin.clone())
}

/// CORS: allowed origins get their preflights answered and their responses marked; others get
/// no CORS headers, so browsers keep them out.
pub fn cors<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error>> + use<S, B>
where
    S: actix_web::dev::Service<actix_web::dev::ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody + 'static,
{
    let origin = allowed_origin(&req);
    let preflight =
        req.method() == actix_web::http::Method::OPTIONS && req.headers().contains_key("access-control-request-method");
    let response = if preflight {
        let mut reply = match &origin {
            Some(o) => HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone()))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, PATCH, DELETE"))
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "authorization, content-type, x-app-id, x-request-id",
                ))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
                .finish(),
            None => ApiError::new(ErrorCode::Forbidden, "origin not allowed").error_response(),
        };
        reply.headers_mut().insert(header::VARY, header::HeaderValue::from_static("Origin"));
        Err(req.into_response(reply).map_into_right_body())
    } else {
        Ok(srv.call(req))
    };
    async move {
        match response {
            Err(done) => Ok(done),
            Ok(call) => {
                let mut res = call.await?.map_into_left_body();
                if let Some(o) = origin {
                    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
                    res.headers_mut().insert(header::VARY, header::HeaderValue::from_static("Origin"));
                }
                Ok(res)
            }
        }
    }
}

/// `{"data": …}` with a status.
/// Path segments naming a user, a group or a conversation: 400 `validation_failed` if malformed.
pub(crate) fn user_id(raw: &str) -> ApiResult<UserId> {
    UserId::parse(raw).map_err(|e| ApiError::validation(e.0))
}

pub(crate) fn group_id(raw: &str) -> ApiResult<GroupId> {
    GroupId::parse(raw).map_err(|e| ApiError::validation(e.0))
}

pub(crate) fn conversation_id(raw: &str) -> ApiResult<ConversationId> {
    ConversationId::parse(raw).map_err(|e| ApiError::validation(e.0))
}

/// One page of a list: `{"data": [...], "cursor": …}` (`null` on the last page).
pub fn ok_page<T: Serialize>(items: &[T], cursor: Option<&str>) -> HttpResponse {
    #[derive(Serialize)]
    struct Page<'a, T> {
        data: &'a [T],
        cursor: Option<&'a str>,
    }
    HttpResponse::Ok().json(Page { data: items, cursor })
}

pub fn ok<T: Serialize>(status: StatusCode, data: T) -> HttpResponse {
    #[derive(Serialize)]
    struct Data<T> {
        data: T,
    }
    HttpResponse::build(status).json(Data { data })
}

/// Parses a JSON body into a request type; an empty body counts as `{}`.
/// A request body: a JSON object (no body at all reads as `{}`). serde would also fill a struct
/// from a JSON array, by position; no endpoint takes one, so an array is refused here.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let text = if body.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { body };
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::validation("body: must be a JSON object"));
    }
    serde_json::from_slice(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::new(ErrorCode::InvalidJson, format!("body is not valid JSON: {e}"))
        } else {
            ApiError::validation(e.to_string())
        }
    })
}

pub fn node(req: &HttpRequest) -> ApiResult<Node> {
    req.app_data::<web::Data<Node>>().map(|d| d.get_ref().clone()).ok_or_else(|| ApiError::internal("node missing"))
}

/// An authenticated caller (bearer access token).
pub struct Authed(pub Identity);

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let node = node(req);
        let token = bearer_token(req.headers());
        Box::pin(async move {
            let node = node?;
            let token = token.ok_or_else(|| {
                metrics::counter!("natter_auth_failures_total", "reason" => "missing_token").increment(1);
                ApiError::new(ErrorCode::Unauthorized, "missing bearer token")
            })?;
            node.authenticate(&token).await.map(Authed)
        })
    }
}
