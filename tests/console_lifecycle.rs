//! The lifecycle through `moonwire console`, driven line by line: each
//! `/drop` waits for the state it leads to, so nothing depends on how long
//! a reconnect takes on a busy machine.

mod common;

use common::{LINE_WAIT, Sandbox, Session};

/// The `attempt=N` of a state line.
fn attempt(line: &str) -> u32 {
    let at = line.find("attempt=").expect("an attempt") + "attempt=".len();
    line[at..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("attempt is a number")
}

/// The `on_close` calls a script logged as `ATTEMPT n`, in order.
fn logged_attempts(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|l| l.split("ATTEMPT ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// A console with fast reconnects and a cap low enough that flap
/// escalation (more than 5 closes a minute) stays quick.
fn console(sb: &Sandbox) -> Session {
    let mut s = sb.session_with(|c| {
        c.env("MOONWIRE_RECONNECT_CAP_MS", "200");
    });
    s.expect("* open jid=me@console", LINE_WAIT);
    s
}

#[test]
fn attempt_counts_up_while_the_connection_flaps() {
    let sb = Sandbox::new();
    sb.script(
        "count.lua",
        "function on_close(r) bot.log.warn('ATTEMPT ' .. r.attempt) end\n",
    );
    let mut s = console(&sb);
    let mut lines = Vec::new();
    for _ in 0..7 {
        // Each drop hits a connection that opened moments ago.
        let reconnecting = s.step("/drop 408", "* reconnecting code=408");
        let connecting = s.expect_starting("* connecting", LINE_WAIT);
        s.expect("* open jid=me@console", LINE_WAIT);
        lines.push((attempt(&reconnecting), attempt(&connecting)));
    }
    let (_, stderr) = s.finish();
    let want: Vec<(u32, u32)> = (1..=7).map(|n| (n, n)).collect();
    assert_eq!(lines, want, "{stderr}");
    // on_close was told the same counter the state lines show.
    assert_eq!(logged_attempts(&stderr), [1, 2, 3, 4, 5, 6, 7], "{stderr}");
}

/// The README's walk: a script that gives up once `r.attempt > 3`.
#[test]
fn a_script_gives_up_after_its_third_attempt_and_the_line_says_by_script() {
    let sb = Sandbox::new();
    sb.script(
        "give-up.lua",
        r#"
function on_close(r)
  bot.log.warn("ATTEMPT " .. r.attempt)
  if r.attempt > 3 then return false end
end
"#,
    );
    let mut s = console(&sb);
    for n in 1..=3 {
        let line = s.step("/drop 408", "* reconnecting");
        assert_eq!(attempt(&line), n, "{line}");
        assert!(!line.ends_with("by=script"), "the table chose: {line}");
        s.expect("* open jid=me@console", LINE_WAIT);
    }
    let last = s.step("/drop 408", "* closed");
    assert_eq!(last, "* closed code=408 kind=connection_lost by=script");
    let (rest, stderr) = s.finish();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(logged_attempts(&stderr), [1, 2, 3, 4], "{stderr}");
}

#[test]
fn a_server_logout_code_unpairs_like_logout() {
    for (code, kind) in [
        ("401", "logged_out"),
        ("403", "forbidden"),
        ("406", "unknown_logout"),
    ] {
        let sb = Sandbox::new();
        sb.script(
            "qr.lua",
            "function on_qr(p) bot.log.warn('QR', p.code, p.kind) end\n",
        );
        let mut s = console(&sb);
        let out = s.step(&format!("/drop {code}"), "* logged_out");
        assert_eq!(
            out,
            format!("* logged_out code={code} kind={kind} by=server")
        );
        // The next connect has to pair again: a QR, the 515 restart, open.
        s.step("/connect", "* connecting attempt=1");
        let pairing = s.expect_starting("* pairing", LINE_WAIT);
        assert_eq!(pairing, "* pairing kind=qr code=2@console-1 expires_in=60");
        let before = s.expect("* open jid=me@console", LINE_WAIT);
        assert_eq!(before, ["* connecting attempt=1"], "{code}");
        let (_, stderr) = s.finish();
        assert!(stderr.contains("QR 2@console-1 qr"), "{code}: {stderr}");
    }
}

/// The `delay_ms=N` of a state line.
fn delay(line: &str) -> u64 {
    let at = line.find("delay_ms=").expect("a delay") + "delay_ms=".len();
    line[at..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("delay is a number")
}

#[test]
fn the_backoff_factor_and_flap_bound_come_from_the_config() {
    let sb = Sandbox::new();
    // Factor 1: every delay at most the base (10 ms here), however many
    // failures; flapping allowed up to 100 closes, so none escalates.
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[reconnect]\nfactor = 1\nflap_closes = 100\n",
    )
    .unwrap();
    let mut s = console(&sb);
    let mut delays = Vec::new();
    for _ in 0..7 {
        let reconnecting = s.step("/drop 408", "* reconnecting code=408");
        s.expect("* open jid=me@console", LINE_WAIT);
        delays.push(delay(&reconnecting));
    }
    let (_, stderr) = s.finish();
    // With the default factor 2 the 7th could draw up to 640 ms, and the
    // 6th close in a minute would wait at least half the cap.
    assert!(delays.iter().all(|d| *d <= 10), "{delays:?}\n{stderr}");
}
