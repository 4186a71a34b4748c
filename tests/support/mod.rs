//! A mock WhatsApp server for end-to-end tests: a real WebSocket on
//! 127.0.0.1, the real Noise handshakes (as responder, with a fresh static
//! key per server and a cert chain around it) and real binary nodes, built
//! from wacore's own pieces.
//!
//! What it does:
//! - runs the handshake (XX for a fresh client, IK for one that cached the
//!   server's key) and decodes its `ClientPayload`;
//! - a registering client gets `<iq xmlns="md"><pair-device><ref/>…` so
//!   whatsapp-rust emits `PairingQrCode`, and a new ref on every
//!   `ref_interval` (each new `pair-device` IQ replaces the client's own
//!   rotation task, so the client shows the new ref at once);
//! - answers pings and any other `get`/`set` IQ (an empty result unless the
//!   client needs a shape), acks messages and receipts;
//! - records every stanza it receives;
//! - plays the phone scanning a QR code ([`MockServer::scan`]): sends a
//!   `<pair-success>` the client verifies (see `phone.rs`), and once the
//!   client answers with `<pair-device-sign>`, ends the stream with
//!   `<stream:error code="515"/>` like the real server;
//! - logs a paired device in (Noise IK or XX, `<success>`, answers to the
//!   login IQs, the offline marker) until the client says `Connected`;
//! - injects faults on command (stream errors, `<failure>`, stream end, TCP
//!   drops, silence, refused or rationed connections, flapping);
//! - carries Signal messages both ways for simulated contacts
//!   (`contact.rs`).
//!
//! Not done: edge-routing pre-intros (`ED`; the mock never hands out
//! routing info, so clients never send one), app-state patches (every
//! collection is empty), groups.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod contact;
pub mod noise;
pub mod phone;
pub mod rig;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use whatsapp_rust::Jid;
use whatsapp_rust::wacore::framing::{FrameDecoder, encode_frame};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use noise::{Hello, Keys, Session};

/// The server's JID as a bare server (how the client checks `from`).
pub const SERVER: &str = "s.whatsapp.net";

/// The device JID a scan links the companion as.
pub const PAIRED_JID: &str = "15551234567:1@s.whatsapp.net";
/// The LID a scan links the companion as.
pub const PAIRED_LID: &str = "100000000000001:1@lid";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct MockConfig {
    /// How often a pairing client is sent a fresh ref.
    pub ref_interval: Duration,
    /// The business name `<pair-success>` carries (`<biz name>`), which the
    /// client takes as its push name, so it says `Connected` right after
    /// login. With none (a personal phone) the client first waits for the
    /// phone's app-state key share (which the mock sends, encrypted, once the
    /// companion uploaded its pre-keys) and syncs the critical collections.
    pub business_name: Option<String>,
}

impl Default for MockConfig {
    fn default() -> MockConfig {
        MockConfig {
            ref_interval: Duration::from_secs(20),
            business_name: Some("Mock Shop".into()),
        }
    }
}

/// A `<failure reason=…>` the server answers a login with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: u16,
    /// Seconds until a temporary ban (402) expires.
    pub expire: Option<u64>,
}

impl Failure {
    pub fn reason(reason: u16) -> Failure {
        Failure {
            reason,
            expire: None,
        }
    }

    fn node(&self) -> Node {
        let mut b = NodeBuilder::new("failure")
            .attr("reason", self.reason.to_string())
            .attr("location", "mock");
        if let Some(expire) = self.expire {
            // A temporary ban carries its code and how long it lasts.
            b = b.attr("code", "101").attr("expire", expire.to_string());
        }
        b.build()
    }
}

#[derive(Debug, Clone)]
enum Command {
    StreamError(String),
    /// `<stream:error>` with a child (`<conflict type="replaced"/>`).
    StreamErrorNode(Node),
    Failure(Failure),
    StreamEnd,
    DropTcp,
    Send(Node),
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Node>>,
    refs: Mutex<Vec<String>>,
    client_statics: Mutex<Vec<[u8; 32]>>,
    errors: Mutex<Vec<String>>,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    refused: AtomicUsize,
    pair_signs: Mutex<Vec<Node>>,
    refuse: AtomicBool,
    /// Connections still accepted before `refuse` takes over (`None`: no
    /// limit).
    accept_budget: Mutex<Option<usize>>,
    /// While set, established connections read but never write.
    silent: AtomicBool,
    /// What a login gets instead of `<success>` while set.
    login_failure: Mutex<Option<Failure>>,
    /// Drop each logged-in connection this long after its `<success>`.
    flap_after: Mutex<Option<Duration>>,
    logins: AtomicUsize,
    ik_handshakes: AtomicUsize,
    /// Each established connection's client static key and a way to send
    /// to that connection alone.
    direct: Mutex<Vec<([u8; 32], tokio::sync::mpsc::UnboundedSender<Node>)>>,
    /// The primary phone as a Signal party (it writes to its companion).
    /// (Made at its first message.)
    phone: tokio::sync::Mutex<Option<contact::Contact>>,
    /// The phone sent its app-state key share.
    key_shared: AtomicBool,
    /// The companion's pre-keys from its latest upload, minus those handed
    /// out since.
    bundle: Mutex<Option<contact::Bundle>>,
    /// Drop the TCP connection on receiving an unlink IQ, unanswered.
    drop_on_unlink: AtomicBool,
    /// Connections that got `<success>` and are still up.
    open_logins: AtomicUsize,
    next_id: AtomicU64,
    changed: Notify,
}

impl Shared {
    fn id(&self) -> String {
        format!("mock-{}", self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    fn touch(&self) {
        self.changed.notify_waiters();
    }

    /// Whether one more connection may be accepted under `accept_next`.
    fn take_accept_budget(&self) -> bool {
        let mut budget = self.accept_budget.lock().unwrap();
        match budget.as_mut() {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// A running mock server; dropping it stops accepting (open connections
/// end with their tasks).
pub struct MockServer {
    port: u16,
    config: MockConfig,
    shared: Arc<Shared>,
    commands: broadcast::Sender<Command>,
    accept: JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl MockServer {
    pub async fn start() -> MockServer {
        MockServer::start_with(MockConfig::default()).await
    }

    pub async fn start_with(config: MockConfig) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared::default());
        let server_static = Keys::generate();
        let cert = noise::cert_chain(&server_static.public);
        // Roomy: a connection that lags behind loses commands.
        let (commands, _) = broadcast::channel(1024);
        let config_for_server = config.clone();
        let accept = {
            let shared = shared.clone();
            let commands = commands.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    if shared.refuse.load(Ordering::SeqCst) || !shared.take_accept_budget() {
                        // Closed before the WebSocket upgrade: the client's
                        // dial fails.
                        drop(tcp);
                        shared.refused.fetch_add(1, Ordering::SeqCst);
                        shared.touch();
                        continue;
                    }
                    let conn = Connection {
                        shared: shared.clone(),
                        config: config.clone(),
                        server_static: server_static.clone(),
                        cert: cert.clone(),
                        commands: commands.subscribe(),
                    };
                    tokio::spawn(async move {
                        let shared = conn.shared.clone();
                        if let Err(e) = conn.run(tcp).await {
                            shared.errors.lock().unwrap().push(format!("{e:#}"));
                            shared.touch();
                        }
                    });
                }
            })
        };
        MockServer {
            port,
            config: config_for_server,
            shared,
            commands,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/chat", self.port)
    }

    /// Sends `<stream:error code="…"/>` on every open connection, then
    /// closes it with a WebSocket close frame. Answers how many got it.
    pub fn close_with_stream_error(&self, code: u16) -> usize {
        self.commands
            .send(Command::StreamError(code.to_string()))
            .unwrap_or(0)
    }

    /// `<stream:error><conflict type="replaced"/></stream:error>` on every
    /// open connection (another client took the session), then a close.
    pub fn replace_session(&self) -> usize {
        let node = NodeBuilder::new("stream:error")
            .children([NodeBuilder::new("conflict")
                .attr("type", "replaced")
                .build()])
            .build();
        self.commands
            .send(Command::StreamErrorNode(node))
            .unwrap_or(0)
    }

    /// Sends `<failure reason=…>` on every open connection, then closes it.
    pub fn send_failure(&self, failure: Failure) -> usize {
        self.commands.send(Command::Failure(failure)).unwrap_or(0)
    }

    /// Sends `<xmlstreamend/>` on every open connection, then closes it.
    pub fn end_stream(&self) -> usize {
        self.commands.send(Command::StreamEnd).unwrap_or(0)
    }

    /// While set, logins are answered with this `<failure>` (then a close)
    /// instead of `<success>`.
    pub fn fail_logins(&self, failure: Option<Failure>) {
        *self.shared.login_failure.lock().unwrap() = failure;
    }

    /// While set, established connections stop answering anything (pings
    /// included) but keep the socket open: only the client's own dead-socket
    /// detection can end them.
    pub fn go_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    /// Accepts the next `n` connections, then refuses like
    /// `refuse_connections(true)`; `None` lifts the limit.
    pub fn accept_next(&self, n: Option<usize>) {
        *self.shared.accept_budget.lock().unwrap() = n;
    }

    /// While set, every logged-in connection is dropped (TCP, no close frame)
    /// this long after its `<success>`.
    pub fn flap(&self, after: Option<Duration>) {
        *self.shared.flap_after.lock().unwrap() = after;
    }

    /// While set, a `remove-companion-device` IQ (a logout's unlink) gets
    /// no answer: the server drops the TCP connection instead.
    pub fn drop_on_unlink(&self, drop: bool) {
        self.shared.drop_on_unlink.store(drop, Ordering::SeqCst);
    }

    /// Logins answered with `<success>`.
    pub fn logins(&self) -> usize {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// Logged-in connections still up.
    pub fn open_logins(&self) -> usize {
        self.shared.open_logins.load(Ordering::SeqCst)
    }

    /// Handshakes that were IK (a paired client with the server's static
    /// cached).
    pub fn ik_handshakes(&self) -> usize {
        self.shared.ik_handshakes.load(Ordering::SeqCst)
    }

    /// The `remove-companion-device` IQs received (a logout's unlink).
    pub fn unlinks(&self) -> Vec<Node> {
        self.received().into_iter().filter(is_unlink).collect()
    }

    /// Whether the companion's pre-key upload has arrived (a contact can
    /// write to it only then).
    pub fn has_bundle(&self) -> bool {
        self.shared.bundle.lock().unwrap().is_some()
    }

    /// `contact` writes `text` to the paired companion: a real Signal
    /// message (`pkmsg` first, from the pre-keys the companion uploaded at
    /// login, then `msg`) in a `<message>` stanza on every logged-in
    /// connection. Answers the message id.
    pub async fn message_from(
        &self,
        contact: &mut contact::Contact,
        push_name: &str,
        text: &str,
    ) -> anyhow::Result<String> {
        let message = whatsapp_rust::waproto::whatsapp::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        };
        let (id, node) = sealed_message(&self.shared, contact, push_name, &message).await?;
        if self.send(node) == 0 {
            bail!("no connection to deliver the message on");
        }
        Ok(id)
    }

    /// Delivers to `contact` what the companion sent it so far (the `<enc>`
    /// addressed to the contact's device 0 in each `<message>`), decrypted
    /// into `contact.inbox`.
    pub async fn deliver_to(&self, contact: &mut contact::Contact) -> anyhow::Result<()> {
        let from = companion_address()?;
        let to = format!("{}@s.whatsapp.net", contact.user);
        for node in self.received() {
            if node.tag != "message" || attr(&node, "to").as_deref() != Some(to.as_str()) {
                continue;
            }
            let id = attr(&node, "id").unwrap_or_default();
            // Several recipients' devices: `<participants><to jid>`; one:
            // a bare `<enc>`.
            let enc = node
                .get_optional_child("participants")
                .and_then(|p| {
                    p.get_children_by_tag("to")
                        .find(|t| attr(t, "jid").as_deref() == Some(to.as_str()))
                        .and_then(|t| t.get_optional_child("enc"))
                })
                .or_else(|| node.get_optional_child("enc"));
            let Some(enc) = enc else { continue };
            let kind = attr(enc, "type").unwrap_or_default();
            let Some(whatsapp_rust::wacore_binary::node::NodeContent::Bytes(ct)) = &enc.content
            else {
                bail!("message {id}: <enc> without bytes");
            };
            contact.receive(&from, &id, &kind, ct).await?;
        }
        Ok(())
    }

    /// Drops every open connection's TCP socket without a close frame.
    pub fn drop_tcp(&self) -> usize {
        self.commands.send(Command::DropTcp).unwrap_or(0)
    }

    /// Sends a node on every open connection.
    pub fn send(&self, node: Node) -> usize {
        self.commands.send(Command::Send(node)).unwrap_or(0)
    }

    /// Plays the phone scanning `qr_code` (as the client showed it): sends
    /// `<pair-success>` for [`PAIRED_JID`] to the connection whose Noise
    /// static key the code carries. Answers how many open connections got it
    /// (0 when that client is gone). When the client answers with
    /// `<pair-device-sign>`, the server closes with a 515.
    pub fn scan(&self, qr_code: &str) -> usize {
        let qr = phone::Qr::parse(qr_code).expect("a companion QR code");
        let identity =
            phone::device_identity(&qr.identity, &qr.adv_secret).expect("a device identity");
        let mut children = vec![
            NodeBuilder::new("device")
                .attr("jid", PAIRED_JID.parse::<Jid>().expect("jid"))
                .attr("lid", PAIRED_LID.parse::<Jid>().expect("lid"))
                .build(),
            NodeBuilder::new("device-identity").bytes(identity).build(),
            // A business primary on Android says `smba`.
            NodeBuilder::new("platform")
                .attr(
                    "name",
                    if self.config.business_name.is_some() {
                        "smba"
                    } else {
                        "android"
                    },
                )
                .build(),
        ];
        if let Some(name) = &self.config.business_name {
            children.push(NodeBuilder::new("biz").attr("name", name.clone()).build());
        }
        let node = NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "set")
            .attr("id", self.shared.id())
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-success").children(children).build()])
            .build();
        let mut direct = self.shared.direct.lock().unwrap();
        direct.retain(|(_, tx)| !tx.is_closed());
        direct
            .iter()
            .filter(|(key, _)| *key == qr.noise)
            .filter(|(_, tx)| tx.send(node.clone()).is_ok())
            .count()
    }

    /// The `<pair-device-sign>` answers received (the whole `iq`).
    pub fn pair_signs(&self) -> Vec<Node> {
        self.shared.pair_signs.lock().unwrap().clone()
    }

    /// While set, new TCP connections are closed before the WebSocket
    /// upgrade.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Every stanza received after a handshake, in order.
    pub fn received(&self) -> Vec<Node> {
        self.shared.received.lock().unwrap().clone()
    }

    /// WebSocket connections accepted (refused ones not counted).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Completed Noise handshakes.
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// Connections closed before the upgrade by `refuse_connections`.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// The pairing refs sent, in order. The client's QR code is
    /// `ref,base64(noise static),base64(identity),base64(adv secret),type`.
    pub fn qr_codes_sent(&self) -> Vec<String> {
        self.shared.refs.lock().unwrap().clone()
    }

    /// The Noise static key of each client that finished a handshake.
    pub fn client_statics(&self) -> Vec<[u8; 32]> {
        self.shared.client_statics.lock().unwrap().clone()
    }

    /// What went wrong on connections (handshake failures and the like).
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Waits until `check` holds (re-checked on every server-side change
    /// and every 20 ms), or panics after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&MockServer) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if check(self) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "mock server: timed out waiting for {what}; errors: {:?}",
                    self.errors()
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), changed).await;
        }
    }
}

/// Standard padded base64, as in the QR code's fields.
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Attribute `key` of a node as a string.
pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.to_string())
}

struct Connection {
    shared: Arc<Shared>,
    config: MockConfig,
    server_static: Keys,
    cert: Vec<u8>,
    commands: broadcast::Receiver<Command>,
}

type Ws = WebSocketStream<TcpStream>;

/// The next whole frame from the client, feeding binary messages into the
/// decoder; `None` once the client closed.
async fn next_frame(
    ws: &mut Ws,
    decoder: &mut FrameDecoder,
) -> anyhow::Result<Option<bytes::BytesMut>> {
    loop {
        if let Some(frame) = decoder.decode_frame() {
            return Ok(Some(frame));
        }
        match ws.next().await {
            Some(Ok(Message::Binary(data))) => decoder.feed(&data),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

impl Connection {
    async fn run(mut self, tcp: TcpStream) -> anyhow::Result<()> {
        let mut ws = tokio_tungstenite::accept_async(tcp)
            .await
            .context("WebSocket upgrade")?;
        self.shared.connections.fetch_add(1, Ordering::SeqCst);
        self.shared.touch();

        let mut session = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut ws))
            .await
            .map_err(|_| anyhow!("handshake timed out"))??;
        self.shared.handshakes.fetch_add(1, Ordering::SeqCst);
        if session.ik {
            self.shared.ik_handshakes.fetch_add(1, Ordering::SeqCst);
        }
        self.shared
            .client_statics
            .lock()
            .unwrap()
            .push(session.client_static);
        self.shared.touch();

        // Reachable on its own before anything is sent: a client may show
        // the first QR (and a test scan it) as soon as the refs arrive.
        let (direct_tx, mut direct) = tokio::sync::mpsc::unbounded_channel();
        self.shared
            .direct
            .lock()
            .unwrap()
            .push((session.client_static, direct_tx));
        // A registration payload (no username) means an unpaired device;
        // one with a username is a paired device logging in.
        let pairing = session.payload.username.is_none();
        let mut flap_at = None;
        if pairing {
            self.send_refs(&mut ws, &mut session).await?;
        } else {
            let failure = self.shared.login_failure.lock().unwrap().clone();
            if let Some(failure) = failure {
                return close_after(&mut ws, &mut session, &failure.node()).await;
            }
            send(&mut ws, &mut session, &success_node()).await?;
            self.shared.logins.fetch_add(1, Ordering::SeqCst);
            flap_at = self
                .shared
                .flap_after
                .lock()
                .unwrap()
                .map(|d| tokio::time::Instant::now() + d);
        }
        let _open = (!pairing).then(|| OpenLogin::new(self.shared.clone()));
        let mut rotate = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.ref_interval,
            self.config.ref_interval,
        );
        let flap = tokio::time::sleep_until(flap_at.unwrap_or_else(tokio::time::Instant::now));
        tokio::pin!(flap);
        let mut decoder = FrameDecoder::new();
        loop {
            let silent = self.shared.silent.load(Ordering::SeqCst);
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Binary(data))) => {
                        decoder.feed(&data);
                        while let Some(frame) = decoder.decode_frame() {
                            let node = session.read.open(frame)?;
                            self.shared.received.lock().unwrap().push(node.clone());
                            self.shared.touch();
                            if self.shared.silent.load(Ordering::SeqCst) {
                                continue;
                            }
                            if is_prekey_upload(&node) {
                                match contact::Bundle::from_upload(&node) {
                                    Ok(b) => *self.shared.bundle.lock().unwrap() = Some(b),
                                    Err(e) => self.shared.errors.lock().unwrap().push(format!("{e:#}")),
                                }
                                // A personal phone shares the app-state key
                                // with its new companion once it can.
                                if self.config.business_name.is_none()
                                    && !self.shared.key_shared.swap(true, Ordering::SeqCst)
                                {
                                    let mut phone = self.shared.phone.lock().await;
                                    let phone = phone.get_or_insert_with(|| {
                                        contact::Contact::new(PAIRED_JID.split(':').next().unwrap_or_default())
                                    });
                                    let (_, share) = sealed_message(
                                        &self.shared,
                                        phone,
                                        "",
                                        &app_state_key_share(),
                                    )
                                    .await?;
                                    send(&mut ws, &mut session, &share).await?;
                                }
                            }
                            if is_unlink(&node) && self.shared.drop_on_unlink.load(Ordering::SeqCst) {
                                drop(ws);
                                return Ok(());
                            }
                            if is_pair_sign(&node) {
                                // Pairing done: the real server restarts the
                                // stream so the client logs in as the device.
                                self.shared.pair_signs.lock().unwrap().push(node);
                                self.shared.touch();
                                return close_with(&mut ws, &mut session, "515").await;
                            }
                            for reply in replies(&node) {
                                send(&mut ws, &mut session, &reply).await?;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => {}
                    // The client going away abruptly is not the server's error.
                    Some(Err(_)) => return Ok(()),
                },
                cmd = self.commands.recv() => match cmd {
                    // A silent server does nothing on command but drop.
                    Ok(Command::DropTcp) => {
                        drop(ws);
                        return Ok(());
                    }
                    Ok(_) if silent => {}
                    Ok(Command::StreamError(code)) => {
                        return close_with(&mut ws, &mut session, &code).await;
                    }
                    Ok(Command::StreamErrorNode(node)) => {
                        return close_after(&mut ws, &mut session, &node).await;
                    }
                    Ok(Command::Failure(failure)) => {
                        return close_after(&mut ws, &mut session, &failure.node()).await;
                    }
                    Ok(Command::StreamEnd) => {
                        let end = NodeBuilder::new("xmlstreamend").build();
                        return close_after(&mut ws, &mut session, &end).await;
                    }
                    Ok(Command::Send(node)) => send(&mut ws, &mut session, &node).await?,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                Some(node) = direct.recv() => {
                    if !silent {
                        send(&mut ws, &mut session, &node).await?;
                    }
                }
                _ = rotate.tick(), if pairing && !silent => {
                    self.send_refs(&mut ws, &mut session).await?
                }
                _ = &mut flap, if flap_at.is_some() => {
                    drop(ws);
                    return Ok(());
                }
            }
        }
    }

    async fn handshake(&self, ws: &mut Ws) -> anyhow::Result<Session> {
        // The first message carries the `WA` header before the first frame.
        let first = loop {
            match ws.next().await {
                Some(Ok(Message::Binary(data))) => break data,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed before the ClientHello"),
            }
        };
        let mut decoder = FrameDecoder::new();
        decoder.feed(noise::strip_conn_header(&first)?);
        let hello = next_frame(ws, &mut decoder)
            .await?
            .ok_or_else(|| anyhow!("closed before the ClientHello"))?;
        match noise::respond(&hello, &self.server_static, &self.cert)? {
            Hello::Ik(session, server_hello) => {
                ws.send(Message::Binary(encode_frame(&server_hello, None)?.into()))
                    .await?;
                Ok(*session)
            }
            Hello::Xx(responder, server_hello) => {
                ws.send(Message::Binary(encode_frame(&server_hello, None)?.into()))
                    .await?;
                let finish = next_frame(ws, &mut decoder)
                    .await?
                    .ok_or_else(|| anyhow!("closed before the ClientFinish"))?;
                responder.finish(&finish)
            }
        }
    }

    /// One `pair-device` IQ with one new ref.
    async fn send_refs(&self, ws: &mut Ws, session: &mut Session) -> anyhow::Result<()> {
        let r = format!(
            "mockref{}",
            self.shared.next_id.fetch_add(1, Ordering::SeqCst)
        );
        let iq = NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "set")
            .attr("id", self.shared.id())
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children([NodeBuilder::new("ref")
                    .bytes(r.clone().into_bytes())
                    .build()])
                .build()])
            .build();
        send(ws, session, &iq).await?;
        self.shared.refs.lock().unwrap().push(r);
        self.shared.touch();
        Ok(())
    }
}

async fn send(ws: &mut Ws, session: &mut Session, node: &Node) -> anyhow::Result<()> {
    let frame = session.write.seal(node)?;
    ws.send(Message::Binary(frame.into()))
        .await
        .context("sending a frame")
}

/// Sends `<stream:error code>` and closes the WebSocket.
async fn close_with(ws: &mut Ws, session: &mut Session, code: &str) -> anyhow::Result<()> {
    let node = NodeBuilder::new("stream:error")
        .attr("code", code.to_string())
        .build();
    close_after(ws, session, &node).await
}

/// Sends `node` and closes the WebSocket.
async fn close_after(ws: &mut Ws, session: &mut Session, node: &Node) -> anyhow::Result<()> {
    send(ws, session, node).await?;
    let _ = ws.close(None).await;
    // Let the close handshake finish if the client answers.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

/// The paired companion as a Signal address (how contacts name it).
fn companion_address() -> anyhow::Result<whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress>
{
    let companion = PAIRED_JID.parse::<Jid>().map_err(|e| anyhow!("{e}"))?;
    Ok(
        whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress::new(
            &companion.user,
            u32::from(companion.device).into(),
        ),
    )
}

/// `message` from `contact` to the companion, encrypted from the pre-keys
/// it uploaded, as a `<message>` stanza; with its id.
async fn sealed_message(
    shared: &Shared,
    contact: &mut contact::Contact,
    push_name: &str,
    message: &whatsapp_rust::waproto::whatsapp::Message,
) -> anyhow::Result<(String, Node)> {
    let mut bundle = shared
        .bundle
        .lock()
        .unwrap()
        .clone()
        .ok_or_else(|| anyhow!("the companion has not uploaded pre-keys yet"))?;
    let device = companion_address()?;
    let (kind, ciphertext) = contact.encrypt(&device, &mut bundle, message).await?;
    *shared.bundle.lock().unwrap() = Some(bundle);
    let id = format!("3EB0{:016X}", shared.next_id.fetch_add(1, Ordering::SeqCst));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let node = NodeBuilder::new("message")
        .attr(
            "from",
            format!("{}@s.whatsapp.net", contact.user)
                .parse::<Jid>()
                .map_err(|e| anyhow!("{e}"))?,
        )
        .attr("id", id.clone())
        .attr("t", now.to_string())
        .attr("type", "text")
        .attr("notify", push_name.to_string())
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", kind)
            .bytes(ciphertext)
            .build()])
        .build();
    Ok((id, node))
}

/// What a personal (non-business) phone sends its new companion: the
/// app-state sync key, as a protocol message from the primary device. The
/// client waits for it before its first full app-state sync.
fn app_state_key_share() -> whatsapp_rust::waproto::whatsapp::Message {
    use whatsapp_rust::buffa::MessageField;
    use whatsapp_rust::waproto::whatsapp::message::{
        AppStateSyncKey, AppStateSyncKeyData, AppStateSyncKeyFingerprint, AppStateSyncKeyId,
        AppStateSyncKeyShare, ProtocolMessage, protocol_message,
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let key = AppStateSyncKey {
        key_id: MessageField::some(AppStateSyncKeyId {
            key_id: Some(vec![0, 0, 0, 1, 0, 0]),
        }),
        key_data: MessageField::some(AppStateSyncKeyData {
            key_data: Some(vec![7; 32]),
            fingerprint: MessageField::some(AppStateSyncKeyFingerprint {
                raw_id: Some(1),
                current_index: Some(0),
                device_indexes: vec![0, 1],
            }),
            timestamp: Some(now_ms),
        }),
    };
    whatsapp_rust::waproto::whatsapp::Message {
        protocol_message: MessageField::some(ProtocolMessage {
            r#type: Some(protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: MessageField::some(AppStateSyncKeyShare { keys: vec![key] }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Counts a logged-in connection while it is up.
struct OpenLogin(Arc<Shared>);

impl OpenLogin {
    fn new(shared: Arc<Shared>) -> OpenLogin {
        shared.open_logins.fetch_add(1, Ordering::SeqCst);
        shared.touch();
        OpenLogin(shared)
    }
}

impl Drop for OpenLogin {
    fn drop(&mut self) {
        self.0.open_logins.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// What the server says to a paired device that logged in.
fn success_node() -> Node {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    NodeBuilder::new("success")
        .attr("t", now.to_string())
        .attr("props", "1")
        .attr("creation", (now - 86_400).to_string())
        .attr("location", "mock")
        .attr("lid", PAIRED_LID.parse::<Jid>().expect("lid"))
        .build()
}

/// The login's `<iq xmlns="encrypt" type="set">` with the pre-key list.
fn is_prekey_upload(node: &Node) -> bool {
    node.tag == "iq"
        && attr(node, "xmlns").as_deref() == Some("encrypt")
        && attr(node, "type").as_deref() == Some("set")
        && node.get_optional_child("identity").is_some()
}

/// A logout's `<iq xmlns="md"><remove-companion-device/></iq>`.
fn is_unlink(node: &Node) -> bool {
    node.tag == "iq" && node.get_optional_child("remove-companion-device").is_some()
}

/// The companion's answer to `<pair-success>`.
fn is_pair_sign(node: &Node) -> bool {
    node.tag == "iq"
        && attr(node, "type").as_deref() == Some("result")
        && node.get_optional_child("pair-device-sign").is_some()
}

fn result_to(id: String) -> NodeBuilder {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "result")
        .attr("id", id)
}

/// What the server sends back for a stanza from the client. Requests get a
/// result shaped the way the client parses it where that matters to the
/// login (the pre-key count, the passive/active switch, which the offline
/// marker follows), and an empty result otherwise so no waiter hangs;
/// results (acks of our IQs) and other stanzas get nothing.
fn replies(node: &Node) -> Vec<Node> {
    // The server acks what the client sends it.
    if node.tag == "message" || node.tag == "receipt" {
        let Some(id) = attr(node, "id") else {
            return Vec::new();
        };
        let mut ack = NodeBuilder::new("ack")
            .attr("class", node.tag.to_string())
            .attr("id", id);
        if let Some(to) = attr(node, "to") {
            ack = ack.attr("from", to);
        }
        return vec![ack.build()];
    }
    if node.tag != "iq" {
        return Vec::new();
    }
    let Some(kind) = attr(node, "type") else {
        return Vec::new();
    };
    if kind != "get" && kind != "set" {
        return Vec::new();
    }
    let Some(id) = attr(node, "id") else {
        return Vec::new();
    };
    let xmlns = attr(node, "xmlns").unwrap_or_default();
    let child = |tag: &str| node.get_optional_child(tag).is_some();
    match xmlns.as_str() {
        // The client counts the server's pre-keys; none yet, so it uploads.
        "encrypt" if kind == "get" && child("count") => vec![
            result_to(id)
                .children([NodeBuilder::new("count").attr("value", "0").build()])
                .build(),
        ],
        // App-state sync: every collection asked for is clean and up to date
        // (the mock keeps no app state).
        "w:sync:app:state" => {
            let collections = node
                .get_optional_child("sync")
                .map(|sync| {
                    sync.get_children_by_tag("collection")
                        .filter_map(|c| attr(c, "name"))
                        .map(|name| NodeBuilder::new("collection").attr("name", name).build())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            vec![
                result_to(id)
                    .children([NodeBuilder::new("sync").children(collections).build()])
                    .build(),
            ]
        }
        // Leaving passive mode: the server then delivers what queued up
        // while the device was offline, ending with the offline marker.
        "passive" if child("active") => vec![
            result_to(id).build(),
            NodeBuilder::new("ib")
                .children([NodeBuilder::new("offline").attr("count", "0").build()])
                .build(),
        ],
        _ => vec![result_to(id).build()],
    }
}
