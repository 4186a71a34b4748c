//! The console channel: a simulated WhatsApp server driven from stdin, so
//! scripts can be tried without an account (README: The console). It goes through the
//! real host, machine and store; only the server is pretend.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::UnboundedSender;

pub use super::console_groups::GroupLine;
use super::console_groups::SimGroups;
use super::groups::{GroupOp, GroupReply};
use super::rich::{display_name, mime_from_name};
use super::{
    Action, BoxFuture, Channel, ChannelError, ChannelEvent, Content, EventKind, Incoming,
    MediaData, MediaInfo, MediaKind, MediaRef, OutBody, Outgoing, Quoted,
};
use crate::lifecycle::{DefaultAction, PairKind, Reason};

/// The console user's chat, and the bot's own account.
pub const USER_CHAT: &str = "you@console";
pub const BOT_JID: &str = "me@console";
/// Session key marking the simulated account as paired.
pub const SESSION_KEY: &str = "console.paired";
/// Incoming message ids are this and a number.
pub const ID_PREFIX: &str = "c";

/// Before a run's number in the inbox's keys of console messages.
pub const RUN_PREFIX: &str = "r";

/// Where the simulated server shows what the bot sent: stdout for
/// `moonwire console` (one line per write, in order, silent once closed —
/// nothing is printed after end of input), or the log for simulated
/// instances under `moonwire run` and the API.
#[derive(Default)]
pub struct ConsoleOut {
    closed: Mutex<bool>,
    to_log: bool,
}

impl ConsoleOut {
    /// Lines go to the log (info) instead of stdout.
    pub fn logging() -> ConsoleOut {
        ConsoleOut {
            closed: Mutex::new(false),
            to_log: true,
        }
    }

    pub fn line(&self, text: &str) {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *closed {
            return;
        }
        if self.to_log {
            tracing::info!(target: "moonwire::console", "{text}");
            return;
        }
        let mut out = std::io::stdout().lock();
        // A closed pipe on stdout is the reader's business, not a crash.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    pub fn close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
}

/// Persists the simulated pairing, so a restart finds the account paired.
pub trait PairingStore: Send + Sync {
    fn mark_paired(&self) -> Result<(), String>;
}

struct SimState {
    events: Option<UnboundedSender<ChannelEvent>>,
    /// The connection that is up, if any.
    connected: Option<u64>,
    paired: bool,
    /// The server logged this device out while it was away: the next login fails.
    logout_pending: bool,
    /// Messages sent while the bot was away, delivered at the next login.
    offline: VecDeque<Incoming>,
    next_in: u64,
    /// This run's tag in the inbox's keys ([`Channel::inbox_scope`]).
    run: Option<String>,
    qr_count: u64,
    /// Wait for `scan()` instead of pairing at once (API tests).
    manual_scan: bool,
    /// The connection showing a code, while waiting for a scan.
    pairing: Option<u64>,
    /// Recent messages both ways (id, sender, text, type), for quotes.
    history: VecDeque<(String, String, Option<String>, String)>,
    /// The last message the user sent: a reaction to it is "bot reacted X".
    last_in: Option<String>,
    /// The simulated groups, and their changes made while the bot was away.
    groups: SimGroups,
    offline_groups: VecDeque<super::GroupEvent>,
}

/// Messages remembered for `/reply`.
const HISTORY: usize = 512;

/// A typed line that is a message (DESIGN's console lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleInput {
    /// A text from the user, or (`/from CHAT SENDER TEXT`) from someone in
    /// another chat.
    Text {
        chat: Option<String>,
        sender: Option<String>,
        text: String,
    },
    /// `/image PATH [CAPTION]`, `/file PATH`, `/voice PATH`.
    Media {
        kind: MediaKind,
        path: std::path::PathBuf,
        caption: Option<String>,
        voice: bool,
    },
    /// `/reply ID TEXT`: a text quoting message ID.
    Reply { id: String, text: String },
    /// `/react ID EMOJI`.
    React { id: String, emoji: String },
    /// `/edit ID TEXT`.
    Edit { id: String, text: String },
    /// `/revoke ID`.
    Revoke { id: String },
}

/// The simulated server, shared between the channel and the stdin reader.
pub struct ConsoleSim {
    state: Mutex<SimState>,
    out: Arc<ConsoleOut>,
    pairing: Arc<dyn PairingStore>,
}

impl ConsoleSim {
    pub fn new(
        paired: bool,
        out: Arc<ConsoleOut>,
        pairing: Arc<dyn PairingStore>,
    ) -> Arc<ConsoleSim> {
        Arc::new(ConsoleSim {
            state: Mutex::new(SimState {
                events: None,
                connected: None,
                paired,
                logout_pending: false,
                offline: VecDeque::new(),
                next_in: 0,
                run: None,
                qr_count: 0,
                manual_scan: false,
                pairing: None,
                history: VecDeque::new(),
                last_in: None,
                groups: SimGroups::default(),
                offline_groups: VecDeque::new(),
            }),
            out,
            pairing,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel to plug into the host for this simulated server.
    pub fn channel(self: &Arc<Self>, events: UnboundedSender<ChannelEvent>) -> ConsoleChannel {
        self.lock().events = Some(events);
        ConsoleChannel { sim: self.clone() }
    }

    pub fn is_connected(&self) -> bool {
        self.lock().connected.is_some()
    }

    /// Names this run (`r7/`) in the inbox's keys: ids start at `c1` in
    /// every run, and the inbox must not take them for an earlier run's.
    pub fn set_run(&self, n: u64) {
        self.lock().run = Some(format!("{RUN_PREFIX}{n}/"));
    }

    /// A line typed by the user: a message to the bot. Delivered now when the
    /// bot is online, otherwise at its next login, like the real server.
    pub fn deliver(&self, text: &str) {
        // A plain text needs no file: it cannot fail.
        let _ = self.deliver_input(ConsoleInput::Text {
            chat: None,
            sender: None,
            text: text.into(),
        });
    }

    /// A message line of any kind. The n-th message of a run has the id
    /// `cN`. Fails (nothing is sent) for a media file that cannot be read.
    pub fn deliver_input(&self, input: ConsoleInput) -> Result<String, String> {
        let mut st = self.lock();
        let mut msg = Incoming {
            chat: USER_CHAT.into(),
            sender: USER_CHAT.into(),
            kind: "text".into(),
            push_name: Some("you".into()),
            timestamp: unix_seconds(),
            ..Incoming::default()
        };
        match input {
            ConsoleInput::Text { chat, sender, text } => {
                if let Some(chat) = chat {
                    msg.is_group = chat.ends_with("@g.us");
                    msg.chat = chat;
                }
                if let Some(sender) = sender {
                    msg.push_name = sender.split('@').next().map(str::to_string);
                    msg.sender = sender;
                }
                msg.text = Some(text);
            }
            ConsoleInput::Media {
                kind,
                path,
                caption,
                voice,
            } => {
                let meta =
                    std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                if !meta.is_file() {
                    return Err(format!("{} is not a file", path.display()));
                }
                let path =
                    std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let name = display_name(&path.display().to_string());
                msg.kind = kind.as_str().into();
                msg.text = caption;
                msg.media = Some(Box::new(MediaInfo {
                    kind,
                    mime: Some(
                        mime_from_name(&name)
                            .unwrap_or(kind.default_mime())
                            .to_string(),
                    ),
                    size: Some(meta.len()),
                    file_name: Some(name),
                    voice,
                    source: MediaRef::Local { path },
                    ..MediaInfo::default()
                }));
            }
            ConsoleInput::Reply { id, text } => {
                let known = st.history.iter().find(|h| h.0 == id).cloned();
                msg.quoted = Some(Box::new(match known {
                    Some((id, sender, text, kind)) => Quoted {
                        id,
                        sender: Some(sender),
                        text,
                        kind: Some(kind),
                    },
                    None => Quoted {
                        id,
                        ..Quoted::default()
                    },
                }));
                msg.text = Some(text);
            }
            ConsoleInput::React { id, emoji } => {
                msg.kind = "reaction".into();
                msg.target = Some(id);
                msg.reaction = Some(emoji);
            }
            ConsoleInput::Edit { id, text } => {
                msg.kind = "edit".into();
                msg.target = Some(id);
                msg.text = Some(text);
            }
            ConsoleInput::Revoke { id } => {
                msg.kind = "revoke".into();
                msg.target = Some(id);
            }
        }
        st.next_in += 1;
        msg.id = format!("{ID_PREFIX}{}", st.next_in);
        remember(&mut st, &msg.id, &msg.sender, msg.text.clone(), &msg.kind);
        if msg.chat == USER_CHAT {
            st.last_in = Some(msg.id.clone());
        }
        let id = msg.id.clone();
        match st.connected {
            Some(conn) => emit(&st, conn, EventKind::Message(msg)),
            None => st.offline.push_back(msg),
        }
        Ok(id)
    }

    /// A group line (`/group`, `/join`, ...): the group changes and the
    /// bot hears of it now, or at its next login.
    pub fn group_line(&self, line: GroupLine) -> Result<(), String> {
        let mut st = self.lock();
        let ev = st.groups.line(line, BOT_JID)?;
        match st.connected {
            Some(conn) => emit(&st, conn, EventKind::Group(Box::new(ev))),
            None => st.offline_groups.push_back(ev),
        }
        Ok(())
    }

    /// `/drop CODE`: the server closes the connection with that code. A
    /// code that means a server logout (401, 403, 406) also forgets the
    /// device, as `/logout` does: the next connect pairs again.
    pub fn drop_connection(&self, code: u16) -> Result<(), String> {
        let mut st = self.lock();
        // An open connection, or one showing a code (waiting for `/scan`).
        let Some(conn) = st.connected.take().or_else(|| st.pairing.take()) else {
            return Err("not connected".into());
        };
        if Reason::classify(code, false).default_action() == DefaultAction::LogOut {
            st.paired = false;
        }
        emit(
            &st,
            conn,
            EventKind::Closed {
                code: Some(code),
                kind: None,
                message: Some(format!("console: dropped with {code}")),
                retry_after_ms: (code == 402).then_some(60_000),
            },
        );
        Ok(())
    }

    /// Makes pairing wait for [`ConsoleSim::scan`], so a code can be looked at.
    pub fn set_manual_scan(&self, on: bool) {
        self.lock().manual_scan = on;
    }

    /// The simulated phone scans the code on show: pairing succeeds and the
    /// server restarts the stream (515), as the real one does.
    pub fn scan(&self) -> Result<(), String> {
        let mut st = self.lock();
        let conn = st.pairing.take().ok_or("no code is on show")?;
        self.complete_pairing(&mut st, conn);
        Ok(())
    }

    fn complete_pairing(&self, st: &mut SimState, conn: u64) {
        if let Err(e) = self.pairing.mark_paired() {
            tracing::error!(error = %e, "console: could not persist the simulated pairing");
        }
        st.paired = true;
        emit(
            st,
            conn,
            EventKind::PairSuccess {
                jid: Some(BOT_JID.into()),
            },
        );
        emit(
            st,
            conn,
            EventKind::Closed {
                code: Some(515),
                kind: None,
                message: Some("console: restart after pairing".into()),
                retry_after_ms: None,
            },
        );
    }

    /// `/logout`: the account unlinks this device from the server side (401).
    pub fn server_logout(&self) {
        let mut st = self.lock();
        st.paired = false;
        match st.connected.take() {
            Some(conn) => emit(
                &st,
                conn,
                EventKind::Closed {
                    code: Some(401),
                    kind: None,
                    message: Some("console: logged out from the phone".into()),
                    retry_after_ms: None,
                },
            ),
            None => st.logout_pending = true,
        }
    }
}

fn remember(st: &mut SimState, id: &str, sender: &str, text: Option<String>, kind: &str) {
    st.history
        .push_back((id.into(), sender.into(), text, kind.into()));
    if st.history.len() > HISTORY {
        st.history.pop_front();
    }
}

/// The line that shows a message the bot sent (without the `bot> ` and
/// chat prefix).
fn content_line(c: &Content) -> String {
    if let Some(m) = &c.media {
        let kind = if m.kind == MediaKind::Audio && m.voice {
            "voice"
        } else {
            m.kind.as_str()
        };
        let name = m.file_name.clone().unwrap_or_else(|| match &m.data {
            MediaData::File(p) => display_name(&p.display().to_string()),
            MediaData::Bytes(_) => format!(
                "{}.{}",
                m.kind.as_str(),
                super::rich::extension_for_mime(&m.mime).unwrap_or("bin")
            ),
        });
        let mut line = format!("<{kind} {name} {}>", m.size);
        if let Some(caption) = &m.caption {
            line.push(' ');
            line.push_str(caption);
        }
        return line;
    }
    if let Some(l) = &c.location {
        let mut line = format!("<location {},{}>", l.lat, l.lng);
        if let Some(n) = &l.name {
            line.push(' ');
            line.push_str(n);
        }
        return line;
    }
    if let Some(p) = &c.poll {
        return format!(
            "<poll {} [{}] selectable={}>",
            p.name,
            p.options.join(" | "),
            p.selectable
        );
    }
    c.text.clone().unwrap_or_default()
}

fn emit(st: &SimState, conn: u64, kind: EventKind) {
    if let Some(tx) = &st.events {
        // The host going away first is a normal shutdown order.
        let _ = tx.send(ChannelEvent { conn, kind });
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The host's side of the simulated server.
pub struct ConsoleChannel {
    sim: Arc<ConsoleSim>,
}

impl Channel for ConsoleChannel {
    fn connect(&mut self, conn: u64) {
        let mut st = self.sim.lock();
        st.connected = None;
        st.pairing = None;
        if st.logout_pending {
            st.logout_pending = false;
            emit(
                &st,
                conn,
                EventKind::Closed {
                    code: Some(401),
                    kind: None,
                    message: Some("console: this device was logged out".into()),
                    retry_after_ms: None,
                },
            );
            return;
        }
        if !st.paired {
            // Play the phone: show a code, "scan" it, then restart the
            // stream with 515 exactly as the real server does after pairing.
            st.qr_count += 1;
            let code = format!("2@console-{}", st.qr_count);
            emit(
                &st,
                conn,
                EventKind::PairingCode {
                    code,
                    kind: PairKind::Qr,
                    expires_in_ms: 60_000,
                },
            );
            if st.manual_scan {
                st.pairing = Some(conn);
            } else {
                self.sim.complete_pairing(&mut st, conn);
            }
            return;
        }
        st.connected = Some(conn);
        emit(
            &st,
            conn,
            EventKind::Opened {
                jid: Some(BOT_JID.into()),
                push_name: Some("moonwire".into()),
            },
        );
        while let Some(ev) = st.offline_groups.pop_front() {
            emit(&st, conn, EventKind::Group(Box::new(ev)));
        }
        while let Some(msg) = st.offline.pop_front() {
            emit(&st, conn, EventKind::Message(msg));
        }
    }

    fn close(&mut self) {
        let mut st = self.sim.lock();
        st.connected = None;
        st.pairing = None;
    }

    fn unlink(&mut self) -> BoxFuture<Result<(), ChannelError>> {
        let mut st = self.sim.lock();
        let result = if st.connected.is_some() {
            st.paired = false;
            Ok(())
        } else {
            Err(ChannelError::NotConnected)
        };
        Box::pin(std::future::ready(result))
    }

    fn inbox_scope(&self) -> Option<String> {
        self.sim.lock().run.clone()
    }

    fn is_paired(&self) -> bool {
        self.sim.lock().paired
    }

    fn send(&mut self, out: Outgoing) -> BoxFuture<Result<(), ChannelError>> {
        let mut st = self.sim.lock();
        let result = if st.connected.is_none() {
            Err(ChannelError::NotConnected)
        } else {
            // Printed here, not in the future, so the line is out by the time
            // the host has handled the send.
            let chat = &out.chat;
            let say = |line: &str| {
                for line in line.split('\n') {
                    if chat == USER_CHAT {
                        self.sim.out.line(&format!("bot> {line}"));
                    } else {
                        self.sim.out.line(&format!("bot> [{chat}] {line}"));
                    }
                }
            };
            match &out.body {
                OutBody::Text { text, .. } => {
                    say(text);
                    remember(&mut st, &out.id, BOT_JID, Some(text.clone()), "text");
                }
                OutBody::Rich(c) => {
                    say(&content_line(c));
                    let kind = match (&c.media, &c.location, &c.poll) {
                        (Some(m), _, _) => m.kind.as_str(),
                        (_, Some(_), _) => "location",
                        (_, _, Some(_)) => "poll",
                        _ => "text",
                    };
                    let text = c.body_text().map(str::to_string);
                    remember(&mut st, &out.id, BOT_JID, text, kind);
                }
                OutBody::React { message_id, emoji } => {
                    if st.last_in.as_deref() == Some(message_id.as_str()) {
                        self.sim.out.line(&format!("bot reacted {emoji}"));
                    } else {
                        self.sim
                            .out
                            .line(&format!("bot reacted {emoji} to {message_id}"));
                    }
                }
                OutBody::Edit { message_id, text } => {
                    self.sim
                        .out
                        .line(&format!("bot edited {message_id}: {text}"));
                }
                OutBody::Revoke { message_id } => {
                    self.sim.out.line(&format!("bot revoked {message_id}"));
                }
            }
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }

    /// Answered from the simulated groups; a change shows as a console
    /// line and comes back as the event a real server would send.
    fn group(&mut self, op: GroupOp) -> BoxFuture<Result<GroupReply, ChannelError>> {
        let mut st = self.sim.lock();
        let Some(conn) = st.connected else {
            return Box::pin(std::future::ready(Err(ChannelError::NotConnected)));
        };
        let result = st.groups.op(op, BOT_JID).map(|(reply, events, lines)| {
            for l in lines {
                self.sim.out.line(&l);
            }
            for ev in events {
                emit(&st, conn, EventKind::Group(Box::new(ev)));
            }
            reply
        });
        Box::pin(std::future::ready(result))
    }

    /// Read receipts and typing show nothing; a download is a copy of the
    /// file that was sent in.
    fn act(&mut self, action: Action) -> BoxFuture<Result<u64, ChannelError>> {
        if self.sim.lock().connected.is_none() {
            return Box::pin(std::future::ready(Err(ChannelError::NotConnected)));
        }
        match action {
            Action::Read { .. } | Action::Typing { .. } => Box::pin(std::future::ready(Ok(0))),
            Action::Download {
                media,
                to,
                max_bytes,
            } => Box::pin(async move {
                let MediaRef::Local { path } = media.source else {
                    return Err(ChannelError::Media(
                        "the message carries no file to copy".into(),
                    ));
                };
                tokio::task::spawn_blocking(move || copy_bounded(&path, &to, max_bytes))
                    .await
                    .map_err(|e| ChannelError::Media(format!("the copy failed: {e}")))?
            }),
        }
    }
}

/// Copies `from` to `to`, refusing a file larger than `max` bytes (also
/// one that grew while it was copied).
fn copy_bounded(
    from: &std::path::Path,
    to: &std::path::Path,
    max: u64,
) -> Result<u64, ChannelError> {
    use std::io::Read;
    let err = |e: std::io::Error| ChannelError::Media(format!("{}: {e}", from.display()));
    let src = std::fs::File::open(from).map_err(err)?;
    let len = src.metadata().map_err(err)?.len();
    if len > max {
        return Err(ChannelError::Media(format!(
            "the file is {len} bytes, more than the limit of {max}"
        )));
    }
    let mut dst = std::fs::File::create(to)
        .map_err(|e| ChannelError::Media(format!("{}: {e}", to.display())))?;
    let n = std::io::copy(&mut src.take(max + 1), &mut dst).map_err(err)?;
    if n > max {
        return Err(ChannelError::Media(format!(
            "the file grew past the limit of {max} bytes while it was copied"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    struct NoStore;
    impl PairingStore for NoStore {
        fn mark_paired(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<ChannelEvent>) -> Vec<EventKind> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e.kind);
        }
        v
    }

    #[test]
    fn unpaired_connect_pairs_then_restarts_with_515() {
        let sim = ConsoleSim::new(false, Arc::new(ConsoleOut::default()), Arc::new(NoStore));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ch = sim.channel(tx);
        ch.connect(1);
        let ev = drain(&mut rx);
        assert!(matches!(
            ev[0],
            EventKind::PairingCode {
                kind: PairKind::Qr,
                ..
            }
        ));
        assert!(matches!(ev[1], EventKind::PairSuccess { .. }));
        assert!(matches!(
            ev[2],
            EventKind::Closed {
                code: Some(515),
                ..
            }
        ));
        ch.connect(2);
        assert!(matches!(drain(&mut rx)[0], EventKind::Opened { .. }));
    }

    #[test]
    fn messages_sent_while_away_arrive_at_the_next_login() {
        let sim = ConsoleSim::new(true, Arc::new(ConsoleOut::default()), Arc::new(NoStore));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ch = sim.channel(tx);
        sim.deliver("while away");
        assert!(drain(&mut rx).is_empty());
        assert!(sim.drop_connection(408).is_err());
        ch.connect(1);
        let ev = drain(&mut rx);
        assert!(matches!(&ev[1], EventKind::Message(m) if m.text.as_deref() == Some("while away")));
        sim.drop_connection(408).expect("connected");
        assert!(!sim.is_connected());
    }

    #[test]
    fn a_logout_code_unpairs_like_a_logout_and_other_codes_do_not() {
        for (code, pairs_again) in [
            (401, true),
            (403, true),
            (406, true),
            (408, false),
            (440, false),
        ] {
            let sim = ConsoleSim::new(true, Arc::new(ConsoleOut::default()), Arc::new(NoStore));
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut ch = sim.channel(tx);
            ch.connect(1);
            drain(&mut rx);
            sim.drop_connection(code).expect("connected");
            drain(&mut rx); // the close itself
            ch.connect(2);
            let first = drain(&mut rx).into_iter().next();
            assert_eq!(
                matches!(first, Some(EventKind::PairingCode { .. })),
                pairs_again,
                "{code}: {first:?}"
            );
        }
    }

    #[test]
    fn a_logout_while_away_fails_the_next_login() {
        let sim = ConsoleSim::new(true, Arc::new(ConsoleOut::default()), Arc::new(NoStore));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ch = sim.channel(tx);
        sim.server_logout();
        ch.connect(3);
        let ev = drain(&mut rx);
        assert!(matches!(
            ev[0],
            EventKind::Closed {
                code: Some(401),
                ..
            }
        ));
    }
}
