//! A mock WhatsApp server for end-to-end tests: a real WebSocket on
//! 127.0.0.1, the real Noise handshakes (as responder, with a fresh static
//! key per server and a cert chain signed by the server's own root) and
//! real binary nodes, built from wacore's own pieces. It serves any number
//! of accounts at once, and runs as its own process too
//! (`examples/mock_server.rs`, driven by the JSON lines in `commands.rs`),
//! so a second, independent client (Baileys, `tests/peer/`) checks it.
//!
//! What it does:
//! - runs the handshake (XX for a fresh client, IK for one that cached the
//!   server's key) and decodes its `ClientPayload`;
//! - a registering client gets one `<iq xmlns="md"><pair-device>` with six
//!   refs, as the real server sends (the client rotates through them
//!   itself); optionally a fresh one every `ref_interval`;
//! - plays the phone scanning a QR code ([`MockServer::scan`]): sends a
//!   `<pair-success>` signed with the phone's identity key, and once the
//!   client answers with `<pair-device-sign>`, ends the stream with
//!   `<stream:error code="515"/>` like the real server;
//! - logs a paired device in (`<success>`, answers to the login IQs:
//!   pre-key count, upload, digest, passive/active, then the offline
//!   marker) until the client says it is connected;
//! - answers device lists (`usync`: devices, LIDs, contact) and pre-key
//!   bundle fetches (`<key>`) from its directory (`directory.rs`), acks
//!   messages and receipts, and answers any other `get`/`set` IQ with an
//!   empty result;
//! - carries Signal messages both ways between companions and simulated
//!   contacts or phones (`contact.rs`), each with its own pre-keys: any
//!   `wa::Message` a contact sends (`send_from`: quotes, reactions, edits,
//!   polls, votes, ...), and receipts from a contact's phone
//!   (`receipt_from`);
//! - keeps each message for a companion until it is acked and delivers
//!   what is not at the next login, before the offline marker
//!   (`offline.rs`);
//! - keeps groups (`groups.rs`): answers the `w:g2` IQs about them and
//!   sends every member a `<notification type="w:gp2">` for each change;
//!   contacts write to a group with sender keys (`skmsg` plus the
//!   distribution message over their 1:1 session) and read what a
//!   companion sends there (the `skmsg` goes to every member contact);
//! - records every stanza it receives;
//! - injects faults on command (stream errors, `<failure>`, stream end, TCP
//!   drops, silence, refused or rationed connections, flapping).
//!
//! - answers the `media_conn` IQ with its own media host (`media.rs`:
//!   HTTPS with a test-only root), which keeps uploads and serves them.
//!
//! Not done: edge-routing pre-intros (`ED`; the mock never hands out
//! routing info, so clients never send one), app-state patches (every
//! collection is empty), history sync payloads.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod commands;
mod conn;
pub mod contact;
pub mod directory;
pub mod groups;
pub mod media;
mod messaging;
pub mod noise;
pub mod offline;
pub mod phone;
pub mod rig;
pub mod stanzas;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use whatsapp_rust::Jid;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use directory::{COMPANION_DEVICE, Directory};
use noise::Keys;

/// The server's JID as a bare server (how the client checks `from`).
pub const SERVER: &str = "s.whatsapp.net";

/// The device JID the first account's companion is linked as.
pub const PAIRED_JID: &str = "15551234567:1@s.whatsapp.net";
/// Its LID.
pub const PAIRED_LID: &str = "100000000000001:1@lid";

#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Refs in the `pair-device` IQ (the real server sends six).
    pub refs_per_iq: usize,
    /// When set, a pairing client is sent a fresh `pair-device` this often
    /// (the real server does not; a test of the client's QR refresh does).
    pub ref_interval: Option<Duration>,
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
            refs_per_iq: 6,
            ref_interval: None,
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

/// A way to reach one established connection.
struct Route {
    client_static: [u8; 32],
    /// The account it logged in as (`None` while pairing).
    account: Option<usize>,
    tx: tokio::sync::mpsc::UnboundedSender<Node>,
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
    direct: Mutex<Vec<Route>>,
    /// The account each scanned QR's client (by Noise static) links as.
    scanned: Mutex<Vec<([u8; 32], usize)>>,
    directory: Mutex<Directory>,
    /// Drop the TCP connection on receiving an unlink IQ, unanswered.
    drop_on_unlink: AtomicBool,
    /// Connections that got `<success>` and are still up.
    open_logins: AtomicUsize,
    /// `<message>` stanzas companions addressed to contacts.
    to_contacts: AtomicUsize,
    next_id: AtomicU64,
    changed: Notify,
    /// Groups, by id (`groups.rs`).
    groups: Mutex<groups::Groups>,
    /// The media host's files and counters.
    media: Arc<media::MediaStore>,
    /// Its `host:port`, as the `media_conn` answer names it.
    media_host: Mutex<String>,
    /// Messages for companions, kept until acked (`offline.rs`).
    offline: Mutex<Vec<offline::Queued>>,
}

impl Shared {
    fn id(&self) -> String {
        format!("mock-{}", self.next_id.fetch_add(1, Ordering::SeqCst))
    }

    fn touch(&self) {
        self.changed.notify_waiters();
    }

    fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
        self.touch();
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

    /// Sends `node` to every connection logged in as `account`; answers
    /// how many.
    fn send_to_account(&self, account: usize, node: &Node) -> usize {
        let mut direct = self.direct.lock().unwrap();
        direct.retain(|r| !r.tx.is_closed());
        direct
            .iter()
            .filter(|r| r.account == Some(account))
            .filter(|r| r.tx.send(node.clone()).is_ok())
            .count()
    }
}

/// A running mock server; dropping it stops accepting (open connections
/// end with their tasks).
pub struct MockServer {
    port: u16,
    config: MockConfig,
    shared: Arc<Shared>,
    commands: broadcast::Sender<Command>,
    cert_root: [u8; 32],
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
        let media_host = media::start(shared.media.clone()).await;
        *shared.media_host.lock().unwrap() = media_host;
        let server_static = Keys::generate();
        let root = Keys::generate();
        let cert = noise::cert_chain(&root, &server_static.public);
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
                    let conn = conn::Connection::new(
                        shared.clone(),
                        config.clone(),
                        server_static.clone(),
                        cert.clone(),
                        commands.subscribe(),
                    );
                    tokio::spawn(async move {
                        let shared = conn.shared.clone();
                        if let Err(e) = conn.run(tcp).await {
                            shared.error(format!("{e:#}"));
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
            cert_root: root.public,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws/chat", self.port)
    }

    /// The public key of the root the cert chain is signed by (what a
    /// client that checks the chain must hold as WhatsApp's root).
    pub fn cert_root(&self) -> [u8; 32] {
        self.cert_root
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
        self.received()
            .into_iter()
            .filter(stanzas::is_unlink)
            .collect()
    }

    /// Whether the first account's companion uploaded its pre-keys (a
    /// contact can write to it only then).
    pub fn has_bundle(&self) -> bool {
        self.has_bundle_for(0)
    }

    /// Whether account `k`'s companion uploaded its pre-keys.
    pub fn has_bundle_for(&self, k: usize) -> bool {
        let dir = self.shared.directory.lock().unwrap();
        dir.accounts.get(k).is_some_and(|a| a.bundle.is_some())
    }

    /// Accounts whose companion uploaded its pre-keys.
    pub fn bundles(&self) -> usize {
        let dir = self.shared.directory.lock().unwrap();
        dir.accounts.iter().filter(|a| a.bundle.is_some()).count()
    }

    /// `<message>` stanzas companions addressed to contacts so far.
    pub fn messages_to_contacts(&self) -> usize {
        self.shared.to_contacts.load(Ordering::SeqCst)
    }

    /// The phone number and LID of account `k` (made if need be).
    pub fn account(&self, k: usize) -> (String, String) {
        let mut dir = self.shared.directory.lock().unwrap();
        let a = dir.account(k);
        (a.pn.clone(), a.lid.clone())
    }

    /// Drops every open connection's TCP socket without a close frame.
    pub fn drop_tcp(&self) -> usize {
        self.commands.send(Command::DropTcp).unwrap_or(0)
    }

    /// Sends a node on every open connection.
    pub fn send(&self, node: Node) -> usize {
        self.commands.send(Command::Send(node)).unwrap_or(0)
    }

    /// Plays the first account's phone scanning `qr_code` (as the client
    /// showed it); see [`Self::scan_as`].
    pub fn scan(&self, qr_code: &str) -> usize {
        self.scan_as(qr_code, 0).expect("a companion QR code")
    }

    /// Plays account `k`'s phone scanning `qr_code`: sends `<pair-success>`
    /// for the account's device 1 to the connection whose Noise static key
    /// the code carries. Answers how many open connections got it (0 when
    /// that client is gone), or why the code is no companion QR (or names
    /// a ref this server never sent). When the
    /// client answers with `<pair-device-sign>`, the server closes with a
    /// 515.
    pub fn scan_as(&self, qr_code: &str, k: usize) -> anyhow::Result<usize> {
        let qr = phone::Qr::parse(qr_code)?;
        // The phone hands the ref to the server, which knows its own.
        if !self.shared.refs.lock().unwrap().contains(&qr.pairing_ref) {
            bail!("ref {:?} was never sent by this server", qr.pairing_ref);
        }
        let (pn, lid, identity) = {
            let mut dir = self.shared.directory.lock().unwrap();
            let a = dir.account(k);
            let identity =
                phone::device_identity(&a.phone_identity, a.raw_id, &qr.identity, &qr.adv_secret)?;
            (a.pn.clone(), a.lid.clone(), identity)
        };
        let device = |user: &str, server: &str| -> anyhow::Result<Jid> {
            format!("{user}:{COMPANION_DEVICE}@{server}")
                .parse::<Jid>()
                .map_err(|e| anyhow!("{e}"))
        };
        let mut children = vec![
            NodeBuilder::new("device")
                .attr("jid", device(&pn, SERVER)?)
                .attr("lid", device(&lid, "lid")?)
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
        {
            let mut scanned = self.shared.scanned.lock().unwrap();
            scanned.retain(|(key, _)| *key != qr.noise);
            scanned.push((qr.noise, k));
        }
        let mut direct = self.shared.direct.lock().unwrap();
        direct.retain(|r| !r.tx.is_closed());
        Ok(direct
            .iter()
            .filter(|r| r.client_static == qr.noise)
            .filter(|r| r.tx.send(node.clone()).is_ok())
            .count())
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
        if !self.wait_for(timeout, check).await {
            panic!(
                "mock server: timed out waiting for {what}; errors: {:?}",
                self.errors()
            );
        }
    }

    /// Waits until `check` holds; answers false after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&MockServer) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if check(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
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

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
