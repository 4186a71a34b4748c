//! What `POST .../messages` takes beyond text (the content of a script's
//! `bot.send`, as JSON: media by URL or base64, or a multipart upload),
//! edits and revokes
//! (`PATCH` / `DELETE .../messages/{id}`), and the downloaded media route.
//!
//! Media by URL is fetched with the scripts' HTTP client, so the same
//! `[script.http]` rules hold: loopback, private and link-local addresses
//! are refused unless listed in `allow`, and the body is bounded by
//! `max_body_mb` as well as `[script] max_media_mb`.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, FromRequest, Multipart, Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use utoipa::ToSchema;

use super::instances::handle;
use super::{ApiError, ApiResult, ApiState, Caller, ErrorBody, Sent, recipient};
use crate::automation::http::{HttpError, HttpRequest};
use crate::channel::rich::{display_name, mime_from_name, safe_component};
use crate::channel::{Content, Location, MediaData, MediaKind, OutMedia, Outgoing, Poll};

/// A message to send: `text`, or one media key, a `location` or a `poll`;
/// optionally `mentions` and a quote.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// A JID (`15551234567@s.whatsapp.net`, `...@g.us`) or a phone number.
    to: String,
    /// The text; with media, its caption.
    text: Option<String>,
    /// Id of a message to quote.
    quote: Option<String>,
    /// The same as `quote` (the older name).
    quote_id: Option<String>,
    image: Option<MediaBody>,
    video: Option<MediaBody>,
    audio: Option<MediaBody>,
    document: Option<MediaBody>,
    sticker: Option<MediaBody>,
    /// A media file's caption (`text` works too).
    caption: Option<String>,
    /// The name a document is shown with.
    file_name: Option<String>,
    /// The media type (default: from the file name, else the kind's usual one).
    mime: Option<String>,
    /// Audio as a voice note.
    voice: Option<bool>,
    /// JIDs or phone numbers mentioned in the text.
    mentions: Option<Vec<String>>,
    location: Option<LocationBody>,
    poll: Option<PollBody>,
}

/// A media file: fetched from `url` (under the `[script.http]` address
/// rules) or given as `base64`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaBody {
    url: Option<String>,
    base64: Option<String>,
    mime: Option<String>,
    file_name: Option<String>,
    /// The bytes of a multipart file part (not in JSON).
    #[serde(skip)]
    #[schema(ignore)]
    raw: Option<bytes::Bytes>,
}

/// The body of a send: JSON, or `multipart/form-data` with a part
/// `message` (the same JSON, without the file) and one file part named
/// after its kind (`image`, `video`, `audio`, `document`, `sticker`),
/// whose file name and type are used unless the JSON gives them.
pub(super) struct SendBody(pub SendMessage);

fn multipart_err(status: StatusCode, text: String) -> ApiError {
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "bad_request"
    };
    ApiError::new(status, code, text)
}

impl<S: Send + Sync> FromRequest<S> for SendBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<SendBody, ApiError> {
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("multipart/form-data"));
        if !multipart {
            let Json(m) = Json::<SendMessage>::from_request(req, state).await?;
            return Ok(SendBody(m));
        }
        let mut parts = Multipart::from_request(req, state)
            .await
            .map_err(|e| multipart_err(e.status(), e.body_text()))?;
        let mut message: Option<SendMessage> = None;
        let mut file: Option<(MediaKind, MediaBody)> = None;
        loop {
            let field = parts
                .next_field()
                .await
                .map_err(|e| multipart_err(e.status(), e.body_text()))?;
            let Some(field) = field else { break };
            let name = field.name().unwrap_or_default().to_string();
            if name == "message" {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_err(e.status(), e.body_text()))?;
                let m = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::invalid(format!("the message part: {e}")))?;
                message = Some(m);
            } else if let Some(kind) = MediaKind::parse(&name) {
                if file.is_some() {
                    return Err(ApiError::invalid("one message carries one media file"));
                }
                let file_name = field.file_name().map(str::to_string);
                let mime = field.content_type().map(str::to_string);
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_err(e.status(), e.body_text()))?;
                file = Some((
                    kind,
                    MediaBody {
                        raw: Some(data),
                        mime,
                        file_name,
                        ..MediaBody::default()
                    },
                ));
            } else {
                return Err(ApiError::invalid(format!(
                    "unknown part {name:?}: give a part \"message\" and one file part named image, video, audio, document or sticker"
                )));
            }
        }
        let mut m = message
            .ok_or_else(|| ApiError::invalid("a multipart send needs a part named \"message\""))?;
        if let Some((kind, body)) = file {
            let slot = match kind {
                MediaKind::Image => &mut m.image,
                MediaKind::Video => &mut m.video,
                MediaKind::Audio => &mut m.audio,
                MediaKind::Document => &mut m.document,
                MediaKind::Sticker => &mut m.sticker,
            };
            if slot.is_some() {
                return Err(ApiError::invalid(format!(
                    "{} is given both as a file part and in the message",
                    kind.as_str()
                )));
            }
            *slot = Some(body);
        }
        Ok(SendBody(m))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    lat: f64,
    lng: f64,
    name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollBody {
    name: String,
    options: Vec<String>,
    /// How many options a voter may pick (default 1; 0: any number).
    selectable: Option<u32>,
}

/// A new text for a message the instance sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    /// The chat the message is in (a JID or a phone number).
    chat: String,
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatQuery {
    chat: String,
}

fn chat_of(given: &str) -> ApiResult<String> {
    recipient(given).ok_or_else(|| {
        ApiError::invalid(format!(
            "recipient {given:?} is neither a JID (user@server) nor a phone number"
        ))
    })
}

/// The file behind a media body: fetched or decoded, bounded.
async fn media_bytes(
    st: &ApiState,
    instance: &str,
    key: &str,
    m: &MediaBody,
    max: u64,
) -> ApiResult<(bytes::Bytes, Option<String>, Option<String>)> {
    let too_big = |n: u64| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{key}: {n} bytes is more than the limit of {} MiB ([script] max_media_mb)",
                max / (1024 * 1024)
            ),
        )
    };
    if let Some(raw) = &m.raw {
        if raw.len() as u64 > max {
            return Err(too_big(raw.len() as u64));
        }
        return Ok((raw.clone(), None, None));
    }
    match (&m.url, &m.base64) {
        (Some(_), Some(_)) | (None, None) => Err(ApiError::invalid(format!(
            "{key} needs exactly one of url and base64"
        ))),
        (None, Some(b64)) => {
            // Checked before decoding: base64 is 4 bytes per 3.
            if (b64.len() as u64 / 4).saturating_mul(3) > max {
                return Err(too_big(b64.len() as u64 / 4 * 3));
            }
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| ApiError::invalid(format!("{key}.base64: {e}")))?;
            Ok((data.into(), None, None))
        }
        (Some(url), None) => {
            let http = st.app.scripts.http();
            let resp = http
                .request(instance, HttpRequest::get(url.clone()))
                .await
                .map_err(|e| match e {
                    HttpError::InvalidUrl { .. }
                    | HttpError::Scheme(_)
                    | HttpError::Refused { .. } => ApiError::invalid(format!("{key}.url: {e}")),
                    HttpError::BodyTooLarge { .. } => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("{key}.url: {e}"),
                    ),
                    other => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "media_fetch_failed",
                        format!("{key}.url: {other}"),
                    ),
                })?;
            if !(200..300).contains(&resp.status) {
                return Err(ApiError::invalid(format!(
                    "{key}.url answered {}",
                    resp.status
                )));
            }
            if resp.body.len() as u64 > max {
                return Err(too_big(resp.body.len() as u64));
            }
            let mime = resp
                .header("content-type")
                .map(str::to_string)
                .filter(|m| !m.starts_with("application/octet-stream"));
            let name = url::Url::parse(url).ok().and_then(|u| {
                u.path_segments()
                    .and_then(|mut s| s.next_back().map(str::to_string))
                    .filter(|s| !s.is_empty())
            });
            Ok((resp.body.into(), mime, name))
        }
    }
}

/// The request as checked content (media fetched or decoded).
pub(super) async fn content(
    st: &ApiState,
    instance: &str,
    req: SendMessage,
) -> ApiResult<(String, Content)> {
    let to = chat_of(&req.to)?;
    let max = st.app.scripts.config().max_media;
    let quote = match (req.quote, req.quote_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("give quote or quote_id, not both"));
        }
        (q, qi) => q.or(qi),
    };
    let mut kinds: Vec<(MediaKind, MediaBody)> = [
        (MediaKind::Image, req.image),
        (MediaKind::Video, req.video),
        (MediaKind::Audio, req.audio),
        (MediaKind::Document, req.document),
        (MediaKind::Sticker, req.sticker),
    ]
    .into_iter()
    .filter_map(|(k, m)| m.map(|m| (k, m)))
    .collect();
    if kinds.len() > 1 {
        let names: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
        return Err(ApiError::invalid(format!(
            "one message carries one media file; got {}",
            names.join(" and ")
        )));
    }
    let mut content = Content {
        quote,
        ..Content::default()
    };
    if let Some((kind, m)) = kinds.pop() {
        let key = kind.as_str();
        let (data, fetched_mime, url_name) = media_bytes(st, instance, key, &m, max).await?;
        if data.is_empty() {
            return Err(ApiError::invalid(format!("{key}: the file is empty")));
        }
        let file_name = req
            .file_name
            .or(m.file_name.clone())
            .map(|n| display_name(&n))
            .or(url_name.filter(|_| kind == MediaKind::Document));
        let mime = req
            .mime
            .or(m.mime.clone())
            .or(fetched_mime)
            .filter(|m| !m.trim().is_empty())
            .or_else(|| {
                file_name
                    .as_deref()
                    .and_then(mime_from_name)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| kind.default_mime().to_string());
        if mime.len() > 200 || mime.chars().any(|c| c.is_control()) {
            return Err(ApiError::invalid(format!(
                "{key}: {mime:?} is not a media type"
            )));
        }
        let caption = match (req.caption, req.text) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "text and caption both given: a media message has one caption",
                ));
            }
            (c, t) => c.or(t),
        };
        content.media = Some(OutMedia {
            kind,
            size: data.len() as u64,
            data: MediaData::Bytes(data),
            mime,
            file_name,
            caption,
            voice: req.voice.unwrap_or(false),
        });
    } else {
        for (key, set) in [
            ("caption", req.caption.is_some()),
            ("file_name", req.file_name.is_some()),
            ("mime", req.mime.is_some()),
            ("voice", req.voice.is_some()),
        ] {
            if set {
                return Err(ApiError::invalid(format!(
                    "{key} is for a media file (image, video, audio, document or sticker), and none was given"
                )));
            }
        }
        content.text = req.text;
    }
    content.location = req.location.map(|l| Location {
        lat: l.lat,
        lng: l.lng,
        name: l.name,
    });
    content.poll = req.poll.map(|p| Poll {
        name: p.name,
        options: p.options,
        selectable: p.selectable.unwrap_or(1),
    });
    for j in req.mentions.unwrap_or_default() {
        let jid = crate::channel::recipient(&j)
            .map_err(|e| ApiError::invalid(format!("mentions: {e}")))?;
        content.mentions.push(jid);
    }
    content.check().map_err(ApiError::invalid)?;
    Ok((to, content))
}

/// An edit or revoke: only while open (it refers to a message on the
/// server, nothing to hold for later).
async fn send_now(st: &ApiState, name: &str, out: Outgoing) -> ApiResult<(StatusCode, Json<Sent>)> {
    let h = handle(st, name)?;
    match h.send(out).await {
        Ok(id) => Ok((StatusCode::ACCEPTED, Json(Sent { id, queued: false }))),
        Err(e) => Err(super::send_refused(name, &h, e, "")),
    }
}

fn message_id(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(format!("{id:?} is not a message id")));
    }
    Ok(())
}

#[utoipa::path(patch, path = "/v1/instances/{name}/messages/{id}",
    params(("name" = String, Path), ("id" = String, Path, description = "a message the instance sent")),
    request_body = EditMessage,
    responses((status = 202, body = Sent, description = "the edit's own id"),
        (status = 409, body = ErrorBody, description = "not open"), (status = 422, body = ErrorBody)))]
pub(super) async fn edit_message(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    body: Result<Json<EditMessage>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    caller.reaches(&name)?;
    let Json(req) = body?;
    message_id(&id)?;
    let chat = chat_of(&req.chat)?;
    if req.text.is_empty() {
        return Err(ApiError::invalid("text is empty"));
    }
    send_now(&st, &name, Outgoing::edit(chat, id, req.text)).await
}

#[utoipa::path(delete, path = "/v1/instances/{name}/messages/{id}",
    params(("name" = String, Path), ("id" = String, Path, description = "a message the instance sent"),
        ("chat" = String, Query, description = "the chat the message is in")),
    responses((status = 202, body = Sent, description = "the revoke's own id"),
        (status = 409, body = ErrorBody, description = "not open"), (status = 422, body = ErrorBody)))]
pub(super) async fn revoke_message(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath((name, id)): UrlPath<(String, String)>,
    query: Result<Query<ChatQuery>, QueryRejection>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    caller.reaches(&name)?;
    let Query(q) = query?;
    message_id(&id)?;
    let chat = chat_of(&q.chat)?;
    send_now(&st, &name, Outgoing::revoke(chat, id)).await
}

#[utoipa::path(get, path = "/v1/instances/{name}/media/{id}",
    params(("name" = String, Path), ("id" = String, Path, description = "the id of a received message whose media a script downloaded")),
    responses((status = 200, description = "the file, with its type"),
        (status = 404, body = ErrorBody, description = "not downloaded (or no such message)")))]
pub(super) async fn get_media(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> ApiResult<Response> {
    caller.reaches(&name)?;
    handle(&st, &name)?;
    let dir = st
        .app
        .scripts
        .config()
        .media_dir
        .join(safe_component(&name));
    let stem = safe_component(&id);
    let Some(path) = find_download(&dir, &stem).await else {
        return Err(ApiError::not_found(format!(
            "no downloaded media for message {id:?} of {name:?}"
        )));
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found(format!("no downloaded media for message {id:?}")))?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mime = mime_from_name(&file_name).unwrap_or("application/octet-stream");
    let mut resp = (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response();
    if let Some(len) = len {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    Ok(resp)
}

/// The finished download of `stem` (`<stem>.<ext>`; `.part` files are
/// downloads in progress).
async fn find_download(dir: &std::path::Path, stem: &str) -> Option<std::path::PathBuf> {
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some((s, ext)) = name.split_once('.') else {
            continue;
        };
        if s == stem && !ext.contains('.') && e.file_type().await.is_ok_and(|t| t.is_file()) {
            return Some(e.path());
        }
    }
    None
}
