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
//! the rounds (default 5). The contact's encryption is done before a
//! round's peak is reset and its decryption after the peak is read, but
//! the mock runs in this process: the peak includes its copy of the
//! upload (it keeps every uploaded file in memory, so the level before
//! each round grows by the two files of the round before).

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

/// One round: the upload is prepared before `measure` starts (the
/// contact's encryption is the phone's work, not moonwire's); the round
/// ends when the contact has the reply, and the reply's decryption (the
/// phone's again) is checked after `measure` has read the peak.
async fn round(
    server: &MockServer,
    size: usize,
    seed: u32,
    measure: impl FnOnce() -> u64,
) -> (Duration, u64) {
    let picture = noise(size, seed);
    let up = server.put_media(&picture, MediaType::Image);
    let msg = image_message(&up, "image/jpeg", None);
    let started = Instant::now();
    let before = measure();
    server
        .send_from(0, "15550001111", "Alice", &msg)
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = server.deliver_to("15550001111").await.expect("decrypt");
        if let Some(img) = got.iter().find_map(|m| m.image_message.as_option()) {
            let took = started.elapsed();
            let peak = peak_rss_kb().saturating_sub(before);
            let back = server
                .media_file(
                    img.direct_path.as_deref().unwrap_or_default(),
                    img.media_key.as_deref().unwrap_or_default(),
                    img.file_sha256.as_deref().unwrap_or_default(),
                    img.file_enc_sha256.as_deref().unwrap_or_default(),
                    MediaType::Image,
                )
                .expect("the reply decrypts");
            assert_eq!(back, picture);
            return (took, peak);
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
        round(&server, 16 * 1024, 0, rss_kb).await;
        let clear = reset_peak();
        let mut times = Vec::new();
        let mut peaks = Vec::new();
        for i in 0..rounds {
            let mut before = 0;
            let (t, peak) = round(&server, kb * 1024, i + 1, || {
                before = rss_kb();
                reset_peak();
                before
            })
            .await;
            times.push(t);
            peaks.push(peak);
            println!(
                "media round {}: {:>7.1} ms  rss before {before} kB, peak +{peak} kB{}",
                i + 1,
                t.as_secs_f64() * 1000.0,
                if clear { "" } else { " (peak not reset: /proc/self/clear_refs)" }
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
        println!(
            "peak resident set above the level before a round: {}..{} kB (median {} kB) for a {kb} KiB file; the mock's copy of the upload included",
            peaks[0],
            peaks[peaks.len() - 1],
            peaks[peaks.len() / 2]
        );
        rig.stop().await;
    });
}
