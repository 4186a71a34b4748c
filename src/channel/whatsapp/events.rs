//! Library events → channel events: the close-reason table (see
//! `lifecycle::reason`), pairing, messages and receipts. Pure, so each
//! mapping is unit-tested with events built by hand.

use wacore::types::events::Event;
use wacore::types::presence::ReceiptType;

use super::incoming;
use crate::channel::{EventKind, Receipt, ReceiptKind};
use crate::lifecycle::{PairKind, ReasonKind};

/// The account's own ids, as known when an event arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnIds {
    pub jid: Option<String>,
    pub push_name: Option<String>,
}

pub(super) fn closed(
    code: Option<u16>,
    kind: Option<ReasonKind>,
    message: impl Into<String>,
) -> EventKind {
    EventKind::Closed {
        code,
        kind,
        message: Some(message.into()),
        retry_after_ms: None,
    }
}

/// A socket that ended with no stream error. A WebSocket close frame is the
/// server ending the connection on purpose (connection_closed, 428; its
/// `<xmlstreamend/>`, when it sent one, is handled off the read loop and may
/// be seen only after the close); EOF or an I/O error is a lost connection
/// (connection_lost).
pub(super) fn disconnected(reason: &wacore::net::DisconnectReason) -> EventKind {
    match reason {
        wacore::net::DisconnectReason::ServerClose { .. } => closed(
            Some(428),
            Some(ReasonKind::ConnectionClosed),
            format!("the server closed the connection: {reason}"),
        ),
        // No code: a bare 408 while pairing would read as the QR codes
        // running out.
        _ => closed(
            None,
            Some(ReasonKind::ConnectionLost),
            format!("disconnected: {reason}"),
        ),
    }
}

/// Library events → channel events (the close-reason table in
/// `lifecycle::reason`). Pure, so each mapping is unit-tested with events
/// built by hand.
pub fn map_event(event: &Event, own: Option<&OwnIds>) -> Vec<EventKind> {
    let own = own.cloned().unwrap_or_default();
    match event {
        Event::Connected(_) => vec![EventKind::Opened {
            jid: own.jid,
            push_name: own.push_name,
        }],
        Event::PairingQrCode(q) => vec![EventKind::PairingCode {
            code: q.code.clone(),
            kind: PairKind::Qr,
            expires_in_ms: q.timeout.as_millis() as u64,
        }],
        Event::PairingCode(p) => vec![EventKind::PairingCode {
            code: p.code.clone(),
            kind: PairKind::PairCode,
            expires_in_ms: p.timeout.as_millis() as u64,
        }],
        Event::PairSuccess(p) => vec![EventKind::PairSuccess {
            jid: Some(p.id.to_non_ad().to_string()),
        }],
        Event::PairError(p) => vec![closed(
            None,
            Some(ReasonKind::BadSession),
            format!("pairing failed: {}", p.error),
        )],
        // With a phone-code flow outstanding the library keeps the socket:
        // that code is still valid, so this is not a close.
        Event::PairingQrCodesExhausted(e) if !e.disconnected => Vec::new(),
        Event::PairingQrCodesExhausted(_) => vec![closed(
            Some(408),
            Some(ReasonKind::QrTimeout),
            "the pairing codes ran out",
        )],
        Event::PairingCodeError(e) => vec![closed(
            None,
            Some(ReasonKind::BadSession),
            format!("the pairing code request failed: {}", e.error),
        )],
        Event::StreamReplaced(_) => vec![closed(
            Some(440),
            Some(ReasonKind::Replaced),
            "another client took over the session",
        )],
        Event::ClientOutdated(_) => vec![closed(
            Some(405),
            Some(ReasonKind::ClientOutdated),
            "the server says this client is outdated",
        )],
        Event::TemporaryBan(b) => vec![EventKind::Closed {
            code: Some(402),
            kind: Some(ReasonKind::TempBanned),
            message: Some(format!("temporarily banned: {}", b.code)),
            retry_after_ms: u64::try_from(b.expire.num_milliseconds()).ok(),
        }],
        Event::LoggedOut(l) => {
            let code = u16::try_from(l.reason.code())
                .ok()
                .filter(|c| matches!(c, 401 | 403 | 406))
                .unwrap_or(401);
            vec![closed(
                Some(code),
                None,
                format!("logged out by the server ({:?})", l.reason),
            )]
        }
        Event::ConnectFailure(f) => {
            let code = u16::try_from(f.reason.code()).ok();
            let msg = f
                .message
                .clone()
                .unwrap_or_else(|| format!("{:?}", f.reason));
            vec![closed(code, None, format!("connect failure: {msg}"))]
        }
        // Only unknown or code-less stream errors arrive as this event, and
        // the library keeps the socket for them; the close (if any) follows.
        Event::StreamError(_) => Vec::new(),
        Event::Disconnected(d) => vec![disconnected(&d.reason)],
        Event::SelfPushNameUpdated(p) => vec![EventKind::AccountId {
            jid: own.jid,
            push_name: Some(p.new_name.clone()),
        }],
        Event::Messages(batch) => batch
            .messages
            .iter()
            .map(|m| EventKind::Message(incoming(&m.message, &m.info)))
            .collect(),
        Event::Receipt(r) => receipt(r).map(EventKind::Receipt).into_iter().collect(),
        Event::GroupUpdate(u) => super::groups::event_of(u)
            .map(|e| EventKind::Group(Box::new(e)))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// A receipt from whoever got the bot's messages; not the bot's own other
/// devices, nor the protocol's internal kinds (retry, sender, ...).
fn receipt(r: &wacore::types::events::Receipt) -> Option<Receipt> {
    let kind = match r.r#type {
        ReceiptType::Delivered => ReceiptKind::Delivered,
        ReceiptType::Read => ReceiptKind::Read,
        ReceiptType::Played => ReceiptKind::Played,
        _ => return None,
    };
    if r.source.is_from_me || r.message_ids.is_empty() {
        return None;
    }
    Some(Receipt {
        chat: r.source.chat.to_string(),
        sender: r.source.sender.to_non_ad().to_string(),
        ids: r.message_ids.iter().map(|id| id.to_string()).collect(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wacore::net::DisconnectReason;
    use wacore::types::events::{
        ClientOutdated, ConnectFailure, ConnectFailureReason, Connected, Disconnected, LoggedOut,
        PairSuccess, PairingCode, PairingQrCode, PairingQrCodesExhausted, StreamError,
        StreamReplaced, TempBanReason, TemporaryBan,
    };

    use super::*;
    use whatsapp_rust::Jid;

    fn one(ev: Event) -> EventKind {
        let own = OwnIds {
            jid: Some("15551234567@s.whatsapp.net".into()),
            push_name: Some("Shop".into()),
        };
        let mut v = map_event(&ev, Some(&own));
        assert_eq!(v.len(), 1, "{ev:?}");
        v.remove(0)
    }

    fn close_of(k: EventKind) -> (Option<u16>, Option<ReasonKind>, Option<u64>) {
        match k {
            EventKind::Closed {
                code,
                kind,
                retry_after_ms,
                ..
            } => (code, kind, retry_after_ms),
            other => panic!("not a close: {other:?}"),
        }
    }

    #[test]
    fn connected_is_open_with_whatever_ids_are_known() {
        assert_eq!(
            one(Event::Connected(Connected::builder().build())),
            EventKind::Opened {
                jid: Some("15551234567@s.whatsapp.net".into()),
                push_name: Some("Shop".into()),
            }
        );
        // No own id yet is not an error: open with jid unknown.
        assert_eq!(
            map_event(&Event::Connected(Connected::builder().build()), None),
            [EventKind::Opened {
                jid: None,
                push_name: None
            }]
        );
    }

    #[test]
    fn pairing_events_map_to_codes_and_success() {
        assert_eq!(
            one(Event::PairingQrCode(
                PairingQrCode::builder()
                    .code("2@ref,key".to_string())
                    .timeout(Duration::from_secs(20))
                    .build()
            )),
            EventKind::PairingCode {
                code: "2@ref,key".into(),
                kind: PairKind::Qr,
                expires_in_ms: 20_000
            }
        );
        assert_eq!(
            one(Event::PairingCode(
                PairingCode::builder()
                    .code("ABCD1234".to_string())
                    .timeout(Duration::from_secs(180))
                    .build()
            )),
            EventKind::PairingCode {
                code: "ABCD1234".into(),
                kind: PairKind::PairCode,
                expires_in_ms: 180_000
            }
        );
        let jid: Jid = "15551234567:3@s.whatsapp.net".parse().expect("jid");
        let lid: Jid = "1234@lid".parse().expect("lid");
        assert_eq!(
            one(Event::PairSuccess(
                PairSuccess::builder()
                    .id(jid)
                    .lid(lid)
                    .business_name(String::new())
                    .platform("android".to_string())
                    .build()
            )),
            EventKind::PairSuccess {
                jid: Some("15551234567@s.whatsapp.net".into())
            }
        );
    }

    #[test]
    fn closes_follow_the_design_table() {
        type Close = (Option<u16>, Option<ReasonKind>, Option<u64>);
        let cases: Vec<(Event, Close)> = vec![
            (
                Event::StreamReplaced(StreamReplaced::builder().build()),
                (Some(440), Some(ReasonKind::Replaced), None),
            ),
            (
                Event::PairingQrCodesExhausted(
                    PairingQrCodesExhausted::builder()
                        .disconnected(true)
                        .build(),
                ),
                (Some(408), Some(ReasonKind::QrTimeout), None),
            ),
            (
                Event::TemporaryBan(
                    TemporaryBan::builder()
                        .code(TempBanReason::SentToTooManyPeople)
                        .expire(wacore::chrono::TimeDelta::seconds(90))
                        .build(),
                ),
                (Some(402), Some(ReasonKind::TempBanned), Some(90_000)),
            ),
            (
                Event::ClientOutdated(ClientOutdated::builder().build()),
                (Some(405), Some(ReasonKind::ClientOutdated), None),
            ),
            (
                Event::LoggedOut(
                    LoggedOut::builder()
                        .on_connect(true)
                        .reason(ConnectFailureReason::LoggedOut)
                        .build(),
                ),
                (Some(401), None, None),
            ),
            (
                Event::LoggedOut(
                    LoggedOut::builder()
                        .on_connect(true)
                        .reason(ConnectFailureReason::AccountLocked)
                        .build(),
                ),
                (Some(403), None, None),
            ),
            (
                Event::LoggedOut(
                    LoggedOut::builder()
                        .on_connect(true)
                        .reason(ConnectFailureReason::UnknownLogout)
                        .build(),
                ),
                (Some(406), None, None),
            ),
            (
                Event::ConnectFailure(
                    ConnectFailure::builder()
                        .reason(ConnectFailureReason::ServiceUnavailable)
                        .build(),
                ),
                (Some(503), None, None),
            ),
            (
                Event::ConnectFailure(
                    ConnectFailure::builder()
                        .reason(ConnectFailureReason::InternalServerError)
                        .build(),
                ),
                (Some(500), None, None),
            ),
            (
                Event::Disconnected(
                    Disconnected::builder()
                        .reason(DisconnectReason::StreamEnded)
                        .build(),
                ),
                (None, Some(ReasonKind::ConnectionLost), None),
            ),
            (
                Event::Disconnected(
                    Disconnected::builder()
                        .reason(DisconnectReason::ReadError("reset".into()))
                        .build(),
                ),
                (None, Some(ReasonKind::ConnectionLost), None),
            ),
            (
                Event::Disconnected(
                    Disconnected::builder()
                        .reason(DisconnectReason::ServerClose {
                            code: Some(1000),
                            reason: String::new(),
                        })
                        .build(),
                ),
                (Some(428), Some(ReasonKind::ConnectionClosed), None),
            ),
        ];
        for (ev, want) in cases {
            assert_eq!(close_of(one(ev.clone())), want, "{ev:?}");
        }
        // Stream errors the library keeps the socket for are not closes;
        // nor is running out of QR codes while a phone code is pending.
        for ev in [
            Event::StreamError(StreamError::builder().code("515".to_string()).build()),
            Event::StreamError(StreamError::builder().code("weird".to_string()).build()),
            Event::PairingQrCodesExhausted(
                PairingQrCodesExhausted::builder()
                    .disconnected(false)
                    .build(),
            ),
        ] {
            assert!(map_event(&ev, None).is_empty(), "{ev:?}");
        }
        // The machine classifies what comes without a kind: 401 → logged_out etc.
        assert_eq!(
            crate::lifecycle::Reason::classify(503, false),
            ReasonKind::ServiceUnavailable
        );
    }
}
