//! What `bot.send` and `m:reply` take: a string, or a content table
//! (`text`, one media key, `caption`, `file_name`, `mime`, `voice`,
//! `mentions`, `quote`, `location`, `poll`), read into a checked
//! [`Content`].
//!
//! Media comes from a path or from bytes. A path is the only way a script
//! reads a file, so it is held to two folders: the scripts folder and the
//! data dir's `media/` (where `m:download` writes). A relative path is
//! looked up in the scripts folder, then in `media/`; an absolute one must
//! lie in one of them. Either way the file's real path (symlinks resolved)
//! decides, so `../`, absolute paths elsewhere and symlinks that lead out
//! are all refused the same way.

use std::path::{Path, PathBuf};

use mlua::{Table, Value};

use crate::channel::rich::{display_name, mime_from_name};
use crate::channel::{Content, Location, MediaData, MediaKind, OutMedia, Poll, recipient};

/// What a script's media may be read from, and how big it may be.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    pub scripts: PathBuf,
    pub media: PathBuf,
    pub max_bytes: u64,
}

/// Why content could not be read: a value of the wrong type (a mistake in
/// the script, raised at its line) or content that is not valid (`nil,
/// err`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentError {
    Raise(String),
    Invalid(String),
}

const KEYS: &[&str] = &[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "caption",
    "file_name",
    "mime",
    "voice",
    "mentions",
    "quote",
    "location",
    "poll",
];

type R<T> = Result<T, ContentError>;

fn invalid<T>(m: impl Into<String>) -> R<T> {
    Err(ContentError::Invalid(m.into()))
}

/// A string field (numbers as Lua prints them).
fn string(t: &Table, key: &str) -> R<Option<String>> {
    match t.raw_get::<Value>(key).map_err(lua_err)? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        Value::Integer(n) => Ok(Some(n.to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => invalid(format!("{key} must be a string, got {}", other.type_name())),
    }
}

fn number(v: Value, what: &str) -> R<f64> {
    match v {
        Value::Integer(n) => Ok(n as f64),
        Value::Number(n) => Ok(n),
        other => invalid(format!(
            "{what} must be a number, got {}",
            other.type_name()
        )),
    }
}

fn lua_err(e: mlua::Error) -> ContentError {
    ContentError::Invalid(e.to_string())
}

/// The strings of a list (`{"a", "b"}`), refusing anything else.
fn string_list(v: Value, what: &str) -> R<Vec<String>> {
    let Value::Table(t) = v else {
        return invalid(format!(
            "{what} must be a list of strings, got {}",
            v.type_name()
        ));
    };
    let n = t.raw_len();
    let mut out = Vec::with_capacity(n);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(lua_err)?;
        if !matches!(k, Value::Integer(i) if i >= 1 && i as usize <= n) {
            return invalid(format!("{what} must be a list (1, 2, 3, ...) of strings"));
        }
    }
    for i in 1..=n {
        match t.raw_get::<Value>(i).map_err(lua_err)? {
            Value::String(s) => out.push(s.to_string_lossy()),
            other => {
                return invalid(format!(
                    "{what}[{i}] must be a string, got {}",
                    other.type_name()
                ));
            }
        }
    }
    Ok(out)
}

/// Refuses keys a table must not have: a misspelt key would otherwise be
/// silently dropped.
fn known_keys(t: &Table, known: &[&str], what: &str) -> R<()> {
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(lua_err)?;
        let name = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => format!("a {} key", other.type_name()),
        };
        if !known.contains(&name.as_str()) {
            return invalid(format!(
                "{what}: unknown key {name:?} (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// The file behind `given` if a script may read it: a regular file in one
/// of the two folders, real path checked.
pub fn resolve(policy: &MediaPolicy, given: &str, what: &str) -> Result<(PathBuf, u64), String> {
    if given.is_empty() || given.contains('\0') {
        return Err(format!("{what}: not a file name: {given:?}"));
    }
    let roots: Vec<PathBuf> = [&policy.scripts, &policy.media]
        .into_iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    let p = Path::new(given);
    let candidates: Vec<PathBuf> = if p.is_absolute() {
        vec![p.to_path_buf()]
    } else {
        [&policy.scripts, &policy.media]
            .into_iter()
            .map(|r| r.join(p))
            .collect()
    };
    for c in candidates {
        let real = match std::fs::canonicalize(&c) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{what}: {given}: {e}")),
        };
        if !roots.iter().any(|root| real.starts_with(root)) {
            return Err(format!(
                "{what}: {given:?} is outside the scripts folder and the media folder; only files there can be sent"
            ));
        }
        let meta = std::fs::metadata(&real).map_err(|e| format!("{what}: {given}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{what}: {given:?} is not a file"));
        }
        if meta.len() > policy.max_bytes {
            return Err(too_big(what, meta.len(), policy.max_bytes));
        }
        return Ok((real, meta.len()));
    }
    Err(format!(
        "{what}: no file {given:?} in the scripts folder or the media folder"
    ))
}

fn too_big(what: &str, size: u64, max: u64) -> String {
    format!(
        "{what}: {size} bytes is more than the limit of {} MiB ([script] max_media_mb)",
        max / (1024 * 1024)
    )
}

/// One media key's value: a path, or `{data=, mime=, file_name=}`.
fn media(policy: &MediaPolicy, kind: MediaKind, v: Value, t: &Table) -> R<OutMedia> {
    let key = kind.as_str();
    let mut mime = string(t, "mime")?;
    let mut file_name = string(t, "file_name")?;
    let (data, size, name_hint) = match v {
        Value::String(s) => {
            let given = s.to_string_lossy();
            let (path, size) = resolve(policy, &given, key).map_err(ContentError::Invalid)?;
            let name = display_name(&given);
            (MediaData::File(path), size, Some(name))
        }
        Value::Table(d) => {
            known_keys(&d, &["data", "mime", "file_name"], key)?;
            let bytes = match d.raw_get::<Value>("data").map_err(lua_err)? {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Nil => return invalid(format!("{key}: {{data=...}} needs data")),
                other => {
                    return invalid(format!(
                        "{key}: data must be a string of bytes, got {}",
                        other.type_name()
                    ));
                }
            };
            if bytes.is_empty() {
                return invalid(format!("{key}: data is empty"));
            }
            if bytes.len() as u64 > policy.max_bytes {
                return invalid(too_big(key, bytes.len() as u64, policy.max_bytes));
            }
            if let Some(m) = string(&d, "mime")? {
                mime.get_or_insert(m);
            }
            if let Some(n) = string(&d, "file_name")? {
                file_name.get_or_insert(n);
            }
            let size = bytes.len() as u64;
            (MediaData::Bytes(bytes.into()), size, None)
        }
        other => {
            return invalid(format!(
                "{key} must be a file path or {{data=, mime=}}, got {}",
                other.type_name()
            ));
        }
    };
    let file_name = file_name.map(|n| display_name(&n)).or(match kind {
        MediaKind::Document => name_hint.clone(),
        _ => None,
    });
    let mime = mime
        .filter(|m| !m.trim().is_empty())
        .or_else(|| {
            file_name
                .as_deref()
                .or(name_hint.as_deref())
                .and_then(mime_from_name)
                .map(str::to_string)
        })
        .unwrap_or_else(|| kind.default_mime().to_string());
    if mime.len() > 200 || mime.chars().any(|c| c.is_control()) {
        return invalid(format!("{key}: {mime:?} is not a media type"));
    }
    let voice = match t.raw_get::<Value>("voice").map_err(lua_err)? {
        Value::Nil => false,
        Value::Boolean(b) => b,
        other => {
            return invalid(format!(
                "voice must be true or false, got {}",
                other.type_name()
            ));
        }
    };
    Ok(OutMedia {
        kind,
        data,
        mime,
        file_name: file_name.or(name_hint.filter(|_| kind == MediaKind::Document)),
        caption: None,
        voice,
        size,
    })
}

fn location(v: Value) -> R<Location> {
    let Value::Table(t) = v else {
        return invalid(format!(
            "location must be {{lat=, lng=, name=}}, got {}",
            v.type_name()
        ));
    };
    known_keys(&t, &["lat", "lng", "name"], "location")?;
    Ok(Location {
        lat: number(t.raw_get("lat").map_err(lua_err)?, "location.lat")?,
        lng: number(t.raw_get("lng").map_err(lua_err)?, "location.lng")?,
        name: string(&t, "name")?,
    })
}

fn poll(v: Value) -> R<Poll> {
    let Value::Table(t) = v else {
        return invalid(format!(
            "poll must be {{name=, options={{...}}, selectable=}}, got {}",
            v.type_name()
        ));
    };
    known_keys(&t, &["name", "options", "selectable"], "poll")?;
    let name = string(&t, "name")?.unwrap_or_default();
    let options = match t.raw_get::<Value>("options").map_err(lua_err)? {
        Value::Nil => Vec::new(),
        v => string_list(v, "poll.options")?,
    };
    let selectable = match t.raw_get::<Value>("selectable").map_err(lua_err)? {
        Value::Nil => 1,
        v => {
            let n = number(v, "poll.selectable")?;
            if !(n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 1000.0) {
                return invalid(format!(
                    "poll.selectable must be a whole number >= 0, got {n}"
                ));
            }
            n as u32
        }
    };
    Ok(Poll {
        name,
        options,
        selectable,
    })
}

/// Reads what a send was given: a string (or number) is a text; a table
/// is content. Anything else is a mistake in the script.
pub fn parse(v: Value, policy: &MediaPolicy, what: &str) -> R<Content> {
    let t = match v {
        Value::String(s) => {
            return Ok(Content {
                text: Some(s.to_string_lossy()),
                ..Content::default()
            });
        }
        Value::Integer(n) => {
            return Ok(Content {
                text: Some(n.to_string()),
                ..Content::default()
            });
        }
        Value::Number(n) => {
            return Ok(Content {
                text: Some(n.to_string()),
                ..Content::default()
            });
        }
        Value::Table(t) => t,
        other => {
            return Err(ContentError::Raise(format!(
                "{what} needs a text or a content table, got {}",
                other.type_name()
            )));
        }
    };
    known_keys(&t, KEYS, what)?;
    let mut content = Content {
        text: string(&t, "text")?,
        quote: string(&t, "quote")?,
        ..Content::default()
    };
    let mut kinds = Vec::new();
    for kind in MediaKind::ALL {
        let v: Value = t.raw_get(kind.as_str()).map_err(lua_err)?;
        if !v.is_nil() {
            kinds.push((kind, v));
        }
    }
    if kinds.len() > 1 {
        let names: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
        return invalid(format!(
            "one message carries one media file; got {}",
            names.join(" and ")
        ));
    }
    let caption = string(&t, "caption")?;
    if let Some((kind, v)) = kinds.pop() {
        let mut m = media(policy, kind, v, &t)?;
        m.caption = match (caption, content.text.take()) {
            (Some(_), Some(_)) => {
                return invalid("text and caption both given: a media message has one caption");
            }
            (c, t) => c.or(t),
        };
        content.media = Some(m);
    } else {
        for key in ["caption", "file_name", "mime", "voice"] {
            if !t.raw_get::<Value>(key).map_err(lua_err)?.is_nil() {
                return invalid(format!(
                    "{key} is for a media file (image, video, audio, document or sticker), and none was given"
                ));
            }
        }
    }
    if let Some(v) = Some(t.raw_get::<Value>("location").map_err(lua_err)?).filter(|v| !v.is_nil())
    {
        content.location = Some(location(v)?);
    }
    if let Some(v) = Some(t.raw_get::<Value>("poll").map_err(lua_err)?).filter(|v| !v.is_nil()) {
        content.poll = Some(poll(v)?);
    }
    match t.raw_get::<Value>("mentions").map_err(lua_err)? {
        Value::Nil => {}
        v => {
            for j in string_list(v, "mentions")? {
                content.mentions.push(
                    recipient(&j).map_err(|e| ContentError::Invalid(format!("mentions: {e}")))?,
                );
            }
        }
    }
    content.check().map_err(ContentError::Invalid)?;
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    struct Dirs {
        _tmp: tempfile::TempDir,
        policy: MediaPolicy,
        outside: PathBuf,
    }

    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let scripts = tmp.path().join("scripts");
        let media = tmp.path().join("data/media");
        std::fs::create_dir_all(&scripts).unwrap();
        std::fs::create_dir_all(media.join("wa")).unwrap();
        std::fs::write(scripts.join("cat.jpg"), b"jpeg bytes").unwrap();
        std::fs::write(media.join("wa/in.ogg"), b"ogg bytes").unwrap();
        let outside = tmp.path().join("secret.txt");
        std::fs::write(&outside, b"top secret").unwrap();
        Dirs {
            policy: MediaPolicy {
                scripts,
                media,
                max_bytes: 1024,
            },
            outside,
            _tmp: tmp,
        }
    }

    fn run(d: &Dirs, src: &str) -> R<Content> {
        let lua = Lua::new();
        let v: Value = lua.load(src).eval().unwrap();
        parse(v, &d.policy, "bot.send")
    }

    fn invalid_text(r: R<Content>) -> String {
        match r {
            Err(ContentError::Invalid(m)) => m,
            other => panic!("expected an invalid content, got {other:?}"),
        }
    }

    #[test]
    fn strings_are_text_and_tables_are_content() {
        let d = dirs();
        assert_eq!(run(&d, "'hi'").unwrap().text.as_deref(), Some("hi"));
        let c = run(&d, "{image = 'cat.jpg', caption = 'a cat'}").unwrap();
        let m = c.media.unwrap();
        assert_eq!(m.kind, MediaKind::Image);
        assert_eq!(m.mime, "image/jpeg");
        assert_eq!(m.caption.as_deref(), Some("a cat"));
        assert_eq!(m.size, 10);
        assert!(matches!(m.data, MediaData::File(ref p) if p.ends_with("cat.jpg")));
        // Relative to media/ when not in the scripts folder; absolute inside is fine.
        let c = run(&d, "{audio = 'wa/in.ogg', voice = true}").unwrap();
        assert!(c.media.as_ref().unwrap().voice);
        let abs = d.policy.media.join("wa/in.ogg").display().to_string();
        assert!(run(&d, &format!("{{document = {abs:?}}}")).is_ok());
        let c = run(
            &d,
            "{document = {data = 'raw', mime = 'text/plain', file_name = 'a.txt'}}",
        )
        .unwrap();
        let m = c.media.unwrap();
        assert_eq!(
            (m.mime.as_str(), m.file_name.as_deref()),
            ("text/plain", Some("a.txt"))
        );
        assert!(matches!(m.data, MediaData::Bytes(ref b) if &b[..] == b"raw"));
        let c = run(
            &d,
            "{text = 'hi @1555', mentions = {'15551234567'}, quote = 'X1'}",
        )
        .unwrap();
        assert_eq!(c.mentions, ["15551234567@s.whatsapp.net"]);
        assert_eq!(c.quote.as_deref(), Some("X1"));
        let c = run(
            &d,
            "{poll = {name = 'Lunch?', options = {'pizza', 'sushi'}}}",
        )
        .unwrap();
        assert_eq!(c.poll.unwrap().selectable, 1);
        let c = run(
            &d,
            "{location = {lat = 52.52, lng = 13.405, name = 'Berlin'}}",
        )
        .unwrap();
        assert_eq!(c.location.unwrap().name.as_deref(), Some("Berlin"));
    }

    #[test]
    fn paths_that_escape_the_two_folders_are_refused() {
        let d = dirs();
        let outside = d.outside.display().to_string();
        for src in [
            "{image = '../secret.txt'}".to_string(),
            "{image = '../../secret.txt'}".to_string(),
            format!("{{document = {outside:?}}}"),
            "{document = '/etc/passwd'}".to_string(),
        ] {
            let e = invalid_text(run(&d, &src));
            assert!(e.contains("outside the scripts folder"), "{src}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&d.outside, d.policy.scripts.join("link.txt")).unwrap();
            let e = invalid_text(run(&d, "{document = 'link.txt'}"));
            assert!(e.contains("outside"), "{e}");
            // A link that stays inside is fine.
            std::os::unix::fs::symlink(
                d.policy.scripts.join("cat.jpg"),
                d.policy.scripts.join("inside.jpg"),
            )
            .unwrap();
            assert!(run(&d, "{image = 'inside.jpg'}").is_ok());
        }
        let e = invalid_text(run(&d, "{image = 'missing.jpg'}"));
        assert!(e.contains("no file"), "{e}");
        std::fs::create_dir(d.policy.scripts.join("sub")).unwrap();
        assert!(invalid_text(run(&d, "{image = 'sub'}")).contains("not a file"));
    }

    #[test]
    fn invalid_content_names_the_problem() {
        let d = dirs();
        std::fs::write(d.policy.scripts.join("big.bin"), vec![0u8; 2048]).unwrap();
        for (src, want) in [
            ("{image = 'cat.jpg', video = 'cat.jpg'}", "image and video"),
            ("{text = 'hi', colour = 'red'}", "unknown key \"colour\""),
            (
                "{poll = {name = 'x', options = {'only'}}}",
                "2 to 12 options",
            ),
            ("{text = 'a', caption = 'b'}", "caption is for a media file"),
            (
                "{image = 'cat.jpg', text = 'a', caption = 'b'}",
                "text and caption",
            ),
            ("{document = 'big.bin'}", "max_media_mb"),
            ("{image = {data = ''}}", "data is empty"),
            ("{image = {data = 'x', colour = 1}}", "unknown key"),
            (
                "{text = 'hi', location = {lat = 1, lng = 2}}",
                "text and location",
            ),
            (
                "{location = {lat = 'north', lng = 2}}",
                "location.lat must be a number",
            ),
            ("{mentions = {'nobody'}, text = 'x'}", "mentions"),
            ("{mentions = 'x', text = 'x'}", "list of strings"),
            ("{image = 42}", "file path or {data=, mime=}"),
            ("{}", "nothing to send"),
            (
                "{image = 'cat.jpg', voice = true}",
                "voice = true is for audio",
            ),
        ] {
            let e = invalid_text(run(&d, src));
            assert!(e.contains(want), "{src}: {e}");
        }
        assert!(matches!(run(&d, "true"), Err(ContentError::Raise(_))));
    }
}
