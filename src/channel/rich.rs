//! What messages carry beyond text: media, quotes, mentions, locations,
//! polls (both ways), receipts, and the actions that are not messages
//! (read receipts, typing, downloads). Plain data shared by every channel,
//! the host, the scripts and the API, so one set of rules says what content
//! is valid.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The kinds of media a message can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    #[default]
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    pub const ALL: [MediaKind; 5] = [
        MediaKind::Image,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Document,
        MediaKind::Sticker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    pub fn parse(s: &str) -> Option<MediaKind> {
        MediaKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The type a file of this kind is sent as when nobody says.
    pub fn default_mime(self) -> &'static str {
        match self {
            MediaKind::Image => "image/jpeg",
            MediaKind::Video => "video/mp4",
            MediaKind::Audio => "audio/ogg; codecs=opus",
            MediaKind::Document => "application/octet-stream",
            MediaKind::Sticker => "image/webp",
        }
    }
}

/// Where an inbound media file's bytes are. Not shown to scripts or in
/// events: it is what a download needs (the CDN path and keys, or the
/// console's local file).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "lowercase")]
pub enum MediaRef {
    #[default]
    None,
    /// WhatsApp's CDN: encrypted with `media_key`, checked by both hashes.
    Cdn {
        direct_path: String,
        #[serde(with = "hex_bytes")]
        media_key: Vec<u8>,
        #[serde(with = "hex_bytes")]
        file_sha256: Vec<u8>,
        #[serde(with = "hex_bytes")]
        file_enc_sha256: Vec<u8>,
    },
    /// A file on this machine (what the console's `/image PATH` sent in).
    Local { path: PathBuf },
}

pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// An inbound message's media, as `m.media` shows it (`source` aside).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MediaInfo {
    pub kind: MediaKind,
    pub mime: Option<String>,
    /// Bytes, as the sender declared them.
    pub size: Option<u64>,
    pub file_name: Option<String>,
    pub seconds: Option<u32>,
    /// An audio message recorded as a voice note.
    pub voice: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub source: MediaRef,
}

/// The message a reply quotes (`m.quoted`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quoted {
    pub id: String,
    pub sender: Option<String>,
    pub text: Option<String>,
    /// The quoted message's type ("text", "image", ...), when it came along.
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lng: f64,
    pub name: Option<String>,
}

impl Location {
    pub fn check(&self) -> Result<(), String> {
        if !(self.lat.is_finite() && (-90.0..=90.0).contains(&self.lat)) {
            return Err(format!(
                "location: lat must be between -90 and 90, got {}",
                self.lat
            ));
        }
        if !(self.lng.is_finite() && (-180.0..=180.0).contains(&self.lng)) {
            return Err(format!(
                "location: lng must be between -180 and 180, got {}",
                self.lng
            ));
        }
        Ok(())
    }
}

/// The most options a WhatsApp poll may have.
pub const MAX_POLL_OPTIONS: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Poll {
    pub name: String,
    pub options: Vec<String>,
    /// How many options a voter may pick; 0: any number.
    pub selectable: u32,
}

impl Poll {
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("poll: the name is empty".into());
        }
        let n = self.options.len();
        if !(2..=MAX_POLL_OPTIONS).contains(&n) {
            return Err(format!(
                "poll: needs 2 to {MAX_POLL_OPTIONS} options, got {n}"
            ));
        }
        for (i, o) in self.options.iter().enumerate() {
            if o.trim().is_empty() {
                return Err(format!("poll: option {} is empty", i + 1));
            }
            if self.options[..i].contains(o) {
                return Err(format!("poll: option {o:?} is there twice"));
            }
        }
        if self.selectable as usize > n {
            return Err(format!(
                "poll: selectable is {} but there are only {n} options",
                self.selectable
            ));
        }
        Ok(())
    }
}

/// Where the bytes of a media send come from. In the outbox (JSON) bytes
/// are base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaData {
    /// A file already checked to be one a sender may read.
    File(PathBuf),
    Bytes(#[serde(with = "base64_bytes")] bytes::Bytes),
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(bytes::Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// A media file to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutMedia {
    pub kind: MediaKind,
    pub data: MediaData,
    pub mime: String,
    pub file_name: Option<String>,
    pub caption: Option<String>,
    /// Audio as a voice note.
    pub voice: bool,
    /// Bytes (known before sending: limits and the console line use it).
    pub size: u64,
}

/// A message beyond plain text: one body (text, media, location or poll),
/// mentions and a quote.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Content {
    pub text: Option<String>,
    pub media: Option<OutMedia>,
    pub location: Option<Location>,
    pub poll: Option<Poll>,
    pub mentions: Vec<String>,
    /// The id of a message to quote.
    pub quote: Option<String>,
}

impl Content {
    /// What makes content invalid whatever its source (a script or the
    /// API): no body, two bodies, a caption without media, a bad poll or
    /// location, mentions that are no JIDs.
    pub fn check(&self) -> Result<(), String> {
        let bodies: Vec<&str> = [
            ("text", self.text.is_some() && self.media.is_none()),
            ("media", self.media.is_some()),
            ("location", self.location.is_some()),
            ("poll", self.poll.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| n)
        .collect();
        match bodies.len() {
            0 => {
                return Err(
                    "nothing to send: give text, a media file, a location or a poll".into(),
                );
            }
            1 => {}
            _ => {
                return Err(format!(
                    "one message carries one of text, media, location or poll; got {}",
                    bodies.join(" and ")
                ));
            }
        }
        if let Some(t) = &self.text
            && t.is_empty()
            && self.media.is_none()
        {
            return Err("text is empty".into());
        }
        if let Some(p) = &self.poll {
            p.check()?;
        }
        if let Some(l) = &self.location {
            l.check()?;
        }
        if let Some(m) = &self.media
            && m.voice
            && m.kind != MediaKind::Audio
        {
            return Err(format!(
                "voice = true is for audio, not {}",
                m.kind.as_str()
            ));
        }
        for j in &self.mentions {
            super::recipient(j).map_err(|e| format!("mentions: {e}"))?;
        }
        Ok(())
    }

    /// The text that goes out (a media caption or a plain text).
    pub fn body_text(&self) -> Option<&str> {
        match &self.media {
            Some(m) => m.caption.as_deref(),
            None => self.text.as_deref(),
        }
    }
}

/// How far a sent message got, as the recipient's receipts say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptKind {
    Delivered,
    Read,
    Played,
}

impl ReceiptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Read => "read",
            ReceiptKind::Played => "played",
        }
    }
}

/// A receipt for messages the bot sent (`on_receipt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub chat: String,
    pub sender: String,
    pub ids: Vec<String>,
    pub kind: ReceiptKind,
}

/// What a channel does that is not a message: no id, nothing queued for
/// the next open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read receipts for messages of `chat` (`sender`: who wrote them, in
    /// a group).
    Read {
        chat: String,
        sender: Option<String>,
        ids: Vec<String>,
    },
    /// The typing indicator in `chat`, on or off.
    Typing { chat: String, on: bool },
    /// Fetches (and for WhatsApp decrypts and checks) a message's media
    /// into the file `to`, refusing more than `max_bytes`.
    Download {
        media: MediaInfo,
        to: PathBuf,
        max_bytes: u64,
    },
}

/// A file type from its name, for media whose type nobody gave.
pub fn mime_from_name(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    MIME_TABLE.iter().find(|(e, _)| *e == ext).map(|(_, m)| *m)
}

/// A file name extension for a type, for downloads saved under an id.
pub fn extension_for_mime(mime: &str) -> Option<&'static str> {
    let base = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    MIME_TABLE
        .iter()
        .find(|(_, m)| m.split(';').next().unwrap_or("") == base)
        .map(|(e, _)| *e)
}

/// The media types WhatsApp carries, by extension (the first of a type is
/// the one a download is saved with).
const MIME_TABLE: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("mp4", "video/mp4"),
    ("3gp", "video/3gpp"),
    ("mov", "video/quicktime"),
    ("webm", "video/webm"),
    ("ogg", "audio/ogg; codecs=opus"),
    ("opus", "audio/ogg; codecs=opus"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("wav", "audio/wav"),
    ("amr", "audio/amr"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("csv", "text/csv"),
    ("json", "application/json"),
    ("zip", "application/zip"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("bin", "application/octet-stream"),
];

/// A name that is safe as one path component (downloads are saved under a
/// message id, which comes from outside): anything else is replaced.
pub fn safe_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The last component of a file name someone sent, cut to something
/// printable, for display and `file_name`.
pub fn display_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Content {
        Content {
            text: Some(t.into()),
            ..Content::default()
        }
    }

    #[test]
    fn content_needs_exactly_one_body() {
        assert!(text("hi").check().is_ok());
        assert!(
            Content::default()
                .check()
                .unwrap_err()
                .contains("nothing to send")
        );
        let two = Content {
            location: Some(Location {
                lat: 1.0,
                lng: 2.0,
                name: None,
            }),
            ..text("hi")
        };
        assert!(two.check().unwrap_err().contains("text and location"));
        assert!(text("").check().unwrap_err().contains("empty"));
    }

    #[test]
    fn polls_and_locations_are_checked() {
        let poll = |options: &[&str], selectable| Content {
            poll: Some(Poll {
                name: "Lunch?".into(),
                options: options.iter().map(|s| s.to_string()).collect(),
                selectable,
            }),
            ..Content::default()
        };
        assert!(poll(&["a", "b"], 1).check().is_ok());
        assert!(poll(&["a", "b"], 0).check().is_ok());
        assert!(
            poll(&["a"], 1)
                .check()
                .unwrap_err()
                .contains("2 to 12 options")
        );
        assert!(poll(&["a", "a"], 1).check().unwrap_err().contains("twice"));
        assert!(poll(&["a", "b"], 3).check().unwrap_err().contains("only 2"));
        let at = |lat, lng| Content {
            location: Some(Location {
                lat,
                lng,
                name: None,
            }),
            ..Content::default()
        };
        assert!(at(52.5, 13.4).check().is_ok());
        assert!(at(91.0, 0.0).check().unwrap_err().contains("lat"));
        assert!(at(0.0, f64::NAN).check().unwrap_err().contains("lng"));
    }

    #[test]
    fn mentions_must_be_jids_and_voice_is_for_audio() {
        let c = Content {
            mentions: vec!["not a jid".into()],
            ..text("hi")
        };
        assert!(c.check().unwrap_err().contains("mentions"));
        let image = Content {
            media: Some(OutMedia {
                kind: MediaKind::Image,
                data: MediaData::Bytes(bytes::Bytes::from_static(b"x")),
                mime: "image/png".into(),
                file_name: None,
                caption: None,
                voice: true,
                size: 1,
            }),
            ..Content::default()
        };
        assert!(image.check().unwrap_err().contains("voice"));
    }

    #[test]
    fn names_and_types() {
        assert_eq!(mime_from_name("cat.JPG"), Some("image/jpeg"));
        assert_eq!(mime_from_name("noext"), None);
        assert_eq!(extension_for_mime("audio/ogg; codecs=opus"), Some("ogg"));
        assert_eq!(extension_for_mime("image/jpeg"), Some("jpg"));
        assert_eq!(safe_component("../../etc/passwd"), "______etc_passwd");
        assert_eq!(safe_component(""), "_");
        assert_eq!(display_name("/tmp/a/b.pdf"), "b.pdf");
        assert_eq!(display_name("..\\x\n.txt"), "x.txt");
    }

    #[test]
    fn rich_sends_round_trip_through_the_outboxs_json() {
        let out = crate::channel::Outgoing::content(
            "1555@s.whatsapp.net",
            Content {
                media: Some(OutMedia {
                    kind: MediaKind::Audio,
                    data: MediaData::Bytes(bytes::Bytes::from_static(b"\x00\xffOggS")),
                    mime: "audio/ogg; codecs=opus".into(),
                    file_name: None,
                    caption: Some("hi".into()),
                    voice: true,
                    size: 6,
                }),
                mentions: vec!["1666@s.whatsapp.net".into()],
                quote: Some("Q1".into()),
                ..Content::default()
            },
        );
        let j = serde_json::to_string(&out).unwrap();
        assert!(j.contains("AP9PZ2dT"), "bytes as base64: {j}");
        assert_eq!(
            serde_json::from_str::<crate::channel::Outgoing>(&j).unwrap(),
            out
        );
        let poll = crate::channel::Outgoing::content(
            "1555@s.whatsapp.net",
            Content {
                location: Some(Location {
                    lat: 52.5,
                    lng: 13.4,
                    name: None,
                }),
                ..Content::default()
            },
        );
        let j = serde_json::to_string(&poll).unwrap();
        assert_eq!(
            serde_json::from_str::<crate::channel::Outgoing>(&j).unwrap(),
            poll
        );
    }

    #[test]
    fn media_refs_round_trip_as_json() {
        let r = MediaRef::Cdn {
            direct_path: "/v/t62/x".into(),
            media_key: vec![1, 2, 255],
            file_sha256: vec![3],
            file_enc_sha256: vec![4],
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains("\"0102ff\""), "{j}");
        assert_eq!(serde_json::from_str::<MediaRef>(&j).unwrap(), r);
    }
}
