//! The mock's media host: what the `media_conn` IQ names. HTTPS on
//! 127.0.0.1 with a certificate from a test-only root (`media_tls/`: the
//! root's key was thrown away once the leaf was signed, so nothing else
//! can ever be trusted through it). Only the test build's client is given
//! that root ([`MockServer::media_root`]).
//!
//! It keeps what companions upload (`POST /mms/{kind}/{token}?auth=`),
//! serves it back (`GET /v/...?auth=`), and lets contacts put files there
//! ([`MockServer::put_media`]) and read what companions sent
//! ([`MockServer::media_file`]). A wrong `auth` is a 401, as on the real
//! hosts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use whatsapp_rust::waproto::whatsapp as wa;

use super::MockServer;

/// The root the media host's certificate chains to (DER).
pub const MEDIA_ROOT: &[u8] = include_bytes!("media_tls/ca.der");
const LEAF: &[u8] = include_bytes!("media_tls/leaf.der");
const LEAF_KEY: &[u8] = include_bytes!("media_tls/leaf.key.der");

/// The `auth` the `media_conn` answer hands out.
pub const MEDIA_AUTH: &str = "mock-media-auth";

#[derive(Default)]
pub struct MediaStore {
    files: std::sync::Mutex<HashMap<String, Bytes>>,
    pub uploads: AtomicUsize,
    pub downloads: AtomicUsize,
    /// Requests refused for their `auth`.
    pub refused: AtomicUsize,
    next: AtomicUsize,
}

impl MediaStore {
    fn put(&self, data: Bytes) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let path = format!("/v/t62.7118-24/mock-{n:06}.enc");
        self.files.lock().unwrap().insert(path.clone(), data);
        path
    }
}

/// A TLS listener for `axum::serve`: one handshake at a time, bounded.
struct Tls {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for Tls {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let hs = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp));
            if let Ok(Ok(tls)) = hs.await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Starts the host; answers its `host:port`.
pub(super) async fn start(store: Arc<MediaStore>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(LEAF.to_vec())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(LEAF_KEY.to_vec().into()),
        )
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = Tls {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let app = axum::Router::new().fallback(serve).with_state(store);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("127.0.0.1:{}", addr.port())
}

async fn serve(
    State(store): State<Arc<MediaStore>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if q.get("auth").map(String::as_str) != Some(MEDIA_AUTH) {
        store.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let path = uri.path();
    if method == Method::POST && path.starts_with("/mms/") {
        if q.contains_key("resume") {
            return StatusCode::NOT_FOUND.into_response();
        }
        let direct_path = store.put(body);
        store.uploads.fetch_add(1, Ordering::SeqCst);
        let url = format!("https://mock-media{direct_path}");
        return axum::Json(serde_json::json!({"url": url, "direct_path": direct_path}))
            .into_response();
    }
    if method == Method::GET {
        let file = store.files.lock().unwrap().get(path).cloned();
        if let Some(f) = file {
            store.downloads.fetch_add(1, Ordering::SeqCst);
            return f.into_response();
        }
    }
    StatusCode::NOT_FOUND.into_response()
}

/// What a contact's phone puts into a media message after uploading.
pub struct Uploaded {
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub file_sha256: Vec<u8>,
    pub file_enc_sha256: Vec<u8>,
    pub file_length: u64,
}

impl MockServer {
    /// The media host's root certificate (DER), for the test build's client.
    pub fn media_root(&self) -> Vec<u8> {
        MEDIA_ROOT.to_vec()
    }

    pub fn media(&self) -> &MediaStore {
        &self.shared.media
    }

    /// Encrypts `plain` as a contact's phone does (a fresh media key) and
    /// puts it on the media host.
    pub fn put_media(&self, plain: &[u8], kind: wacore::download::MediaType) -> Uploaded {
        let enc = wacore::upload::encrypt_media(plain, kind).unwrap();
        let direct_path = self.shared.media.put(enc.data_to_upload.into());
        Uploaded {
            direct_path,
            media_key: enc.media_key.to_vec(),
            file_sha256: enc.file_sha256.to_vec(),
            file_enc_sha256: enc.file_enc_sha256.to_vec(),
            file_length: plain.len() as u64,
        }
    }

    /// Downloads and decrypts, as the contact's phone does, the file a
    /// companion's media message points at; checks both hashes.
    pub fn media_file(
        &self,
        direct_path: &str,
        media_key: &[u8],
        file_sha256: &[u8],
        file_enc_sha256: &[u8],
        kind: wacore::download::MediaType,
    ) -> anyhow::Result<Vec<u8>> {
        use sha2::Digest;
        let enc = self
            .shared
            .media
            .files
            .lock()
            .unwrap()
            .get(direct_path)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("nothing uploaded at {direct_path}"))?;
        anyhow::ensure!(
            sha2::Sha256::digest(&enc).as_slice() == file_enc_sha256,
            "the uploaded file's SHA-256 is not the one the message declares"
        );
        let mut plain = Vec::new();
        wacore::download::DownloadUtils::decrypt_stream_to_writer(
            &enc[..],
            media_key,
            kind,
            &mut plain,
        )?;
        anyhow::ensure!(
            sha2::Sha256::digest(&plain).as_slice() == file_sha256,
            "the decrypted file's SHA-256 is not the one the message declares"
        );
        Ok(plain)
    }
}

/// An image message from a contact, for an upload.
pub fn image_message(up: &Uploaded, mime: &str, caption: Option<&str>) -> wa::Message {
    wa::Message {
        image_message: whatsapp_rust::buffa::MessageField::some(wa::message::ImageMessage {
            url: Some(format!("https://mock-media{}", up.direct_path)),
            direct_path: Some(up.direct_path.clone()),
            media_key: Some(up.media_key.clone()),
            file_sha256: Some(up.file_sha256.clone()),
            file_enc_sha256: Some(up.file_enc_sha256.clone()),
            file_length: Some(up.file_length),
            mimetype: Some(mime.into()),
            caption: caption.map(str::to_string),
            width: Some(640),
            height: Some(480),
            ..Default::default()
        }),
        ..Default::default()
    }
}
