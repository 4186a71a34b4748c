//! A media round trip through the in-process mock server, with the real
//! whatsapp-rust client: a contact's phone encrypts a 1 MB image and puts
//! it on the mock's media host, the script downloads it (`m:download`:
//! fetched, hashed, decrypted into the data dir) and replies with it
//! (encrypted to a temporary file, uploaded, sent); the round ends when
//! the contact has decrypted the reply. Prints the time per round and the
//! peak resident set above the level before the round (VmHWM, reset per
//! round through /proc/self/clear_refs).
//!
//! `BENCH_MEDIA_KB` sets the image size (default 1024), `BENCH_MEDIA_ROUNDS`
//! the rounds (default 5). The resident set includes the mock: it holds
//! every uploaded file (the contact's and the reply, both encrypted) in
//! memory, and the contact's encryption and decryption run in-process.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use common::{peak_rss_kb, rss_kb};
use support::MockServer;
use support::media::image_message;
use support::rig::Rig;
use wacore::download::MediaType;

const SCRIPT: &str = r#"
function on_message(m)
  if m.type ~= "image" then return end
  local path, err = m:download()
  if not path then bot.log.error("download: " .. err) return end
  m:reply({ image = path, caption = "back" })
end
"#;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resets VmHWM to the current resident set (Linux).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn round(server: &MockServer, size: usize, seed: u32) -> Duration {
    let picture = noise(size, seed);
    let up = server.put_media(&picture, MediaType::Image);
    let msg = image_message(&up, "image/jpeg", None);
    let started = Instant::now();
    server
        .send_from(0, "15550001111", "Alice", &msg)
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = server.deliver_to("15550001111").await.expect("decrypt");
        if let Some(img) = got.iter().find_map(|m| m.image_message.as_option()) {
            let back = server
                .media_file(
                    img.direct_path.as_deref().unwrap_or_default(),
                    img.media_key.as_deref().unwrap_or_default(),
                    img.file_sha256.as_deref().unwrap_or_default(),
                    img.file_enc_sha256.as_deref().unwrap_or_default(),
                    MediaType::Image,
                )
                .expect("the reply decrypts");
            assert_eq!(back.len(), picture.len());
            return started.elapsed();
        }
        assert!(Instant::now() < deadline, "no reply: {:?}", server.errors());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn main() {
    let kb = env_num("BENCH_MEDIA_KB", 1024) as usize;
    let rounds = env_num("BENCH_MEDIA_ROUNDS", 5) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = MockServer::start().await;
        let rig = Rig::start_scripted(&server, &[("media.lua", SCRIPT)]);
        rig.pair(&server).await;
        server
            .wait_until(Duration::from_secs(30), "the pre-key upload", |s| {
                s.has_bundle()
            })
            .await;
        // Warm-up: sessions, the media connection, allocator pools.
        round(&server, 16 * 1024, 0).await;
        let mut times = Vec::new();
        let mut peaks = Vec::new();
        for i in 0..rounds {
            let before = rss_kb();
            let clear = reset_peak();
            let t = round(&server, kb * 1024, i + 1).await;
            let peak = peak_rss_kb();
            times.push(t);
            if clear {
                peaks.push(peak.saturating_sub(before));
            }
            println!(
                "media round {}: {:>7.1} ms  rss before {} kB, peak {} kB{}",
                i + 1,
                t.as_secs_f64() * 1000.0,
                before,
                peak,
                if clear { "" } else { " (peak not reset)" }
            );
        }
        times.sort();
        peaks.sort();
        let median = times[times.len() / 2];
        println!(
            "media round trip, {kb} KiB image: median {:.1} ms, min {:.1} ms, max {:.1} ms over {rounds} rounds",
            median.as_secs_f64() * 1000.0,
            times[0].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0,
        );
        if let (Some(lo), Some(hi)) = (peaks.first(), peaks.last()) {
            println!(
                "peak resident set above the level before a round: {lo}..{hi} kB (median {} kB) for a {kb} KiB file, the mock's copies included",
                peaks[peaks.len() / 2]
            );
        }
        rig.stop().await;
    });
}
