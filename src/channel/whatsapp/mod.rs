//! The WhatsApp channel: whatsapp-rust behind moonwire's own lifecycle.
//!
//! The library's auto-reconnect is off and `run()` is called once per
//! attempt, so every reconnect decision is the host machine's. Each attempt
//! gets a fresh `Client` (a disconnected or logged-out client is done for
//! good), over the same rusqlite-backed key store.

mod events;
pub mod groups;
pub mod http;
pub mod inbound;
mod inbox;
mod media;
mod outbound;
pub mod store;
pub mod transport;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use wacore::pair_code::PairCodeOptions;
use wacore::types::events::{Event, EventHandler};
use whatsapp_rust::bot::{Bot, MessageContext};
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid, TokioRuntime};

use super::{
    Action, BoxFuture, Channel, ChannelError, ChannelEvent, EventKind, GroupOp, GroupReply,
    Outgoing,
};
use crate::lifecycle::ReasonKind;
use crate::store::Store;
pub use events::{OwnIds, map_event};
use events::{closed, disconnected};
use http::ReqwestHttpClient;
pub use inbound::incoming;
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
    /// A whole media download or upload (the largest file must fit).
    pub media_timeout: Duration,
    /// Certificates (DER) media hosts may present besides the public
    /// roots. Only the test rig sets any, for the mock server's media host:
    /// nothing in the config or the command line reaches it.
    pub media_roots: Vec<Vec<u8>>,
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
            media_timeout: Duration::from_secs(300),
            media_roots: Vec::new(),
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

/// A vote on a poll this device sent, read with the poll's secret.
fn votes(backend: &WaStore, m: &wa::Message, inc: &super::Incoming) -> Vec<String> {
    let Some(poll_id) = inc.target.as_deref() else {
        return Vec::new();
    };
    let record = match backend.get_poll(poll_id) {
        Ok(Some(bytes)) => serde_json::from_slice::<inbound::PollRecord>(&bytes).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "reading a poll to count a vote");
            None
        }
    };
    match record {
        Some(r) => inbound::read_votes(m, &inc.sender, poll_id, &r),
        None => Vec::new(),
    }
}

pub(crate) type Recent = Arc<Mutex<VecDeque<MessageContext>>>;

pub(crate) fn find_recent(recent: &Recent, id: &str) -> Option<MessageContext> {
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
    /// Downloads media (shared by every attempt); why not, if it could not
    /// be built.
    media_http: Result<reqwest::Client, String>,
}

impl WhatsappChannel {
    pub fn new(
        store: Arc<Store>,
        instance: impl Into<String>,
        options: WhatsappOptions,
        events: UnboundedSender<ChannelEvent>,
    ) -> WhatsappChannel {
        let media_http =
            http::client(options.media_timeout, &options.media_roots).map_err(|e| format!("{e:#}"));
        WhatsappChannel {
            store,
            instance: instance.into(),
            options,
            events,
            current: None,
            recent: Default::default(),
            media_http,
        }
    }

    /// The current attempt's client and key store, if it is up.
    fn connected(&self) -> Option<(Arc<Client>, Arc<WaStore>)> {
        let st = self.current.as_ref()?;
        let client = st
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        Some((client, st.backend.clone()))
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
    // The library's HTTP client does the version lookup and media uploads:
    // the media timeout bounds it.
    let timeout = options.http_timeout.max(options.media_timeout);
    let http = match ReqwestHttpClient::with_roots(timeout, &options.media_roots) {
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
        let conn = self.connected();
        let recent = self.recent.clone();
        Box::pin(async move {
            let (client, backend) = conn.ok_or(ChannelError::NotConnected)?;
            outbound::send(&client, &backend, &recent, out).await
        })
    }

    fn group(&mut self, op: GroupOp) -> BoxFuture<Result<GroupReply, ChannelError>> {
        let conn = self.connected();
        Box::pin(async move {
            let (client, _) = conn.ok_or(ChannelError::NotConnected)?;
            groups::run(&client, op).await
        })
    }

    fn act(&mut self, action: Action) -> BoxFuture<Result<u64, ChannelError>> {
        let conn = self.connected();
        let media_http = self.media_http.clone();
        Box::pin(async move {
            let (client, _) = conn.ok_or(ChannelError::NotConnected)?;
            let jid = |s: &str| -> Result<Jid, ChannelError> {
                s.parse()
                    .map_err(|_| ChannelError::BadRecipient(s.to_string()))
            };
            match action {
                Action::Read { chat, sender, ids } => {
                    let chat = jid(&chat)?;
                    let sender = sender.as_deref().map(jid).transpose()?;
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    client
                        .mark_as_read(&chat, sender.as_ref(), &ids)
                        .await
                        .map_err(|e| ChannelError::Protocol(format!("{e:#}")))?;
                    Ok(0)
                }
                Action::Typing { chat, on } => {
                    let state = if on {
                        whatsapp_rust::ChatStateType::Composing
                    } else {
                        whatsapp_rust::ChatStateType::Paused
                    };
                    client
                        .chatstate()
                        .send(&jid(&chat)?, state)
                        .await
                        .map_err(|e| ChannelError::Protocol(e.to_string()))?;
                    Ok(0)
                }
                Action::Download {
                    media,
                    to,
                    max_bytes,
                } => {
                    let http = media_http.map_err(ChannelError::Media)?;
                    media::download(&client, &http, &media, &to, max_bytes).await
                }
            }
        })
    }
}

/// Whether a failed send may get through on another connection: the
/// connection or one of its queries failed, not the message.
pub(super) fn send_error(e: whatsapp_rust::send::SendError) -> ChannelError {
    use whatsapp_rust::send::SendError as E;
    match e {
        E::Client(_) | E::NotLoggedIn | E::Iq(_) => ChannelError::Interrupted(e.to_string()),
        _ => ChannelError::Protocol(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
