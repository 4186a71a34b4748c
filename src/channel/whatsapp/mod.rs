//! The WhatsApp channel: whatsapp-rust behind moonwire's own lifecycle.
//!
//! The library's auto-reconnect is off and `run()` is called once per
//! attempt, so every reconnect decision is the host machine's. Each attempt
//! gets a fresh `Client` (a disconnected or logged-out client is done for
//! good), over the same rusqlite-backed key store.

pub mod http;
mod inbox;
pub mod store;
pub mod transport;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use wacore::pair_code::PairCodeOptions;
use wacore::proto_helpers::{MessageBuilderExt, MessageExt};
use wacore::types::events::{Event, EventHandler};
use whatsapp_rust::bot::{Bot, MessageContext};
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid, TokioRuntime};

use super::{
    BoxFuture, Channel, ChannelError, ChannelEvent, EventKind, Incoming, OutBody, Outgoing,
};
use crate::lifecycle::{PairKind, ReasonKind};
use crate::store::Store;
use http::ReqwestHttpClient;
use store::WaStore;
use transport::WsTransportFactory;

/// How many recent incoming messages are kept to quote and react to.
const RECENT: usize = 512;

/// What the channel needs besides the store.
#[derive(Debug, Clone)]
pub struct WhatsappOptions {
    pub url: String,
    /// Pair with an 8-character code for this phone number instead of a QR.
    pub phone: Option<String>,
    pub connect_timeout: Duration,
    pub http_timeout: Duration,
    /// Use this web app version instead of fetching the current one over
    /// HTTP before each attempt (`[whatsapp] version`; the offline mock
    /// server in tests needs it).
    pub version: Option<(u32, u32, u32)>,
    /// After this long without hearing from the server, ping it; with no
    /// answer within `ping_timeout` the socket is taken for dead and the
    /// attempt ends as `connection_lost`. The library's own check takes
    /// 35–50 s and cannot be tuned; this one can.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// An attempt that neither logs in nor shows a pairing code this long
    /// after it started ends as `connection_lost`: a server that takes the
    /// handshake and then says nothing must not leave the instance in
    /// `connecting` (the library waits for `<success>` without a limit).
    pub login_timeout: Duration,
}

impl WhatsappOptions {
    pub fn new(url: impl Into<String>) -> WhatsappOptions {
        WhatsappOptions {
            url: url.into(),
            phone: None,
            connect_timeout: Duration::from_secs(20),
            http_timeout: Duration::from_secs(30),
            version: None,
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-attempt state the event handler shares with the attempt task.
struct AttemptState {
    conn: u64,
    events: UnboundedSender<ChannelEvent>,
    /// A close (or pair-success) was reported for this attempt.
    closed: AtomicBool,
    connected: AtomicBool,
    pair_success: AtomicBool,
    client: Mutex<Option<Arc<Client>>>,
    recent: Arc<Mutex<VecDeque<MessageContext>>>,
    /// The code of the first `<stream:error>` seen: the library turns only
    /// some of them into events, but the close that follows is about it.
    stream_code: Mutex<Option<u16>>,
    /// Pairing by phone code: the QR refs the server also sends are noise.
    pair_by_code: bool,
    /// The server ended the stream cleanly (`<xmlstreamend/>`).
    stream_end: AtomicBool,
    /// The library reported the socket gone; that report emits the close
    /// (after a flush), not the end of `run()`.
    disconnect_seen: AtomicBool,
    /// A pairing code was shown: the server is talking to us.
    pairing: AtomicBool,
    /// Woken on every step the login watchdog waits for.
    progress: tokio::sync::Notify,
    /// This attempt's view of the key store.
    backend: Arc<WaStore>,
    /// moonwire's store and instance, for the inbox.
    store: Arc<Store>,
    instance: String,
}

impl AttemptState {
    /// Sets one of the login-progress flags and wakes the login watchdog.
    fn progressed(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    /// Whether the server has done its part of the login: logged this
    /// device in, or (unpaired) shown a code or completed a pairing.
    fn got_answer(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
            || self.pairing.load(Ordering::SeqCst)
            || self.pair_success.load(Ordering::SeqCst)
    }
}

impl AttemptState {
    fn stream_code(&self) -> Option<u16> {
        *self.stream_code.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The close for a connection that ended: its stream error if there was
    /// one, else what the caller saw.
    fn ended(&self, fallback: EventKind) -> EventKind {
        match self.stream_code() {
            Some(code) => closed(Some(code), None, format!("stream error {code}")),
            None if self.stream_end.load(Ordering::SeqCst) => closed(
                Some(428),
                Some(ReasonKind::ConnectionClosed),
                "the server ended the stream",
            ),
            None => fallback,
        }
    }
}

impl AttemptState {
    fn emit(&self, kind: EventKind) {
        if matches!(kind, EventKind::Closed { .. }) && self.closed.swap(true, Ordering::SeqCst) {
            return; // one close per attempt
        }
        let _ = self.events.send(ChannelEvent {
            conn: self.conn,
            kind,
        });
    }
}

struct Forwarder(Arc<AttemptState>);

impl EventHandler for Forwarder {
    fn handle_event(&self, event: Arc<Event>) {
        let st = &self.0;
        let client = st.client.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let own = client.as_ref().map(|c| OwnIds {
            jid: c.pn().map(|j| j.to_non_ad().to_string()),
            push_name: Some(c.push_name()).filter(|n| !n.is_empty()),
        });
        match &*event {
            Event::RawNode(node) => {
                let n = node.get();
                if n.tag.as_ref() == "xmlstreamend" {
                    st.stream_end.store(true, Ordering::SeqCst);
                }
                if n.tag.as_ref() == "stream:error" && n.get_optional_child("conflict").is_none() {
                    let code = n
                        .get_attr("code")
                        .and_then(|v| v.as_str().parse::<u16>().ok());
                    let mut slot = st.stream_code.lock().unwrap_or_else(|e| e.into_inner());
                    if slot.is_none() {
                        *slot = code;
                    }
                }
                if let Some(ack) = inbox::send_ack(n) {
                    st.emit(ack);
                }
                return;
            }
            Event::Disconnected(d) => {
                st.disconnect_seen.store(true, Ordering::SeqCst);
                let kind = st.ended(disconnected(&d.reason));
                let st = st.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            if let Some(c) = client {
                                settle(&st, &c).await;
                            }
                            st.emit(kind);
                        });
                    }
                    Err(_) => st.emit(kind),
                }
                return;
            }
            Event::PairingQrCode(_) | Event::PairingCode(_) => {
                st.progressed(&st.pairing);
                if st.pair_by_code && matches!(&*event, Event::PairingQrCode(_)) {
                    return;
                }
            }
            Event::Connected(_) => st.progressed(&st.connected),
            Event::PairSuccess(_) => st.progressed(&st.pair_success),
            Event::Messages(batch) => {
                if let Some(client) = &client {
                    let mut recent = st.recent.lock().unwrap_or_else(|e| e.into_inner());
                    for m in batch.messages.iter() {
                        recent.push_back(MessageContext::from_arc(
                            m.message.clone(),
                            &m.info,
                            client.clone(),
                        ));
                        if recent.len() > RECENT {
                            recent.pop_front();
                        }
                    }
                }
                // The inbox hook reported these already, committed; the
                // others (newsletters, recovered placeholders) the library
                // acked itself and the host commits now.
                if batch.hook_committed {
                    return;
                }
            }
            _ => {}
        }
        for kind in map_event(&event, own.as_ref()) {
            st.emit(kind);
        }
    }
}

/// The account's own ids, as known when an event arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnIds {
    pub jid: Option<String>,
    pub push_name: Option<String>,
}

fn closed(code: Option<u16>, kind: Option<ReasonKind>, message: impl Into<String>) -> EventKind {
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
fn disconnected(reason: &wacore::net::DisconnectReason) -> EventKind {
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
        _ => Vec::new(),
    }
}

/// What kind of message this is, as scripts see it.
fn message_type(m: &wa::Message) -> &'static str {
    let b = m.get_base_message();
    if b.conversation.is_some() || b.extended_text_message.as_option().is_some() {
        "text"
    } else if b.image_message.as_option().is_some() {
        "image"
    } else if b.video_message.as_option().is_some() {
        "video"
    } else if b.audio_message.as_option().is_some() {
        "audio"
    } else if b.document_message.as_option().is_some() {
        "document"
    } else if b.sticker_message.as_option().is_some() {
        "sticker"
    } else if b.location_message.as_option().is_some()
        || b.live_location_message.as_option().is_some()
    {
        "location"
    } else if b.contact_message.as_option().is_some()
        || b.contacts_array_message.as_option().is_some()
    {
        "contact"
    } else if b.reaction_message.as_option().is_some() {
        "reaction"
    } else if b.protocol_message.as_option().is_some() {
        "protocol"
    } else {
        "unknown"
    }
}

pub fn incoming(m: &wa::Message, info: &wacore::types::message::MessageInfo) -> Incoming {
    Incoming {
        id: info.id.to_string(),
        chat: info.source.chat.to_string(),
        sender: info.source.sender.to_non_ad().to_string(),
        text: m.text_content().map(str::to_string),
        kind: message_type(m).to_string(),
        from_me: info.source.is_from_me,
        is_group: info.source.is_group,
        push_name: Some(info.push_name.clone()).filter(|n| !n.is_empty()),
        timestamp: info.timestamp.timestamp(),
    }
}

type Recent = Arc<Mutex<VecDeque<MessageContext>>>;

fn find_recent(recent: &Recent, id: &str) -> Option<MessageContext> {
    recent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|c| c.info.id == id)
        .cloned()
}

/// One instance's WhatsApp connection, one attempt at a time.
pub struct WhatsappChannel {
    store: Arc<Store>,
    instance: String,
    options: WhatsappOptions,
    events: UnboundedSender<ChannelEvent>,
    current: Option<Arc<AttemptState>>,
    recent: Recent,
}

impl WhatsappChannel {
    pub fn new(
        store: Arc<Store>,
        instance: impl Into<String>,
        options: WhatsappOptions,
        events: UnboundedSender<ChannelEvent>,
    ) -> WhatsappChannel {
        WhatsappChannel {
            store,
            instance: instance.into(),
            options,
            events,
            current: None,
            recent: Default::default(),
        }
    }

    /// Marks the current attempt over and takes its client. Under the
    /// client lock, so an attempt still building its client sees it and
    /// never starts one (no zombie sharing this identity).
    fn end_attempt(&mut self) -> Option<Arc<Client>> {
        let st = self.current.take()?;
        let mut client = st.client.lock().unwrap_or_else(|e| e.into_inner());
        // Whatever this attempt still says is late news.
        st.closed.store(true, Ordering::SeqCst);
        client.take()
    }

    fn client(&self) -> Option<Arc<Client>> {
        self.current
            .as_ref()
            .and_then(|st| st.client.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Lines whatsapp-rust logs that say the opposite of what happens with its
/// auto-reconnect off: "Failed to connect: ... Will retry..." for a failed
/// dial or version lookup (nothing in the library retries: the host's
/// machine decides, and its own warning carries the same cause, recorded by
/// the transport and HTTP client, and says when) and "Auto-reconnect
/// disabled, shutting down." after every attempt (only that attempt's
/// client ends). The log setup drops them. Other connect failures (a
/// handshake) keep their line: it has the only detail of the cause.
pub fn misleading_library_line(message: &str) -> bool {
    let recorded = ["failed to open transport", "failed to resolve app version"]
        .iter()
        .any(|c| message.starts_with(&format!("Failed to connect: {c}")));
    (recorded && message.ends_with("Will retry..."))
        || message == "Auto-reconnect disabled, shutting down."
}

/// Whether the instance's WhatsApp device finished pairing. A store that
/// cannot be read counts as paired: a logout then still asks the server.
pub fn is_paired(store: &Arc<Store>, instance: &str) -> bool {
    WaStore::new(store.clone(), instance)
        .is_registered()
        .unwrap_or_else(|e| {
            tracing::warn!(instance, error = %e, "cannot tell whether the device is paired");
            true
        })
}

/// One attempt: a fresh client over the same key store, `run()` once, and
/// if the library said nothing about why it ended, say it here.
async fn attempt(st: Arc<AttemptState>, options: WhatsappOptions) {
    let backend = st.backend.clone();
    let failure = transport::LastFailure::default();
    let http = match ReqwestHttpClient::new(options.http_timeout) {
        Ok(h) => h.with_failure(failure.clone()),
        Err(e) => {
            st.emit(closed(
                None,
                Some(ReasonKind::TransportError),
                format!("HTTP client: {e:#}"),
            ));
            return;
        }
    };
    let transport = WsTransportFactory::new(options.url.clone())
        .with_connect_timeout(options.connect_timeout)
        .with_failure(failure.clone());
    let mut builder = Bot::builder()
        .with_backend_arc(backend)
        .with_transport_factory(transport)
        .with_http_client(http)
        .with_runtime(TokioRuntime)
        .skip_history_sync()
        .with_inbound_durability_hook(inbox::InboxHook {
            st: st.clone(),
            store: st.store.clone(),
            instance: st.instance.clone(),
            order: Mutex::new(()),
        })
        .with_event_handler(Forwarder(st.clone()));
    if let Some(version) = options.version {
        builder = builder.with_version(version);
    }
    if let Some(phone) = &options.phone {
        builder = builder.with_pair_code(PairCodeOptions {
            phone_number: phone.clone(),
            ..PairCodeOptions::default()
        });
    }
    let bot = match builder.build().await {
        Ok(b) => b,
        Err(e) => {
            st.emit(closed(
                None,
                Some(ReasonKind::BadSession),
                format!("starting the client: {e}"),
            ));
            return;
        }
    };
    let client = bot.client();
    // moonwire's machine decides every reconnect.
    client.enable_auto_reconnect.store(false, Ordering::SeqCst);
    {
        let mut slot = st.client.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed.load(Ordering::SeqCst) {
            return; // closed while the client was being built
        }
        *slot = Some(client.clone());
    }
    // Raw stanzas carry the stream-error codes the library does not turn
    // into events (429, 503, 515 on an established session).
    let _raw = client.acquire_raw_node_forwarding();
    let dog = tokio::spawn(watchdog(st.clone(), client.clone(), options.clone()));
    bot.run().await;
    dog.abort();
    if st.disconnect_seen.load(Ordering::SeqCst) {
        return; // that report emits the close
    }
    settle(&st, &client).await;
    // After pairing the server closes with 515 and the library says nothing.
    // A stream error the library took as "expected" (515 on an established
    // session) ends run() without an event; its code says what it was.
    let fallback = if st.pair_success.load(Ordering::SeqCst) {
        closed(
            Some(515),
            Some(ReasonKind::RestartRequired),
            "restart after pairing",
        )
    } else if st.connected.load(Ordering::SeqCst) || st.stream_code().is_some() {
        closed(
            None,
            Some(ReasonKind::ConnectionLost),
            "the connection ended",
        )
    } else {
        // The client only logs why its connect failed; the transport and
        // HTTP client recorded the cause for us.
        let why = failure.take().unwrap_or_else(|| {
            if failure.was_opened() {
                format!(
                    "the server at {} took the connection but the login handshake failed",
                    options.url
                )
            } else {
                format!("could not connect to {}", options.url)
            }
        });
        closed(None, Some(ReasonKind::TransportError), why)
    };
    st.emit(st.ended(fallback));
}

/// How long a close after pairing may wait for the registered device to be
/// on disk.
const REGISTRATION_WAIT: Duration = Duration::from_secs(5);

/// Makes what this attempt's client learnt durable before its close is
/// reported, so the next attempt's fresh client starts from it. After a
/// pairing that means the registered device: the library's background
/// saver may be mid-write when a flush finds nothing dirty, so wait until the
/// stored device carries the phone number (bounded; logged if it never
/// does).
async fn settle(st: &AttemptState, client: &Client) {
    flush(client).await;
    if !st.pair_success.load(Ordering::SeqCst) {
        return;
    }
    let deadline = tokio::time::Instant::now() + REGISTRATION_WAIT;
    loop {
        match wacore::store::traits::DeviceStore::load(&*st.backend).await {
            Ok(Some(d)) if d.pn.is_some() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the device registered by pairing");
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "the paired device was not saved within {REGISTRATION_WAIT:?}; the next attempt may ask to pair again"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        flush(client).await;
    }
}

/// Writes what the client still holds in memory (the device, keys) to the
/// store.
async fn flush(client: &Client) {
    if let Err(e) = client.persistence_manager().flush().await {
        if session_ended(&e) {
            // A logout deleted the keys first; nothing may be written back.
            tracing::debug!(error = %e, "not flushing a logged-out session");
        } else {
            tracing::warn!(error = %e, "flushing the key store after the connection ended");
        }
    }
}

/// Whether `e` (or what caused it) is the store refusing a client whose
/// session a logout ended.
fn session_ended(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if matches!(
            err.downcast_ref::<crate::store::StoreError>(),
            Some(crate::store::StoreError::SessionEnded { .. })
        ) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Ends an attempt the server never answers (`login_timeout`), then pings a
/// quiet server and ends the attempt when it does not answer, so a socket
/// that died without a FIN is noticed in `ping_interval + ping_timeout`
/// rather than whenever the library's own check fires.
async fn watchdog(st: Arc<AttemptState>, client: Arc<Client>, options: WhatsappOptions) {
    let (interval, timeout) = (options.ping_interval, options.ping_timeout);
    let answered = tokio::time::timeout(options.login_timeout, async {
        loop {
            let progress = st.progress.notified();
            if st.got_answer() {
                return;
            }
            progress.await;
        }
    })
    .await;
    if answered.is_err() {
        if !st.closed.load(Ordering::SeqCst) {
            give_up(
                &st,
                &client,
                format!(
                    "the server neither logged this device in nor offered pairing within {} ms",
                    options.login_timeout.as_millis()
                ),
            )
            .await;
        }
        return;
    }
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(interval).await;
        if st.closed.load(Ordering::SeqCst) {
            return;
        }
        // A pairing connection is pinged too: a QR on a dead socket can
        // never be scanned.
        if !st.connected.load(Ordering::SeqCst) && !st.pairing.load(Ordering::SeqCst) {
            continue;
        }
        let quiet_ms = wacore::protocol::keepalive::now_ms()
            .saturating_sub(client.stats().last_data_received_ms);
        if quiet_ms < interval_ms {
            continue;
        }
        match client
            .execute(wacore::iq::keepalive::KeepaliveSpec::with_timeout(timeout))
            .await
        {
            Ok(()) => {}
            Err(whatsapp_rust::IqError::Timeout) => {
                let why = format!(
                    "the server did not answer a ping within {} ms (quiet for {quiet_ms} ms)",
                    timeout.as_millis()
                );
                give_up(&st, &client, why).await;
                return;
            }
            // Not connected any more and the like: the library reports that
            // close itself.
            Err(e) => tracing::debug!("ping failed: {e}"),
        }
    }
}

/// The watchdog's verdict: the attempt ends as `connection_lost` and its
/// client is shut.
async fn give_up(st: &AttemptState, client: &Arc<Client>, why: String) {
    tracing::warn!("giving up on this attempt: {why}");
    st.emit(closed(None, Some(ReasonKind::ConnectionLost), why));
    client.disconnect().await;
}

impl Channel for WhatsappChannel {
    fn connect(&mut self, conn: u64) {
        self.close();
        let st = Arc::new(AttemptState {
            conn,
            events: self.events.clone(),
            closed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            pair_success: AtomicBool::new(false),
            client: Mutex::new(None),
            recent: self.recent.clone(),
            stream_code: Mutex::new(None),
            pair_by_code: self.options.phone.is_some(),
            stream_end: AtomicBool::new(false),
            disconnect_seen: AtomicBool::new(false),
            pairing: AtomicBool::new(false),
            progress: tokio::sync::Notify::new(),
            backend: Arc::new(WaStore::new(self.store.clone(), self.instance.clone())),
            store: self.store.clone(),
            instance: self.instance.clone(),
        });
        self.current = Some(st.clone());
        tokio::spawn(attempt(st, self.options.clone()));
    }

    fn close(&mut self) {
        if let Some(c) = self.end_attempt() {
            tokio::spawn(async move { c.disconnect().await });
        }
    }

    fn shutdown(&mut self) -> BoxFuture<()> {
        let client = self.end_attempt();
        Box::pin(async move {
            if let Some(c) = client {
                // disconnect() is what flushes the library's buffered keys
                // and device state to the store.
                c.disconnect().await;
            }
        })
    }

    fn is_paired(&self) -> bool {
        is_paired(&self.store, &self.instance)
    }

    /// The server acks every message stanza (`<ack class="message">`).
    fn confirms_sends(&self) -> bool {
        true
    }

    fn unlink(&mut self) -> BoxFuture<Result<(), ChannelError>> {
        let client = self.client();
        Box::pin(async move {
            match client {
                Some(c) if c.is_connected() => {
                    // Sends the remove-companion IQ (its failure is logged by
                    // the library) and ends this client.
                    c.logout().await;
                    Ok(())
                }
                _ => Err(ChannelError::NotConnected),
            }
        })
    }

    fn send(&mut self, out: Outgoing) -> BoxFuture<Result<(), ChannelError>> {
        let client = self.client();
        let recent = self.recent.clone();
        Box::pin(async move {
            let client = client.ok_or(ChannelError::NotConnected)?;
            let chat: Jid = out
                .chat
                .parse()
                .map_err(|_| ChannelError::BadRecipient(out.chat.clone()))?;
            let message = match out.body {
                OutBody::Text { text, quote } => match quote.and_then(|q| find_recent(&recent, &q))
                {
                    Some(ctx) => wa::Message::text_with_context(text, ctx.build_quote_context()),
                    None => wa::Message::text(text),
                },
                OutBody::React { message_id, emoji } => {
                    let key = match find_recent(&recent, &message_id) {
                        Some(ctx) => ctx.message_key(),
                        None => wa::MessageKey {
                            remote_jid: Some(out.chat.clone()),
                            from_me: Some(false),
                            id: Some(message_id),
                            participant: None,
                        },
                    };
                    wacore::proto_helpers::build_reaction_message(
                        key,
                        emoji,
                        wacore::time::now_millis(),
                    )
                }
            };
            client
                .send_message_with_options(
                    chat,
                    message,
                    SendOptions::default().with_message_id(out.id),
                )
                .await
                .map(|_| ())
                .map_err(send_error)
        })
    }
}

/// Whether a failed send may get through on another connection: the
/// connection or one of its queries failed, not the message.
fn send_error(e: whatsapp_rust::send::SendError) -> ChannelError {
    use whatsapp_rust::send::SendError as E;
    match e {
        E::Client(_) | E::NotLoggedIn | E::Iq(_) => ChannelError::Interrupted(e.to_string()),
        _ => ChannelError::Protocol(e.to_string()),
    }
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
    use wacore::types::message::MessageInfo;

    use super::*;

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
    fn only_the_two_misleading_library_lines_are_filtered() {
        assert!(misleading_library_line(
            "Failed to connect: failed to open transport: WebSocket connect to ws://x failed: IO error: Connection refused (os error 111). Will retry..."
        ));
        assert!(misleading_library_line(
            "Auto-reconnect disabled, shutting down."
        ));
        assert!(misleading_library_line(
            "Failed to connect: failed to resolve app version: HTTP GET to web.whatsapp.com failed: dns error. Will retry..."
        ));
        for keep in [
            "Failed to connect: handshake",
            "Failed to connect: handshake failed: bad cert. Will retry...",
            "Will retry...",
            "Expected disconnect (e.g., 515), reconnecting immediately...",
            "",
        ] {
            assert!(!misleading_library_line(keep), "{keep}");
        }
    }

    #[test]
    fn a_store_refusing_an_ended_session_is_recognised_through_the_wrappers() {
        let ended = crate::store::StoreError::SessionEnded {
            op: "save",
            instance: "a".into(),
        };
        let wrapped = wacore::store::error::StoreError::Database(Box::new(ended));
        assert!(session_ended(&wrapped));
        let other = wacore::store::error::StoreError::Database(Box::new(
            crate::store::StoreError::NoSuchInstance("a".into()),
        ));
        assert!(!session_ended(&other));
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

    fn info(id: &str) -> MessageInfo {
        let mut info = MessageInfo {
            id: id.into(),
            ..Default::default()
        };
        info.source.chat = "15550001111@s.whatsapp.net".parse().expect("jid");
        info.source.sender = "15550001111:2@s.whatsapp.net".parse().expect("jid");
        info.push_name = "Ann".into();
        info
    }

    #[test]
    fn text_is_found_through_the_wrappers_and_other_types_have_none() {
        let text = wa::Message::text("hello");
        let m = incoming(&text, &info("A1"));
        assert_eq!(m.text.as_deref(), Some("hello"));
        assert_eq!(m.kind, "text");
        assert_eq!(m.id, "A1");
        assert_eq!(m.sender, "15550001111@s.whatsapp.net");
        assert_eq!(m.push_name.as_deref(), Some("Ann"));

        let ext = wa::Message {
            extended_text_message: wa::message::ExtendedTextMessage {
                text: Some("with a link".into()),
                ..Default::default()
            }
            .into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&ext, &info("A2")).text.as_deref(),
            Some("with a link")
        );

        let wrap = |inner: wa::Message| wa::message::FutureProofMessage {
            message: inner.into(),
        };
        let eph = wa::Message {
            ephemeral_message: wrap(wa::Message::text("disappearing")).into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&eph, &info("A3")).text.as_deref(),
            Some("disappearing")
        );
        let once = wa::Message {
            view_once_message: wrap(ext.clone()).into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&once, &info("A4")).text.as_deref(),
            Some("with a link")
        );
        let edited = wa::Message {
            edited_message: wrap(wa::Message::text("fixed typo")).into(),
            ..Default::default()
        };
        assert_eq!(
            incoming(&edited, &info("A5")).text.as_deref(),
            Some("fixed typo")
        );

        let image = wa::Message {
            image_message: wa::message::ImageMessage::default().into(),
            ..Default::default()
        };
        let m = incoming(&image, &info("A6"));
        assert_eq!((m.text, m.kind.as_str()), (None, "image"));
    }
}
