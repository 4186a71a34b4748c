//! Script routes over HTTP: `/v1/instances/{name}/hooks/{path}` is looked
//! up in the instance's current route table and handed to the engine.
//!
//! A route needs the admin key or the instance's token unless the script
//! made it public (for services that sign their calls instead). Whether a
//! path exists is told only to a caller that may use it: without a public
//! route to match, authentication comes first. The handler's failures are
//! the script's business: the caller gets a bare 500 (the engine reports
//! the details with file:line), 504 past the deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, ApiState, identify};
use crate::automation::routes::{HookRequest, HookResponse, RouteDispatch, RouteError, Routes};
use crate::config::valid_instance_name;

/// What the API needs to serve script routes.
pub struct Hooks {
    routes: Arc<Routes>,
    dispatch: Arc<dyn RouteDispatch>,
    /// How long a handler may take before the caller gets a 504
    /// (`[script] handler_deadline_ms`).
    deadline: Duration,
}

impl Hooks {
    pub fn new(routes: Arc<Routes>, dispatch: Arc<dyn RouteDispatch>, deadline: Duration) -> Hooks {
        Hooks {
            routes,
            dispatch,
            deadline,
        }
    }
}

pub(super) fn router() -> Router<ApiState> {
    Router::new().route("/v1/instances/{name}/hooks/{*path}", any(serve_hook))
}

/// Headers that describe the connection, not the answer: hyper sets them.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The instance name and the route path (raw, still percent-encoded, as
/// routes are matched) of a hook URL.
fn split(uri_path: &str) -> Option<(&str, &str)> {
    let rest = uri_path.strip_prefix("/v1/instances/")?;
    let (name, rest) = rest.split_once('/')?;
    let path = rest.strip_prefix("hooks")?;
    path.starts_with('/').then_some((name, path))
}

fn no_route(method: &str, path: &str, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no script route {method} {path} on instance {name:?}"),
    )
}

#[utoipa::path(method(get, post, put, patch, delete),
    path = "/v1/instances/{name}/hooks/{path}",
    params(("name" = String, Path), ("path" = String, Path, description = "the path the script registered, e.g. `ci` for `bot.route(\"POST\", \"/ci\", fn)`")),
    responses(
        (status = 200, description = "the handler's answer: its status, headers and body (a string return is a 200 text/plain body)"),
        (status = 401, body = super::ErrorBody, description = "no or unknown key (routes are not public by default)"),
        (status = 403, body = super::ErrorBody, description = "a token of another instance"),
        (status = 404, body = super::ErrorBody, description = "no such route in the instance's current scripts"),
        (status = 405, body = super::ErrorBody, description = "the path exists with other methods (see `Allow`)"),
        (status = 413, body = super::ErrorBody, description = "body over 64 KiB"),
        (status = 500, body = super::ErrorBody, description = "the handler failed; the server log and script_error events have the details"),
        (status = 504, body = super::ErrorBody, description = "the handler ran past its deadline")),
    security(("bearer" = []), ()))]
pub(super) async fn serve_hook(State(st): State<ApiState>, req: Request) -> Response {
    match hook(st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn hook(st: ApiState, req: Request) -> Result<Response, ApiError> {
    let uri = req.uri().clone();
    let method = req.method().as_str().to_string();
    let Some((name, path)) = split(uri.path()) else {
        return Err(ApiError::not_found("no such route"));
    };
    let (name, path) = (name.to_string(), path.to_string());
    let table = match &st.hooks {
        Some(h) if valid_instance_name(&name) => h.routes.table(&name),
        _ => None,
    };
    let route = table.as_ref().and_then(|t| t.find(&method, &path)).cloned();
    let public = route.as_ref().is_some_and(|r| r.public);
    if !public {
        identify(&st, req.headers())?.reaches(&name)?;
    }
    let (Some(route), Some(hooks)) = (route, st.hooks.clone()) else {
        let allow = table
            .as_ref()
            .map(|t| t.methods_for(&path).join(", "))
            .unwrap_or_default();
        if allow.is_empty() {
            return Err(no_route(&method, &path, &name));
        }
        let e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} on instance {name:?} answers {allow}, not {method}"),
        );
        return Ok(([(header::ALLOW, allow)], e).into_response());
    };

    let query = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?
        .0;
    let mut headers = Vec::with_capacity(req.headers().len());
    for (n, v) in req.headers() {
        // The key or token that let this request in is not the script's.
        if !public && n == header::AUTHORIZATION {
            continue;
        }
        let v = v.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("header {n} is not visible ASCII text"),
            )
        })?;
        headers.push((n.as_str().to_string(), v.to_string()));
    }
    let body = Bytes::from_request(req, &st)
        .await
        .map_err(|e: BytesRejection| {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            };
            ApiError::new(status, code, e.body_text())
        })?;
    let request = HookRequest {
        method,
        path: path.clone(),
        query,
        headers,
        body: body.to_vec(),
    };

    let answer = tokio::time::timeout(
        hooks.deadline,
        hooks.dispatch.dispatch(&name, route.id, request),
    )
    .await
    .unwrap_or(Err(RouteError::Deadline));
    match answer {
        Ok(resp) => Ok(respond(resp).unwrap_or_else(|why| {
            tracing::error!(instance = %name, route = %route.origin, "route handler answered {why}");
            handler_failed()
        })),
        Err(RouteError::Failed) => Ok(handler_failed()),
        Err(RouteError::Deadline) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the route's handler did not answer within {} ms",
                hooks.deadline.as_millis()
            ),
        )),
        Err(RouteError::Gone) => Err(no_route(&route.method, &path, &name)),
        Err(RouteError::Busy) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the instance's scripts cannot take more work now; retry later",
        )),
    }
}

fn handler_failed() -> Response {
    let body = json!({"error": {
        "code": "script_error",
        "message": "the route's handler failed; the server log has the details",
    }});
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// What the path macro cannot say about one handler serving five methods:
/// an operation id per method, and a raw body for those that carry one.
pub(super) struct HookDoc;

impl utoipa::Modify for HookDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        use utoipa::openapi::{Content, Required};
        let Some(item) = openapi
            .paths
            .paths
            .get_mut("/v1/instances/{name}/hooks/{path}")
        else {
            return;
        };
        let body = || {
            let bytes = ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)));
            RequestBodyBuilder::new()
                .description(Some("passed to the handler as is (at most 64 KiB)"))
                .required(Some(Required::False))
                .content("application/octet-stream", Content::new(Some(bytes)))
                .build()
        };
        for (method, op, with_body) in [
            ("get", &mut item.get, false),
            ("post", &mut item.post, true),
            ("put", &mut item.put, true),
            ("patch", &mut item.patch, true),
            ("delete", &mut item.delete, false),
        ] {
            if let Some(op) = op {
                op.operation_id = Some(format!("hook_{method}"));
                op.request_body = with_body.then(body);
            }
        }
    }
}

/// The handler's answer as an HTTP response, or what is wrong with it.
fn respond(r: HookResponse) -> Result<Response, String> {
    let status = StatusCode::from_u16(r.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("status {}, which is not 200-599", r.status))?;
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = status;
    for (n, v) in r.headers {
        let name = HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| format!("an invalid header name {n:?}"))?;
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let value =
            HeaderValue::from_str(&v).map_err(|_| format!("an invalid value for header {n:?}"))?;
        resp.headers_mut().append(name, value);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_urls_split_into_instance_and_raw_path() {
        assert_eq!(split("/v1/instances/a/hooks/ci"), Some(("a", "/ci")));
        assert_eq!(
            split("/v1/instances/shop-1/hooks/gh/push/"),
            Some(("shop-1", "/gh/push/"))
        );
        assert_eq!(split("/v1/instances/a/hooks/c%2Fi"), Some(("a", "/c%2Fi")));
        assert_eq!(split("/v1/instances/a/hooksx/ci"), None);
        assert_eq!(split("/v1/instances/a/hooks"), None);
        assert_eq!(split("/v1/other/a/hooks/ci"), None);
    }

    #[test]
    fn answers_become_responses_and_bad_ones_are_refused() {
        let r = respond(HookResponse {
            status: 201,
            headers: vec![
                ("X-One".into(), "1".into()),
                ("x-one".into(), "2".into()),
                ("Content-Length".into(), "999".into()),
                ("Transfer-Encoding".into(), "chunked".into()),
            ],
            body: b"made".to_vec(),
        })
        .unwrap();
        assert_eq!(r.status(), 201);
        let ones: Vec<_> = r.headers().get_all("x-one").iter().collect();
        assert_eq!(ones, ["1", "2"]);
        assert!(r.headers().get("transfer-encoding").is_none());
        assert!(r.headers().get("content-length").is_none());
        for (status, headers) in [
            (99, vec![]),
            (101, vec![]),
            (600, vec![]),
            (0, vec![]),
            (200, vec![("bad name".to_string(), "v".to_string())]),
            (200, vec![("x".to_string(), "a\r\nb".to_string())]),
        ] {
            let e = respond(HookResponse {
                status,
                headers,
                body: vec![],
            });
            assert!(e.is_err(), "{status}");
        }
    }
}
