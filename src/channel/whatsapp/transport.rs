//! The WebSocket pipe under whatsapp-rust: tokio-tungstenite over rustls
//! (ring provider, webpki roots). It knows nothing of Noise or WhatsApp
//! framing; it dials, carries binary frames both ways and says once why the
//! pipe ended, because the client's read loop treats that one event as the end
//! of the connection.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::ORIGIN};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use wacore::net::{
    DisconnectReason, Transport, TransportEvent, TransportFactory, WHATSAPP_WEB_ORIGIN,
    WHATSAPP_WEB_WS_URL,
};

/// The real WhatsApp Web endpoint; `[whatsapp] url` overrides it (tests point
/// it at 127.0.0.1).
pub const DEFAULT_URL: &str = WHATSAPP_WEB_WS_URL;

/// Matches the 20 s the client itself allows `create_transport`, so our error
/// (with its cause) normally arrives before the client's bare timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Bounded so a slow consumer pushes back into TCP instead of growing memory.
const EVENT_CAPACITY: usize = 64;

/// How long a polite Close may take; a peer that stopped reading must not hold
/// `disconnect()` (or the reader's cleanup) hostage.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The causes of an attempt's failed dial and HTTP exchanges. The client
/// only logs why its connect failed; the channel reads this to put the
/// cause (DNS, refused, TLS...) into the close it reports. A connect does
/// the dial and the version lookup at once, so both may have failed.
#[derive(Debug, Clone, Default)]
pub struct LastFailure {
    causes: Arc<std::sync::Mutex<Vec<String>>>,
    /// A WebSocket was opened: a failure after it is the handshake's.
    opened: Arc<AtomicBool>,
}

impl LastFailure {
    pub fn opened(&self) {
        self.opened.store(true, Ordering::SeqCst);
    }

    /// Whether a WebSocket was opened since this was made.
    pub fn was_opened(&self) -> bool {
        self.opened.load(Ordering::SeqCst)
    }

    pub fn record(&self, cause: impl Into<String>) {
        let cause = cause.into();
        let mut causes = self.causes.lock().unwrap_or_else(|e| e.into_inner());
        if !causes.contains(&cause) {
            causes.push(cause);
        }
    }

    /// Every cause recorded since the last take, in order, joined by "; ".
    pub fn take(&self) -> Option<String> {
        let causes = std::mem::take(&mut *self.causes.lock().unwrap_or_else(|e| e.into_inner()));
        (!causes.is_empty()).then(|| causes.join("; "))
    }
}

/// `e` and every error under it, joined with ": ", so a log line or a row
/// shows the root cause (an OS error, a DNS failure) and not only the top.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out
}

/// Dials whatsapp-rust's WebSocket, one fresh connection per `create_transport`.
pub struct WsTransportFactory {
    url: String,
    connect_timeout: Duration,
    failure: LastFailure,
    /// Built on first dial and kept, so TLS session resumption can work across
    /// reconnects and the root store is not copied every attempt.
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

impl WsTransportFactory {
    pub fn new(url: impl Into<String>) -> Self {
        WsTransportFactory {
            url: url.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            failure: LastFailure::default(),
            tls: OnceLock::new(),
        }
    }

    /// Where the cause of a failed dial is recorded.
    pub fn with_failure(mut self, failure: LastFailure) -> Self {
        self.failure = failure;
        self
    }

    /// Bounds TCP connect, TLS and the HTTP upgrade together.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn tls_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let config = Arc::new(build_tls_config()?);
        // A concurrent dial may have won the race; either config is as good.
        Ok(self.tls.get_or_init(|| config).clone())
    }
}

impl Default for WsTransportFactory {
    fn default() -> Self {
        WsTransportFactory::new(DEFAULT_URL)
    }
}

/// An explicit ring provider, so nothing depends on a process-wide default
/// provider being installed (or on aws-lc, which needs cmake to build).
fn build_tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls rejected the ring provider")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[async_trait]
impl TransportFactory for WsTransportFactory {
    async fn create_transport(
        &self,
    ) -> anyhow::Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>)> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .with_context(|| format!("invalid WebSocket URL {:?}", self.url))?;
        // WhatsApp Web's server expects the browser's Origin on the upgrade.
        request
            .headers_mut()
            .insert(ORIGIN, HeaderValue::from_static(WHATSAPP_WEB_ORIGIN));
        // Only used for wss://; a ws:// URL (tests) dials plain TCP.
        let connector = Connector::Rustls(self.tls_config()?);
        // Nagle off: the protocol is small request/response frames.
        let dial =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
        let ws = match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(e)) => {
                let why = format!(
                    "WebSocket connect to {} failed: {}",
                    self.url,
                    error_chain(&e)
                );
                self.failure.record(why.clone());
                bail!(why)
            }
            Err(_) => {
                let why = format!(
                    "WebSocket connect to {} timed out after {:?}",
                    self.url, self.connect_timeout
                );
                self.failure.record(why.clone());
                bail!(why)
            }
        };
        tracing::debug!(url = %self.url, "WebSocket connected");
        self.failure.opened();
        Ok(spawn_transport(ws))
    }
}

/// What the handle and the reader task share.
struct Shared {
    /// `None` once closed; a mutex rather than a writer task so a failed write
    /// is reported to the very `send()` that made it.
    sink: Mutex<Option<SplitSink<Ws, Message>>>,
    /// Set as soon as the pipe is over from either side, so `send()` fails
    /// fast instead of writing into a dead socket.
    closed: AtomicBool,
    /// Flipped to `true` by `disconnect()`: ends the reader and cancels a
    /// `send()` stuck on a peer that stopped reading.
    shutdown: watch::Sender<bool>,
}

struct WsTransport {
    shared: Arc<Shared>,
}

/// Splits the socket, queues `Connected` (so it precedes any data) and starts
/// the reader, the only task that emits events and hence the only place
/// `Disconnected` can come from.
fn spawn_transport(ws: Ws) -> (Arc<dyn Transport>, async_channel::Receiver<TransportEvent>) {
    let (sink, stream) = ws.split();
    let (events_tx, events_rx) = async_channel::bounded(EVENT_CAPACITY);
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        sink: Mutex::new(Some(sink)),
        closed: AtomicBool::new(false),
        shutdown,
    });
    // The channel is new and empty, so this cannot fail for want of room.
    let _ = events_tx.try_send(TransportEvent::Connected);
    tokio::spawn(read_loop(stream, events_tx, shared.clone()));
    (Arc::new(WsTransport { shared }), events_rx)
}

/// Resolves once `disconnect()` has been called (or the handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns would block `send_replace`; drop it here.
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

#[async_trait]
impl Transport for WsTransport {
    async fn send(&self, data: Bytes) -> anyhow::Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            bail!("WebSocket is closed");
        }
        let mut stop = self.shared.shutdown.subscribe();
        let mut guard = self.shared.sink.lock().await;
        let Some(sink) = guard.as_mut() else {
            bail!("WebSocket is closed");
        };
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => Err(anyhow!("WebSocket closed during send")),
            sent = sink.send(Message::Binary(data)) => {
                sent.map_err(|e| anyhow!("WebSocket send failed: {e}"))
            }
        }
    }

    /// Idempotent. The reader then emits one `Disconnected(Unknown)` (unless
    /// the peer's reason got there first) and closes the channel. whatsapp-rust
    /// needs to hear of it: after a failed write it calls `disconnect()`
    /// without having set its expected-disconnect flag and relies on its read
    /// loop seeing the end to reconnect; after its own `disconnect()` it either
    /// reads the event as expected or has already dropped the receiver.
    async fn disconnect(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.shutdown.send_replace(true);
        // Any send holding the lock has just been cancelled by the signal.
        let sink = self.shared.sink.lock().await.take();
        if let Some(mut sink) = sink {
            let bye = Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(bye)).await;
        }
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    events: async_channel::Sender<TransportEvent>,
    shared: Arc<Shared>,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut local = false;
    let reason = loop {
        let next = tokio::select! {
            biased;
            _ = stopped(&mut stop) => {
                local = true;
                break DisconnectReason::Unknown;
            }
            next = stream.next() => next,
        };
        match next {
            Some(Ok(Message::Binary(data))) => {
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => {
                        local = true;
                        break DisconnectReason::Unknown;
                    }
                    sent = events.send(TransportEvent::DataReceived(data)) => {
                        if sent.is_err() {
                            tracing::debug!("transport events receiver dropped");
                            break DisconnectReason::Unknown;
                        }
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => break close_reason(frame),
            Some(Ok(Message::Text(text))) => {
                tracing::debug!(len = text.len(), "ignoring text WebSocket frame");
            }
            // Pings are answered by tungstenite itself; pongs mean nothing here.
            Some(Ok(_)) => {}
            Some(Err(e)) => break read_error_reason(e),
            None => break DisconnectReason::StreamEnded,
        }
    };
    shared.closed.store(true, Ordering::Release);
    if !local {
        // Let the socket go now rather than when the handle is dropped, and
        // flush tungstenite's reply to a server Close. A send holding the
        // lock means `disconnect()` will deal with the sink instead.
        let sink = shared
            .sink
            .try_lock()
            .ok()
            .and_then(|mut guard| guard.take());
        if let Some(mut sink) = sink {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        }
    }
    drop(stream);
    tracing::debug!(%reason, "WebSocket transport ended");
    // The one and only Disconnected. An error only means nobody listens.
    let _ = events.send(TransportEvent::Disconnected(reason)).await;
}

fn close_reason(frame: Option<CloseFrame>) -> DisconnectReason {
    match frame {
        Some(frame) => DisconnectReason::ServerClose {
            code: Some(u16::from(frame.code)),
            reason: frame.reason.to_string(),
        },
        None => DisconnectReason::ServerClose {
            code: None,
            reason: String::new(),
        },
    }
}

/// EOF without a Close frame is `StreamEnded`, which whatsapp-rust logs as a
/// routine server recycle. Over TLS that EOF arrives as `UnexpectedEof`
/// (no close_notify), so it is counted the same way.
fn read_error_reason(e: WsError) -> DisconnectReason {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed => DisconnectReason::StreamEnded,
        WsError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            DisconnectReason::StreamEnded
        }
        other => DisconnectReason::ReadError(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    const WAIT: Duration = Duration::from_secs(5);

    async fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws/chat", listener.local_addr().unwrap());
        (listener, url)
    }

    async fn next_event(rx: &async_channel::Receiver<TransportEvent>) -> Option<TransportEvent> {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("no transport event in time")
            .ok()
    }

    async fn expect_connected(rx: &async_channel::Receiver<TransportEvent>) {
        let event = next_event(rx).await;
        assert!(
            matches!(event, Some(TransportEvent::Connected)),
            "{event:?}"
        );
    }

    async fn expect_data(rx: &async_channel::Receiver<TransportEvent>) -> Bytes {
        match next_event(rx).await {
            Some(TransportEvent::DataReceived(data)) => data,
            other => panic!("expected data, got {other:?}"),
        }
    }

    /// The Disconnected, then proof there is no second one: the channel ends.
    async fn expect_single_disconnect(
        rx: &async_channel::Receiver<TransportEvent>,
    ) -> DisconnectReason {
        let reason = match next_event(rx).await {
            Some(TransportEvent::Disconnected(reason)) => reason,
            other => panic!("expected Disconnected, got {other:?}"),
        };
        let after = next_event(rx).await;
        assert!(after.is_none(), "event after Disconnected: {after:?}");
        reason
    }

    /// Reads the upgrade request off a raw socket and answers 101 by hand, so
    /// the test can then write arbitrary bytes as the "server".
    async fn raw_upgrade(sock: &mut TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client hung up during upgrade");
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8(buf).unwrap();
        let key = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_string())
            })
            .unwrap();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        sock.write_all(response.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    // The handshake callback's shape (a `Result` with a whole `Response` as
    // its error) is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    async fn binary_frames_round_trip_and_origin_arrives() {
        let (listener, url) = listener().await;
        let (origin_tx, origin_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let callback = |req: &Request, resp: Response| {
                let origin = req
                    .headers()
                    .get("origin")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let _ = origin_tx.send(origin);
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(sock, callback)
                .await
                .unwrap();
            // Echo the first binary frame reversed, hiding it between frames
            // the transport must not pass on.
            let got = loop {
                match ws.next().await.unwrap().unwrap() {
                    Message::Binary(data) => break data,
                    _ => continue,
                }
            };
            let mut reversed = got.to_vec();
            reversed.reverse();
            ws.send(Message::Text("ignored".into())).await.unwrap();
            ws.send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap();
            ws.send(Message::Binary(reversed.into())).await.unwrap();
            ws.send(Message::Binary(Bytes::from_static(&[9, 9])))
                .await
                .unwrap();
            // Keep the connection open until the client leaves.
            while let Some(Ok(_)) = ws.next().await {}
        });

        let factory = WsTransportFactory::new(url);
        let (transport, rx) = factory.create_transport().await.unwrap();
        expect_connected(&rx).await;
        let origin = origin_rx.await.unwrap();
        assert_eq!(origin.as_deref(), Some("https://web.whatsapp.com"));

        transport
            .send(Bytes::from_static(&[1, 2, 3]))
            .await
            .unwrap();
        assert_eq!(&expect_data(&rx).await[..], &[3, 2, 1]);
        assert_eq!(&expect_data(&rx).await[..], &[9, 9]);

        transport.disconnect().await;
        let reason = expect_single_disconnect(&rx).await;
        assert!(matches!(reason, DisconnectReason::Unknown), "{reason:?}");
    }

    #[tokio::test]
    async fn server_close_code_is_reported_once() {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(sock).await.unwrap();
            ws.send(Message::Binary(Bytes::from_static(b"hi")))
                .await
                .unwrap();
            ws.close(Some(CloseFrame {
                code: CloseCode::from(4000),
                reason: "bye".into(),
            }))
            .await
            .unwrap();
            while let Some(Ok(_)) = ws.next().await {}
        });

        let factory = WsTransportFactory::new(url);
        let (transport, rx) = factory.create_transport().await.unwrap();
        expect_connected(&rx).await;
        assert_eq!(&expect_data(&rx).await[..], b"hi");
        let reason = expect_single_disconnect(&rx).await;
        match reason {
            DisconnectReason::ServerClose { code, reason } => {
                assert_eq!(code, Some(4000));
                assert_eq!(reason, "bye");
            }
            other => panic!("expected ServerClose, got {other:?}"),
        }
        assert!(transport.send(Bytes::from_static(b"late")).await.is_err());
        // A local disconnect after the server's must not add a second event.
        transport.disconnect().await;
        assert!(next_event(&rx).await.is_none());
    }

    #[tokio::test]
    async fn peer_vanishing_mid_frame_ends_once() {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            raw_upgrade(&mut sock).await;
            // One whole binary frame, then a header promising 256 bytes, 3 of
            // them, and the socket is gone.
            sock.write_all(&[0x82, 0x02, 7, 8]).await.unwrap();
            sock.write_all(&[0x82, 0x7E, 0x01, 0x00, 1, 2, 3])
                .await
                .unwrap();
            sock.flush().await.unwrap();
            drop(sock);
        });

        let factory = WsTransportFactory::new(url);
        let (transport, rx) = factory.create_transport().await.unwrap();
        expect_connected(&rx).await;
        assert_eq!(&expect_data(&rx).await[..], &[7, 8]);
        let reason = expect_single_disconnect(&rx).await;
        assert!(
            matches!(
                reason,
                DisconnectReason::StreamEnded | DisconnectReason::ReadError(_)
            ),
            "{reason:?}"
        );
        assert!(transport.send(Bytes::from_static(b"x")).await.is_err());
    }

    #[tokio::test]
    async fn eof_without_close_is_stream_ended() {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            raw_upgrade(&mut sock).await;
            drop(sock);
        });

        let factory = WsTransportFactory::new(url);
        let (_transport, rx) = factory.create_transport().await.unwrap();
        expect_connected(&rx).await;
        let reason = expect_single_disconnect(&rx).await;
        assert!(
            matches!(reason, DisconnectReason::StreamEnded),
            "{reason:?}"
        );
    }

    #[tokio::test]
    async fn protocol_violation_is_read_error() {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            raw_upgrade(&mut sock).await;
            // Opcode 3 is reserved: the client must give up on the stream.
            sock.write_all(&[0x83, 0x00]).await.unwrap();
            tokio::time::sleep(WAIT).await;
        });

        let factory = WsTransportFactory::new(url);
        let (_transport, rx) = factory.create_transport().await.unwrap();
        expect_connected(&rx).await;
        let reason = expect_single_disconnect(&rx).await;
        assert!(
            matches!(reason, DisconnectReason::ReadError(_)),
            "{reason:?}"
        );
    }

    #[tokio::test]
    async fn silent_peer_fails_within_connect_timeout() {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            // Accept the TCP connection, never answer the upgrade.
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(WAIT * 2).await;
        });

        let factory = WsTransportFactory::new(url).with_connect_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let result = factory.create_transport().await;
        let err = match result {
            Ok(_) => panic!("connect to a silent peer succeeded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn refused_connect_is_an_error_whose_cause_is_kept() {
        let (listener, url) = listener().await;
        drop(listener);
        let failure = LastFailure::default();
        let factory = WsTransportFactory::new(url.clone())
            .with_connect_timeout(Duration::from_secs(2))
            .with_failure(failure.clone());
        assert!(factory.create_transport().await.is_err());
        assert!(factory.create_transport().await.is_err());
        let cause = failure.take().expect("recorded");
        assert!(cause.contains(&url) && cause.contains("refused"), "{cause}");
        assert!(!cause.contains("; "), "the same cause once: {cause}");
        assert_eq!(failure.take(), None, "taken");
        assert!(!failure.was_opened());
        failure.record("a");
        failure.record("b");
        assert_eq!(failure.take().as_deref(), Some("a; b"));
    }

    #[tokio::test]
    async fn rejected_upgrade_is_an_error() {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 1024];
            let _ = sock.read(&mut chunk).await;
            let _ = sock
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let factory = WsTransportFactory::new(url);
        assert!(factory.create_transport().await.is_err());
    }

    #[tokio::test]
    async fn disconnect_is_idempotent_and_send_then_fails() {
        let (listener, url) = listener().await;
        let (close_tx, close_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(sock).await.unwrap();
            let mut close_code = None;
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(frame) = msg {
                    close_code = frame.map(|f| u16::from(f.code));
                }
            }
            let _ = close_tx.send(close_code);
        });

        let factory = WsTransportFactory::new(url);
        let (transport, rx) = factory.create_transport().await.unwrap();
        expect_connected(&rx).await;
        transport.send(Bytes::from_static(b"a")).await.unwrap();
        transport.disconnect().await;
        transport.disconnect().await;
        assert!(transport.send(Bytes::from_static(b"b")).await.is_err());
        let reason = expect_single_disconnect(&rx).await;
        assert!(matches!(reason, DisconnectReason::Unknown), "{reason:?}");
        let code = tokio::time::timeout(WAIT, close_rx).await.unwrap().unwrap();
        assert_eq!(code, Some(1000));
    }

    #[tokio::test]
    async fn disconnect_unblocks_a_send_to_a_peer_that_stopped_reading() {
        let (listener, url) = listener().await;
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let _ws = tokio_tungstenite::accept_async(sock).await.unwrap();
            // Upgrade done; now read nothing so the client's writes back up.
            tokio::time::sleep(WAIT * 2).await;
        });

        let factory = WsTransportFactory::new(url);
        let (transport, rx) = factory.create_transport().await.unwrap();
        expect_connected(&rx).await;
        let big = Bytes::from(vec![0u8; 1 << 20]);
        let mut stuck = false;
        for _ in 0..256 {
            let sent =
                tokio::time::timeout(Duration::from_millis(200), transport.send(big.clone()));
            if sent.await.is_err() {
                stuck = true;
                break;
            }
        }
        assert!(stuck, "socket buffers never filled");

        let pending = {
            let transport = transport.clone();
            tokio::spawn(async move { transport.send(big).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::time::timeout(WAIT, transport.disconnect())
            .await
            .expect("disconnect hung on a stuck peer");
        let result = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
        assert!(result.is_err());
        let reason = expect_single_disconnect(&rx).await;
        assert!(matches!(reason, DisconnectReason::Unknown), "{reason:?}");
    }

    #[test]
    fn default_factory_dials_whatsapp() {
        let factory = WsTransportFactory::default();
        assert_eq!(factory.url(), "wss://web.whatsapp.com/ws/chat");
        assert_eq!(factory.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert!(build_tls_config().is_ok());
    }
}
