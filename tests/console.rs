//! `moonwire console` end to end: the real binary, piped stdin, stdout lines.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::LINE_WAIT;
use common::Output as Run;

fn cmd(dir: &Path) -> Command {
    common::command(dir)
}

fn console(dir: &Path, input: &str) -> Run {
    common::run_console(cmd(dir), input)
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = cmd(dir)
        .args(["status", "--json"])
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

fn console_row(dir: &Path) -> serde_json::Value {
    let all = status_json(dir);
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "console"))
        .cloned()
        .expect("a console row")
}

/// Replaces the random part of `delay_ms=N` so sequences compare exactly.
fn normalize(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match l.find("delay_ms=") {
            Some(i) => {
                let n: u64 = l[i + 9..].parse().expect("delay is a number");
                assert!(n <= 10, "first delay within base 10 ms: {l}");
                format!("{}delay_ms=N", &l[..i])
            }
            None => l.clone(),
        })
        .collect()
}

#[test]
fn drop_replace_connect_logout_prints_the_design_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::session(cmd(dir.path()));
    s.expect("* open jid=me@console", LINE_WAIT);
    s.send("hello");
    s.step("/drop 408", "* reconnecting code=408");
    // The next drop needs the reconnect to have opened.
    s.expect("* open jid=me@console", LINE_WAIT);
    s.step("/drop 440", "* closed code=440");
    s.step("/connect", "* open jid=me@console");
    s.send("/logout");
    let run = s.output();
    assert_eq!(
        normalize(&run.stdout),
        [
            "* connecting attempt=1",
            "* open jid=me@console",
            "* reconnecting code=408 kind=connection_lost attempt=1 delay_ms=N",
            "* connecting attempt=1",
            "* open jid=me@console",
            "* closed code=440 kind=replaced",
            "* connecting attempt=1",
            "* open jid=me@console",
            "* logged_out code=401 kind=logged_out by=server",
        ]
    );
    let row = console_row(dir.path());
    assert_eq!(row["connection_status"], "close");
    assert_eq!(row["state"], "logged_out");
    assert_eq!(row["last_reason_code"], 401);
    assert_eq!(row["last_reason_kind"], "logged_out");
    assert_eq!(row["jid"], serde_json::Value::Null);
}

#[test]
fn after_a_logout_the_next_start_pairs_again() {
    let dir = tempfile::tempdir().unwrap();
    console(dir.path(), "/logout\n");
    let run = console(dir.path(), "");
    assert_eq!(
        run.stdout,
        [
            "* connecting attempt=1",
            "* pairing kind=qr code=2@console-1 expires_in=60",
            // The 515 after pairing is no failure: still the first series.
            "* connecting attempt=1",
            "* open jid=me@console",
        ],
        "{}",
        run.stderr
    );
    // End of input with the instance open leaves an honest row behind.
    let row = console_row(dir.path());
    assert_eq!(row["connection_status"], "close");
    assert_eq!(row["last_reason_kind"], "stopped");
    assert_eq!(row["jid"], "me@console");
}

#[test]
fn connect_after_logout_pairs_in_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = console(dir.path(), "/logout\n/connect\n");
    assert_eq!(
        run.stdout[2..],
        [
            "* logged_out code=401 kind=logged_out by=server",
            "* connecting attempt=1",
            "* pairing kind=qr code=2@console-1 expires_in=60",
            "* connecting attempt=1",
            "* open jid=me@console",
        ]
    );
}

#[test]
fn restart_required_reconnects_at_once_and_bans_wait() {
    let dir = tempfile::tempdir().unwrap();
    let run = console(dir.path(), "/drop 515\n/drop 402\n/drop 408\n");
    assert_eq!(
        run.stdout,
        [
            "* connecting attempt=1",
            "* open jid=me@console",
            "* connecting attempt=1",
            "* open jid=me@console",
            "* closed code=402 kind=temp_banned retry_in_ms=60000",
        ]
    );
    assert!(
        run.stderr.contains("/drop 408 ignored: not connected"),
        "{}",
        run.stderr
    );
}

#[test]
fn terminal_codes_stay_closed_and_logout_codes_log_out() {
    for (code, line) in [
        ("405", "* closed code=405 kind=client_outdated"),
        ("403", "* logged_out code=403 kind=forbidden by=server"),
        ("406", "* logged_out code=406 kind=unknown_logout by=server"),
        (
            "500",
            "* reconnecting code=500 kind=bad_session attempt=1 delay_ms=N",
        ),
        (
            "503",
            "* reconnecting code=503 kind=service_unavailable attempt=1 delay_ms=N",
        ),
        (
            "428",
            "* reconnecting code=428 kind=connection_closed attempt=1 delay_ms=N",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = console(dir.path(), &format!("/drop {code}\n"));
        assert_eq!(normalize(&run.stdout)[2], line);
    }
}

#[test]
fn bad_lines_are_reported_on_stderr_and_the_console_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let run = console(
        dir.path(),
        "/drop\n/frobnicate\n/sleep x\nhi there\n/drop 440\n",
    );
    assert_eq!(run.code, Some(0));
    assert!(
        run.stderr.contains("/drop needs a close code"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("unknown command /frobnicate"));
    assert!(run.stderr.contains("/sleep needs"));
    // Without scripts nothing answers, but the state lines still come.
    assert_eq!(
        run.stdout,
        [
            "* connecting attempt=1",
            "* open jid=me@console",
            "* closed code=440 kind=replaced",
        ]
    );
}

#[test]
fn quit_ends_the_session_early() {
    let dir = tempfile::tempdir().unwrap();
    let run = console(dir.path(), "/quit\n/drop 440\n");
    assert_eq!(run.code, Some(0));
    assert_eq!(
        run.stdout,
        ["* connecting attempt=1", "* open jid=me@console"]
    );
}

#[test]
fn a_killed_console_is_reconciled_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = cmd(dir.path())
        .arg("console")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while !line.starts_with("* open") {
        line.clear();
        assert!(Instant::now() < deadline, "console never opened");
        assert!(out.read_line(&mut line).unwrap() > 0, "console ended early");
    }
    // The row says open while the process lives...
    assert_eq!(console_row(dir.path())["connection_status"], "open");
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    // ...and a crash leaves no lie behind once anything looks at it.
    let row = console_row(dir.path());
    assert_eq!(row["connection_status"], "close");
    assert_eq!(row["state"], "closed");
    assert_eq!(row["last_reason_kind"], "interrupted");
    assert_eq!(row["jid"], "me@console");
    // A restart reconnects the still-paired session without pairing.
    let run = console(dir.path(), "");
    assert_eq!(
        run.stdout,
        ["* connecting attempt=1", "* open jid=me@console"]
    );
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = cmd(dir.path())
        .arg("console")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let second = console(dir.path(), "");
    assert_ne!(second.code, Some(0));
    assert!(
        second.stderr.contains("another moonwire process"),
        "{}",
        second.stderr
    );
    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());
}

#[test]
fn bad_config_fails_before_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("moonwire.toml"),
        "[reconnect]\nbase_ms = 10\nbogus = 1\n",
    )
    .unwrap();
    let run = console(dir.path(), "");
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("bogus"), "{}", run.stderr);
    assert!(run.stderr.contains("moonwire.toml:3"), "{}", run.stderr);
    assert!(!dir.path().join("data").exists());

    let dir = tempfile::tempdir().unwrap();
    let out = cmd(dir.path())
        .env("MOONWIRE_RECONNECT_BASE_MS", "soon")
        .arg("console")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOONWIRE_RECONNECT_BASE_MS"));
    assert!(!dir.path().join("data").exists());
}

#[test]
fn status_prints_a_table_and_handles_a_fresh_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(dir.path()).arg("status").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no instances"));
    assert_eq!(status_json(dir.path()), serde_json::json!([]));
    assert!(
        !dir.path().join("data").exists(),
        "status must not create a database"
    );
    console(dir.path(), "/drop 440\n");
    let out = cmd(dir.path()).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{text}");
    assert!(
        lines[1].contains("console") && lines[1].contains("440 replaced"),
        "{text}"
    );
}
