//! The admin HTTP API (axum): instances, pairing, logout, sending, scripts,
//! live events, webhooks and metrics. Every answer reflects the live state:
//! a logout answers once its teardown is done, a state is read from the
//! running machine, and no key or token ever appears in a payload.

mod delivery;
pub mod events;
mod groups;
pub mod hooks;
mod instances;
mod messages;
mod qr;
pub mod webhook;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{OpenApi, ToSchema};

use crate::channel::Outgoing;
use crate::config::ApiConfig;
use crate::host::SendError;
use crate::host::app::{App, AppError};
use crate::host::metrics::WebhookTotals;
use crate::lifecycle::State as LState;
use hooks::HookDoc;
use instances::{CreateInstance, Created, InstanceView, QrView, handle};
use messages::SendMessage;
use webhook::Webhooks;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long a call that changes an instance (create, connect, logout,
/// restart, delete, scan) or reloads the scripts may take before it is
/// answered 504 `timeout`; the work itself goes on.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// An API error: `{"error": {"code": ..., "message": ...}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    /// The details go to the log, not to the client (paths, SQL).
    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            _ => "bad_request",
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> ApiError {
        match e {
            AppError::NotFound(name) => ApiError::not_found(format!("instance {name:?} not found")),
            AppError::Exists(name) | AppError::Host(crate::host::HostError::Duplicate(name)) => {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "exists",
                    format!("instance {name:?} already exists"),
                )
            }
            e @ AppError::Configured(_) => {
                ApiError::new(StatusCode::CONFLICT, "configured", e.to_string())
            }
            e @ AppError::NotSimulated(_) => {
                ApiError::new(StatusCode::CONFLICT, "not_simulated", e.to_string())
            }
            e @ AppError::NothingToScan { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_pairing", e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Who is calling, decided by the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Instance(String),
}

impl Caller {
    fn admin(&self) -> ApiResult<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Instance(_) => Err(ApiError::forbidden("this route needs the admin key")),
        }
    }

    fn reaches(&self, instance: &str) -> ApiResult<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Instance(own) if own == instance => Ok(()),
            Caller::Instance(_) => Err(ApiError::forbidden(
                "this token belongs to another instance",
            )),
        }
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct ApiState {
    app: Arc<App>,
    admin_digest: [u8; 32],
    metrics_public: bool,
    webhooks: Option<Arc<Webhooks>>,
    shutdown: watch::Receiver<bool>,
    /// Script routes; `None`: every hook path is 404.
    hooks: Option<Arc<hooks::Hooks>>,
    operation_timeout: Duration,
}

impl ApiState {
    pub fn new(
        app: Arc<App>,
        admin_key: &str,
        metrics_public: bool,
        webhooks: Option<Arc<Webhooks>>,
        shutdown: watch::Receiver<bool>,
    ) -> ApiState {
        ApiState {
            app,
            admin_digest: digest(admin_key),
            metrics_public,
            webhooks,
            shutdown,
            hooks: None,
            operation_timeout: OPERATION_TIMEOUT,
        }
    }

    /// Serves the scripts' routes under `/v1/instances/{name}/hooks/`.
    pub fn with_hooks(mut self, hooks: hooks::Hooks) -> ApiState {
        self.hooks = Some(Arc::new(hooks));
        self
    }

    /// Replaces [`OPERATION_TIMEOUT`] (tests make it short).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> ApiState {
        self.operation_timeout = timeout;
        self
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// How tokens are stored: only their SHA-256, in hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(digest(token))
}

async fn authenticate(
    State(st): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if req.uri().path() == "/metrics" && st.metrics_public {
        return Ok(next.run(req).await);
    }
    let caller = identify(&st, req.headers())?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Who is calling, from the bearer token.
fn identify(st: &ApiState, headers: &HeaderMap) -> ApiResult<Caller> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <key>`",
        ));
    };
    // Comparing digests in constant time: neither content nor length leaks.
    let caller = if bool::from(digest(token).ct_eq(&st.admin_digest)) {
        Caller::Admin
    } else {
        match st.app.store.token_instance(&token_hash(token)) {
            Ok(Some(name)) => Caller::Instance(name),
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "unknown key",
                ));
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
    };
    Ok(caller)
}

/// A send may carry a media file as base64 (4 bytes per 3), up to
/// `[script] max_media_mb`.
fn media_body_limit(state: &ApiState) -> usize {
    let max = state.app.scripts.config().max_media;
    usize::try_from(max.saturating_mul(4) / 3)
        .unwrap_or(usize::MAX)
        .saturating_add(BODY_LIMIT)
}

/// The router: `/healthz` open, everything else behind the key.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route(
            "/v1/instances",
            post(instances::create_instance).get(instances::list_instances),
        )
        .route(
            "/v1/instances/{name}",
            get(instances::get_instance).delete(instances::delete_instance),
        )
        .route(
            "/v1/instances/{name}/connect",
            post(instances::connect_instance),
        )
        .route("/v1/instances/{name}/qr", get(instances::get_qr))
        .route("/v1/instances/{name}/scan", post(instances::scan_instance))
        .route(
            "/v1/instances/{name}/logout",
            post(instances::logout_instance),
        )
        .route(
            "/v1/instances/{name}/restart",
            post(instances::restart_instance),
        )
        .route(
            "/v1/instances/{name}/messages",
            post(send_message).layer(DefaultBodyLimit::max(media_body_limit(&state))),
        )
        .route(
            "/v1/instances/{name}/messages/{id}",
            get(delivery::get_message)
                .patch(messages::edit_message)
                .delete(messages::revoke_message),
        )
        .route("/v1/instances/{name}/media/{id}", get(messages::get_media))
        .route("/v1/instances/{name}/groups", get(groups::list_groups))
        .route("/v1/instances/{name}/groups/{jid}", get(groups::get_group))
        .route(
            "/v1/instances/{name}/groups/{jid}/participants",
            post(groups::change_participants),
        )
        .route(
            "/v1/instances/{name}/groups/{jid}/invite",
            get(groups::get_invite),
        )
        .route("/v1/scripts", get(get_scripts))
        .route("/v1/scripts/reload", post(reload_scripts))
        .route("/v1/events", get(events))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .merge(hooks::router())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves until `shutdown` turns true.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    let mut stop = state.shutdown.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "[api] listen = {0} is not a loopback address: set [api] key or MOONWIRE_API_KEY explicitly"
    )]
    PublicWithoutKey(SocketAddr),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The admin key: configured, or generated once and kept in the data dir
/// (mode 0600). Only its path is logged.
pub fn admin_key(api: &ApiConfig, data_dir: &Path) -> Result<String, KeyError> {
    if let Some(k) = &api.key {
        return Ok(k.clone());
    }
    if !api.listen.ip().is_loopback() {
        return Err(KeyError::PublicWithoutKey(api.listen));
    }
    let path = data_dir.join("api.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok(k.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(KeyError::Io {
                op: "reading",
                path,
                source,
            });
        }
    }
    let key = format!("mwk_{}", hex::encode(rand::random::<[u8; 32]>()));
    std::fs::create_dir_all(data_dir).map_err(|source| KeyError::Io {
        op: "creating",
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = opts.open(&path)?;
        f.write_all(key.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|source| KeyError::Io {
        op: "writing",
        path: path.clone(),
        source,
    })?;
    tracing::warn!(path = %path.display(), "generated an API admin key; it is in this file");
    Ok(key)
}

// ---- schemas ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct SendQuery {
    queue: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    id: String,
    /// True when held for the next open (`?queue=true` while not open).
    queued: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptErrorView {
    file: String,
    line: Option<u32>,
    context: String,
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptsView {
    instance: String,
    generation: u64,
    files: Vec<String>,
    errors: Vec<ScriptErrorView>,
    /// Whether the last load replaced the running scripts.
    swapped: bool,
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    instance: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    code: String,
    message: String,
}

// ---- handlers --------------------------------------------------------------

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")), security(()))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// A JID as given, or a phone number turned into one (the parser scripts
/// use too).
fn recipient(to: &str) -> Option<String> {
    crate::channel::recipient(to).ok()
}

#[utoipa::path(post, path = "/v1/instances/{name}/messages", params(("name" = String, Path),
        ("queue" = Option<bool>, Query, description = "hold for the next open instead of 409")),
    request_body(description = "JSON, or multipart/form-data: a part `message` (this JSON without the file) and one file part named image, video, audio, document or sticker", content((SendMessage = "application/json"), (SendMessage = "multipart/form-data"))),
    responses((status = 202, body = Sent), (status = 409, body = ErrorBody, description = "not open"),
        (status = 422, body = ErrorBody)))]
async fn send_message(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<SendQuery>, QueryRejection>,
    body: Result<messages::SendBody, ApiError>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    caller.reaches(&name)?;
    let Query(q) = query?;
    let messages::SendBody(req) = body?;
    let h = handle(&st, &name)?;
    let (to, content) = messages::content(&st, &name, req).await?;
    let out = Outgoing::content(to, content);
    let open = matches!(h.snapshot().state, LState::Open { .. });
    if q.queue.unwrap_or(false) {
        return match h.send_queued(out).await {
            Ok(id) => Ok((StatusCode::ACCEPTED, Json(Sent { id, queued: !open }))),
            Err(SendError::NotOpen(_)) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_open",
                format!("instance {name:?} is logged out; connect (and pair) it first"),
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )),
        };
    }
    match h.send(out).await {
        Ok(id) => Ok((StatusCode::ACCEPTED, Json(Sent { id, queued: false }))),
        Err(e) => Err(send_refused(
            &name,
            &h,
            e,
            "; retry later or add ?queue=true",
        )),
    }
}

/// Why a send that had to go now (not queued) did not, as an API error;
/// `hint` follows the not-open text.
pub(crate) fn send_refused(
    name: &str,
    h: &crate::host::InstanceHandle,
    e: SendError,
    hint: &str,
) -> ApiError {
    match e {
        SendError::NotOpen(_) => ApiError::new(
            StatusCode::CONFLICT,
            "not_open",
            format!(
                "instance {name:?} is not open (state: {}){hint}",
                h.snapshot().state.name().as_str()
            ),
        ),
        SendError::Gone(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("instance {name:?} is shutting down"),
        ),
        e @ SendError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
        e => ApiError::new(StatusCode::BAD_GATEWAY, "send_failed", e.to_string()),
    }
}

fn scripts_view(
    st: &ApiState,
    reports: Vec<(String, crate::script::LoadReport)>,
) -> Vec<ScriptsView> {
    let _ = st;
    reports
        .into_iter()
        .map(|(instance, r)| ScriptsView {
            instance,
            generation: r.generation,
            files: r.files,
            swapped: r.swapped,
            errors: r
                .errors
                .into_iter()
                .map(|e| ScriptErrorView {
                    file: e.file,
                    line: e.line,
                    context: e.context,
                    message: e.message,
                })
                .collect(),
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/scripts", responses((status = 200, body = [ScriptsView])))]
async fn get_scripts(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<ScriptsView>>> {
    caller.admin()?;
    let reports = st.app.scripts.status();
    Ok(Json(scripts_view(&st, reports)))
}

#[utoipa::path(post, path = "/v1/scripts/reload", responses((status = 200, body = [ScriptsView]),
    (status = 504, body = ErrorBody, description = "not done within the operation timeout")))]
async fn reload_scripts(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<ScriptsView>>> {
    caller.admin()?;
    let scripts = st.app.scripts.clone();
    let reload = tokio::spawn(async move { scripts.reload().await });
    let reports = match tokio::time::timeout(st.operation_timeout, reload).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(ApiError::internal(e)),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the reload did not finish within {} ms; it goes on: GET /v1/scripts shows the outcome",
                    st.operation_timeout.as_millis()
                ),
            ));
        }
    };
    Ok(Json(scripts_view(&st, reports)))
}

#[utoipa::path(get, path = "/v1/events", params(("instance" = Option<String>, Query)),
    responses((status = 200, description = "text/event-stream of JSON events: state, qr, message, script_error, group")))]
async fn events(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>> {
    let Query(q) = query?;
    // An instance token sees only its own instance.
    let filter = match (&caller, q.instance) {
        (Caller::Admin, f) => f,
        (Caller::Instance(own), Some(f)) if &f != own => {
            return Err(ApiError::forbidden(
                "this token belongs to another instance",
            ));
        }
        (Caller::Instance(own), _) => Some(own.clone()),
    };
    enum Item {
        Event(Result<Event, Infallible>),
        Stop,
    }
    let stop = tokio_stream::wrappers::WatchStream::new(st.shutdown.clone())
        .filter(|s| *s)
        .map(|_| Item::Stop);
    let stream = BroadcastStream::new(st.app.bus.subscribe())
        .filter_map(move |item| match item {
            Ok(ev) => {
                if filter
                    .as_deref()
                    .is_some_and(|f| f != events::event_instance(&ev))
                {
                    return None;
                }
                let (kind, body) = events::event_json(&ev);
                Some(Ok(Event::default().event(kind).data(body.to_string())))
            }
            // A slow client missed events: say so rather than pretend.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Some(Ok(Event::default()
                    .event("lagged")
                    .data(json!({"type": "lagged", "missed": n}).to_string())))
            }
        })
        .map(Item::Event)
        .merge(stop)
        // The server is stopping: end the stream so shutdown can finish.
        .take_while(|i| matches!(i, Item::Event(_)))
        .filter_map(|i| match i {
            Item::Event(e) => Some(e),
            Item::Stop => None,
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
async fn metrics(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
) -> ApiResult<Response> {
    if !st.metrics_public
        && let Some(Extension(c)) = &caller
    {
        c.admin()?;
    }
    let states: Vec<_> = st
        .app
        .host
        .instances()
        .iter()
        .map(|h| h.snapshot().state.name())
        .collect();
    let hooks: Vec<WebhookTotals> = st
        .webhooks
        .as_ref()
        .map(|w| {
            w.stats()
                .into_iter()
                .map(|s| WebhookTotals {
                    url: s.url,
                    delivered: s.delivered,
                    failed: s.failed,
                    dropped: s.dropped,
                })
                .collect()
        })
        .unwrap_or_default();
    let text = st.app.bus.metrics().render(&states, &hooks);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Body::from(text),
    )
        .into_response())
}

#[derive(OpenApi)]
#[openapi(
    info(title = "moonwire admin API", description = "Instances, pairing, logout, sending, groups, scripts, events. Authenticate with `Authorization: Bearer <key>`: the admin key, or an instance's token for that instance's routes and for this document (it holds no instance data). Calls that change an instance answer within 30 s, or 504 while the work goes on."),
    paths(healthz, instances::create_instance, instances::list_instances, instances::get_instance,
        instances::connect_instance, instances::get_qr, instances::scan_instance,
        instances::logout_instance, instances::restart_instance, instances::delete_instance,
        send_message, delivery::get_message, messages::edit_message, messages::revoke_message,
        messages::get_media,
        groups::list_groups, groups::get_group, groups::change_participants, groups::get_invite,
        get_scripts, reload_scripts, events, metrics, openapi, hooks::serve_hook),
    components(schemas(InstanceView, CreateInstance, Created, QrView, SendMessage,
        messages::MediaBody, messages::LocationBody, messages::PollBody, messages::EditMessage, Sent,
        delivery::MessageStatus, ScriptsView, ScriptErrorView, ErrorBody, ErrorDetail,
        crate::channel::groups::GroupInfo, crate::channel::groups::Participant,
        crate::channel::groups::Change, crate::channel::groups::UserResult,
        groups::ParticipantsChange, groups::ParticipantsResult, groups::InviteView)),
    modifiers(&BearerAuth, &HookDoc),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Any valid key may read it, an instance token too: it describes the routes
/// and holds no instance's data, and a token holder needs it to build a client.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "this document; any valid key or instance token")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_jids_or_phone_numbers() {
        assert_eq!(
            recipient("15551234567").as_deref(),
            Some("15551234567@s.whatsapp.net")
        );
        assert_eq!(
            recipient("+15551234567").as_deref(),
            Some("15551234567@s.whatsapp.net")
        );
        assert_eq!(recipient("123-456@g.us").as_deref(), Some("123-456@g.us"));
        assert_eq!(recipient("you@console").as_deref(), Some("you@console"));
        for bad in [
            "",
            "abc",
            "12345",
            "1234567890123456",
            "@s.whatsapp.net",
            "a@",
            "a b@x",
            "a@X Y",
        ] {
            assert_eq!(recipient(bad), None, "{bad}");
        }
    }
}
