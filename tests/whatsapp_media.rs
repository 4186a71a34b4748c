//! Media end to end against the mock: a contact's phone encrypts an image
//! and puts it on the mock's media host (HTTPS, test-only root); the image
//! message reaches `on_message` with its metadata, `m:download()` fetches,
//! checks and decrypts it into the data dir; the script replies with that
//! image and a voice note, which moonwire uploads through whatsapp-rust,
//! and the contact downloads and decrypts both back. A file whose hash is
//! not the declared one is refused and leaves nothing behind.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::MockServer;
use support::media::image_message;
use support::rig::{INSTANCE, Rig};
use wacore::download::MediaType;

const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "15550001111";

const MEDIA_LUA: &str = r#"
function on_message(m)
  if m.type ~= "image" then return end
  local path, err = m:download()
  bot.store.set("dl", { id = m.id, path = path or "", err = err or "", kind = m.media.kind,
    mime = m.media.mime, size = m.media.size, width = m.media.width,
    height = m.media.height, caption = m.text or "" })
  if path then
    m:reply({ image = path, caption = "back at you" })
    m:reply({ audio = { data = "OggS pretend voice", mime = "audio/ogg; codecs=opus" }, voice = true })
  end
end
"#;

async fn paired() -> (MockServer, Rig) {
    let server = MockServer::start().await;
    let rig = Rig::start_scripted(&server, &[("media.lua", MEDIA_LUA)]);
    rig.pair(&server).await;
    server
        .wait_until(WAIT, "the pre-key upload", |s| s.has_bundle())
        .await;
    (server, rig)
}

async fn download_record(rig: &Rig, server: &MockServer) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = rig.app.store.kv_get(INSTANCE, "media", "dl").unwrap() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no download: {:?}",
            server.errors()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes no compressor shrinks and no two tests share.
fn noise(n: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn an_image_is_downloaded_exactly_and_media_replies_reach_the_contact_decrypted() {
    let (server, rig) = paired().await;
    let picture = noise(150_000, 1);
    let up = server.put_media(&picture, MediaType::Image);
    let msg = image_message(&up, "image/jpeg", Some("my cat"));
    let id = server.send_from(0, ALICE, "Alice", &msg).await.unwrap();

    let dl = download_record(&rig, &server).await;
    assert_eq!(dl["err"], "", "{dl}");
    assert_eq!(dl["id"], id.as_str());
    assert_eq!(
        (&dl["kind"], &dl["mime"], &dl["size"], &dl["caption"]),
        (
            &"image".into(),
            &"image/jpeg".into(),
            &Value::from(picture.len()),
            &"my cat".into()
        )
    );
    assert_eq!((&dl["width"], &dl["height"]), (&640.into(), &480.into()));
    let path = std::path::PathBuf::from(dl["path"].as_str().unwrap());
    assert_eq!(
        path,
        rig.dir
            .join("media")
            .join(INSTANCE)
            .join(format!("{id}.jpg"))
    );
    assert_eq!(std::fs::read(&path).unwrap(), picture);
    assert_eq!(
        server
            .media()
            .downloads
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    // The two replies: uploaded, sent, and readable by the contact.
    let mut inbox = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while inbox.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {inbox:#?}; errors {:?}",
            server.errors()
        );
        inbox.extend(server.deliver_to(ALICE).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let img = inbox[0].image_message.as_option().expect("an image reply");
    assert_eq!(img.caption.as_deref(), Some("back at you"));
    assert_eq!(img.mimetype.as_deref(), Some("image/jpeg"));
    assert_eq!(img.file_length, Some(picture.len() as u64));
    let quoted = img
        .context_info
        .as_option()
        .and_then(|c| c.stanza_id.as_deref());
    assert_eq!(quoted, Some(id.as_str()), "m:reply quotes");
    let back = server
        .media_file(
            img.direct_path.as_deref().unwrap(),
            img.media_key.as_deref().unwrap(),
            img.file_sha256.as_deref().unwrap(),
            img.file_enc_sha256.as_deref().unwrap(),
            MediaType::Image,
        )
        .unwrap();
    assert_eq!(back, picture);

    let voice = inbox[1].audio_message.as_option().expect("a voice note");
    assert_eq!(voice.ptt, Some(true));
    assert_eq!(voice.mimetype.as_deref(), Some("audio/ogg; codecs=opus"));
    let back = server
        .media_file(
            voice.direct_path.as_deref().unwrap(),
            voice.media_key.as_deref().unwrap(),
            voice.file_sha256.as_deref().unwrap(),
            voice.file_enc_sha256.as_deref().unwrap(),
            MediaType::Audio,
        )
        .unwrap();
    assert_eq!(back, b"OggS pretend voice");
    assert_eq!(
        server
            .media()
            .uploads
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    rig.stop().await;
}

#[tokio::test]
async fn a_file_that_is_not_the_declared_one_is_refused_and_leaves_nothing() {
    let (server, rig) = paired().await;
    let picture = noise(20_000, 2);
    let mut up = server.put_media(&picture, MediaType::Image);
    // The message declares another file's hash: the host's bytes decrypt
    // (the MAC is fine) but are not that file.
    up.file_sha256 = vec![0xAB; 32];
    let msg = image_message(&up, "image/jpeg", None);
    server.send_from(0, ALICE, "Alice", &msg).await.unwrap();
    let dl = download_record(&rig, &server).await;
    assert_eq!(dl["path"], "", "{dl}");
    assert!(dl["err"].as_str().unwrap().contains("SHA-256"), "{dl}");
    let dir = rig.dir.join("media").join(INSTANCE);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    rig.stop().await;
}
