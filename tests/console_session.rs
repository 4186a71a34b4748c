//! `moonwire console` as a person meets it: Ctrl-C, how much it logs, what
//! an unknown command gets, and pairing by hand (`--manual-scan`, `/scan`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::Sandbox;

const SECS: Duration = Duration::from_secs(20);

fn console_row(dir: &Path) -> serde_json::Value {
    let out = common::command(dir)
        .args(["status", "--json"])
        .output()
        .expect("status");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "console"))
        .cloned()
        .expect("a console row")
}

#[test]
fn sigint_and_sigterm_end_the_console_like_quit() {
    for signal in ["INT", "TERM"] {
        let sb = Sandbox::new();
        sb.script(
            "bye.lua",
            "function on_unload() bot.log.warn('on_unload ran') end\n",
        );
        let mut s = sb.session();
        s.expect("* open jid=me@console", SECS);
        let (status, rest, stderr) = s.signal(signal);
        assert_eq!(status.code(), Some(0), "SIG{signal}: {status}\n{stderr}");
        assert!(rest.is_empty(), "nothing more on stdout: {rest:?}");
        assert!(stderr.contains("on_unload ran"), "SIG{signal}: {stderr}");
        let row = console_row(sb.path());
        assert_eq!(row["connection_status"], "close", "SIG{signal}");
        assert_eq!(row["state"], "closed", "SIG{signal}");
        assert_eq!(row["last_reason_kind"], "stopped", "SIG{signal}: {row}");
    }
}

#[test]
fn a_signal_during_a_sleep_ends_the_console_too() {
    let sb = Sandbox::new();
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    s.send("/sleep 600000");
    let (status, _, stderr) = s.signal("INT");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(console_row(sb.path())["last_reason_kind"], "stopped");
}

#[test]
fn the_console_logs_warnings_only_unless_asked() {
    let sb = Sandbox::new();
    sb.script(
        "talk.lua",
        "bot.log.info('an info line')\nbot.log.warn('a warning line')\n",
    );
    let quiet = sb.console("");
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert!(quiet.stderr.contains("a warning line"), "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("an info line"), "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("INFO"), "{}", quiet.stderr);
    let flag = sb.console_with("", |c| {
        c.args(["--log", "info"]);
    });
    assert!(flag.stderr.contains("an info line"), "{}", flag.stderr);
    let env = sb.console_with("", |c| {
        c.env("MOONWIRE_LOG", "info");
    });
    assert!(env.stderr.contains("an info line"), "{}", env.stderr);
}

#[test]
fn an_unknown_command_gets_the_help_hint() {
    let sb = Sandbox::new();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/default.lua");
    sb.script("default.lua", &std::fs::read_to_string(shipped).unwrap());
    sb.script(
        "zz.lua",
        "bot.command('hi', function(m) m:reply('hello') end)\n",
    );
    let run = sb.console("!nosuch\n!ping\n!hi\n!  nosuch2 with args\nplain text\n");
    run.assert_bot_lines(&[
        "bot> unknown command !nosuch; !help lists the commands",
        "bot> pong",
        "bot> hello",
        "bot> unknown command !nosuch2; !help lists the commands",
    ]);
}

#[test]
fn manual_scan_shows_the_qr_until_scan() {
    let sb = Sandbox::new();
    sb.script(
        "qr.lua",
        "function on_qr(p) bot.log.warn('on_qr ' .. p.kind .. ' ' .. p.code .. ' ' .. p.expires_in) end\n",
    );
    let run = sb.console_with("/scan\nhi\n", |c| {
        c.arg("--manual-scan");
    });
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        [
            "* connecting attempt=1",
            "* pairing kind=qr code=2@console-1 expires_in=60",
            "* connecting attempt=1",
            "* open jid=me@console",
        ],
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("on_qr qr 2@console-1 60"),
        "{}",
        run.stderr
    );
    // Paired now: the next start opens at once, --manual-scan or not.
    let again = sb.console_with("/scan\n", |c| {
        c.arg("--manual-scan");
    });
    assert_eq!(
        again.stdout,
        ["* connecting attempt=1", "* open jid=me@console"]
    );
    assert!(
        again.stderr.contains("/scan ignored: no code is on show"),
        "{}",
        again.stderr
    );
}

#[test]
fn without_manual_scan_a_scan_says_why_it_does_nothing() {
    let sb = Sandbox::new();
    let run = sb.console("/scan\n");
    assert_eq!(run.code, Some(0));
    assert!(
        run.stderr.contains(
            "/scan ignored: no code is on show (pairing waits for /scan only with --manual-scan)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn manual_scan_after_a_logout_waits_for_the_scan() {
    let sb = Sandbox::new();
    let mut s = sb.session_with(|c| {
        c.arg("--manual-scan");
    });
    // A brand-new account under --manual-scan has to pair first.
    s.expect("* pairing kind=qr code=2@console-1 expires_in=60", SECS);
    s.send("/scan");
    s.expect("* open jid=me@console", SECS);
    s.send("/logout");
    s.expect("* logged_out code=401 kind=logged_out by=server", SECS);
    s.send("/connect");
    s.expect("* pairing kind=qr code=2@console-2 expires_in=60", SECS);
    // Nothing happens until the phone scans.
    assert!(s.drain(Duration::from_millis(300)).is_empty());
    s.send("/scan");
    s.expect("* open jid=me@console", SECS);
    let (rest, _) = s.finish();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_drop_while_the_code_is_on_show_closes_that_connection() {
    let sb = Sandbox::new();
    // 408 while pairing is the code timing out: the machine stays closed.
    let run = sb.console_with("/drop 408\n", |c| {
        c.arg("--manual-scan");
    });
    assert_eq!(
        run.stdout,
        [
            "* connecting attempt=1",
            "* pairing kind=qr code=2@console-1 expires_in=60",
            "* closed code=408 kind=qr_timeout",
        ],
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("ignored"), "{}", run.stderr);
}
