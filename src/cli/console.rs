//! `moonwire console`: the instance `console` on a simulated connection,
//! through the real host, machine and store.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moonwire::channel::MediaKind;
use moonwire::channel::console::{ConsoleInput, ConsoleOut, GroupLine};
use moonwire::config::{ChannelKind, Config};
use moonwire::host::app::{App, StartOptions};
use moonwire::host::{DataDirLock, EventBus, Host, HostEvent};
use moonwire::store::Store;
use tokio::io::AsyncBufReadExt;

const INSTANCE: &str = "console";

/// A line of stdin, understood.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Message(String),
    /// A richer message: another chat, media, a reply, a reaction, ...
    Rich(ConsoleInput),
    /// A change to a simulated group: `/group`, `/join`, `/leave`, ...
    Group(GroupLine),
    Drop(u16),
    Logout,
    Connect,
    Scan,
    Sleep(u64),
    Quit,
    Empty,
}

fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(cmd) = line.strip_prefix('/') else {
        return Ok(if line.trim().is_empty() {
            Line::Empty
        } else {
            Line::Message(line.to_string())
        });
    };
    if let Some(rich) = parse_rich(cmd)? {
        return Ok(Line::Rich(rich));
    }
    if let Some(group) = parse_group(cmd)? {
        return Ok(Line::Group(group));
    }
    let mut parts = cmd.split_whitespace();
    let name = parts.next().unwrap_or("");
    let arg = parts.next();
    let extra = parts.next();
    let need = |what: &str| {
        format!(
            "/{name} needs {what}, e.g. /{name} {}",
            if name == "drop" { "408" } else { "100" }
        )
    };
    let parsed = match name {
        "drop" => Line::Drop(
            arg.ok_or_else(|| need("a close code"))?
                .parse()
                .map_err(|_| need("a close code (a number up to 65535)"))?,
        ),
        "sleep" => Line::Sleep(
            arg.ok_or_else(|| need("milliseconds"))?
                .parse()
                .map_err(|_| need("a whole number of milliseconds"))?,
        ),
        "logout" | "connect" | "scan" | "quit" if arg.is_some() => {
            return Err(format!("/{name} takes no argument"));
        }
        "logout" => Line::Logout,
        "connect" => Line::Connect,
        "scan" => Line::Scan,
        "quit" => Line::Quit,
        _ => {
            return Err(format!(
                "unknown command /{name} (known: /drop CODE, /logout, /connect, /scan, /sleep MS, /quit, /from CHAT SENDER TEXT, /image PATH [CAPTION], /file PATH, /voice PATH, /reply ID TEXT, /react ID EMOJI, /edit ID TEXT, /revoke ID, /group CHAT SUBJECT MEMBER..., /join CHAT USER, /leave CHAT USER, /promote CHAT USER, /demote CHAT USER, /subject CHAT TEXT)"
            ));
        }
    };
    if extra.is_some() {
        return Err(format!("/{name} takes one argument"));
    }
    Ok(parsed)
}

/// Splits off the first word of `s`; the rest with its leading blanks
/// gone.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// The message lines (`/from`, `/image`, ...), or `None` for another
/// command.
fn parse_rich(cmd: &str) -> Result<Option<ConsoleInput>, String> {
    let (name, rest) = word(cmd);
    let need = |what: &str, example: &str| format!("/{name} needs {what}, e.g. /{name} {example}");
    let media = |kind, voice| -> Result<Option<ConsoleInput>, String> {
        let (path, caption) = word(rest);
        if path.is_empty() {
            return Err(need("a file", "cat.jpg"));
        }
        if kind != MediaKind::Image && !caption.is_empty() {
            return Err(format!("/{name} takes one argument: the file"));
        }
        Ok(Some(ConsoleInput::Media {
            kind,
            path: path.into(),
            caption: (!caption.is_empty()).then(|| caption.to_string()),
            voice,
        }))
    };
    let id_and = |what: &str, example: &str| -> Result<(String, String), String> {
        let (id, text) = word(rest);
        if id.is_empty() || text.is_empty() {
            return Err(need(&format!("a message id and {what}"), example));
        }
        Ok((id.to_string(), text.to_string()))
    };
    Ok(Some(match name {
        "from" => {
            let (chat, rest) = word(rest);
            let (sender, text) = word(rest);
            if chat.is_empty() || sender.is_empty() || text.is_empty() {
                return Err(need(
                    "a chat, a sender and a text",
                    "team@g.us ann@console hi all",
                ));
            }
            ConsoleInput::Text {
                chat: Some(chat.into()),
                sender: Some(sender.into()),
                text: text.into(),
            }
        }
        "image" => return media(MediaKind::Image, false),
        "file" => return media(MediaKind::Document, false),
        "voice" => return media(MediaKind::Audio, true),
        "reply" => {
            let (id, text) = id_and("a text", "c1 sounds good")?;
            ConsoleInput::Reply { id, text }
        }
        "react" => {
            let (id, emoji) = id_and("an emoji", "c1 👍")?;
            ConsoleInput::React { id, emoji }
        }
        "edit" => {
            let (id, text) = id_and("the new text", "c1 fixed typo")?;
            ConsoleInput::Edit { id, text }
        }
        "revoke" => {
            let (id, extra) = word(rest);
            if id.is_empty() {
                return Err(need("a message id", "c1"));
            }
            if !extra.is_empty() {
                return Err("/revoke takes one argument".into());
            }
            ConsoleInput::Revoke { id: id.into() }
        }
        _ => return Ok(None),
    }))
}

/// The group lines, or `None` for another command.
fn parse_group(cmd: &str) -> Result<Option<GroupLine>, String> {
    let (name, rest) = word(cmd);
    let (chat, rest) = word(rest);
    let chat = chat.to_string();
    let user = |example: &str| -> Result<String, String> {
        let (user, extra) = word(rest);
        if chat.is_empty() || user.is_empty() || !extra.is_empty() {
            return Err(format!(
                "/{name} needs a group and one user, e.g. /{name} team@g.us {example}"
            ));
        }
        Ok(user.to_string())
    };
    Ok(Some(match name {
        "group" => {
            // The subject is every word up to the first member (a JID).
            let words: Vec<&str> = rest.split_whitespace().collect();
            let first_member = words.iter().position(|w| w.contains('@'));
            let (subject, members) = match first_member {
                Some(i) if i > 0 => (words[..i].join(" "), &words[i..]),
                _ => {
                    return Err("/group needs a group, a subject and members, e.g. /group team@g.us Team you@console ann@console".into());
                }
            };
            if chat.is_empty() {
                return Err(
                    "/group needs a group id, e.g. /group team@g.us Team you@console".into(),
                );
            }
            if let Some(bad) = members.iter().find(|m| !m.contains('@')) {
                return Err(format!(
                    "/group: member {bad:?} is not a JID (user@server); the subject comes before the members"
                ));
            }
            GroupLine::Create {
                chat,
                subject,
                members: members.iter().map(|m| m.to_string()).collect(),
            }
        }
        "join" => GroupLine::Join {
            user: user("ann@console")?,
            chat,
        },
        "leave" => GroupLine::Leave {
            user: user("ann@console")?,
            chat,
        },
        "promote" => GroupLine::Promote {
            user: user("me@console")?,
            chat,
        },
        "demote" => GroupLine::Demote {
            user: user("ann@console")?,
            chat,
        },
        "subject" => {
            if chat.is_empty() || rest.is_empty() {
                return Err(
                    "/subject needs a group and a text, e.g. /subject team@g.us Lunch crew".into(),
                );
            }
            GroupLine::Subject {
                chat,
                text: rest.to_string(),
            }
        }
        _ => return Ok(None),
    }))
}

/// `scripts_flag`: `--scripts` was given, and wins over an `[[instance]]
/// name = "console"` entry's own folder.
pub fn run(config: &Config, manual_scan: bool, scripts_flag: bool) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    let code = rt.block_on(run_async(config, manual_scan, scripts_flag));
    // stdin is read by a blocking thread no one can interrupt: after a
    // signal it may still wait for a line that never comes.
    rt.shutdown_background();
    code
}

async fn run_async(
    config: &Config,
    manual_scan: bool,
    scripts_flag: bool,
) -> anyhow::Result<ExitCode> {
    // Ctrl-C and SIGTERM end the run like /quit: hooks finish, on_unload
    // runs, the row ends closed/stopped, exit 0. Listening starts here, so
    // a signal during start-up is not lost.
    let mut signals = super::run::StopSignals::new();
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let db = config.db_path();
    let store = Arc::new(Store::open(&db).with_context(|| format!("opening {}", db.display()))?);
    let out = Arc::new(ConsoleOut::default());
    let bus = EventBus::default();
    {
        let out = out.clone();
        bus.observe(move |ev| {
            if let HostEvent::State { transition, .. } = ev {
                out.line(&format!("* {transition}"));
            }
        });
    }
    let app = App::new(
        store,
        bus,
        super::host_settings(config),
        super::engine_config(config),
        out.clone(),
    )?;
    // The instance's own scripts folder, when the config gives it one.
    let scripts = config
        .instances
        .iter()
        .find(|i| i.name == INSTANCE)
        .and_then(|i| i.scripts.clone())
        .filter(|_| !scripts_flag);
    let opts = StartOptions {
        manual_scan,
        scripts,
        ..StartOptions::default()
    };
    let handle = app.start_configured(INSTANCE, ChannelKind::Console, opts)?;
    let sim = app
        .console_sim(INSTANCE)
        .context("the console instance has no simulated server")?;
    app.scripts.watch();
    let host = &app.host;
    handle.connect();
    settle(host).await;

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let read = tokio::select! {
            read = lines.next_line() => read,
            () = signals.recv() => break,
        };
        let line = match read {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "reading stdin failed; treating it as end of input");
                break;
            }
        };
        match parse(&line) {
            Ok(Line::Empty) => continue,
            Ok(Line::Message(text)) => sim.deliver(&text),
            Ok(Line::Rich(input)) => {
                if let Err(e) = sim.deliver_input(input) {
                    eprintln!("console: {e}");
                }
            }
            Ok(Line::Group(line)) => {
                if let Err(e) = sim.group_line(line) {
                    eprintln!("console: {e}");
                }
            }
            Ok(Line::Drop(code)) => {
                if let Err(e) = sim.drop_connection(code) {
                    eprintln!("console: /drop {code} ignored: {e}");
                }
            }
            Ok(Line::Logout) => sim.server_logout(),
            Ok(Line::Connect) => handle.connect(),
            Ok(Line::Scan) => {
                if let Err(e) = sim.scan() {
                    let hint = if manual_scan {
                        ""
                    } else {
                        " (pairing waits for /scan only with --manual-scan)"
                    };
                    eprintln!("console: /scan ignored: {e}{hint}");
                }
            }
            Ok(Line::Sleep(ms)) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    () = signals.recv() => break,
                }
            }
            Ok(Line::Quit) => break,
            Err(e) => eprintln!("console: {e}"),
        }
        // Each line's work starts before the next line is read; handlers
        // that wait go on meanwhile (end of input waits for them).
        settle_started(host).await;
    }

    // End of input: finish what hooks are doing, then go quiet and stop.
    settle(host).await;
    out.close();
    app.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Lets queued work start, bounded like `settle`.
async fn settle_started(host: &Host) {
    if tokio::time::timeout(Duration::from_secs(10), host.settle_started())
        .await
        .is_err()
    {
        tracing::warn!("pending work did not start within 10 s; going on");
    }
}

/// Lets queued work finish, bounded so a wedged hook cannot hang the console.
async fn settle(host: &Host) {
    if tokio::time::timeout(Duration::from_secs(10), host.settle())
        .await
        .is_err()
    {
        tracing::warn!("pending work did not settle within 10 s; going on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse("hello"), Ok(Line::Message("hello".into())));
        assert_eq!(parse("  "), Ok(Line::Empty));
        assert_eq!(parse("/drop 408"), Ok(Line::Drop(408)));
        assert_eq!(parse("/sleep 50\r"), Ok(Line::Sleep(50)));
        assert_eq!(parse("/logout"), Ok(Line::Logout));
        assert_eq!(parse("/connect"), Ok(Line::Connect));
        assert_eq!(parse("/scan"), Ok(Line::Scan));
        assert!(parse("/scan now").is_err());
        assert_eq!(parse("/quit"), Ok(Line::Quit));
        assert!(parse("/drop").unwrap_err().contains("close code"));
        assert!(parse("/drop abc").unwrap_err().contains("close code"));
        assert!(parse("/drop 99999").is_err());
        assert!(parse("/sleep -1").is_err());
        assert!(parse("/logout now").is_err());
        assert!(
            parse("/frobnicate")
                .unwrap_err()
                .contains("unknown command")
        );
    }

    #[test]
    fn group_lines_parse() {
        assert_eq!(
            parse("/group team@g.us Lunch crew you@console ann@console"),
            Ok(Line::Group(GroupLine::Create {
                chat: "team@g.us".into(),
                subject: "Lunch crew".into(),
                members: vec!["you@console".into(), "ann@console".into()],
            }))
        );
        assert_eq!(
            parse("/join team@g.us bob@console"),
            Ok(Line::Group(GroupLine::Join {
                chat: "team@g.us".into(),
                user: "bob@console".into()
            }))
        );
        assert_eq!(
            parse("/promote team@g.us me@console"),
            Ok(Line::Group(GroupLine::Promote {
                chat: "team@g.us".into(),
                user: "me@console".into()
            }))
        );
        assert_eq!(
            parse("/subject team@g.us New  name"),
            Ok(Line::Group(GroupLine::Subject {
                chat: "team@g.us".into(),
                text: "New  name".into()
            }))
        );
    }

    #[test]
    fn rich_lines_parse_into_messages() {
        let rich = |l: &str| match parse(l) {
            Ok(Line::Rich(r)) => r,
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(
            rich("/from team@g.us ann@console hello  all"),
            ConsoleInput::Text {
                chat: Some("team@g.us".into()),
                sender: Some("ann@console".into()),
                text: "hello  all".into()
            }
        );
        assert_eq!(
            rich("/image cat.jpg a fine cat"),
            ConsoleInput::Media {
                kind: MediaKind::Image,
                path: "cat.jpg".into(),
                caption: Some("a fine cat".into()),
                voice: false
            }
        );
        assert!(matches!(
            rich("/image cat.jpg"),
            ConsoleInput::Media { caption: None, .. }
        ));
        assert!(matches!(
            rich("/voice hi.ogg"),
            ConsoleInput::Media {
                kind: MediaKind::Audio,
                voice: true,
                ..
            }
        ));
        assert!(matches!(
            rich("/file a.pdf"),
            ConsoleInput::Media {
                kind: MediaKind::Document,
                ..
            }
        ));
        assert_eq!(
            rich("/reply c1 sounds good"),
            ConsoleInput::Reply {
                id: "c1".into(),
                text: "sounds good".into()
            }
        );
        assert_eq!(
            rich("/react c2 👍"),
            ConsoleInput::React {
                id: "c2".into(),
                emoji: "👍".into()
            }
        );
        assert_eq!(
            rich("/edit c3 fixed"),
            ConsoleInput::Edit {
                id: "c3".into(),
                text: "fixed".into()
            }
        );
        assert_eq!(rich("/revoke c4"), ConsoleInput::Revoke { id: "c4".into() });
        for bad in [
            "/group team@g.us",
            "/group team@g.us you@console",
            "/group team@g.us Team",
            "/join team@g.us",
            "/join team@g.us a@console b@console",
            "/promote",
            "/subject team@g.us",
            "/from team@g.us",
            "/image",
            "/file a.pdf extra",
            "/reply c1",
            "/react",
            "/edit c1",
            "/revoke",
            "/revoke c1 c2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
