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

#[test]
fn moderation_strikes_warns_and_pardons() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        "moderation",
        "this is spam\n!watch\nthis is SPAM\nfree money here\n!strikes\ntotal scam\n\
         see https://example.com/deal\n!pardon\n!strikes\n",
    );
    out.assert_bot_lines(&[
        // "this is spam": not watched yet.
        "bot> Moderating this chat as if it were a group.",
        "bot> ⚠️ Please keep it civil (strike 1 of 3).",
        "bot> ⚠️ Please keep it civil (strike 2 of 3).",
        "bot> You have 2 strikes.",
        "bot> ⚠️ That's strike 3. An admin will have a look.",
        "bot> ⚠️ Please don't post links here (example.com).",
        "bot> Your strikes are cleared.",
        "bot> You have no strikes.",
    ]);
}

#[test]
fn moderation_patterns_links_and_unwatch() {
    let sb = Sandbox::new();
    let out = run(
        &sb,
        "moderation",
        "!watch\nspammer spamalot\nFR33MONEY\n!strikes\nscam at http://evil.example/x?y\n\
         !strikes\n!pardon friend@console\n!strikes\n!unwatch\nspam\nhttps://a.example\n\
         !strikes\n",
    );
    out.assert_bot_lines(&[
        "bot> Moderating this chat as if it were a group.",
        // "spammer spamalot": not the word "spam".
        "bot> ⚠️ Please keep it civil (strike 1 of 3).",
        "bot> You have 1 strike.",
        // A banned word and a link: both answers.
        "bot> ⚠️ Please keep it civil (strike 2 of 3).",
        "bot> ⚠️ Please don't post links here (evil.example).",
        "bot> You have 2 strikes.",
        "bot> Strikes cleared for friend@console.",
        "bot> You have 2 strikes.",
        "bot> No longer moderating this chat.",
        // Unwatched: neither the word nor the link is answered.
        "bot> You have 2 strikes.",
    ]);
}

#[test]
fn moderation_strikes_and_watch_survive_a_restart() {
    let sb = Sandbox::new();
    let out = run(&sb, "moderation", "!watch\nspam\n");
    out.assert_bot_lines(&[
        "bot> Moderating this chat as if it were a group.",
        "bot> ⚠️ Please keep it civil (strike 1 of 3).",
    ]);
    let out = run(&sb, "moderation", "!strikes\nscams\n");
    out.assert_bot_lines(&[
        "bot> You have 1 strike.",
        "bot> ⚠️ Please keep it civil (strike 2 of 3).",
    ]);
}
