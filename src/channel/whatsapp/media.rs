//! Media up and down, through WhatsApp's CDN, without holding a file in
//! memory twice.
//!
//! Up: the file (or the bytes a script gave) is encrypted streaming into a
//! temporary file, then handed to whatsapp-rust's `upload_stream`, which
//! does the host failover and the auth refresh; the HTTP client reads that
//! file as the request body.
//!
//! Down: whatsapp-rust checks only the MAC of what it fetches, so the
//! download is done here, with the library's media hosts and key
//! derivation: the ciphertext streams to a temporary file while its
//! SHA-256 is taken and its size bounded, then it is decrypted (MAC
//! checked) streaming into the target while the plaintext's SHA-256 is
//! taken. Both hashes must match what the message declared. Hosts are
//! tried in order; a rejected auth token gets one fresh media connection.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wacore::download::{DownloadUtils, MediaRoute, MediaType};
use whatsapp_rust::Client;
use whatsapp_rust::download::DownloadParams;
use whatsapp_rust::upload::UploadResponse;

use crate::channel::{ChannelError, MediaData, MediaInfo, MediaKind, MediaRef, OutMedia};

/// What CBC padding and the MAC add to a file.
const ENCRYPTION_OVERHEAD: u64 = 16 + 10;

pub fn media_type(kind: MediaKind) -> MediaType {
    match kind {
        MediaKind::Image => MediaType::Image,
        MediaKind::Video => MediaType::Video,
        MediaKind::Audio => MediaType::Audio,
        MediaKind::Document => MediaType::Document,
        MediaKind::Sticker => MediaType::Sticker,
    }
}

fn media_err(e: impl std::fmt::Display) -> ChannelError {
    ChannelError::Media(e.to_string())
}

/// A temporary file, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(beside: Option<&Path>) -> Temp {
        let name = format!("moonwire-{:016x}.enc", rand::random::<u64>());
        Temp(match beside.and_then(Path::parent) {
            Some(dir) => dir.join(format!(".{name}")),
            None => std::env::temp_dir().join(name),
        })
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An encrypted file on disk as an upload body.
struct FileSource {
    path: PathBuf,
    len: u64,
}

impl wacore::upload::UploadSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn reader_from(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(std::io::BufReader::new(f)))
    }
}

/// Encrypts the file or bytes into a temporary file and uploads that
/// through the library (host failover, auth refresh).
pub async fn upload(client: &Client, media: &OutMedia) -> Result<UploadResponse, ChannelError> {
    let kind = media_type(media.kind);
    let data = media.data.clone();
    let temp = Temp::new(None);
    let target = temp.0.clone();
    let info = tokio::task::spawn_blocking(move || -> Result<_, ChannelError> {
        let out = std::fs::File::create(&target).map_err(media_err)?;
        let out = std::io::BufWriter::new(out);
        match data {
            MediaData::File(path) => {
                let f = std::fs::File::open(&path)
                    .map_err(|e| media_err(format!("{}: {e}", path.display())))?;
                wacore::upload::encrypt_media_streaming(std::io::BufReader::new(f), out, kind)
            }
            MediaData::Bytes(b) => wacore::upload::encrypt_media_streaming(&b[..], out, kind),
        }
        .map_err(|e| media_err(format!("encrypting the file: {e:#}")))
    })
    .await
    .map_err(|e| media_err(format!("the encryption task failed: {e}")))??;
    let len = std::fs::metadata(&temp.0).map_err(media_err)?.len();
    let source = FileSource {
        path: temp.0.clone(),
        len,
    };
    client
        .upload_stream(source, info, kind)
        .await
        .map_err(|e| media_err(format!("upload failed: {e:#}")))
}

/// Hashes, counts and bounds what is written through it.
struct Checked<W> {
    inner: W,
    hash: Sha256,
    written: u64,
    max: u64,
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.max {
            return Err(std::io::Error::other(format!(
                "the file is larger than the limit of {} bytes",
                self.max
            )));
        }
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How one host's answer went.
enum Fetch {
    Done,
    /// 401/403/404/410: the token or path is stale; a fresh media
    /// connection may help.
    Stale(String),
    /// Something about this host; the next may do better.
    Failed(String),
}

async fn fetch(
    http: &reqwest::Client,
    url: &str,
    temp: &Path,
    max_cipher: u64,
    enc_sha256: &[u8],
) -> Result<Fetch, ChannelError> {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let mut resp = match http.get(url).send().await {
        Ok(r) => r,
        // The URL carries the auth token: name only the host.
        Err(e) => {
            return Ok(Fetch::Failed(format!(
                "{host}: {}",
                super::transport::error_chain(&e.without_url())
            )));
        }
    };
    let status = resp.status().as_u16();
    if matches!(status, 401 | 403 | 404 | 410) {
        return Ok(Fetch::Stale(format!("{host} answered {status}")));
    }
    if !resp.status().is_success() {
        return Ok(Fetch::Failed(format!("{host} answered {status}")));
    }
    let mut file = tokio::fs::File::create(temp).await.map_err(media_err)?;
    let mut hash = Sha256::new();
    let mut total: u64 = 0;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                return Ok(Fetch::Failed(format!(
                    "{host}: reading the body: {}",
                    e.without_url()
                )));
            }
        };
        total += chunk.len() as u64;
        if total > max_cipher {
            return Err(media_err(format!(
                "{host} sent more than the limit of {max_cipher} bytes; stopped"
            )));
        }
        hash.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(media_err)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(media_err)?;
    if hash.finalize().as_slice() != enc_sha256 {
        return Ok(Fetch::Failed(format!(
            "{host} sent a file whose SHA-256 is not the one the message declared"
        )));
    }
    Ok(Fetch::Done)
}

/// Downloads, checks and decrypts the media into `to`; the plaintext's
/// size.
pub async fn download(
    client: &Client,
    http: &reqwest::Client,
    media: &MediaInfo,
    to: &Path,
    max_bytes: u64,
) -> Result<u64, ChannelError> {
    let MediaRef::Cdn {
        direct_path,
        media_key,
        file_sha256,
        file_enc_sha256,
    } = &media.source
    else {
        return Err(media_err("the message carries no downloadable media"));
    };
    if let Some(size) = media.size
        && size > max_bytes
    {
        return Err(media_err(format!(
            "the file is {size} bytes, more than the limit of {max_bytes}"
        )));
    }
    let kind = media_type(media.kind);
    let params = DownloadParams::encrypted(
        direct_path.clone(),
        media_key,
        file_sha256,
        file_enc_sha256,
        media.size.unwrap_or(0),
        kind,
    );
    let temp = Temp::new(Some(to));
    let max_cipher = max_bytes + ENCRYPTION_OVERHEAD;
    let mut why = Vec::new();
    let mut fetched = false;
    'attempts: for attempt in 0..2 {
        let conn = client
            .refresh_media_conn(attempt > 0)
            .await
            .map_err(|e| media_err(format!("asking for the media hosts: {e}")))?;
        let requests = DownloadUtils::prepare_download_requests(&params, &MediaRoute::from(&conn))
            .map_err(|e| media_err(format!("{e:#}")))?;
        if requests.is_empty() {
            return Err(media_err("the server named no media hosts"));
        }
        let mut stale = false;
        for r in &requests {
            match fetch(http, &r.url, &temp.0, max_cipher, file_enc_sha256).await? {
                Fetch::Done => {
                    fetched = true;
                    break 'attempts;
                }
                Fetch::Stale(w) => {
                    why.push(w);
                    stale = true;
                }
                Fetch::Failed(w) => why.push(w),
            }
        }
        if !stale {
            break;
        }
    }
    if !fetched {
        return Err(media_err(format!(
            "no media host delivered the file: {}",
            why.join("; ")
        )));
    }
    let (enc, out) = (temp.0.clone(), to.to_path_buf());
    let key = media_key.clone();
    let want = file_sha256.clone();
    tokio::task::spawn_blocking(move || -> Result<u64, ChannelError> {
        let input = std::io::BufReader::new(std::fs::File::open(&enc).map_err(media_err)?);
        let file = std::fs::File::create(&out).map_err(media_err)?;
        let mut w = Checked {
            inner: std::io::BufWriter::new(file),
            hash: Sha256::new(),
            written: 0,
            max: max_bytes,
        };
        DownloadUtils::decrypt_stream_to_writer(input, &key, kind, &mut w)
            .map_err(|e| media_err(format!("decrypting the file: {e:#}")))?;
        w.flush().map_err(media_err)?;
        if w.hash.finalize().as_slice() != want.as_slice() {
            return Err(media_err(
                "the decrypted file's SHA-256 is not the one the message declared",
            ));
        }
        Ok(w.written)
    })
    .await
    .map_err(|e| media_err(format!("the decryption task failed: {e}")))?
}
