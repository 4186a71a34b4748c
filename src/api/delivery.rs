//! `GET /v1/instances/{name}/messages/{id}`: where a send stands.

use axum::Extension;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, ApiState, Caller};

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageStatus {
    id: String,
    chat: String,
    /// `queued` (waits for an open, or for the server's confirmation),
    /// `sent` or `failed`.
    status: &'static str,
    /// Why it failed.
    reason: Option<String>,
    /// Times it was handed to the connection and did not get through.
    attempts: u32,
    /// Unix milliseconds.
    created_at: u64,
    updated_at: u64,
}

#[utoipa::path(get, path = "/v1/instances/{name}/messages/{id}",
    params(("name" = String, Path), ("id" = String, Path, description = "the id a send answered")),
    responses((status = 200, body = MessageStatus),
        (status = 404, body = super::ErrorBody, description = "no such instance, or no send of it with that id")))]
pub(super) async fn get_message(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> ApiResult<Json<MessageStatus>> {
    caller.reaches(&name)?;
    super::handle(&st, &name)?;
    let record = st
        .app
        .store
        .outbox_status(&name, &id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "instance {name:?} has no send {id:?} (unknown, pruned, or gone with a logout)"
            ))
        })?;
    Ok(Json(MessageStatus {
        status: record.status.as_str(),
        id: record.id,
        chat: record.chat,
        reason: record.reason,
        attempts: record.attempts,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }))
}
