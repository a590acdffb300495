//! The server API's groups (`/v1/server/groups/…`): the app creates groups for its users and
//! administers any of them as itself, above every role but the owner's protection, and past
//! every mute.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use super::{
    group_id, ok, parse_body,
    server::{identity, signed, user},
    user_id,
};
use crate::{
    domain::{GroupId, Name, UserId},
    error::ApiResult,
    groups::{
        self, CreateGroupRequest, GroupActor, MembersRequest,
        admin::{self, MemberUpdate, UpdateGroupRequest},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerGroup {
    #[serde(default)]
    id: Option<GroupId>,
    name: Name,
    owner: UserId,
    #[serde(default)]
    members: Vec<UserId>,
}

/// `POST /v1/server/groups` `{id?, name, owner, members?}`: a group owned by one of the app's users.
pub async fn create(req: HttpRequest, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let input: ServerGroup = parse_body(&body)?;
    let owner = identity(&app, &user(&node, &app, &input.owner).await?)?;
    let request = CreateGroupRequest { id: input.id, name: input.name, members: input.members };
    Ok(ok(StatusCode::CREATED, groups::create(&node, &owner, request).await?))
}

/// `GET /v1/server/groups/{id}`.
pub async fn show(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, b"").await?;
    Ok(ok(StatusCode::OK, groups::show(&node, GroupActor::App(&app.id), &group_id(&path)?).await?))
}

/// `PATCH /v1/server/groups/{id}` `{name?, avatar_url?, announcement?, muted?}`.
pub async fn update(req: HttpRequest, path: web::Path<String>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let input: UpdateGroupRequest = parse_body(&body)?;
    Ok(ok(StatusCode::OK, admin::update(&node, GroupActor::App(&app.id), &group_id(&path)?, input).await?))
}

/// `DELETE /v1/server/groups/{id}`: dissolves it.
pub async fn dissolve(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, b"").await?;
    Ok(ok(StatusCode::OK, admin::dissolve(&node, GroupActor::App(&app.id), &group_id(&path)?).await?))
}

/// `POST /v1/server/groups/{id}/members` `{members}`.
pub async fn add_members(req: HttpRequest, path: web::Path<String>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let input: MembersRequest = parse_body(&body)?;
    Ok(ok(StatusCode::OK, admin::add_members(&node, GroupActor::App(&app.id), &group_id(&path)?, input).await?))
}

/// `PATCH /v1/server/groups/{id}/members/{user}` `{role?, muted_until?}`.
pub async fn update_member(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, &body).await?;
    let (group, member) = path.into_inner();
    let input: MemberUpdate = parse_body(&body)?;
    let view =
        admin::update_member(&node, GroupActor::App(&app.id), &group_id(&group)?, &user_id(&member)?, input).await?;
    Ok(ok(StatusCode::OK, view))
}

/// `DELETE /v1/server/groups/{id}/members/{user}`: kicks.
pub async fn kick(req: HttpRequest, path: web::Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (node, app) = signed(&req, b"").await?;
    let (group, member) = path.into_inner();
    let changed = admin::kick(&node, GroupActor::App(&app.id), &group_id(&group)?, &user_id(&member)?).await?;
    Ok(ok(StatusCode::OK, changed))
}
