//! One client connection to the mock server: the WebSocket upgrade, the
//! Noise handshake, then the stanza loop (pairing or a logged-in account).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use whatsapp_rust::wacore::framing::{FrameDecoder, encode_frame};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::node::NodeContent;

use super::noise::{self, Hello, Keys, Session};
use super::stanzas::{self, is_active, is_pair_sign, is_prekey_upload, is_unlink};
use super::{Command, MockConfig, Route, SERVER, Shared, contact};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<TcpStream>;

pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    config: MockConfig,
    server_static: Keys,
    cert: Vec<u8>,
    commands: broadcast::Receiver<Command>,
}

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
    pub(super) fn new(
        shared: Arc<Shared>,
        config: MockConfig,
        server_static: Keys,
        cert: Vec<u8>,
        commands: broadcast::Receiver<Command>,
    ) -> Connection {
        Connection {
            shared,
            config,
            server_static,
            cert,
            commands,
        }
    }

    pub(super) async fn run(mut self, tcp: TcpStream) -> anyhow::Result<()> {
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

        // A registration payload (no username) means an unpaired device;
        // one with a username is a paired device logging in.
        let account = session.payload.username.map(|user| {
            self.shared
                .directory
                .lock()
                .unwrap()
                .login_account(&user.to_string())
        });
        let pairing = account.is_none();
        // Reachable on its own before anything is sent: a client may show
        // the first QR (and a test scan it) as soon as the refs arrive.
        let (direct_tx, mut direct) = tokio::sync::mpsc::unbounded_channel();
        self.shared.direct.lock().unwrap().push(Route {
            client_static: session.client_static,
            account,
            tx: direct_tx,
        });
        let mut flap_at = None;
        let mut login = 0;
        if let Some(k) = account {
            let failure = self.shared.login_failure.lock().unwrap().clone();
            if let Some(failure) = failure {
                return close_after(&mut ws, &mut session, &failure.node()).await;
            }
            let lid = self.shared.directory.lock().unwrap().account(k).lid.clone();
            send(&mut ws, &mut session, &stanzas::success_node(&lid)?).await?;
            login = self.shared.logins.fetch_add(1, Ordering::SeqCst) + 1;
            flap_at = self
                .shared
                .flap_after
                .lock()
                .unwrap()
                .map(|d| tokio::time::Instant::now() + d);
        } else {
            self.send_refs(&mut ws, &mut session).await?;
        }
        let _open = (!pairing).then(|| OpenLogin::new(self.shared.clone()));
        let interval = self
            .config
            .ref_interval
            .unwrap_or(Duration::from_secs(3600));
        let mut rotate = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let rotating = pairing && self.config.ref_interval.is_some();
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
                            if let Some(k) = account {
                                self.logged_in_stanza(k, &node, &mut ws, &mut session).await?;
                            }
                            if is_unlink(&node) && self.shared.drop_on_unlink.load(Ordering::SeqCst) {
                                drop(ws);
                                return Ok(());
                            }
                            if is_pair_sign(&node) {
                                self.paired(&node, session.client_static);
                                // Pairing done: the real server restarts the
                                // stream so the client logs in as the device.
                                return close_with(&mut ws, &mut session, "515").await;
                            }
                            for reply in stanzas::replies(&self.shared, account, &node).await {
                                send(&mut ws, &mut session, &reply).await?;
                            }
                            // Leaving passive mode: the server then
                            // delivers what queued up while the device was
                            // offline (what it did not ack), ending with
                            // the marker.
                            if is_active(&node) {
                                let queued = match account {
                                    Some(k) => self.shared.offline_for(k, login),
                                    None => vec![stanzas::offline_marker()],
                                };
                                for n in &queued {
                                    send(&mut ws, &mut session, n).await?;
                                }
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
                _ = rotate.tick(), if rotating && !silent => {
                    self.send_refs(&mut ws, &mut session).await?
                }
                _ = &mut flap, if flap_at.is_some() => {
                    drop(ws);
                    return Ok(());
                }
            }
        }
    }

    /// What a logged-in connection does with a stanza besides answering
    /// it: keep the companion's pre-keys, have a personal phone share its
    /// app-state key once they are there, route messages.
    async fn logged_in_stanza(
        &self,
        k: usize,
        node: &Node,
        ws: &mut Ws,
        session: &mut Session,
    ) -> anyhow::Result<()> {
        if node.tag == "message" {
            stanzas::route_message(&self.shared, k, node);
        }
        self.shared.take_acks(k, node);
        if !is_prekey_upload(node) {
            return Ok(());
        }
        let share = {
            let mut dir = self.shared.directory.lock().unwrap();
            let a = dir.account(k);
            match contact::Bundle::from_upload(node) {
                Ok(b) => a.bundle = Some(contact::Bundle::merge(a.bundle.take(), b)),
                Err(e) => {
                    drop(dir);
                    self.shared.error(format!("{e:#}"));
                    return Ok(());
                }
            }
            // A personal phone shares the app-state key with its new
            // companion once it can.
            let share = self.config.business_name.is_none() && !a.key_shared;
            a.key_shared |= share;
            share.then(|| (a.phone.clone(), format!("{}@s.whatsapp.net", a.pn)))
        };
        if let Some((phone, from)) = share {
            let mut phone = phone.lock().await;
            let (_, mut node) = stanzas::sealed_message(
                &self.shared,
                k,
                &mut phone,
                &from,
                "",
                &stanzas::app_state_key_share(),
            )
            .await?;
            // The phone writes to its own companion: a peer message.
            node.attrs.insert("category", "peer");
            send(ws, session, &node).await?;
        }
        Ok(())
    }

    /// The client signed the pairing: its account now lists the companion,
    /// whose pre-keys come with its first login.
    fn paired(&self, node: &Node, client_static: [u8; 32]) {
        self.shared.pair_signs.lock().unwrap().push(node.clone());
        let k = self
            .shared
            .scanned
            .lock()
            .unwrap()
            .iter()
            .find(|(key, _)| *key == client_static)
            .map(|(_, k)| *k);
        if let Some(k) = k {
            let identity = node
                .get_optional_child_by_tag(&["pair-device-sign", "device-identity"])
                .and_then(|n| match &n.content {
                    Some(NodeContent::Bytes(b)) => Some(b.clone()),
                    _ => None,
                });
            let mut dir = self.shared.directory.lock().unwrap();
            let a = dir.account(k);
            a.linked = true;
            a.bundle = None;
            a.key_shared = false;
            a.device_identity = identity;
        }
        self.shared.touch();
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

    /// One `pair-device` IQ with `refs_per_iq` new refs.
    async fn send_refs(&self, ws: &mut Ws, session: &mut Session) -> anyhow::Result<()> {
        let refs: Vec<String> = (0..self.config.refs_per_iq.max(1))
            .map(|_| {
                format!(
                    "mockref{}",
                    self.shared.next_id.fetch_add(1, Ordering::SeqCst)
                )
            })
            .collect();
        let iq = NodeBuilder::new("iq")
            .attr("from", SERVER)
            .attr("type", "set")
            .attr("id", self.shared.id())
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children(refs.iter().map(|r| {
                    NodeBuilder::new("ref")
                        .bytes(r.clone().into_bytes())
                        .build()
                }))
                .build()])
            .build();
        // Known before they are on the wire: a client may show the QR and
        // the test scan it before this send returns.
        self.shared.refs.lock().unwrap().extend(refs);
        send(ws, session, &iq).await?;
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
