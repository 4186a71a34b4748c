#![allow(dead_code)]
//! What the bench binaries share.

/// This process's resident set, in kB (0 where /proc is missing).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// This process's OS threads (0 where /proc is missing).
pub fn threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A scratch data dir whose scripts folder holds the default script, and
/// the store in it.
pub fn data_dir_with_default_script() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::sync::Arc<moonwire::store::Store>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).expect("scripts dir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/default.lua"),
        scripts.join("default.lua"),
    )
    .expect("default script");
    let store = std::sync::Arc::new(
        moonwire::store::Store::open(&dir.path().join("moonwire.db")).expect("store"),
    );
    (dir, scripts, store)
}

/// Actions that record every send with the instant it was made.
pub struct Recorder {
    pub sent: std::sync::Mutex<
        std::sync::mpsc::Sender<(std::time::Instant, moonwire::channel::Outgoing)>,
    >,
}

impl Recorder {
    pub fn new() -> (
        std::sync::Arc<Recorder>,
        std::sync::mpsc::Receiver<(std::time::Instant, moonwire::channel::Outgoing)>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        (
            std::sync::Arc::new(Recorder {
                sent: std::sync::Mutex::new(tx),
            }),
            rx,
        )
    }
}

impl moonwire::script::Actions for Recorder {
    fn instance(&self) -> &str {
        "bench"
    }
    fn state(&self) -> String {
        "open".into()
    }
    fn send(&self, out: moonwire::channel::Outgoing) -> Result<(), String> {
        let at = std::time::Instant::now();
        self.sent
            .lock()
            .map_err(|e| e.to_string())?
            .send((at, out))
            .map_err(|e| e.to_string())
    }
    fn logout(&self) {}
    fn store_get(&self, _: &str, _: &str) -> Result<Option<serde_json::Value>, String> {
        Ok(None)
    }
    fn store_set(&self, _: &str, _: &str, _: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    fn store_delete(&self, _: &str, _: &str) -> Result<(), String> {
        Ok(())
    }
    fn report(&self, error: &moonwire::script::ScriptError, _: u64) {
        eprintln!("script error: {error} ({})", error.context);
    }
}

/// A text message from a friend, numbered.
pub fn incoming(i: usize, text: &str) -> moonwire::channel::Incoming {
    moonwire::channel::Incoming {
        id: i.to_string(),
        chat: "friend@s.whatsapp.net".into(),
        sender: "friend@s.whatsapp.net".into(),
        text: Some(text.into()),
        kind: "text".into(),
        from_me: false,
        is_group: false,
        push_name: Some("Friend".into()),
        timestamp: 1_700_000_000,
        ..Default::default()
    }
}

/// The text of a reply.
pub fn text_of(out: &moonwire::channel::Outgoing) -> &str {
    match &out.body {
        moonwire::channel::OutBody::Text { text, .. } => text,
        _ => "",
    }
}

/// This process's peak resident set, in kB.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx]
}
