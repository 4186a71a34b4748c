//! Watches a scripts folder and calls back once per burst of changes, once
//! the files written in it are complete.
//!
//! Written on notify directly rather than a debouncer crate: the inotify
//! backend also reports files being *opened*, and the debouncers drop the
//! event kind — so a reload reading the scripts would trigger the next
//! reload, forever. Here only content changes count, and a file being
//! written in place (truncate, then write) counts as settled only when it is
//! closed after writing, so a reload never reads it half written. Renames
//! (how most editors save) are atomic and settle at once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

pub type Watcher = RecommendedWatcher;

/// How long a folder must be quiet before it reloads (editors save in
/// bursts of a few ms).
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The longest a file may stay open for writing before the reload goes
/// ahead anyway (a writer that never closes, a backend without close events).
const MAX_SETTLE: Duration = Duration::from_secs(2);

fn is_lua(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "lua")
}

/// Whether an event can change what the scripts folder loads.
pub fn relevant(event: &Event) -> bool {
    let kind = match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    };
    kind && event.paths.iter().any(|p| is_lua(p))
}

/// What one event means for the watcher.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Content changed and the file may still be open for writing.
    Writing(Vec<PathBuf>),
    /// The writer closed the file: it is complete.
    Closed(Vec<PathBuf>),
    /// A change that is complete as it is (rename, remove).
    Settled(Vec<PathBuf>),
    Nothing,
}

fn classify(event: &Event) -> Change {
    let paths: Vec<PathBuf> = event.paths.iter().filter(|p| is_lua(p)).cloned().collect();
    if paths.is_empty() {
        return Change::Nothing;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Closed(paths),
        _ if !relevant(event) => Change::Nothing,
        EventKind::Create(CreateKind::File) | EventKind::Modify(ModifyKind::Data(_)) => {
            Change::Writing(paths)
        }
        _ => Change::Settled(paths),
    }
}

/// Editors save in bursts (temp file, rename, write): relevant changes
/// closer together than `debounce` become one call, made once things are
/// quiet and no changed file is still open for writing. Keep the returned
/// watcher alive for as long as watching goes on.
pub fn watch(
    dir: &Path,
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> Result<Watcher, notify::Error> {
    let (tx, rx) = channel::<Change>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(ev) => {
            let c = classify(&ev);
            if c != Change::Nothing {
                let _ = tx.send(c);
            }
        }
        Err(e) => tracing::warn!(error = %e, "watching the scripts folder failed"),
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    std::thread::Builder::new()
        .name("script-watch".into())
        .spawn(move || {
            let mut writing: HashSet<PathBuf> = HashSet::new();
            loop {
                // Wait for a change worth reloading for.
                match rx.recv() {
                    Ok(Change::Closed(_)) | Ok(Change::Nothing) => continue,
                    Ok(c) => apply(&mut writing, c),
                    Err(_) => return,
                }
                let started = Instant::now();
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(c) => apply(&mut writing, c),
                        Err(RecvTimeoutError::Timeout) => {
                            if writing.is_empty() || started.elapsed() >= MAX_SETTLE {
                                break;
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                writing.clear();
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(watcher)
}

fn apply(writing: &mut HashSet<PathBuf>, c: Change) {
    match c {
        Change::Writing(p) => writing.extend(p),
        Change::Closed(p) | Change::Settled(p) => {
            for p in p {
                writing.remove(&p);
            }
        }
        Change::Nothing => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, MetadataKind, RenameMode};

    fn ev(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(path.into())
    }

    #[test]
    fn only_content_changes_to_lua_files_count() {
        assert!(relevant(&ev(
            EventKind::Create(CreateKind::File),
            "s/a.lua"
        )));
        assert!(relevant(&ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            "s/a.lua"
        )));
        assert!(relevant(&ev(
            EventKind::Remove(notify::event::RemoveKind::File),
            "s/lib/x.lua"
        )));
        // Reading a script (as a reload does) must not trigger another reload.
        assert!(!relevant(&ev(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "s/a.lua"
        )));
        assert!(!relevant(&ev(
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            "s/a.lua"
        )));
        assert!(!relevant(&ev(
            EventKind::Create(CreateKind::File),
            "s/.a.lua.swp"
        )));
        assert!(!relevant(&ev(
            EventKind::Create(CreateKind::File),
            "s/notes.txt"
        )));
    }

    #[test]
    fn an_in_place_write_settles_only_when_closed() {
        let p = "s/a.lua";
        let w = classify(&ev(EventKind::Modify(ModifyKind::Data(DataChange::Any)), p));
        assert_eq!(w, Change::Writing(vec![p.into()]));
        let c = classify(&ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            p,
        ));
        assert_eq!(c, Change::Closed(vec![p.into()]));
        let r = classify(&ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), p));
        assert_eq!(r, Change::Settled(vec![p.into()]));
        let mut writing = HashSet::new();
        apply(&mut writing, w);
        assert!(!writing.is_empty());
        apply(&mut writing, c);
        assert!(writing.is_empty());
    }

    #[test]
    fn a_truncated_file_is_not_reloaded_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.lua");
        std::fs::write(&file, "x = 1").unwrap();
        let (tx, rx) = channel();
        let _w = watch(dir.path(), Duration::from_millis(30), move || {
            let _ = tx.send(());
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Truncate, pause past the debounce with the file still open, then
        // write and close: one reload, after the close.
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            rx.try_recv().is_err(),
            "reloaded a truncated, still-open file"
        );
        f.write_all(b"x = 2").unwrap();
        drop(f);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x = 2");
    }
}
