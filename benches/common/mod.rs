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
