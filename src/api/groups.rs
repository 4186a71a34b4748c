//! The group routes: the groups an instance is in, one group's metadata
//! (from the instance's cache when it is fresh), participant changes and
//! the invite link. What the server refuses comes back with its reason:
//! 403 (the bot is not an admin or not a member), 404 (no such group).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::instances::handle;
use super::{ApiError, ApiResult, ApiState, Caller, ErrorBody};
use crate::channel::ChannelError;
use crate::channel::groups::{
    Change, GroupInfo, GroupOp, GroupReply, UserResult, group_jid, user_list,
};
use crate::host::SendError;

/// A participant change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantsChange {
    pub action: Change,
    /// JIDs or phone numbers.
    pub users: Vec<String>,
}

/// How a participant change went, per user.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantsResult {
    /// Whether every user was changed.
    pub ok: bool,
    pub results: Vec<UserResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InviteView {
    pub link: String,
}

/// A failed group call as an API error: the server's code decides the
/// status where it gave one.
fn group_error(e: SendError) -> ApiError {
    match e {
        SendError::NotOpen(name) => ApiError::new(
            StatusCode::CONFLICT,
            "not_open",
            format!("instance {name:?} is not open"),
        ),
        SendError::Gone(name) => ApiError::not_found(format!("instance {name:?} not found")),
        e @ SendError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        SendError::Channel(ChannelError::Unsupported) => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "unsupported",
            "this instance's channel has no groups",
        ),
        SendError::Channel(ChannelError::NotConnected) => ApiError::new(
            StatusCode::CONFLICT,
            "not_open",
            "the instance is not connected",
        ),
        SendError::Channel(c) => {
            let text = c.to_string();
            match text.get(..4) {
                Some("403 ") => ApiError::forbidden(text),
                Some("404 ") => ApiError::not_found(text),
                _ => ApiError::new(StatusCode::BAD_GATEWAY, "server", text),
            }
        }
    }
}

fn jid_of(given: &str) -> ApiResult<String> {
    group_jid(given).map_err(ApiError::invalid)
}

async fn call(st: &ApiState, name: &str, op: GroupOp) -> ApiResult<GroupReply> {
    let h = handle(st, name)?;
    h.group(op).await.map_err(group_error)
}

fn unexpected(r: GroupReply) -> ApiError {
    ApiError::internal(format!("unexpected answer to a group call: {r:?}"))
}

#[utoipa::path(get, path = "/v1/instances/{name}/groups",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<GroupInfo>, description = "the groups the instance is in"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "not open")))]
pub(super) async fn list_groups(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Vec<GroupInfo>>> {
    caller.reaches(&name)?;
    match call(&st, &name, GroupOp::List).await? {
        GroupReply::List(all) => Ok(Json(all)),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(get, path = "/v1/instances/{name}/groups/{jid}",
    params(("name" = String, Path), ("jid" = String, Path, description = "the group, …@g.us")),
    responses((status = 200, body = GroupInfo),
        (status = 403, body = ErrorBody, description = "the instance is not in the group"),
        (status = 404, body = ErrorBody, description = "no such instance or group"),
        (status = 409, body = ErrorBody, description = "not open"), (status = 422, body = ErrorBody)))]
pub(super) async fn get_group(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath((name, jid)): UrlPath<(String, String)>,
) -> ApiResult<Json<GroupInfo>> {
    caller.reaches(&name)?;
    let jid = jid_of(&jid)?;
    match call(&st, &name, GroupOp::Info(jid)).await? {
        GroupReply::Info(g) => Ok(Json(g)),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(post, path = "/v1/instances/{name}/groups/{jid}/participants",
    params(("name" = String, Path), ("jid" = String, Path, description = "the group, …@g.us")),
    request_body = ParticipantsChange,
    responses((status = 200, body = ParticipantsResult, description = "per user: done, or the server's reason"),
        (status = 403, body = ErrorBody, description = "the instance is not an admin"),
        (status = 404, body = ErrorBody, description = "no such instance or group"),
        (status = 409, body = ErrorBody, description = "not open"), (status = 422, body = ErrorBody)))]
pub(super) async fn change_participants(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath((name, jid)): UrlPath<(String, String)>,
    body: Result<Json<ParticipantsChange>, JsonRejection>,
) -> ApiResult<Json<ParticipantsResult>> {
    caller.reaches(&name)?;
    let Json(req) = body?;
    let jid = jid_of(&jid)?;
    let users = user_list(&req.users).map_err(|e| ApiError::invalid(format!("users: {e}")))?;
    let op = GroupOp::Participants {
        jid,
        change: req.action,
        users,
    };
    match call(&st, &name, op).await? {
        GroupReply::Changed(results) => Ok(Json(ParticipantsResult {
            ok: results.iter().all(|r| r.error.is_none()),
            results,
        })),
        other => Err(unexpected(other)),
    }
}

#[utoipa::path(get, path = "/v1/instances/{name}/groups/{jid}/invite",
    params(("name" = String, Path), ("jid" = String, Path, description = "the group, …@g.us")),
    responses((status = 200, body = InviteView),
        (status = 403, body = ErrorBody, description = "the instance is not an admin"),
        (status = 404, body = ErrorBody, description = "no such instance or group"),
        (status = 409, body = ErrorBody, description = "not open"), (status = 422, body = ErrorBody)))]
pub(super) async fn get_invite(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath((name, jid)): UrlPath<(String, String)>,
) -> ApiResult<Json<InviteView>> {
    caller.reaches(&name)?;
    let jid = jid_of(&jid)?;
    match call(&st, &name, GroupOp::InviteLink(jid)).await? {
        GroupReply::Link(link) => Ok(Json(InviteView { link })),
        other => Err(unexpected(other)),
    }
}
