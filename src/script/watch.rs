//! Watches the scripts folder and calls back once per burst of changes.
//!
//! Written on notify directly rather than a debouncer crate: the inotify
//! backend also reports files being *opened*, and the debouncers drop the
//! event kind — so a reload reading the scripts would trigger the next
//! reload, forever. Here only content changes count.

use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

pub type Watcher = RecommendedWatcher;

/// Whether an event can change what the scripts folder loads.
pub fn relevant(event: &Event) -> bool {
    let kind = match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    };
    kind && event
        .paths
        .iter()
        .any(|p| p.extension().is_some_and(|x| x == "lua"))
}

/// Editors save in bursts (temp file, rename, write): relevant changes
/// closer together than `debounce` become one call, made once things are
/// quiet. Keep the returned watcher alive for as long as watching goes on.
pub fn watch(
    dir: &Path,
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> Result<Watcher, notify::Error> {
    let (tx, rx) = channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(ev) if relevant(&ev) => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "watching the scripts folder failed"),
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    std::thread::Builder::new()
        .name("script-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind};

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
            EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
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
}
