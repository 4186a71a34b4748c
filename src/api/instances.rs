//! The instance routes: create, list, look at, connect, pair (QR, scan),
//! log out, restart, delete. Every operation on one name is serialised by
//! the app and answered within the state's operation timeout.

use std::future::Future;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, ApiState, Caller, ErrorBody, qr, token_hash};
use crate::config::{ChannelKind, valid_instance_name};
use crate::host::app::AppError;
use crate::host::{InstanceHandle, now_ms};
use crate::lifecycle::{State as LState, StateName};

/// An instance as `status --json` shows it, from the live machine.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    name: String,
    channel: String,
    /// `open`, `connecting` or `close` (Evolution-compatible)
    connection_status: String,
    state: String,
    last_reason_code: Option<u16>,
    last_reason_kind: Option<String>,
    /// The underlying cause of the last close, e.g. the DNS, refused or TLS
    /// error of a failed dial.
    last_reason_message: Option<String>,
    /// Unix milliseconds.
    last_change_at: u64,
    jid: Option<String>,
    push_name: Option<String>,
    created_at: u64,
    /// `config` (the config file names it) or `api` (made here)
    created_by: String,
    /// While logging out or logged out: `user`, `server` or `script`.
    logout_by: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// `^[a-z0-9][a-z0-9_-]{0,62}$`
    name: String,
    /// `whatsapp` or `console`
    channel: String,
    /// Console only: the simulated account starts unpaired and pairing waits
    /// for `POST /v1/instances/{name}/scan`, so the QR can be looked at.
    #[serde(default)]
    manual_scan: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    instance: InstanceView,
    /// This instance's API token. Shown once; only its hash is stored.
    token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QrView {
    code: String,
    /// `qr` or `pair_code`
    kind: String,
    /// Seconds until this code expires.
    expires_in: u64,
}

pub(super) fn handle(st: &ApiState, name: &str) -> ApiResult<InstanceHandle> {
    st.app
        .host
        .instance(name)
        .ok_or_else(|| ApiError::not_found(format!("instance {name:?} not found")))
}

pub(super) fn view(st: &ApiState, h: &InstanceHandle) -> ApiResult<InstanceView> {
    // No row means the instance is being deleted: it is gone already.
    let stored = st
        .app
        .store
        .instance(h.name())
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("instance {:?} not found", h.name())))?;
    let live = h.snapshot().row;
    Ok(InstanceView {
        name: h.name().to_string(),
        channel: stored.channel,
        connection_status: live.connection_status.as_str().into(),
        state: live.state.as_str().into(),
        last_reason_code: live.last_reason_code,
        last_reason_kind: live.last_reason_kind.map(|k| k.as_str().to_string()),
        last_reason_message: live.last_reason_message,
        last_change_at: live.last_change_at,
        jid: live.jid,
        push_name: live.push_name,
        created_at: stored.created_at,
        created_by: stored.created_by.as_str().into(),
        logout_by: live.logout_by.map(|b| b.as_str().to_string()),
    })
}

/// Runs an instance operation to its end in a task of its own, and waits
/// for it at most the state's operation timeout: past that the caller gets
/// 504 and the operation still finishes (it holds the name's lock, so
/// nothing else on that name interleaves with it).
async fn bounded<T: Send + 'static>(
    st: &ApiState,
    what: &str,
    op: impl Future<Output = Result<T, AppError>> + Send + 'static,
) -> ApiResult<T> {
    let task = tokio::spawn(op);
    match tokio::time::timeout(st.operation_timeout, task).await {
        Ok(Ok(result)) => result.map_err(ApiError::from),
        Ok(Err(e)) => Err(ApiError::internal(e)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "{what} did not finish within {} ms; it goes on: GET the instance to see how it ended",
                st.operation_timeout.as_millis()
            ),
        )),
    }
}

#[utoipa::path(post, path = "/v1/instances", request_body = CreateInstance,
    responses((status = 201, body = Created), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 504, body = ErrorBody, description = "not done within the operation timeout")))]
pub(super) async fn create_instance(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateInstance>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    caller.admin()?;
    let Json(req) = body?;
    if !valid_instance_name(&req.name) {
        return Err(ApiError::invalid(format!(
            "name {:?} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$",
            req.name
        )));
    }
    let Some(channel) = ChannelKind::parse(&req.channel) else {
        return Err(ApiError::invalid(format!(
            "unknown channel {:?} (whatsapp or console)",
            req.channel
        )));
    };
    if req.manual_scan && channel != ChannelKind::Console {
        return Err(ApiError::invalid(
            "manual_scan is for console instances: a WhatsApp QR is scanned with the phone",
        ));
    }
    let token = format!("mwt_{}", hex::encode(rand::random::<[u8; 24]>()));
    let app = st.app.clone();
    let name = req.name.clone();
    let hash = token_hash(&token);
    let h = bounded(&st, "creating the instance", async move {
        app.create_instance(&name, channel, req.manual_scan, &hash)
            .await
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            instance: view(&st, &h)?,
            token,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/instances", responses((status = 200, body = [InstanceView])))]
pub(super) async fn list_instances(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<InstanceView>>> {
    caller.admin()?;
    let mut list = Vec::new();
    for h in st.app.host.instances() {
        match view(&st, &h) {
            Ok(v) => list.push(v),
            // Deleted between the two reads: not listed.
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Json(list))
}

#[utoipa::path(get, path = "/v1/instances/{name}", params(("name" = String, Path)),
    responses((status = 200, body = InstanceView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_instance(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<InstanceView>> {
    caller.reaches(&name)?;
    Ok(Json(view(&st, &handle(&st, &name)?)?))
}

#[utoipa::path(post, path = "/v1/instances/{name}/connect", params(("name" = String, Path)),
    responses((status = 202, body = InstanceView), (status = 404, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub(super) async fn connect_instance(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    caller.reaches(&name)?;
    let app = st.app.clone();
    let h = bounded(
        &st,
        "connect",
        async move { app.connect_instance(&name).await },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(view(&st, &h)?)))
}

/// Why there is no code to show, for a state that is not pairing.
fn no_code_hint(name: &str, state: StateName) -> String {
    match state {
        StateName::Open => "it is open, so it is paired already: there is no code to scan".into(),
        StateName::Connecting => {
            "it is connecting: a code appears here once the server offers pairing".into()
        }
        StateName::Reconnecting => {
            "it is waiting to reconnect: a code appears here if the next attempt has to pair".into()
        }
        StateName::LoggingOut => "it is logging out".into(),
        StateName::Idle | StateName::Closed | StateName::LoggedOut | StateName::Pairing => {
            format!(
                "POST /v1/instances/{name}/connect: a code appears here if it has to pair (it has no session)"
            )
        }
    }
}

#[utoipa::path(get, path = "/v1/instances/{name}/qr", params(("name" = String, Path)),
    responses((status = 200, body = QrView, description = "JSON, or a PNG with `Accept: image/png`"),
        (status = 404, body = ErrorBody, description = "not pairing; the message names the state")))]
pub(super) async fn get_qr(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.reaches(&name)?;
    let h = handle(&st, &name)?;
    let snap = h.snapshot();
    let LState::Pairing {
        code,
        kind,
        expires,
    } = &snap.state
    else {
        let state = snap.state.name();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_pairing",
            format!(
                "instance {name:?} is not pairing (state: {}); {}",
                state.as_str(),
                no_code_hint(&name, state)
            ),
        ));
    };
    let wants_png = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("image/png"));
    if wants_png {
        let png = qr::png(code).map_err(ApiError::internal)?;
        return Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response());
    }
    Ok(Json(QrView {
        code: code.clone(),
        kind: kind.as_str().into(),
        expires_in: expires.saturating_sub(now_ms()).div_ceil(1000),
    })
    .into_response())
}

#[utoipa::path(post, path = "/v1/instances/{name}/scan", params(("name" = String, Path)),
    responses((status = 202, body = InstanceView, description = "the simulated phone scanned the code"),
        (status = 409, body = ErrorBody, description = "not a console instance, or no code on show")))]
pub(super) async fn scan_instance(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    caller.reaches(&name)?;
    let app = st.app.clone();
    let h = bounded(&st, "scan", async move { app.scan_instance(&name).await }).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&st, &h)?)))
}

#[utoipa::path(post, path = "/v1/instances/{name}/logout", params(("name" = String, Path)),
    responses((status = 200, body = InstanceView, description = "after the teardown finished"),
        (status = 504, body = ErrorBody, description = "not done within the operation timeout")))]
pub(super) async fn logout_instance(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<InstanceView>> {
    caller.reaches(&name)?;
    let app = st.app.clone();
    let h = bounded(
        &st,
        "logout",
        async move { app.logout_instance(&name).await },
    )
    .await?;
    Ok(Json(view(&st, &h)?))
}

#[utoipa::path(post, path = "/v1/instances/{name}/restart", params(("name" = String, Path)),
    responses((status = 202, body = InstanceView), (status = 504, body = ErrorBody)))]
pub(super) async fn restart_instance(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    caller.reaches(&name)?;
    let app = st.app.clone();
    let h = bounded(
        &st,
        "restart",
        async move { app.restart_instance(&name).await },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(view(&st, &h)?)))
}

#[utoipa::path(delete, path = "/v1/instances/{name}", params(("name" = String, Path)),
    responses((status = 204, description = "logged out and removed"),
        (status = 409, body = ErrorBody, description = "configured in the config file"),
        (status = 504, body = ErrorBody, description = "not done within the operation timeout")))]
pub(super) async fn delete_instance(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<StatusCode> {
    caller.reaches(&name)?;
    let app = st.app.clone();
    bounded(
        &st,
        "delete",
        async move { app.delete_instance(&name).await },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
