//! The example bots in `examples/`, end to end through `moonwire console`:
//! each test points the console at an example folder with a fresh data dir
//! and checks the exact `bot> ...` lines.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{LINE_WAIT, Output, Sandbox, Session};

const OPEN: [&str; 2] = ["* connecting attempt=1", "* open jid=me@console"];

fn example(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(dir)
}

/// Runs the console on `examples/<dir>` with `input` piped in.
fn run(sb: &Sandbox, dir: &str, input: &str) -> Output {
    let scripts = example(dir);
    checked(sb.console_with(input, |c| {
        c.env("MOONWIRE_SCRIPTS", &scripts);
    }))
}

/// The console on `examples/<dir>`, open and fed line by line, for what
/// has to wait for a timer.
fn session(sb: &Sandbox, dir: &str) -> Session {
    let scripts = example(dir);
    let mut s = sb.session_with(|c| {
        c.env("MOONWIRE_SCRIPTS", &scripts);
    });
    s.expect("* open jid=me@console", LINE_WAIT);
    s
}

fn checked(out: Output) -> Output {
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout[..2], OPEN, "{}", out.stderr);
    assert!(
        !out.stderr.contains("script error"),
        "script error:\n{}",
        out.stderr
    );
    out
}

/// Asks for the list and waits for the answer, whatever it says.
fn reminders_answer(s: &mut Session) {
    s.send("!reminders");
    s.wait_line("the list", LINE_WAIT, |l| {
        l.starts_with("bot> No reminders") || l.starts_with("bot> #")
    });
}

/// Sends each line of `lines`.
fn send_all(s: &mut Session, lines: &str) {
    for l in lines.lines() {
        s.send(l);
    }
}

// office-hours

#[test]
fn office_hours_answers_once_when_forced_closed() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        "office-hours",
        "!closed\nhello, anyone there?\nhello??\n!hours\n!open\nhi while open\n!hours\n!auto\n",
    );
    out.assert_bot_lines(&[
        "bot> Forced closed until !auto.",
        "bot> We're closed, back at 9:00 (Mon–Fri 9:00–17:00).",
        // "hello??": one answer per chat per day.
        "bot> Hours: Mon–Fri 9:00–17:00. Now closed (forced, !auto to undo).",
        "bot> Forced open until !auto.",
        // "hi while open": silent.
        "bot> Hours: Mon–Fri 9:00–17:00. Now open (forced, !auto to undo).",
        "bot> Following the hours again: Mon–Fri 9:00–17:00.",
    ]);
}

#[test]
fn office_hours_can_be_changed_and_checks_its_arguments() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        "office-hours",
        "!open\n!hours 8 18\n!hours\n!hours 18 8\n!hours 9\n!hours x y\n!hours 0 25\n\
         !closed\nhello\n!hours 0 24\n!hours\n",
    );
    let usage = "bot> Usage: !hours FROM TO, whole hours, e.g. !hours 9 17";
    out.assert_bot_lines(&[
        "bot> Forced open until !auto.",
        "bot> Hours set: Mon–Fri 8:00–18:00.",
        "bot> Hours: Mon–Fri 8:00–18:00. Now open (forced, !auto to undo).",
        usage,
        usage,
        usage,
        usage,
        "bot> Forced closed until !auto.",
        "bot> We're closed, back at 8:00 (Mon–Fri 8:00–18:00).",
        "bot> Hours set: Mon–Fri 0:00–24:00.",
        "bot> Hours: Mon–Fri 0:00–24:00. Now closed (forced, !auto to undo).",
    ]);
}

#[test]
fn office_hours_remembers_its_settings_and_answers_across_a_restart() {
    let sb = Sandbox::new();
    let out = run(&sb, "office-hours", "!hours 10 16\n!closed\nhello\n");
    out.assert_bot_lines(&[
        "bot> Hours set: Mon–Fri 10:00–16:00.",
        "bot> Forced closed until !auto.",
        "bot> We're closed, back at 10:00 (Mon–Fri 10:00–16:00).",
    ]);
    // Still forced closed, and this chat was already answered today.
    let out = run(&sb, "office-hours", "hello again\n!hours\n");
    out.assert_bot_lines(&["bot> Hours: Mon–Fri 10:00–16:00. Now closed (forced, !auto to undo)."]);
}

// reminders

#[test]
fn reminders_fire_list_and_forget() {
    let sb = Sandbox::new();
    let mut s = session(&sb, "reminders");
    send_all(&mut s, "!reminders\n!remind 10m buy milk\n!remind 1s tea\n");
    s.expect("bot> ⏰ tea", LINE_WAIT);
    send_all(
        &mut s,
        "!reminders\n!remind 2h coffee\n!remind 90m lunch\n!reminders\n!forget 1\n\
         !forget 1\n!forget x\n!remind 5 x\n!remind 5s\n!remind\n!reminders\n",
    );
    let out = checked(s.output());
    let usage = "bot> Usage: !remind 10m buy milk (units: s, m, h)";
    out.assert_bot_lines(&[
        "bot> No reminders. Try !remind 10m buy milk",
        "bot> Okay, reminder #1 in 10m: buy milk",
        "bot> Okay, reminder #2 in 1s: tea",
        "bot> ⏰ tea",
        "bot> #1 in 10m: buy milk",
        "bot> Okay, reminder #3 in 2h: coffee",
        "bot> Okay, reminder #4 in 1h 30m: lunch",
        // One multi-line message, soonest first.
        "bot> #1 in 10m: buy milk",
        "bot> #4 in 1h 30m: lunch",
        "bot> #3 in 2h: coffee",
        "bot> Forgot #1: buy milk",
        "bot> No reminder #1 here, see !reminders",
        "bot> Usage: !forget N (the number from !reminders)",
        usage,
        usage,
        usage,
        "bot> #4 in 1h 30m: lunch",
        "bot> #3 in 2h: coffee",
    ]);
}

#[test]
fn a_forgotten_reminder_does_not_fire() {
    let sb = Sandbox::new();
    let mut s = session(&sb, "reminders");
    send_all(&mut s, "!remind 1s tea\n!forget 1\n!remind 2s coffee\n");
    // Had "tea" (1 s) not been forgotten, it would be here before "coffee" (2 s).
    s.expect("bot> ⏰ coffee", LINE_WAIT);
    s.send("!reminders");
    let out = checked(s.output());
    out.assert_bot_lines(&[
        "bot> Okay, reminder #1 in 1s: tea",
        "bot> Forgot #1: tea",
        "bot> Okay, reminder #2 in 2s: coffee",
        "bot> ⏰ coffee",
        "bot> No reminders. Try !remind 10m buy milk",
    ]);
}

#[test]
fn reminders_survive_a_restart() {
    let sb = Sandbox::new();
    let out = run(&sb, "reminders", "!remind 1s tea\n");
    out.assert_bot_lines(&["bot> Okay, reminder #1 in 1s: tea"]);
    // on_load schedules it again from bot.store; ids carry on.
    let mut s = session(&sb, "reminders");
    s.expect("bot> ⏰ tea", LINE_WAIT);
    send_all(&mut s, "!reminders\n!remind 1h x\n");
    let out = checked(s.output());
    out.assert_bot_lines(&[
        "bot> ⏰ tea",
        "bot> No reminders. Try !remind 10m buy milk",
        "bot> Okay, reminder #2 in 1h: x",
    ]);
}

#[test]
fn a_reminder_due_while_down_fires_right_after_start() {
    let sb = Sandbox::new();
    let out = run(&sb, "reminders", "!remind 1s tea\n");
    out.assert_bot_lines(&["bot> Okay, reminder #1 in 1s: tea"]);
    // Wall time has to pass while the bot is down; nothing is waited for.
    std::thread::sleep(Duration::from_millis(2100));
    // Overdue at load, before the connection is open: sent once it opens,
    // not RETRY_MS (5 s) later, so before an answer to a message sent then.
    let mut s = session(&sb, "reminders");
    reminders_answer(&mut s);
    let out = checked(s.output());
    out.assert_bot_lines(&["bot> ⏰ tea", "bot> No reminders. Try !remind 10m buy milk"]);
}

#[test]
fn a_reminder_due_while_disconnected_fires_on_reconnect() {
    let sb = Sandbox::new();
    let mut s = session(&sb, "reminders");
    s.step("!remind 1s tea", "bot> Okay, reminder #1");
    s.step("/drop 440", "* closed code=440");
    // Wall time has to pass while disconnected, so the reminder is due.
    std::thread::sleep(Duration::from_millis(1500));
    s.step("/connect", "* open jid=me@console");
    // Sent on open, so before the answer to a message sent then.
    reminders_answer(&mut s);
    let out = checked(s.output());
    assert_eq!(
        out.stdout[2..],
        [
            "bot> Okay, reminder #1 in 1s: tea",
            "* closed code=440 kind=replaced",
            "* connecting attempt=1",
            "* open jid=me@console",
            "bot> ⏰ tea",
            "bot> No reminders. Try !remind 10m buy milk",
        ],
        "{}",
        out.stderr
    );
}

// moderation

/// A group made by you (an admin) with ann, the bot an admin too unless
/// `bot_admin` is false.
fn moderated_group(bot_admin: bool) -> String {
    let mut s = String::from("/group team@g.us Team you@console ann@console\n");
    if bot_admin {
        s.push_str("/promote team@g.us me@console\n");
    }
    s
}

#[test]
fn moderation_warns_twice_then_removes_and_spares_admins() {
    let sb = Sandbox::new();
    let input = moderated_group(true)
        + "this is spam\n\
           /from team@g.us ann@console this is spam\n\
           /from team@g.us ann@console !strikes\n\
           /from team@g.us you@console spam spam, see https://bit.ly/x\n\
           /from team@g.us ann@console fine, see https://example.com/deal\n\
           /from team@g.us ann@console see https://BIT.LY/deal\n\
           /from team@g.us ann@console !admins\n\
           /from team@g.us ann@console total scam\n";
    let out = run(&sb, "moderation", &input);
    out.assert_bot_lines(&[
        // "this is spam" in the direct chat: not a group.
        "bot> [team@g.us] ⚠️ please keep it civil (warning 1 of 2).",
        "bot> [team@g.us] You have 1 warning.",
        // you@console is an admin: spared. example.com is not banned.
        "bot> [team@g.us] ⚠️ links to bit.ly are not allowed here (warning 2 of 2). Next time you're out.",
        "bot> [team@g.us] Admins of Team: you@console, me@console",
        "bot removed ann@console from team@g.us",
        "bot> [team@g.us] Removed ann@console after 2 warnings.",
    ]);
}

#[test]
fn moderation_without_admin_rights_says_so_and_pardons_only_for_admins() {
    let sb = Sandbox::new();
    let input = moderated_group(false)
        + "/from team@g.us ann@console spam\n\
           /from team@g.us ann@console fr33money\n\
           /from team@g.us ann@console scam\n\
           /from team@g.us ann@console !pardon ann@console\n\
           /from team@g.us you@console !pardon ann@console\n\
           /from team@g.us ann@console !strikes\n";
    let out = run(&sb, "moderation", &input);
    out.assert_bot_lines(&[
        "bot> [team@g.us] ⚠️ please keep it civil (warning 1 of 2).",
        "bot> [team@g.us] ⚠️ please keep it civil (warning 2 of 2). Next time you're out.",
        "bot> [team@g.us] ⚠️ please keep it civil. I can't remove you (403 not-authorized: the bot is not an admin of team@g.us); an admin will have a look.",
        "bot> [team@g.us] Only group admins can pardon.",
        "bot> [team@g.us] Warnings cleared for ann@console.",
        "bot> [team@g.us] You have no warnings.",
    ]);
}

#[test]
fn moderation_warnings_survive_a_restart_and_a_leave_clears_them() {
    let sb = Sandbox::new();
    let group = moderated_group(true);
    let out = run(
        &sb,
        "moderation",
        &(group.clone() + "/from team@g.us ann@console spam\n"),
    );
    out.assert_bot_lines(&["bot> [team@g.us] ⚠️ please keep it civil (warning 1 of 2)."]);
    let out = run(
        &sb,
        "moderation",
        &(group
            + "/from team@g.us ann@console !strikes\n\
               /leave team@g.us ann@console\n\
               /join team@g.us ann@console\n\
               /from team@g.us ann@console !strikes\n"),
    );
    out.assert_bot_lines(&[
        "bot> [team@g.us] You have 1 warning.",
        "bot> [team@g.us] You have no warnings.",
    ]);
}

// weather

/// A stand-in for Open-Meteo: Berlin is known, Nowhere is not, Broken fails.
async fn weather_service() -> u16 {
    use axum::extract::Query;
    use axum::http::StatusCode;
    use axum::routing::get;
    use std::collections::HashMap;
    type Q = Query<HashMap<String, String>>;
    let app = axum::Router::new()
        .route(
            "/v1/search",
            get(|Query(q): Q| async move {
                match q.get("name").map(String::as_str) {
                    Some("Berlin") => (StatusCode::OK, r#"{"results":[{"name":"Berlin","country":"Germany","latitude":52.52,"longitude":13.41}]}"#),
                    Some("Broken") => (StatusCode::INTERNAL_SERVER_ERROR, "oops"),
                    _ => (StatusCode::OK, r#"{"generationtime_ms":0.4}"#),
                }
            }),
        )
        .route(
            "/v1/forecast",
            get(|Query(q): Q| async move {
                let asked = q.get("latitude").map(String::as_str) == Some("52.52")
                    && q.get("longitude").map(String::as_str) == Some("13.41")
                    && q.get("current").is_some_and(|c| c.contains("temperature_2m"));
                if asked {
                    (StatusCode::OK, r#"{"current":{"temperature_2m":3.2,"wind_speed_10m":12.5,"weather_code":3}}"#)
                } else {
                    (StatusCode::BAD_REQUEST, "bad query")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// An example's script with its settings replaced, as a user would edit them.
fn edited(dir: &str, file: &str, edits: &[(&str, &str)]) -> String {
    let mut src = std::fs::read_to_string(example(dir).join(file)).unwrap();
    for (from, to) in edits {
        assert!(src.contains(from), "{file} no longer has {from:?}");
        src = src.replace(from, to);
    }
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weather_asks_the_service_and_remembers_the_city() {
    let port = weather_service().await;
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script.http]\nallow = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    sb.script(
        "weather.lua",
        &edited(
            "weather",
            "weather.lua",
            &[
                (
                    "https://geocoding-api.open-meteo.com/v1/search",
                    &format!("{base}/v1/search"),
                ),
                (
                    "https://api.open-meteo.com/v1/forecast",
                    &format!("{base}/v1/forecast"),
                ),
            ],
        ),
    );
    let out = tokio::task::spawn_blocking(move || {
        sb.console("!weather\n!weather Berlin\n/sleep 200\n!weather\n/sleep 200\n!weather Nowhere\n/sleep 200\n!weather Broken\n")
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.assert_bot_lines(&[
        "bot> Usage: !weather CITY, e.g. !weather Berlin",
        "bot> Berlin, Germany: 3.2 °C, overcast, wind 12.5 km/h",
        "bot> Berlin, Germany: 3.2 °C, overcast, wind 12.5 km/h",
        "bot> I don't know a place called Nowhere.",
        "bot> Sorry, the weather service answered 500.",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weather_apologises_when_the_service_is_not_there() {
    // Not listed in allow: refused, like any service that is down.
    let sb = Sandbox::new();
    sb.script(
        "weather.lua",
        &edited(
            "weather",
            "weather.lua",
            &[(
                "https://geocoding-api.open-meteo.com/v1/search",
                "http://127.0.0.1:9/v1/search",
            )],
        ),
    );
    let out = tokio::task::spawn_blocking(move || sb.console("!weather Berlin\n"))
        .await
        .unwrap();
    out.assert_bot_lines(&["bot> Sorry, the weather service didn't answer."]);
    assert!(
        out.stderr.contains("weather: refused to connect"),
        "{}",
        out.stderr
    );
}

// morning-summary

#[test]
fn morning_summary_subscribes_counts_and_previews() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        "morning-summary",
        "!summary\n!summary here\nhello\n!summary here\nanyone there?\n!summary\n!summary stop\n\
         !summary stop\n!summary now\n",
    );
    let lines = out.bot_lines();
    assert_eq!(
        lines[0],
        "bot> ☀️ Good morning! Nothing came in since the last summary."
    );
    assert!(lines[1].starts_with("bot> Next summary: "), "{lines:?}");
    let here = "bot> Okay: the morning summary (Mon–Fri 8:00) comes to this chat.";
    assert_eq!(
        lines[2..],
        [
            here,
            here,
            "bot> ☀️ Good morning! 2 messages in 1 chat since the last summary:",
            "bot> • you@console: 2",
            lines[6],
            "bot> Okay: no more morning summaries here.",
            "bot> This chat doesn't get the morning summary; !summary here to start.",
            "bot> Usage: !summary here | !summary stop | !summary",
        ]
    );
    assert!(lines[6].starts_with("bot> Next summary: "), "{lines:?}");
}

#[test]
fn archiver_saves_lists_sends_back_and_forgets_files() {
    let sb = Sandbox::new();
    let pdf = sb.path().join("report.pdf");
    let cat = sb.path().join("cat.jpg");
    std::fs::write(&pdf, b"%PDF").unwrap();
    std::fs::write(&cat, b"0123456789").unwrap();
    let mut s = session(&sb, "archiver");
    // One file at a time: each download waits, and the next message would
    // not wait for it.
    s.send(&format!("/file {}", pdf.display()));
    s.expect("bot reacted 📥", LINE_WAIT);
    s.expect("bot> Saved report.pdf (4 bytes) as #1", LINE_WAIT);
    s.send(&format!("/image {} a cat", cat.display()));
    s.expect("bot reacted 📥", LINE_WAIT);
    s.expect("bot> Saved cat.jpg (10 bytes) as #2", LINE_WAIT);
    s.step("!files", "bot> #1 report.pdf, document 4 bytes from you");
    s.expect("bot> #2 cat.jpg, image 10 bytes from you", LINE_WAIT);
    // Sent back from the data dir's media folder, where the download is.
    s.step("!get 2", "bot> <document cat.jpg 10> a cat");
    assert_eq!(
        std::fs::read(sb.path().join("data/media/console/c2.jpg")).unwrap(),
        b"0123456789"
    );
    s.step("!get 7", "bot> Which file?");
    s.step("!forget 1", "bot> Forgot #1 (report.pdf)");
    s.step("!files", "bot> #1 cat.jpg, image 10 bytes from you");
    let (_, stderr) = s.finish();
    assert!(!stderr.contains("script error"), "{stderr}");
}

/// Every example folder's `moonwire.toml` is a config `moonwire check`
/// accepts, whose scripts folder is the example itself; and the console
/// runs an example from its config alone.
#[test]
fn every_example_has_a_config_that_runs_it() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 7, "{dirs:?}");
    let sb = Sandbox::new();
    for dir in &dirs {
        let config = dir.join("moonwire.toml");
        assert!(config.is_file(), "{} has no moonwire.toml", dir.display());
        let out = common::command(sb.path())
            .arg("check")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{}: {said}", config.display());
        // It checked the example's own folder, not ./scripts.
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            said.contains(&format!("examples/{name}/")),
            "{}: {said}",
            config.display()
        );
    }
    let config = root.join("office-hours/moonwire.toml");
    let out = checked(sb.console_with("!closed\nhello\n", |c| {
        c.env_remove("MOONWIRE_SCRIPTS")
            .arg("--config")
            .arg(&config);
    }));
    assert_eq!(
        out.bot_lines(),
        [
            "bot> Forced closed until !auto.",
            "bot> We're closed, back at 9:00 (Mon–Fri 9:00–17:00).",
        ]
    );
}
